"""A partition run in a process of its own, as a second machine or a killed worker would run it:
`python -m flux_pipeline_tests.worker FAL_URL DATA_DIR DAGSTER_HOME PARTITION [options]`.

--ledger URL          the request ledger (default: DATA_DIR's SQLite file)
--kill-after-submits N  SIGKILL this process right after the Nth submit reached fal, before its
                        request id is recorded (the submitting → submitted window)
--webhook-port P      receive fal's webhooks (default: none; lost submits go through the history)
--kill-at POINT       SIGKILL this process where the `images` step ends: `claimed` (its spend just
                        claimed in the ledger), `before_materialization` (the materialization about
                        to be stored) or `after_materialization` (just stored)
"""

from __future__ import annotations

import argparse
import os
import signal

import dagster as dg

from flux_pipeline.dataset.money.ledger import RequestLedger
from flux_pipeline.definitions import make_definitions
from flux_pipeline.fal.client import FalClient
from flux_pipeline.lib.partitions import prompt_tables

from .conftest import resource_for_url
from .dataset_fixtures import dataset_for


def kill_after_submits(count: int) -> None:
    submit, sent = FalClient.submit, []

    async def submit_then_die(self, *args, **kwargs):
        request_id = await submit(self, *args, **kwargs)
        sent.append(request_id)
        if len(sent) >= count:
            os.kill(os.getpid(), signal.SIGKILL)
        return request_id

    FalClient.submit = submit_then_die


def kill_at(point: str) -> None:
    die = lambda: os.kill(os.getpid(), signal.SIGKILL)
    if point == "claimed":
        report_spend = RequestLedger.report_spend

        def claim_then_die(self, *args, **kwargs):
            report_spend(self, *args, **kwargs)
            die()

        RequestLedger.report_spend = claim_then_die
        return
    handle = dg.DagsterInstance.handle_new_event

    def handle_and_die_around_materializing(self, event, **kwargs):
        dagster_event = event.dagster_event
        materializing = (
            dagster_event is not None
            and dagster_event.event_type == dg.DagsterEventType.ASSET_MATERIALIZATION
            and dagster_event.asset_key == dg.AssetKey("images")
        )
        if materializing and point == "before_materialization":
            die()
        handle(self, event, **kwargs)
        if materializing:
            die()

    dg.DagsterInstance.handle_new_event = handle_and_die_around_materializing


def main() -> None:
    parser = argparse.ArgumentParser()
    for name in ("url", "data_dir", "home", "partition"):
        parser.add_argument(name)
    parser.add_argument("--ledger")
    parser.add_argument("--kill-after-submits", type=int)
    parser.add_argument("--webhook-port", type=int)
    parser.add_argument("--kill-at", choices=["claimed", "before_materialization", "after_materialization"])
    args = parser.parse_args()
    if args.kill_after_submits:
        kill_after_submits(args.kill_after_submits)
    if args.kill_at:
        kill_at(args.kill_at)
    fal = resource_for_url(
        args.url, max_concurrency=4, lost_request_settle=1.0, webhook_port=args.webhook_port
    )
    dataset = dataset_for(args.data_dir).model_copy(update={"ledger": args.ledger})
    with dg.DagsterInstance.from_config(args.home) as instance:
        instance.add_dynamic_partitions(prompt_tables.name, [args.partition])
        job = make_definitions(fal, dataset).resolve_job_def("build_dataset")
        result = job.execute_in_process(partition_key=args.partition, instance=instance, raise_on_error=False)
    raise SystemExit(0 if result.success else 1)


if __name__ == "__main__":
    main()
