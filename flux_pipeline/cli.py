"""`flux-pipeline emulator` serves the fal emulator; `flux-pipeline run` builds the dataset for
every prompt table on a local Dagster instance (DAGSTER_HOME, default .dagster_home/, configured
by instance.py unless it has a dagster.yaml), logging at INFO (`--debug`: DEBUG);
`flux-pipeline instance` writes that configuration alone (e.g. before `dg dev`) and prints its
path; `flux-pipeline spend --backfill ID` sums the fal spend of a backfill's runs on that instance;
`flux-pipeline review` serves the review page on 127.0.0.1 (flux_pipeline.review);
`flux-pipeline recipe preview FILE` prints a recipe's first rows and estimated cost (exit 2, naming
the key, for a bad recipe) before anything is sent."""

from __future__ import annotations

import argparse
import logging
import os
import sys
from pathlib import Path
from typing import NoReturn

from .instance import write_local_instance

PROJECT_ROOT = Path(__file__).resolve().parent.parent


def _emulator(args: argparse.Namespace) -> int:
    from .emulator.engine import EmulatorConfig
    from .emulator.server import serve_forever

    config = EmulatorConfig(
        latency=args.latency,
        queue_delay=args.queue_delay,
        runners=args.runners,
        random_seed=args.random_seed,
        image_detail=args.image_detail,
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


def _local_config() -> Path:
    os.environ.setdefault("DAGSTER_HOME", str(PROJECT_ROOT / ".dagster_home"))
    return write_local_instance(Path(os.environ["DAGSTER_HOME"]))


def _local_instance():
    _local_config()
    import dagster as dg

    return dg.DagsterInstance.get()


def _run(args: argparse.Namespace) -> int:
    with _local_instance() as instance:
        return _run_on(instance, args)


def _run_on(instance, args: argparse.Namespace) -> int:
    from .dataset.costs.cost_report import by_partition, requests_frame
    from .definitions import defs
    from .pipeline.resources import dataset_from_env

    dataset = dataset_from_env().process_config_and_initialize()  # resolves its EnvVars
    keys = _register_tables(instance, dataset, args.partition)
    if keys is None:
        return 2
    job = defs.resolve_job_def("build_dataset")
    console = run_config(args.debug)
    build = run_config(args.debug, args.pay_again_for_unusable)
    failed = [key for key in keys if not _build_partition(job, key, instance, build)]
    defs.resolve_job_def("report_costs").execute_in_process(run_config=console, instance=instance)
    print(f"\ncatalog: {dataset.layout.catalog_dir}\n")
    with dataset.request_ledger() as ledger:
        requests = requests_frame(ledger.requests())
    print(by_partition(dataset.layout.catalog_dir, requests).to_string(index=False))
    if failed:
        print(f"\nFAILED: {', '.join(failed)} (why: on each one's 'partition' line above)")
    return 1 if failed else 0


def run_config(debug: bool, pay_again_for_unusable: bool = False) -> dict:
    """The run config of what `flux-pipeline run` executes."""
    config: dict = {"loggers": {"console": {"config": {"log_level": "DEBUG" if debug else "INFO"}}}}
    if pay_again_for_unusable:
        paying = {"config": {"pay_again_for_unusable": True}}
        config["ops"] = {step: paying for step in ("images", "redux_variations")}
    return config


def _register_tables(instance, dataset, partitions: list[str] | None) -> list[str] | None:
    """The partitions to build (`partitions`, else every prompt table), registered with their table
    versions as the sensor does; None, after saying why, when one has no table."""
    from .lib.table_versions import register_tables, scan_prompt_tables

    found = scan_prompt_tables(dataset, logging.getLogger("flux_pipeline"))
    keys = partitions or sorted(found)
    if unknown := [key for key in keys if key not in found]:
        where = f"{dataset.layout.prompts_dir} or {dataset.layout.recipes_dir}"
        print(f"no prompt table or recipe for {', '.join(unknown)} in {where}", file=sys.stderr)
        return None
    register_tables(instance, {key: found[key] for key in keys})
    return keys


def _build_partition(job, key: str, instance, run_config: dict) -> bool:
    """Run the job on one partition and print how it went (and what it spent); whether it succeeded."""
    from .lib.spend import EMULATED_TAG, SPENT_TAG, run_tag

    result = job.execute_in_process(
        run_config=run_config, partition_key=key, instance=instance, raise_on_error=False
    )
    spent, emulated = (run_tag(instance, result.run_id, tag) for tag in (SPENT_TAG, EMULATED_TAG))
    spend = f", spent ${spent:.4f}" if spent is not None else ""
    spend += f", emulated ${emulated:.4f} (nothing paid)" if emulated else ""
    print(f"partition {key}: {'ok' if result.success else 'FAILED'} (run {result.run_id}{spend})")
    for step, why in _failures(result):
        print(f"  {step}: {why}")
    return result.success


def _failures(result) -> list[tuple[str, str]]:
    """(step, why) for each step of the run that failed: a `dg.Failure`'s description, else the
    error's first line (the whole error and its trace are in the run's log)."""
    found = []
    for event in result.get_step_failure_events():
        data = event.step_failure_data
        described = data.user_failure_data.description if data.user_failure_data else None
        error = data.error.message.strip().splitlines()[0] if data.error else "failed"
        found.append((event.step_key or "run", described or error))
    return found


def _instance(args: argparse.Namespace) -> int:
    print(_local_config())
    return 0


def _spend(args: argparse.Namespace) -> int:
    from .lib.spend import backfill_known, backfill_spend

    with _local_instance() as instance:
        if not backfill_known(instance, args.backfill):
            where = instance.root_directory
            print(f"no backfill {args.backfill!r} on the instance in {where}", file=sys.stderr)
            return 2
        spend = backfill_spend(instance, args.backfill)
    emulated = f"; emulated ${spend.emulated_usd:.4f} (nothing paid)" if spend.emulated_usd else ""
    tagged = f"over {spend.runs} run(s) tagged with their spend"
    print(f"backfill {args.backfill}: ${spend.paid_usd:.4f} {tagged}{emulated}")
    return 0


def _review(args: argparse.Namespace) -> int:
    import uvicorn

    from .pipeline.resources import dataset_from_env
    from .review.app import Review, make_app

    dataset = dataset_from_env().process_config_and_initialize()
    with dataset.decision_log() as log:
        review = Review(dataset.layout, log, args.reviewer, [args.partition] if args.partition else None)
        print(f"review page: http://{args.host}:{args.port}/ (decisions in {dataset.ledger_location()})")
        uvicorn.run(make_app(review), host=args.host, port=args.port, log_level="warning")
    return 0


def _recipe_preview(args: argparse.Namespace) -> int:
    from upath import UPath

    from .dataset.costs.recipe_preview import preview_recipe
    from .dataset.plan.recipe_spec import RecipeError
    from .pipeline.resources import dataset_from_env

    dataset = dataset_from_env().process_config_and_initialize()
    prices, source = _preview_prices(dataset)
    try:
        preview = preview_recipe(
            UPath(args.file),
            dataset.layout,
            dataset.ledger_location(),
            dataset.request_defaults(),
            prices,
            args.rows,
        )
    except RecipeError as exc:
        print(exc, file=sys.stderr)
        return 2
    print(f"recipe {args.file}: {preview.rows} rows; the first {len(preview.head)}:\n")
    print(preview.head.to_string(index=False))
    forecast = preview.estimate
    print(
        f"\nestimated cost: ${forecast.cost_usd:.4f} for {forecast.new_requests} request(s), "
        f"{forecast.megapixels} billed megapixels, at {source} (nothing was sent)"
    )
    return 0


def _preview_prices(dataset) -> tuple[dict, str]:
    """fal's prices with FAL_KEY set, else the list prices a run without fal's pricing API costs with."""
    from .dataset.costs.pricing import price_list
    from .fal.models import ENDPOINTS

    if "FAL_KEY" not in os.environ:
        return price_list(list(ENDPOINTS), dataset.configured_price(), {}), "list prices (no FAL_KEY)"
    from .lib.generation_step import step_prices
    from .pipeline.resources import fal_from_env

    fal = fal_from_env().process_config_and_initialize()
    return step_prices(fal, dataset, logging.getLogger("flux_pipeline")), "fal's prices"


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    return args.handler(args)


def entry_point() -> NoReturn:
    """The `flux-pipeline` command: main(), then exit without tearing the interpreter down, as mypy
    does. Freeing every object of a process that has run the whole job took 0.9 s of its 23 s;
    by then its runs, instance, ledger and files are closed, and the streams and logging handlers
    are flushed here first."""
    code = main()
    logging.shutdown()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="flux-pipeline", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)
    _add_emulator_command(commands)
    run = commands.add_parser("run", help="build the dataset for every prompt table (or --partition)")
    run.add_argument("--partition", action="append", help="a prompt table's name; repeat for more")
    run.add_argument("--debug", action="store_true", help="log at DEBUG (default INFO)")
    run.add_argument(
        "--pay-again-for-unusable",
        action="store_true",
        help="send again, and pay fal again for, requests it billed whose answers could not be cataloged",
    )
    run.set_defaults(handler=_run)
    instance = commands.add_parser(
        "instance", help="write the local instance's dagster.yaml (for `dg dev`) unless it has one"
    )
    instance.set_defaults(handler=_instance)
    spend = commands.add_parser("spend", help="the fal spend of a backfill's runs")
    spend.add_argument("--backfill", required=True, help="the backfill's id (its page in the UI shows it)")
    spend.set_defaults(handler=_spend)
    _add_review_command(commands)
    recipe = commands.add_parser("recipe", help="work with prompt recipes (data/recipes/KEY.yaml)")
    verbs = recipe.add_subparsers(dest="verb", required=True)
    preview = verbs.add_parser("preview", help="a recipe's first rows and estimated cost, nothing sent")
    preview.add_argument("file", help="the recipe (YAML)")
    preview.add_argument("--rows", type=int, default=10, help="rows to print (default 10)")
    preview.set_defaults(handler=_recipe_preview)
    return parser


def _add_review_command(commands) -> None:
    import getpass

    review = commands.add_parser("review", help="serve the review page: keep or reject images")
    review.add_argument("--partition", help="review only this partition (default: every catalog partition)")
    review.add_argument("--port", type=int, default=8766)
    review.add_argument("--host", default="127.0.0.1", help="the address to listen on (default loopback)")
    review.add_argument("--reviewer", default=getpass.getuser(), help="who the decisions are recorded as")
    review.set_defaults(handler=_review)


def _add_emulator_command(commands) -> None:
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
        "--image-detail",
        default="flat",
        help="flat (default), or photo: grainy, real-sized files (about 250 KB at 1024x768) for benchmarks",
    )
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


if __name__ == "__main__":
    sys.exit(main())
