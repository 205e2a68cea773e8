"""The review page in a real browser: chromium (playwright) curates a catalog partition with the
keyboard against the real server; the decisions land in the log (SQLite, and PostgreSQL), and the
training export, loaded with `datasets` and `webdataset`, no longer has the rejected images."""

from __future__ import annotations

import httpx
import pytest
import webdataset
from datasets import load_dataset
from upath import UPath

from flux_pipeline.dataset.catalog.decisions import DecisionLog, decision_counts, decisions_version
from flux_pipeline.dataset.export import ExportOptions, export_partition, version_folder
from flux_pipeline.dataset.files.layout import DatasetLayout
from flux_pipeline.fal.http_server import BackgroundServer
from flux_pipeline.review.app import Review, make_app

from .catalog_fixtures import PARTITION, make_shots

NO_FILTERS = ExportOptions(drop_nsfw=False, drop_exact_duplicates=False, near_duplicate_distance=None)


@pytest.fixture
def reviewed(tmp_path):
    layout = DatasetLayout(UPath(tmp_path))
    shots, cases = make_shots(layout.catalog_dir, layout.outputs_dir, ordinary=3)
    log = DecisionLog(tmp_path / "ledger.sqlite")
    with log, BackgroundServer(make_app(Review(layout, log, "alice"))) as server:
        yield layout, shots, cases, log, server


def test_a_reviewer_curates_with_the_keyboard_and_the_export_drops_the_rejected(browser, reviewed):
    layout, shots, cases, log, server = reviewed
    page = browser.new_page(viewport={"width": 1300, "height": 900})
    page.goto(f"{server.url}/?partition={PARTITION}")
    page.wait_for_selector("body[data-ready=true]")
    cards = page.locator(".card")
    assert cards.count() == len(shots.rows)
    assert page.locator("#progress").inner_text() == f"0 / {len(shots.rows)} decided"
    first, second, third = (cards.nth(i).get_attribute("data-image-id") for i in range(3))
    assert (first, [second, third]) == (cases.parent, cases.variations), "variations beside their parent"

    page.keyboard.press("k")  # keep the parent, move on
    page.keyboard.press("2")  # reason "off-prompt"
    page.keyboard.press("r")  # reject the first variation
    page.keyboard.press("r")  # reject the second
    page.keyboard.press("u")  # undo: the second is undecided again
    page.keyboard.press("ArrowRight")
    page.keyboard.press("r")  # reject the NSFW card instead
    fourth = cards.nth(3).get_attribute("data-image-id")
    page.wait_for_selector(f'[data-image-id="{fourth}"][data-decision="reject"]', timeout=10000)
    assert page.locator("#progress").inner_text() == f"3 / {len(shots.rows)} decided"
    rejected = {cases.variations[0], fourth}
    shown = page.locator('.card[data-decision="reject"]')
    assert set(shown.evaluate_all("cards => cards.map(c => c.dataset.imageId)")) == rejected
    assert {i for i, e in log.latest(PARTITION).items() if e["decision"] == "reject"} == rejected
    assert log.latest(PARTITION)[cases.parent]["decision"] == "keep"
    assert cases.variations[1] not in log.latest(PARTITION)
    entries = log.entries(PARTITION)
    assert [e["decision"] for e in entries] == ["keep", "reject", "reject", "undecided", "reject"]
    assert {e["reviewer"] for e in entries} == {"alice"}
    assert entries[1]["reason"] == "off-prompt"
    assert list(log.frame(PARTITION).columns)[:3] == ["decision_id", "decided_at", "reviewer"]

    page.select_option("#filter", "reject")
    assert page.locator(".card:not(.hidden)").count() == 2
    page.keyboard.press("Enter")
    assert page.locator("#large").is_visible()
    page.screenshot(path=str(layout.root / "review.png"))
    page.close()

    decisions = {image: e["decision"] for image, e in log.latest(PARTITION).items()}
    manifest = export_partition(
        layout.catalog_dir, layout.outputs_dir, layout.exports_dir, PARTITION, NO_FILTERS, decisions
    ).manifest
    assert manifest.removed["rejected"] == 2 and manifest.exported == len(shots.rows) - 2
    folder = version_folder(layout.exports_dir, manifest)
    hf = load_dataset("parquet", data_files=str(folder / "hf/data/*.parquet"), split="train")
    tars = sorted(str(p) for p in (folder / "webdataset").glob("*.tar"))
    shard_ids = {sample["__key__"] for sample in webdataset.WebDataset(tars, shardshuffle=False)}
    assert set(hf["image_id"]) == shard_ids == {r["image_id"] for r in shots.rows} - rejected

    only_kept = export_partition(
        layout.catalog_dir,
        layout.outputs_dir,
        layout.exports_dir,
        PARTITION,
        NO_FILTERS.model_copy(update={"only_kept": True}),
        decisions,
    ).manifest
    assert only_kept.exported == 1 and only_kept.removed["not_kept"] == len(shots.rows) - 3


def test_bad_requests_are_refused_with_a_message_and_record_nothing(reviewed):
    _, _, cases, log, server = reviewed
    url = f"{server.url}/api/partitions/{PARTITION}/decisions"
    own = {"Origin": server.url}
    good = {"image_id": cases.parent, "decision": "reject"}
    cases_ = [
        (httpx.post(url, json=good, headers={"Origin": "http://evil.example"}), 403, "cross-origin"),
        (httpx.post(url, json=good), 403, "Origin None"),
        (httpx.post(url, json=good, headers={**own, "Host": "evil.example"}), 403, "Host 'evil.example'"),
        (httpx.post(url, content=b"image_id=x", headers={**own, "Content-Type": "text/plain"}), 403, "json"),
        (httpx.post(url, json={**good, "image_id": "nope"}, headers=own), 404, "image_id 'nope'"),
        (httpx.post(f"{server.url}/api/partitions/other/decisions", json=good, headers=own), 404, "'other'"),
        (httpx.post(url, json={**good, "decision": "maybe"}, headers=own), 422, "decision 'maybe'"),
    ]
    for response, status, message in cases_:
        assert response.status_code == status and message in response.json()["error"], response.text
    assert log.entries(PARTITION) == []
    assert httpx.post(url, json=good, headers=own).status_code == 200
    assert len(log.entries(PARTITION)) == 1
    assert server.host == "127.0.0.1"


@pytest.mark.parametrize("store", ["sqlite", "postgres"])
def test_the_log_keeps_every_decision_of_two_reviewers_at_once(store, tmp_path, request):
    from concurrent.futures import ThreadPoolExecutor

    location = request.getfixturevalue("postgres_url") if store == "postgres" else tmp_path / "l.sqlite"
    logs = [DecisionLog(location), DecisionLog(location)]
    try:
        before = decisions_version(logs[0].entries("p"))
        with ThreadPoolExecutor(8) as pool:
            list(
                pool.map(
                    lambda i: logs[i % 2].record("p", f"img{i}", "reject" if i % 3 else "keep", f"r{i % 2}"),
                    range(200),
                )
            )
        entries = logs[1].entries("p")
        assert len(entries) == 200 and len({e["decision_id"] for e in entries}) == 200
        counts, by_reason = decision_counts(entries, {f"img{i}" for i in range(210)})
        assert counts == {"kept": 67, "rejected": 133, "undecided": 10} and by_reason == {"(none)": 133}
        assert decisions_version(entries) != before
    finally:
        for log in logs:
            log.close()
