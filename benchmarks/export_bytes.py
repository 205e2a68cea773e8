"""Bytes on disk per image for each export choice (run by hand, not in CI):

    .venv/bin/python benchmarks/export_bytes.py --images 500

A catalog partition of `--images` photo-like 1024×768 JPEGs (the emulator's `photo` renderer,
about 250 KB each, as fal's are), exported once per choice of formats with no filter; prints the
stored images' bytes per image, each export's bytes per image, and the whole disk (stored images
plus export) per image, with its time."""

from __future__ import annotations

import argparse
import json
import tempfile
import time

from upath import UPath

from flux_pipeline.dataset.export import ExportOptions, export_partition, version_folder
from flux_pipeline.dataset.files.layout import DatasetLayout
from flux_pipeline.emulator.images import render_image
from flux_pipeline_tests.catalog_fixtures import PARTITION, Shots

CHOICES = {
    "webdataset + hf_parquet (default)": ("webdataset", "hf_parquet"),
    "webdataset": ("webdataset",),
    "hf_parquet": ("hf_parquet",),
    "hf_paths": ("hf_paths",),
}
NO_FILTERS = {
    "drop_nsfw": False,
    "drop_exact_duplicates": False,
    "near_duplicate_distance": None,
    "validation_fraction": 0.1,
}


def folder_bytes(folder: UPath) -> int:
    return sum(path.stat().st_size for path in folder.rglob("*") if path.is_file())


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--images", type=int, default=500)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as folder:
        layout = DatasetLayout(UPath(folder))
        shots = Shots(layout.catalog_dir, layout.outputs_dir)
        for i in range(args.images):
            shots.add(f"p{i:05d}", render_image(i.to_bytes(32, "big"), 1024, 768, "jpeg", "photo"))
        shots.write_catalog(batch_rows=256)
        stored = folder_bytes(layout.outputs_dir / PARTITION)
        results = {"images": args.images, "stored_bytes_per_image": stored // args.images}
        for name, formats in CHOICES.items():
            options = ExportOptions(formats=formats, **NO_FILTERS)
            started = time.perf_counter()
            exported = export_partition(
                layout.catalog_dir, layout.outputs_dir, layout.exports_dir, PARTITION, options
            )
            seconds = time.perf_counter() - started
            written = folder_bytes(version_folder(layout.exports_dir, exported.manifest))
            results[name] = {
                "export_bytes_per_image": written // args.images,
                "disk_bytes_per_image": (stored + written) // args.images,
                "copies_of_each_image": round((stored + written) / stored, 2),
                "export_s": round(seconds, 2),
            }
    print(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
