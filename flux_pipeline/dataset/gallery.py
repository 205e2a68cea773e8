"""A browsable static gallery of one catalog partition: `write_gallery` writes one HTML page (by
default `<output_root>/<partition>/gallery.html`, beside the images) that links the image files
relatively, so it opens from a local folder or an object-storage bucket with no server. Each image is a
card: its file as a lazily loaded thumbnail sized by CSS, labelled with prompt, seed, size, NSFW flag
and cost; each generated image is followed by its Redux variations; a checkbox (plain JavaScript)
hides the NSFW cards. Everything from the catalog is HTML-escaped. Cards carry `data-image-id`,
`data-nsfw` and, for variations, `data-parent-image-id`."""

from __future__ import annotations

import posixpath
from collections import defaultdict
from html import escape
from urllib.parse import quote

from upath import UPath

from .catalog import iter_partition
from .storage import write_bytes_atomically

GALLERY_FILE = "gallery.html"
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
</style>
</head>
<body>
<h1>{title}</h1>
<p class="summary">{summary}</p>
<label><input type="checkbox" id="hide-nsfw"> hide NSFW images</label>
<main>
{groups}
</main>
<script>
const hideNsfw = document.getElementById("hide-nsfw");
const apply = () => document.body.classList.toggle("hide-nsfw", hideNsfw.checked);
hideNsfw.addEventListener("change", apply);
apply();
</script>
</body>
</html>
"""


def write_gallery(
    catalog_root: UPath, output_root: UPath, partition: str, destination: UPath | None = None
) -> UPath:
    """Writes the page (whole or not at all) and returns where. `destination` must be on the same
    filesystem (and bucket) as `output_root`, or the links could not be relative."""
    destination = destination or output_root / partition / GALLERY_FILE
    rows = [row for batch in iter_partition(catalog_root, partition, COLUMNS) for row in batch.to_pylist()]
    groups = "\n".join(_group(group, destination, output_root) for group in image_groups(rows))
    summary = (
        f"{len(rows)} images, {sum(bool(r['nsfw']) for r in rows)} flagged NSFW, "
        f"${sum(r['cost_usd'] or 0 for r in rows):.4f}"
    )
    page = PAGE.format(title=escape(f"{partition}: generated images"), summary=escape(summary), groups=groups)
    write_bytes_atomically(destination, page.encode())
    return destination


def image_groups(rows: list[dict]) -> list[list[dict]]:
    """Each image that varies no image of the partition, followed by the Redux variations descending
    from it, in catalog order."""
    by_id = {row["image_id"]: row for row in rows}

    def root(row: dict) -> str:
        seen = {row["image_id"]}
        while (parent := row["parent_image_id"]) in by_id and parent not in seen:
            row = by_id[parent]
            seen.add(parent)
        return row["image_id"]

    members: dict[str, list[dict]] = defaultdict(list)
    for row in rows:
        members[root(row)].append(row)
    return [
        [by_id[first], *(row for row in group if row["image_id"] != first)]
        for first, group in members.items()
    ]


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
