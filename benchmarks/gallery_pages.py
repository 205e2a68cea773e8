"""The paged gallery at size (run by hand, not in CI):

    .venv/bin/python benchmarks/gallery_pages.py --images 10000 100000

For each size, in a fresh process: a catalog partition of that many synthetic rows (a tenth of
them Redux variations of the row before), then `write_gallery`; prints the time to write every
page, the pages, the first page's bytes, the largest page's and the peak RSS of the process."""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time

import pyarrow as pa
from upath import UPath

from flux_pipeline.dataset.catalog.gallery import write_gallery
from flux_pipeline.dataset.catalog.table import CATALOG_SCHEMA, replace_partition

PARTITION = "big"


def synthetic_rows(images: int) -> pa.Table:
    """Catalog rows the gallery reads (the other columns null)."""
    ids = [f"image-{i:07d}" for i in range(images)]
    values = {
        "image_id": ids,
        "prompt_id": [f"p{i // 10 * 10:07d}" if i % 10 == 9 else f"p{i:07d}" for i in range(images)],
        "prompt": [f"a synthetic scene, number {i}, in soft morning light" for i in range(images)],
        "seed": list(range(images)),
        "width": [1024] * images,
        "height": [768] * images,
        "nsfw": [i % 97 == 0 for i in range(images)],
        "cost_usd": [0.04] * images,
        "file_path": [f"{PARTITION}/images/{image}.jpg" for image in ids],
        "parent_image_id": [ids[i - 1] if i % 10 == 9 else None for i in range(images)],
    }
    columns = [
        pa.array(values[field.name], field.type) if field.name in values else pa.nulls(images, field.type)
        for field in CATALOG_SCHEMA
    ]
    return pa.Table.from_arrays(columns, schema=CATALOG_SCHEMA)


def one_size(images: int) -> dict:
    with tempfile.TemporaryDirectory() as folder:
        root = UPath(folder)
        replace_partition(root / "catalog", PARTITION, synthetic_rows(images).to_batches(max_chunksize=8192))
        started = time.perf_counter()
        first = write_gallery(root / "catalog", root / "outputs", PARTITION)
        seconds = time.perf_counter() - started
        pages = list(first.parent.glob("gallery*.html"))
        return {
            "images": images,
            "write_all_pages_s": round(seconds, 2),
            "pages": len(pages),
            "first_page_kb": round(first.stat().st_size / 1024, 1),
            "largest_page_kb": round(max(page.stat().st_size for page in pages) / 1024, 1),
            "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
        }


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--images", type=int, nargs="+", default=[10_000, 100_000])
    parser.add_argument("--in-process", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.in_process:
        print(json.dumps(one_size(args.images[0])))
        return
    for images in args.images:
        done = subprocess.run(
            [sys.executable, __file__, "--in-process", "--images", str(images)],
            capture_output=True,
            text=True,
            check=True,
        )
        print(done.stdout.strip())


if __name__ == "__main__":
    main()
