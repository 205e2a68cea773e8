"""The partition gallery in a real browser: Debian's chromium driven by playwright, the page opened
from disk (`file://`) as a person would open it, with the images it links relatively."""

from __future__ import annotations

import io
import re
from pathlib import Path

import pytest
from PIL import Image
from upath import UPath

from flux_pipeline.dataset.catalog.gallery import relative_link, write_gallery
from flux_pipeline.dataset.catalog.preview import LABEL_HEIGHT, contact_sheet

from .catalog_fixtures import HOSTILE_PROMPT, PARTITION, make_shots


def test_the_gallery_shows_every_image_with_its_labels_and_variations(browser, tmp_path):
    root = UPath(tmp_path)
    shots, cases = make_shots(root / "catalog", root / "outputs")
    page_path = write_gallery(shots.catalog_root, shots.output_root, PARTITION)
    assert page_path == shots.output_root / PARTITION / "gallery.html"

    page = browser.new_page(viewport={"width": 1200, "height": 800})
    page.goto(Path(page_path).as_uri())
    cards = page.locator("[data-image-id]")
    assert cards.count() == len(shots.rows)
    for index in range(cards.count()):  # lazy images load once they come into view
        image = cards.nth(index).locator("img")
        assert image.get_attribute("loading") == "lazy"
        assert not re.match(r"^(/|[a-z]+:)", image.get_attribute("src")), "links are relative"
        image.scroll_into_view_if_needed()
        page.wait_for_function("img => img.complete && img.naturalWidth > 0", arg=image.element_handle())

    for row in shots.rows:
        card = page.locator(f'[data-image-id="{row["image_id"]}"]')
        labels = {name: card.locator(f"dd.{name}").inner_text() for name in ("seed", "size", "nsfw", "cost")}
        assert labels == {
            "seed": str(row["seed"]),
            "size": f"{row['width']}×{row['height']}",
            "nsfw": "yes" if row["nsfw"] else "no",
            "cost": f"${row['cost_usd']:.4f}",
        }
        assert card.locator(".prompt").inner_text() == row["prompt"]
        natural = card.locator("img").evaluate("img => [img.naturalWidth, img.naturalHeight]")
        assert natural == [row["width"], row["height"]]
    assert page.locator(f'[data-image-id="{cases.hostile}"] .prompt').inner_text() == HOSTILE_PROMPT
    assert page.evaluate("window.injected") is None and page.locator("img").count() == len(shots.rows), (
        "the prompt's markup stays text"
    )

    parent_group = page.locator(f'section.group:has(> [data-image-id="{cases.parent}"])')
    assert parent_group.locator(".variations [data-image-id]").evaluate_all(
        "cards => cards.map(c => [c.dataset.imageId, c.dataset.parentImageId])"
    ) == [[variation, cases.parent] for variation in cases.variations]
    assert page.locator(".variations [data-image-id]").count() == len(cases.variations)

    nsfw, safe = page.locator('[data-nsfw="true"]'), page.locator('[data-nsfw="false"]')
    assert nsfw.count() == 1 and nsfw.get_attribute("data-image-id") == cases.nsfw
    assert nsfw.is_visible()
    page.get_by_label("hide NSFW images").check()
    assert nsfw.is_hidden() and all(safe.nth(i).is_visible() for i in range(safe.count()))
    page.get_by_label("hide NSFW images").uncheck()
    assert nsfw.is_visible()
    page.close()


def test_a_large_gallery_pages_with_whole_groups_and_no_stale_pages(browser, tmp_path):
    root = UPath(tmp_path)
    shots, cases = make_shots(root / "catalog", root / "outputs", ordinary=430)
    first = write_gallery(shots.catalog_root, shots.output_root, PARTITION)
    pages = sorted(first.parent.glob("gallery*.html"))
    assert [p.name for p in pages] == ["gallery-p2.html", "gallery-p3.html", "gallery.html"]

    page = browser.new_page(viewport={"width": 1200, "height": 800})
    page.goto(Path(first).as_uri())
    seen: list[str] = []
    for number in (1, 2, 3):
        assert page.locator("nav.pages span").first.inner_text() == f"page {number} of 3"
        ids = page.locator("[data-image-id]").evaluate_all("cards => cards.map(c => c.dataset.imageId)")
        assert 200 <= len(ids) < 200 + 3 or number == 3, "whole groups (of at most 3) until 200 images"
        seen += ids
        if number == 1:
            variations = page.locator(f'[data-image-id="{cases.parent}"] ~ .variations [data-image-id]')
            assert variations.count() == 2, "a group is never split across pages"
            page.get_by_label("hide NSFW images").check()
        else:
            assert page.get_by_label("hide NSFW images").is_checked(), "the choice holds from page to page"
        if number < 3:
            page.locator("nav.pages").first.get_by_role("link", name="next").click()
    assert sorted(seen) == sorted(row["image_id"] for row in shots.rows), "every image once, over the pages"
    page.locator("nav.pages").first.get_by_role("link", name="first").click()
    assert page.locator("nav.pages span").first.inner_text() == "page 1 of 3"
    page.close()

    shots.rows = shots.rows[:10]
    shots.write_catalog()
    write_gallery(shots.catalog_root, shots.output_root, PARTITION)
    assert [p.name for p in first.parent.glob("gallery*.html")] == ["gallery.html"], "stale pages removed"
    assert "page 1 of 1" in first.read_text()


def test_the_gallery_links_images_relatively_in_a_bucket(s3, bucket):
    root = UPath(f"s3://{bucket}/flux", **s3)
    shots, _ = make_shots(root / "catalog", root / "outputs", ordinary=1)
    page_path = write_gallery(shots.catalog_root, shots.output_root, PARTITION)
    html = page_path.read_text()
    links = {link: f"{PARTITION}/{link}" for link in re.findall(r'<img src="([^"]+)"', html)}
    assert sorted(links.values()) == sorted(row["file_path"] for row in shots.rows)
    assert all(
        (page_path.parent / link).read_bytes() == (shots.output_root / file_path).read_bytes()
        for link, file_path in links.items()
    )
    with pytest.raises(ValueError, match="same filesystem"):
        relative_link(page_path, UPath("/tmp/elsewhere.png"))


def test_the_contact_sheet_labels_each_tile_with_its_prompt_id(tmp_path):
    root = UPath(tmp_path)
    shots, _ = make_shots(root / "catalog", root / "outputs", ordinary=0)
    paths = [shots.output_root / row["file_path"] for row in shots.rows]
    prompt_ids = [row["prompt_id"] for row in shots.rows]
    plain = Image.open(io.BytesIO(contact_sheet(paths, thumb=64, columns=5)))
    sheet = Image.open(io.BytesIO(contact_sheet(paths, thumb=64, columns=5, labels=prompt_ids))).convert("L")
    assert plain.size == (5 * 64, 2 * 64) and sheet.size == (5 * 64, 2 * (64 + LABEL_HEIGHT))

    def label(position: int) -> bytes:
        x, y = (position % 5) * 64, (position // 5) * (64 + LABEL_HEIGHT) + 64
        return sheet.crop((x, y, x + 64, y + LABEL_HEIGHT)).tobytes()

    assert all(min(label(i)) < 128 for i in range(len(paths))), "text under every tile"
    assert prompt_ids[:3] == ["cat"] * 3 and label(0) == label(1) == label(2) != label(3)
    with pytest.raises(ValueError, match="2 labels for 10 images"):
        contact_sheet(paths, labels=["a", "b"])
