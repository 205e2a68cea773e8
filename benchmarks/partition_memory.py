"""Peak memory of one partition run as the partition grows (run by hand, not in CI):

    .venv/bin/python -m benchmarks.partition_memory --rows 500 2000 8000 20000

Each size runs the whole `build_dataset` job for one partition of small (64x64) images in a
fresh process with a SQLite-backed Dagster instance (as `flux-pipeline run` uses; the ephemeral
in-memory instance keeps every event in memory by design), against an emulator in another
process. It samples that process's RSS every 0.1 s and reports the peak of the whole run and
the peak while each step ran."""

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
import json, resource, sys, threading, time
from pathlib import Path
import dagster as dg
from flux_pipeline.definitions import make_definitions
from flux_pipeline.fal.endpoints import FalUrls
from flux_pipeline.resources import DatasetResource, FalResource
url, root = sys.argv[1], Path(sys.argv[2])
urls = FalUrls.single_base(url)
fal = FalResource(key="benchmark-key", queue_url=urls.queue, run_url=urls.run, storage_url=urls.storage,
                  max_concurrency=16)
dataset = DatasetResource(data_dir=str(root))
defs = make_definitions(fal, dataset)
samples = []
def sample():
    while True:
        samples.append((time.time(), int(open("/proc/self/statm").read().split()[1]) * 4096 / 2**20))
        time.sleep(0.1)
threading.Thread(target=sample, daemon=True).start()
(root / "dagster_home").mkdir()
started = time.perf_counter()
with dg.DagsterInstance.local_temp(str(root / "dagster_home")) as instance:
    instance.add_dynamic_partitions("prompt_tables", ["big"])
    result = defs.resolve_job_def("build_dataset").execute_in_process(partition_key="big", instance=instance)
    seconds = time.perf_counter() - started
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # before reading the run's events back
    begun, steps = {}, {}
    for entry in instance.all_logs(result.run_id):
        kind = entry.dagster_event.event_type_value if entry.dagster_event else None
        if kind == "STEP_START":
            begun[entry.step_key] = entry.timestamp
        elif kind == "STEP_SUCCESS":
            during = [rss for t, rss in samples if begun[entry.step_key] <= t <= entry.timestamp + 0.1]
            steps[entry.step_key] = round(max(during)) if during else None
print(json.dumps({"success": result.success, "seconds": round(seconds, 1),
                  "peak_rss_mb": round(peak, 1),
                  "step_peak_rss_mb": steps}))
"""


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--rows", type=int, nargs="+", default=[500, 2000, 8000, 20000])
    args = parser.parse_args()
    process, url = start_emulator(0.01)
    try:
        for rows in args.rows:
            with tempfile.TemporaryDirectory() as folder:
                root = Path(folder)
                (root / "prompts").mkdir()
                pq.write_table(
                    pa.Table.from_pylist(
                        [
                            {
                                "prompt_id": f"p{i:06d}",
                                "prompt": f"scene {i}",
                                "width": 64,
                                "height": 64,
                                "seed": i,
                            }
                            for i in range(rows)
                        ]
                    ),
                    root / "prompts" / "big.parquet",
                )
                done = subprocess.run(
                    [sys.executable, "-c", RUN, url, str(root)], capture_output=True, text=True
                )
                if done.returncode:
                    raise SystemExit(done.stderr[-3000:])
                report = json.loads(done.stdout.strip().splitlines()[-1])
                print(json.dumps({"rows": rows, **report}))
    finally:
        process.terminate()


if __name__ == "__main__":
    main()
