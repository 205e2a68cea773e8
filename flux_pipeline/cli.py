"""`flux-pipeline emulator` serves the fal emulator; `flux-pipeline run` builds the dataset for
every prompt table on a local Dagster instance (DAGSTER_HOME, default .dagster_home/)."""

from __future__ import annotations

import argparse
import logging
import os
import sys
import warnings
from pathlib import Path

PROJECT_ROOT = Path(__file__).resolve().parent.parent


def _emulator(args: argparse.Namespace) -> int:
    from .emulator.engine import EmulatorConfig
    from .emulator.server import serve_forever

    config = EmulatorConfig(
        latency=args.latency, queue_delay=args.queue_delay, runners=args.runners, random_seed=args.random_seed
    )
    scheme = "https" if args.ssl_certfile else "http"
    print(
        f"fal emulator on {scheme}://{args.host}:{args.port} (queue at /, sync at /run, storage at /storage)"
    )
    serve_forever(
        config,
        args.host,
        args.port,
        ssl_certfile=args.ssl_certfile,
        ssl_keyfile=args.ssl_keyfile,
        log_level=args.log_level,
    )
    return 0


def _run(args: argparse.Namespace) -> int:
    os.environ.setdefault("DAGSTER_HOME", str(PROJECT_ROOT / ".dagster_home"))
    home = Path(os.environ["DAGSTER_HOME"])
    home.mkdir(parents=True, exist_ok=True)
    (home / "dagster.yaml").touch()  # an empty config: local SQLite storage under DAGSTER_HOME
    warnings.filterwarnings("ignore", module="dagster")
    import dagster as dg

    from .automation import scan_prompt_tables, table_version_events
    from .dataset.catalog import cost_report
    from .definitions import defs
    from .partitions import prompt_tables

    instance = dg.DagsterInstance.get()
    dataset = defs.resources["dataset"]
    found = scan_prompt_tables(dataset, logging.getLogger("flux_pipeline"))
    keys = args.partition or sorted(found)
    unknown = [key for key in keys if key not in found]
    if unknown:
        print(f"no prompt table for {', '.join(unknown)} in {dataset.layout.prompts_dir}", file=sys.stderr)
        return 2
    instance.add_dynamic_partitions(prompt_tables.name, keys)
    for key in keys:  # as the sensor does: the table versions the runs consume
        for event in table_version_events(key, found[key]):
            instance.report_runless_asset_event(event)
    job = defs.resolve_job_def("build_dataset")
    failed = []
    for key in keys:
        result = job.execute_in_process(partition_key=key, instance=instance, raise_on_error=False)
        print(f"partition {key}: {'ok' if result.success else 'FAILED'} (run {result.run_id})")
        if not result.success:
            failed.append(key)
    print(f"\ncatalog: {dataset.layout.catalog_dir}\n")
    print(cost_report(dataset.layout.catalog_dir).to_string(index=False))
    return 1 if failed else 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="flux-pipeline", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)
    emulator = commands.add_parser("emulator", help="serve the fal emulator")
    emulator.add_argument("--host", default="127.0.0.1")
    emulator.add_argument("--port", type=int, default=8765)
    emulator.add_argument("--latency", type=float, default=0.5, help="seconds a request runs")
    emulator.add_argument(
        "--queue-delay", type=float, default=0.0, help="seconds a request waits in the queue"
    )
    emulator.add_argument(
        "--runners", type=int, default=None, help="requests run at once (default unlimited)"
    )
    emulator.add_argument("--random-seed", type=int, default=0, help="seeds server-picked seeds")
    emulator.add_argument(
        "--ssl-certfile", help="serve https with this PEM certificate (and key, if no --ssl-keyfile)"
    )
    emulator.add_argument("--ssl-keyfile", help="the certificate's private key, when in a file of its own")
    emulator.add_argument(
        "--log-level",
        default="info",
        choices=["critical", "error", "warning", "info", "debug"],
        help="uvicorn's log level; below info, requests are not logged",
    )
    emulator.set_defaults(handler=_emulator)
    run = commands.add_parser("run", help="build the dataset for every prompt table (or --partition)")
    run.add_argument("--partition", action="append", help="a prompt table's name; repeat for more")
    run.set_defaults(handler=_run)
    args = parser.parse_args(argv)
    return args.handler(args)


if __name__ == "__main__":
    sys.exit(main())
