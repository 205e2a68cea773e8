"""A browsable static gallery of one catalog partition: `write_gallery` writes its pages (the first
by default `<output_root>/<partition>/gallery.html`, beside the images, then `gallery-p2.html`,
… of about IMAGES_PER_PAGE images each, linked by a page bar), which link the image files
relatively, so they open from a local folder or an object-storage bucket with no server. Each image
is a card: its file as a lazily loaded thumbnail sized by CSS, labelled with prompt, seed, size,
NSFW flag and cost; each generated image is followed by its Redux variations (a group is never
split across pages); a checkbox (plain JavaScript) hides the NSFW cards. Everything from the
catalog is HTML-escaped. Cards carry `data-image-id`, `data-nsfw` and, for variations,
`data-parent-image-id`. Only a page's rows are held as Python objects at once; pages left from a
larger gallery are removed."""

from __future__ import annotations

import posixpath
from collections import defaultdict
from html import escape
from urllib.parse import quote

import pyarrow as pa
import pyarrow.compute as pc
from upath import UPath

from ..files.storage import write_bytes_atomically
from .table import iter_partition

GALLERY_FILE = "gallery.html"
IMAGES_PER_PAGE = 200
"""A page holds whole groups until it has at least this many images."""
COLUMNS = [
    "image_id",
    "prompt_id",
    "prompt",
    "seed",
    "width",
    "height",
    "nsfw",
    "cost_usd",
    "file_path",
    "parent_image_id",
]

PAGE = """<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<title>{title}</title>
<style>
body {{ font-family: system-ui, sans-serif; margin: 1rem; background: #fafafa; }}
main {{ display: flex; flex-wrap: wrap; gap: .75rem; align-items: flex-start; }}
.group {{ display: flex; flex-wrap: wrap; gap: .5rem; padding: .5rem;
          border: 1px solid #ddd; border-radius: 6px; background: #fff; }}
.variations {{ display: flex; flex-wrap: wrap; gap: .5rem; padding-left: .5rem;
               border-left: 3px solid #9ab; }}
.card {{ width: 200px; margin: 0; font-size: 12px; }}
.card img {{ width: 200px; height: 160px; object-fit: contain; background: #eee; display: block; }}
.card .prompt {{ margin: .25rem 0; overflow-wrap: anywhere; }}
.card dl {{ display: grid; grid-template-columns: auto 1fr; gap: 0 .5rem; margin: 0; color: #555; }}
.card dd {{ margin: 0; }}
.card[data-nsfw="true"] {{ outline: 2px solid #c33; }}
body.hide-nsfw .card[data-nsfw="true"] {{ display: none; }}
nav.pages {{ margin: .5rem 0; }}
nav.pages a, nav.pages span {{ margin-right: .5rem; }}
</style>
</head>
<body>
<h1>{title}</h1>
<p class="summary">{summary}</p>
<nav class="pages">{pages}</nav>
<label><input type="checkbox" id="hide-nsfw"> hide NSFW images</label>
<main>
{groups}
</main>
<nav class="pages">{pages}</nav>
<script>
const hideNsfw = document.getElementById("hide-nsfw");
hideNsfw.checked = sessionStorage.getItem("hide-nsfw") === "1";  // kept from page to page
const apply = () => document.body.classList.toggle("hide-nsfw", hideNsfw.checked);
hideNsfw.addEventListener("change", () => {{
  sessionStorage.setItem("hide-nsfw", hideNsfw.checked ? "1" : "0");
  apply();
}});
apply();
</script>
</body>
</html>
"""


def write_gallery(
    catalog_root: UPath, output_root: UPath, partition: str, destination: UPath | None = None
) -> UPath:
    """Writes the pages (each whole or not at all) and returns where the first is. `destination`
    must be on the same filesystem (and bucket) as `output_root`, or the links could not be relative."""
    destination = destination or output_root / partition / GALLERY_FILE
    table = pa.Table.from_batches(list(iter_partition(catalog_root, partition, COLUMNS))).combine_chunks()
    pages = paged(image_groups(table.select(["image_id", "parent_image_id"]).to_pylist()))
    nsfw = pc.sum(table["nsfw"].cast(pa.int64())).as_py() or 0
    cost = pc.sum(table["cost_usd"]).as_py() or 0.0
    summary = escape(f"{table.num_rows} images, {nsfw} flagged NSFW, ${cost:.4f}")
    title = escape(f"{partition}: generated images")
    paths = [page_path(destination, number) for number in range(1, len(pages) + 1)]
    for number, groups in enumerate(pages, start=1):
        rows = table.take([index for group in groups for index in group]).to_pylist()
        cards = iter(rows)
        html = "\n".join(
            _group([next(cards) for _ in group], paths[number - 1], output_root) for group in groups
        )
        bar = _page_bar(paths, number)
        page = PAGE.format(title=title, summary=summary, pages=bar, groups=html)
        write_bytes_atomically(paths[number - 1], page.encode())
    _remove_pages_after(destination, len(pages))
    return destination


def page_path(first: UPath, number: int) -> UPath:
    """Page `number` of the gallery whose first page is `first`."""
    return first if number == 1 else first.with_name(f"{first.stem}-p{number}{first.suffix}")


def paged(groups: list[list[int]], images_per_page: int = IMAGES_PER_PAGE) -> list[list[list[int]]]:
    """The groups (of row indices) cut into pages of whole groups, each of at least
    `images_per_page` images but the last; one empty page when there are none."""
    pages: list[list[list[int]]] = [[]]
    count = 0
    for group in groups:
        if count >= images_per_page:
            pages.append([])
            count = 0
        pages[-1].append(group)
        count += len(group)
    return pages


def _page_bar(paths: list[UPath], number: int) -> str:
    """Page `number`'s links to the first, previous, next and last page, and where it is."""
    link = lambda target, text: (
        f'<a href="{escape(relative_link(paths[number - 1], paths[target - 1]))}">{text}</a>'
    )
    last = len(paths)
    parts = [f"<span>page {number} of {last}</span>"]
    if number > 1:
        parts += [link(1, "first"), link(number - 1, "previous")]
    if number < last:
        parts += [link(number + 1, "next"), link(last, "last")]
    return "".join(parts)


def _remove_pages_after(first: UPath, count: int) -> None:
    """Pages a larger gallery left behind."""
    prefix = f"{first.stem}-p"
    for path in first.parent.glob(f"{prefix}*{first.suffix}"):
        number = path.stem.removeprefix(prefix)
        if number.isdigit() and int(number) > count:
            path.unlink()


def image_groups(rows: list[dict]) -> list[list[int]]:
    """The rows' indices grouped: each image that varies no image of the partition, followed by the
    Redux variations descending from it, in catalog order (rows: image_id, parent_image_id)."""
    index_of = {row["image_id"]: index for index, row in enumerate(rows)}

    def root(index: int) -> int:
        seen = {index}
        while (parent := index_of.get(rows[index]["parent_image_id"])) is not None and parent not in seen:
            index = parent
            seen.add(parent)
        return index

    members: dict[int, list[int]] = defaultdict(list)
    for index in range(len(rows)):
        members[root(index)].append(index)
    return [[first, *(index for index in group if index != first)] for first, group in members.items()]


def relative_link(page: UPath, target: UPath) -> str:
    """The URL of `target` relative to the page's folder."""
    if (page.protocol, page.anchor) != (target.protocol, target.anchor):
        raise ValueError(f"{page} cannot link {target} relatively: not on the same filesystem")
    return quote(posixpath.relpath(target.path, posixpath.dirname(page.path)))


def _group(group: list[dict], page: UPath, output_root: UPath) -> str:
    generated, *variations = (
        _card(row, relative_link(page, output_root / row["file_path"])) for row in group
    )
    nested = f'\n<div class="variations">\n{"".join(variations)}</div>' if variations else ""
    root = escape(group[0]["image_id"])
    return f'<section class="group" data-root-image-id="{root}">\n{generated}{nested}\n</section>'


def _card(row: dict, link: str) -> str:
    prompt = escape(row["prompt"] or "")
    parent = row["parent_image_id"]
    labels = {
        "seed": row["seed"],
        "size": f"{row['width']}×{row['height']}",
        "NSFW": "yes" if row["nsfw"] else "no",
        "cost": f"${row['cost_usd'] or 0:.4f}",
    }
    label_html = "".join(
        f'<dt>{name}</dt><dd class="{name.lower()}">{escape(str(value))}</dd>'
        for name, value in labels.items()
    )
    return (
        f'<figure class="card" data-image-id="{escape(row["image_id"])}" '
        f'data-prompt-id="{escape(row["prompt_id"] or "")}" '
        f'data-nsfw="{"true" if row["nsfw"] else "false"}"'
        + (f' data-parent-image-id="{escape(parent)}"' if parent else "")
        + ">\n"
        f'<a href="{escape(link)}"><img src="{escape(link)}" alt="{prompt}" loading="lazy" '
        f'width="{int(row["width"] or 0)}" height="{int(row["height"] or 0)}"></a>\n'
        f'<figcaption><p class="prompt">{prompt}</p><dl>{label_html}</dl></figcaption>\n</figure>\n'
    )
