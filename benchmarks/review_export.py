"""What a changed decision costs (run by hand, not in CI):

    .venv/bin/python benchmarks/review_export.py --images 2000

Writes a catalog partition of `--images` small real images (the test fixture's), times recording
decisions in the SQLite log, reading the decisions in force, and exporting the partition before and
after a tenth of the images are rejected (default filters, near-duplicate hashing included)."""

from __future__ import annotations

import argparse
import tempfile
import time

from upath import UPath

from flux_pipeline.dataset.catalog.decisions import DecisionLog
from flux_pipeline.dataset.export import export_partition
from flux_pipeline.dataset.files.layout import DatasetLayout
from flux_pipeline_tests.catalog_fixtures import PARTITION, make_shots


def timed(label: str, work):
    start = time.perf_counter()
    result = work()
    print(f"{label}: {time.perf_counter() - start:.3f} s")
    return result


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--images", type=int, default=2000)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as folder:
        layout = DatasetLayout(UPath(folder))
        shots, _ = timed("catalog", lambda: make_shots(layout.catalog_dir, layout.outputs_dir, args.images))
        ids = [row["image_id"] for row in shots.rows]
        export = lambda decisions: (
            export_partition(
                layout.catalog_dir, layout.outputs_dir, layout.exports_dir, PARTITION, None, decisions
            ).manifest
        )
        timed("export, no decisions", lambda: export({}))
        with DecisionLog(f"{folder}/ledger.sqlite") as log:
            rejects = ids[::10]
            timed(
                f"record {len(rejects)} decisions",
                lambda: [log.record(PARTITION, i, "reject", "bench", "artifact") for i in rejects],
            )
            latest = timed("read decisions in force", lambda: log.latest(PARTITION))
        decisions = {image: entry["decision"] for image, entry in latest.items()}
        manifest = timed("re-export after the change", lambda: export(decisions))
        print(f"exported {manifest.exported} of {manifest.catalog_rows}, removed {manifest.removed}")


if __name__ == "__main__":
    main()
