"""The whole job at dataset size (run by hand, not in CI):

    .venv/bin/python -m benchmarks.scale --sizes 1000:1 10000:10 100000:100 100000:1

Each size is N images over P partitions (N/P rows each, one image per row, 1024x1024 flat images,
emulator latency `--latency`, `--concurrency` requests in flight), built by `flux-pipeline run` on a
fresh data folder and Dagster instance in a fresh process, against the emulator in a process of its
own through FAL_KEY and the FAL_*_URL variables (the real-fal code path); then run again, which
must send nothing. Reported per size: wall time and per image, CPU per image and peak RSS of the
run's process, for the first run and the re-run (with the requests the re-run sent); the slowest
partition's steps; ledger and catalog bytes on disk; Dagster event-log rows per image; and, in
this process, the time of the cost views (the terminal table and cost_report's), the night's plan
and `flux-pipeline spend` (a fresh process). billed == cataloged is asserted."""

from __future__ import annotations

import argparse
import json
import logging
import os
import sqlite3
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pandas as pd

from .throughput import EmulatorProcess, start_emulator
from .whole_job import high_water_mark, project_env

BIN = Path(sys.executable).parent


def write_tables(prompts: Path, images: int, partitions: int) -> list[str]:
    prompts.mkdir(parents=True, exist_ok=True)
    names, per = [f"part{p:03d}" for p in range(partitions)], images // partitions
    for p, name in enumerate(names):
        rows = [
            {"prompt_id": f"r{i:06d}", "prompt": f"scene {p}-{i}", "image_size": "square_hd", "seed": i}
            for i in range(per)
        ]
        pd.DataFrame(rows).to_parquet(prompts / f"{name}.parquet")
    return names


def timed_run(env: dict[str, str], log: Path) -> dict:
    """`flux-pipeline run` over every table, in a process of its own."""
    argv = [str(BIN / "flux-pipeline"), "run"]
    streams = [
        (os.POSIX_SPAWN_OPEN, fd, str(log), os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644) for fd in (1, 2)
    ]
    started = time.time()
    pid = os.posix_spawn(argv[0], argv, env, file_actions=streams)
    peak_kb, (_, status, usage) = high_water_mark(pid)
    if os.waitstatus_to_exitcode(status) != 0:
        raise RuntimeError(f"flux-pipeline run failed:\n{log.read_text()[-3000:]}")
    return {
        "seconds": time.time() - started,
        "cpu_s": usage.ru_utime + usage.ru_stime,
        "peak_rss_mb": round(peak_kb / 1024, 1),
    }


def event_log_rows(dagster_home: Path) -> int:
    rows = 0
    for db in dagster_home.rglob("*.db"):
        with sqlite3.connect(db) as connection:
            if connection.execute("SELECT 1 FROM sqlite_master WHERE name='event_logs'").fetchone():
                rows += connection.execute("SELECT COUNT(*) FROM event_logs").fetchone()[0]
    return rows


def folder_bytes(folder: Path) -> int:
    return sum(path.stat().st_size for path in folder.rglob("*") if path.is_file())


def in_process_timings(folder: Path) -> dict[str, float]:
    """The cost views and the night's plan, as the terminal table, cost_report and the schedule
    compute them, on the built dataset."""
    import dagster as dg

    from flux_pipeline.dataset.costs.cost_report import by_day, by_model, by_partition, by_run, requests_frame
    from flux_pipeline.lib.night import plan_night
    from flux_pipeline.pipeline.resources import dataset_from_env, fal_from_env

    dataset = dataset_from_env(data_dir=str(folder), ledger=str(folder / "ledger" / "requests.sqlite"))
    timings = {}
    started = time.perf_counter()
    with dataset.request_ledger() as ledger:
        requests = requests_frame(ledger.requests())
    by_partition(dataset.layout.catalog_dir, requests)
    timings["cost_table_s"] = time.perf_counter() - started
    started = time.perf_counter()
    for view in (by_run, by_day, by_model):
        view(requests)
    timings["cost_report_views_s"] = timings["cost_table_s"] + time.perf_counter() - started
    with dg.DagsterInstance.from_config(str(folder / "dagster_home")) as instance:
        started = time.perf_counter()
        fal = fal_from_env().process_config_and_initialize()
        night = plan_night(instance, fal, dataset, logging.getLogger("scale"))
        timings["nightly_plan_s"] = time.perf_counter() - started
        assert not night.versions, "every table is built"
    return {name: round(value, 2) for name, value in timings.items()}


def spend_seconds(env: dict[str, str]) -> float:
    """`flux-pipeline spend --backfill ID` from exec to exit (an ID the instance lacks: it looks the
    backfill up and its tagged runs, and answers)."""
    started = time.perf_counter()
    subprocess.run([str(BIN / "flux-pipeline"), "spend", "--backfill", "none"], env=env, capture_output=True)
    return round(time.perf_counter() - started, 2)


def one_size(emulator: EmulatorProcess, images: int, partitions: int, concurrency: int) -> dict:
    with tempfile.TemporaryDirectory() as name:
        folder = Path(name)
        write_tables(folder / "prompts", images, partitions)
        env = project_env(emulator, folder, concurrency)
        billed_before = emulator.stats()["images_billed"]
        first = timed_run(env, folder / "run.log")
        billed = emulator.stats()["images_billed"] - billed_before
        submitted = emulator.stats()["requests_submitted"]
        again = timed_run(env, folder / "rerun.log")
        sent_again = emulator.stats()["requests_submitted"] - submitted
        from flux_pipeline.dataset.catalog.table import read_catalog

        cataloged = len(read_catalog(folder / "catalog", columns=["image_id"]))
        assert billed == cataloged == images, f"billed {billed}, cataloged {cataloged}, of {images}"
        steps = phases_of_slowest(folder / "dagster_home")
        os.environ.update(env)  # the in-process measurements reach the same emulator, folder and instance
        return {
            "images": images,
            "partitions": partitions,
            "first_run": {**first, "s_per_1k_images": round(1000 * first["seconds"] / images, 2)},
            "cpu_ms_per_image": round(1000 * first["cpu_s"] / images, 2),
            "rerun": {
                **again,
                "requests_sent": sent_again,
                "share_of_first": round(again["seconds"] / first["seconds"], 3),
            },
            "ledger_mb": round(folder_bytes(folder / "ledger") / 1e6, 1),
            "catalog_mb": round(folder_bytes(folder / "catalog") / 1e6, 1),
            "event_log_rows_per_image": round(event_log_rows(folder / "dagster_home") / images, 2),
            "slowest_partition_steps_s": steps,
            **in_process_timings(folder),
            "spend_cli_s": spend_seconds(env),
        }


def phases_of_slowest(dagster_home: Path) -> dict:
    """The step times of the first run's slowest partition (its Dagster run stats)."""
    import dagster as dg

    with dg.DagsterInstance.from_config(str(dagster_home)) as instance:
        runs = [r for r in instance.get_runs() if r.job_name == "build_dataset"]
        stats = {r.run_id: instance.get_run_stats(r.run_id) for r in runs}
        slowest = max(runs, key=lambda r: (stats[r.run_id].end_time or 0) - (stats[r.run_id].start_time or 0))
        spans = {
            step.step_key: round(step.end_time - step.start_time, 2)
            for step in instance.get_run_step_stats(slowest.run_id)
            if step.start_time and step.end_time
        }
    return spans


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--sizes", nargs="+", default=["1000:1", "10000:10"], help="IMAGES:PARTITIONS")
    parser.add_argument("--latency", type=float, default=0.05)
    parser.add_argument("--concurrency", type=int, default=128)
    args = parser.parse_args()
    emulator = start_emulator(args.latency, None)
    try:
        for size in args.sizes:
            images, partitions = map(int, size.split(":"))
            print(json.dumps(one_size(emulator, images, partitions, args.concurrency)), flush=True)
    finally:
        emulator.process.terminate()


if __name__ == "__main__":
    main()
