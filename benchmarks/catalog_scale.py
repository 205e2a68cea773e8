"""The catalog at scale (run by hand, not in CI):

    .venv/bin/python benchmarks/catalog_scale.py --rows 1000000 --partitions 100

Writes `--partitions` catalog partitions of synthetic rows, then times writing one partition
again, reading the whole catalog with pandas, and computing the cost report; prints each time
and the peak RSS of this process."""

from __future__ import annotations

import argparse
import json
import resource
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pyarrow as pa

from flux_pipeline.dataset.catalog.table import CATALOG_SCHEMA, cost_report, read_catalog, replace_partition


def synthetic_partition(partition: str, rows: int, rng: np.random.Generator) -> pa.Table:
    sizes = rng.choice([512, 768, 1024, 1536], size=(rows, 2))
    megapixels = np.ceil(sizes[:, 0] * sizes[:, 1] / 1024**2).astype("int32")
    ids = [f"{partition}-{i:07d}" for i in range(rows)]
    columns = {
        "image_id": ids,
        "partition": [partition] * rows,
        "prompt_id": ids,
        "prompt": ["a prompt"] * rows,
        "returned_prompt": ["a prompt"] * rows,
        "endpoint": ["fal-ai/flux-pro/v1.1"] * rows,
        "request_id": ids,
        "backend": np.full(rows, "emulator"),
        "image_index": np.zeros(rows, "int32"),
        "seed": rng.integers(0, 2**32, rows),
        "width": sizes[:, 0].astype("int32"),
        "height": sizes[:, 1].astype("int32"),
        "output_format": ["jpeg"] * rows,
        "content_hash": ["0" * 64] * rows,
        "file_path": [f"{partition}/images/{i}.jpg" for i in ids],
        "file_bytes": rng.integers(10_000, 500_000, rows),
        "nsfw": rng.random(rows) < 0.01,
        "billed_megapixels": megapixels,
        "megapixel_size": np.full(rows, 1024**2),
        "billing_unit": np.full(rows, "megapixels"),
        "unit_price": np.full(rows, 0.04),
        "price_source": np.full(rows, "configured"),
        "cost_usd": megapixels * 0.04,
        "parent_image_id": [None] * rows,
        "parent_source": [None] * rows,
        "latency_s": rng.random(rows),
        "run_id": ["run"] * rows,
        "code_version": ["0.1.0"] * rows,
        "created_at": [datetime.now(UTC)] * rows,
    }
    return pa.table(columns, schema=CATALOG_SCHEMA)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--partitions", type=int, default=100)
    args = parser.parse_args()
    per_partition = args.rows // args.partitions
    rng = np.random.default_rng(0)
    with tempfile.TemporaryDirectory() as folder:
        root = Path(folder)
        started = time.perf_counter()
        for p in range(args.partitions):
            replace_partition(
                root, f"part{p:03d}", synthetic_partition(f"part{p:03d}", per_partition, rng).to_batches()
            )
        build_s = time.perf_counter() - started
        table = synthetic_partition("part000", per_partition, rng)
        started = time.perf_counter()
        replace_partition(root, "part000", table.to_batches())
        write_s = time.perf_counter() - started
        started = time.perf_counter()
        catalog = read_catalog(root)
        read_s = time.perf_counter() - started
        rows = len(catalog)
        del catalog
        started = time.perf_counter()
        report = cost_report(root)
        report_s = time.perf_counter() - started
        size_mb = sum(f.stat().st_size for f in root.rglob("*.parquet")) / 1e6
    print(
        json.dumps(
            {
                "rows": rows,
                "partitions": args.partitions,
                "catalog_mb_on_disk": round(size_mb, 1),
                "build_all_partitions_s": round(build_s, 2),
                "write_one_partition_s": round(write_s, 3),
                "read_whole_catalog_s": round(read_s, 2),
                "cost_report_s": round(report_s, 2),
                "report_total_cost_usd": float(report.iloc[-1]["cost_usd"]),
                "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
            },
            indent=2,
        )
    )


if __name__ == "__main__":
    main()
