"""Peak memory of one partition run as the partition grows (run by hand, not in CI):

    .venv/bin/python benchmarks/partition_memory.py --rows 500 2000 8000

Each size runs the whole `build_dataset` job for one partition of small (64x64) images in a
fresh process against an emulator in another process, and reports that process's peak RSS."""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from benchmarks.throughput import start_emulator

RUN = """
import json, resource, sys, time
from pathlib import Path
import dagster as dg
from flux_pipeline.dataset.settings import DatasetSettings
from flux_pipeline.definitions import make_definitions
from flux_pipeline.fal.endpoints import FalUrls
from flux_pipeline.resources import FalResource
url, root = sys.argv[1], Path(sys.argv[2])
urls = FalUrls.single_base(url)
fal = FalResource(key="benchmark-key", queue_url=urls.queue, run_url=urls.run, storage_url=urls.storage,
                  max_concurrency=16)
dataset = DatasetSettings(prompts_dir=str(root / "prompts"), output_root=str(root / "outputs"),
                          catalog_root=str(root / "catalog"), reports_dir=str(root / "reports"),
                          ledger_path=str(root / "ledger.sqlite"))
defs = make_definitions(fal, dataset)
started = time.perf_counter()
with dg.DagsterInstance.ephemeral() as instance:
    instance.add_dynamic_partitions("prompt_tables", ["big"])
    result = defs.resolve_job_def("build_dataset").execute_in_process(partition_key="big", instance=instance)
print(json.dumps({"success": result.success, "seconds": round(time.perf_counter() - started, 1),
                  "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)}))
"""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, nargs="+", default=[500, 2000, 8000])
    args = parser.parse_args()
    process, url = start_emulator(0.01)
    try:
        for rows in args.rows:
            with tempfile.TemporaryDirectory() as folder:
                root = Path(folder)
                (root / "prompts").mkdir()
                pq.write_table(pa.Table.from_pylist([
                    {"prompt_id": f"p{i:06d}", "prompt": f"scene {i}", "width": 64, "height": 64, "seed": i}
                    for i in range(rows)]), root / "prompts" / "big.parquet")
                done = subprocess.run([sys.executable, "-c", RUN, url, str(root)], capture_output=True, text=True)
                report = json.loads(done.stdout.strip().splitlines()[-1])
                print(json.dumps({"rows": rows, **report}))
    finally:
        process.terminate()


if __name__ == "__main__":
    main()
