"""The whole job against the script a user would write (run by hand, not in CI):

    .venv/bin/python -m benchmarks.whole_job --n 256 --concurrency 16 --repeats 3
    .venv/bin/python -m benchmarks.whole_job --n 1024 --concurrency 64 --repeats 3

The emulator runs in its own process with photo-like images (`--image-detail photo`: about
250 KB of JPEG at 1024x768) and latency L. Each measurement is a fresh process, timed whole, from
exec to exit, on the same N-row prompt table:
- `project`: `flux-pipeline run --partition bench` on a fresh data folder and Dagster instance,
  pointed at the emulator through FAL_KEY and the FAL_*_URL variables (the real-fal code path):
  ledger, images, catalog and its checks, gallery, training export, cost report;
- `script`: benchmarks/peer_script.py (pandas, fal_client.AsyncClient under a semaphore, httpx
  downloads, a Parquet catalog);
- `floor`: benchmarks/dagster_floor.py, a job of build_dataset's shape doing nothing, on a fresh
  instance configured as the project's: what any Dagster job of this shape costs here.
The two alternate (neither always goes first), after one warm-up run of the script that renders
every image, so that rendering, which the real fal does on its GPUs, is charged to no client.

Reported, as medians: wall seconds, images/s, the ratio to the ceiling ceil(N/C)·L, the ratio of
the project to the script (per pair of runs), CPU milliseconds per image and peak RSS of the
client process (with its children), and the machine's load. For the project it also reports
where its time went, read from its Dagster instance: process start to run start, each step, and
run end to process exit.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import pandas as pd

from flux_pipeline.emulator.images import RENDERED_CACHE_SIZE
from flux_pipeline.instance import write_local_instance

from .dagster_floor import shape
from .throughput import KEY, REPO, EmulatorProcess, ceiling, start_emulator

CLIENTS = ("project", "script", "floor")
PARTITION = "bench"
FLOOR_SHAPE = shape()


def write_table(path: Path, n: int) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    rows = [
        {"prompt_id": f"b{i:05d}", "prompt": f"benchmark photo {i}", "image_size": "landscape_4_3", "seed": i}
        for i in range(n)
    ]
    pd.DataFrame(rows).to_parquet(path)


def command(client: str, emulator: EmulatorProcess, folder: Path, concurrency: int) -> tuple[list, dict]:
    """The command line and environment of one client's run in `folder`."""
    env = {**os.environ, "NO_PROXY": "127.0.0.1,localhost", "FAL_KEY": KEY}
    table = folder / "prompts" / f"{PARTITION}.parquet"
    if client == "floor":
        write_local_instance(folder / "dagster_home")
        env["DAGSTER_HOME"] = str(folder / "dagster_home")
        return [sys.executable, "-m", "benchmarks.dagster_floor", FLOOR_SHAPE], env
    if client == "script":
        script = [sys.executable, "-m", "benchmarks.peer_script", "--table", str(table)]
        return [
            *script,
            "--out",
            str(folder / "out"),
            "--concurrency",
            str(concurrency),
            "--url",
            emulator.url,
        ], env
    return [
        str(Path(sys.executable).with_name("flux-pipeline")),
        "run",
        "--partition",
        PARTITION,
    ], project_env(emulator, folder, concurrency)


def project_env(emulator: EmulatorProcess, folder: Path, concurrency: int) -> dict[str, str]:
    """What `flux-pipeline run` needs to build `folder` against the emulator through FAL_KEY and the
    FAL_*_URL variables (the real-fal code path), on a Dagster instance of its own."""
    return {
        **os.environ,
        "NO_PROXY": "127.0.0.1,localhost",
        "FAL_KEY": KEY,
        "FAL_QUEUE_URL": emulator.url,
        "FAL_RUN_URL": f"{emulator.url}/run",
        "FAL_STORAGE_URL": emulator.url,
        "FAL_API_URL": f"{emulator.url}/v1",
        "FLUX_MAX_CONCURRENCY": str(concurrency),
        "FLUX_DATA_DIR": str(folder),
        "DAGSTER_HOME": str(folder / "dagster_home"),
    }


def run_once(client: str, emulator: EmulatorProcess, n: int, concurrency: int) -> dict:
    with tempfile.TemporaryDirectory() as name:
        folder = Path(name)
        write_table(folder / "prompts" / f"{PARTITION}.parquet", n)
        argv, env = command(client, emulator, folder, concurrency)
        started = time.time()
        log = folder / "client.log"
        streams = [(os.POSIX_SPAWN_OPEN, fd, str(log), os.O_WRONLY | os.O_CREAT, 0o644) for fd in (1, 2)]
        pid = os.posix_spawn(argv[0], argv, env, file_actions=streams)
        peak_kb, (_, status, usage) = high_water_mark(pid)
        ended = time.time()
        if os.waitstatus_to_exitcode(status) != 0:
            raise RuntimeError(
                f"{client} exited with {os.waitstatus_to_exitcode(status)}:\n{log.read_text()}"
            )
        images = cataloged(client, folder)
        result = {
            "images": images,
            "seconds": ended - started,
            "images_per_s": images / (ended - started),
            "cpu_ms_per_image": 1000 * (usage.ru_utime + usage.ru_stime) / max(images, 1),
            "peak_rss_mb": peak_kb / 1024,
            "load_1min": os.getloadavg()[0],
        }
        if client == "project":
            result["phases"] = phases(folder / "dagster_home", started, ended)
        return result


def high_water_mark(pid: int) -> tuple[int, tuple]:
    """The process's peak RSS in KB (VmHWM, read until it exits) and what os.wait4 returned.
    Not wait4's ru_maxrss: across posix_spawn's exec that keeps this (large) process's."""
    peak = 0
    while True:
        waited = os.wait4(pid, os.WNOHANG)
        if waited[0] == pid:
            return peak, waited
        try:
            status = Path(f"/proc/{pid}/status").read_text()
            peak = max(peak, int(status.split("VmHWM:")[1].split()[0]))
        except (FileNotFoundError, IndexError):
            pass  # exiting
        time.sleep(0.02)


def cataloged(client: str, folder: Path) -> int:
    if client == "floor":
        return 0
    if client == "script":
        return len(pd.read_parquet(folder / "out" / "catalog.parquet"))
    from flux_pipeline.dataset.catalog.table import read_catalog

    return len(read_catalog(folder / "catalog", [PARTITION]))


def phases(dagster_home: Path, started: float, ended: float) -> dict[str, float]:
    """Seconds from process start to run start, in each step, and from run end to exit."""
    import dagster as dg

    os.environ["DAGSTER_HOME"] = str(dagster_home)
    with dg.DagsterInstance.get() as instance:
        (run,) = [r for r in instance.get_runs() if r.tags.get("dagster/partition") == PARTITION]
        stats = instance.get_run_stats(run.run_id)
        spans = {"start to run": stats.start_time - started}
        for step in instance.get_run_step_stats(run.run_id):
            if step.start_time is None or step.end_time is None:
                continue  # skipped
            spans[step.step_key] = step.end_time - step.start_time
        spans["run to exit"] = ended - stats.end_time
    return {name: round(seconds, 2) for name, seconds in spans.items()}


def report(runs: dict[str, list[dict]], args: argparse.Namespace) -> str:
    top = ceiling(args.n, args.concurrency, args.latency)
    ratios = [p["images_per_s"] / s["images_per_s"] for p, s in zip(runs["project"], runs["script"])]
    lines = [
        f"N={args.n}, C={args.concurrency}, L={args.latency:g} s, ceiling {top:.1f} images/s, "
        f"photo-like 1024x768 JPEG, median of {args.repeats} runs each, {os.cpu_count()} cores",
        "",
        "| client | wall s | images/s | vs ceiling | vs script | CPU ms/image | peak RSS MB | load (1 min) |",
        "|---|---|---|---|---|---|---|---|",
    ]
    medians = {
        client: {
            key: statistics.median(run[key] for run in runs[client])
            for key in runs[client][0]
            if key != "phases"
        }
        for client in CLIENTS
    }
    for client, m in medians.items():
        lines.append(_table_row(client, m, top, statistics.median(ratios)))
    waves = args.n / top
    lines += [
        "",
        f"beyond the {waves:.1f} s of fal's waves: project {medians['project']['seconds'] - waves:.1f} s, "
        f"script {medians['script']['seconds'] - waves:.1f} s; a Dagster job of this shape doing nothing "
        f"takes {medians['floor']['seconds']:.1f} s",
    ]
    names = runs["project"][0]["phases"]
    spans = {
        name: statistics.median(run["phases"].get(name, 0.0) for run in runs["project"]) for name in names
    }
    lines += [
        "",
        "project, where the time went (median s): " + ", ".join(f"{k} {v:.2f}" for k, v in spans.items()),
    ]
    return "\n".join(lines)


def _table_row(client: str, m: dict, top: float, project_ratio: float) -> str:
    """One client's medians as a row of the report's table (the floor generates no images)."""
    generated = client != "floor"
    versus = f"{project_ratio:.2f}" if client == "project" else "1" if generated else "-"
    cells = [
        client,
        f"{m['seconds']:.1f}",
        f"{m['images_per_s']:.1f}" if generated else "-",
        f"{m['images_per_s'] / top:.2f}" if generated else "-",
        versus,
        f"{m['cpu_ms_per_image']:.1f}" if generated else "-",
        f"{m['peak_rss_mb']:.0f}",
        f"{m['load_1min']:.2f}",
    ]
    return f"| {' | '.join(cells)} |"


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--n", type=int, default=256, help="rows of the prompt table")
    parser.add_argument("--concurrency", type=int, default=16, help="C: fal requests at once")
    parser.add_argument(
        "--latency", type=float, default=1.0, help="L: seconds the emulator takes per request"
    )
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--json", type=Path, help="also write every run's figures here")
    args = parser.parse_args()
    if args.n > RENDERED_CACHE_SIZE:
        parser.error(f"--n {args.n} is over the emulator's render cache ({RENDERED_CACHE_SIZE} images)")
    emulator = start_emulator(args.latency, None, "--image-detail", "photo")
    os.chdir(REPO)  # the script runs as `python -m benchmarks.peer_script`
    try:
        run_once("script", emulator, args.n, args.concurrency)  # warm-up: renders every image
        runs: dict[str, list[dict]] = {client: [] for client in CLIENTS}
        for repeat in range(args.repeats):
            for client in CLIENTS if repeat % 2 == 0 else CLIENTS[::-1]:
                runs[client].append(run_once(client, emulator, args.n, args.concurrency))
                print(f"repeat {repeat + 1}, {client}: {json.dumps(runs[client][-1])}", flush=True)
    finally:
        emulator.process.terminate()
        emulator.process.wait()
    print()
    print(report(runs, args))
    if args.json:
        args.json.write_text(json.dumps(runs, indent=2))


if __name__ == "__main__":
    main()
