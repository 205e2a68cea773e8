"""A backfill of many partitions launched as the Dagster UI launches it (run by hand, not in CI):

    .venv/bin/python -m benchmarks.backfill --partitions 20

It makes a fresh DAGSTER_HOME (with the local instance configuration `flux-pipeline run`
writes; `--bare-instance` leaves it empty, as before there was one) and a data folder of
`--partitions` prompt tables of `--rows` small rows each, starts the fal emulator in its own
process (FAL_KEY and the FAL_*_URL variables point the code location at it, so its
`/_emulator/stats` counts what every run billed), then `dagster-webserver` and `dagster-daemon`
on the workspace.yaml of `--repo` (default: this repository). Through the webserver's GraphQL
API it adds the partitions and launches a backfill of the `build_dataset` job (the
`launchPartitionBackfill` mutation of the job's launch dialog), waits for it, and prints:

- per partition run: seconds queued (created → launched by the daemon), starting (launched →
  its process runs the job) and running (started → ended);
- the whole backfill: seconds from the mutation until its last run ended;
- the emulator's billed images (and peak requests in flight) against the images cataloged.

With the emulator's latency at 0.05 s a run spends well under a second in fal calls, so a run's
seconds are its overhead. `--repo` measures another checkout (e.g. an older commit exported with
`git archive`), whose `flux_pipeline` then goes first on PYTHONPATH."""

from __future__ import annotations

import argparse
import json
import os
import signal
import statistics
import sys
import tempfile
import time
from pathlib import Path

from upath import UPath

from benchmarks.throughput import KEY, start_emulator
from flux_pipeline.dataset.catalog.table import read_catalog
from flux_pipeline.instance import write_local_instance
from flux_pipeline_tests.dataset_fixtures import write_table
from flux_pipeline_tests.local_deployment import REPO, LocalDeployment


def summary(seconds: list[float]) -> dict:
    return {
        "median": round(statistics.median(seconds), 1),
        "min": round(min(seconds), 1),
        "max": round(max(seconds), 1),
    }


def backfill(args: argparse.Namespace, root: Path) -> dict:
    home, data = root / "dagster_home", root / "data"
    home.mkdir()
    if not args.bare_instance:
        write_local_instance(home)
    keys = [f"table-{i:02d}" for i in range(args.partitions)]
    for key in keys:
        write_table(data / "prompts" / f"{key}.parquet", args.rows, prefix=f"{key}-")
    emulator = start_emulator(args.latency, tls_folder=None)
    env = _code_location_env(emulator.url, data, args.repo)
    try:
        with LocalDeployment(home, env, repo=args.repo) as deployment:
            deployment.add_partitions("prompt_tables", keys)
            started = time.time()
            backfill_id = deployment.launch_job_backfill(
                "build_dataset", deployment.job_assets("build_dataset"), keys
            )
            status = deployment.wait_for_backfill(backfill_id, args.timeout)
            runs = deployment.runs({"dagster/backfill": backfill_id})
            launched = {run.run_id: deployment.launched(run.run_id) for run in runs}
        billed = emulator.stats()
    finally:
        emulator.process.terminate()
        emulator.process.wait()
    cataloged = len(read_catalog(UPath(data / "catalog")))
    return _figures(args, status, runs, launched, started, billed, cataloged)


def _code_location_env(url: str, data: Path, repo: Path) -> dict[str, str]:
    """The code location pointed at the emulator at `url` (the real-fal code path) and at `data`."""
    return {
        "FAL_KEY": KEY,
        "FAL_QUEUE_URL": url,
        "FAL_RUN_URL": f"{url}/run",
        "FAL_STORAGE_URL": url,
        "FAL_API_URL": url,
        "FLUX_DATA_DIR": str(data),
        "PYTHONPATH": os.pathsep.join(filter(None, [str(repo), os.environ.get("PYTHONPATH")])),
    }


def _figures(args, status, runs, launched: dict, started: float, billed: dict, cataloged: int) -> dict:
    return {
        "repo": str(args.repo),
        "partitions": args.partitions,
        "rows_per_table": args.rows,
        "emulator_latency_s": args.latency,
        "backfill_status": status,
        "runs_succeeded": sum(run.status == "SUCCESS" for run in runs),
        "backfill_seconds": round(max(run.ended for run in runs) - started, 1),
        "run_seconds": summary([run.seconds for run in runs]),
        "launched_to_end_seconds": summary([run.ended - launched[run.run_id] for run in runs]),
        "queued_seconds": summary([launched[run.run_id] - run.created for run in runs]),
        "per_partition": {
            run.partition: {
                "queued": round(launched[run.run_id] - run.created, 1),
                "starting": round(run.started - launched[run.run_id], 1),
                "ran": round(run.seconds, 1),
            }
            for run in sorted(runs, key=lambda run: run.partition)
        },
        "images_billed": billed["images_billed"],
        "images_cataloged": cataloged,
        "peak_requests_in_flight": billed["peak_in_flight"],
        "load_average": os.getloadavg(),
    }


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--partitions", type=int, default=20)
    parser.add_argument("--rows", type=int, default=2, help="prompt rows (images) per table")
    parser.add_argument("--latency", type=float, default=0.05, help="seconds each emulated request runs")
    parser.add_argument("--timeout", type=float, default=3600)
    parser.add_argument("--repo", type=Path, default=REPO, help="the checkout whose workspace to load")
    parser.add_argument("--bare-instance", action="store_true", help="an empty dagster.yaml")
    args = parser.parse_args()
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(1))  # stop the deployment and emulator on the way out
    with tempfile.TemporaryDirectory(prefix="flux-backfill-") as root:
        result = backfill(args, Path(root))
    print(json.dumps(result, indent=2))
    return 0 if result["images_billed"] == result["images_cataloged"] else 1


if __name__ == "__main__":
    sys.exit(main())
