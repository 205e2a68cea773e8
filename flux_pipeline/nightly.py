"""`nightly_backfill` (off by default: runs against real fal cost money; turn it on in the UI).

Each tick (cron `FLUX_NIGHTLY_CRON`, default 02:00, in `FLUX_NIGHTLY_TIMEZONE`, default UTC) it
requests one run of `build_dataset` for every prompt table that is new or whose version (file
hash) differs from the one its catalog was built from, and nothing else. Before anything is sent
it estimates the night as the `prompts` asset does (fal's prices; requests fal already has cost
nothing): when the total exceeds the dataset's `nightly_budget_usd` the tick requests no run and
says why. The night's runs share the tag `flux/night` (the tick's date), the way a backfill's runs
share theirs, and each has a run key of night, partition and table version, so a tick evaluated
twice launches nothing twice. New tables are registered as partitions and their versions
recorded, as `prompt_table_sensor` does."""

from __future__ import annotations

import os
from dataclasses import dataclass

import dagster as dg

from .dataset.estimate import Estimate, estimate
from .dataset.ledger import PartitionLedger, RequestLedger, RunContext
from .dataset.prompt_table import PromptRow, PromptTableError, open_prompt_table, plan_rows
from .dataset.table_source import partition_table
from .jobs import build_dataset
from .resources import BaseFalResource, DatasetResource
from .step_engine import step_prices
from .table_sensor import built_version, register_tables, scan_prompt_tables

NIGHT_TAG = "flux/night"
NIGHTLY_CRON = os.environ.get("FLUX_NIGHTLY_CRON", "0 2 * * *")
NIGHTLY_TIMEZONE = os.environ.get("FLUX_NIGHTLY_TIMEZONE", "UTC")


@dataclass
class Night:
    """What one tick would build: {partition: table version} and {partition: estimate}."""

    versions: dict[str, str]
    estimates: dict[str, Estimate]

    @property
    def cost_usd(self) -> float:
        return round(sum(forecast.cost_usd for forecast in self.estimates.values()), 6)

    def summary(self) -> str:
        return ", ".join(f"{key} ${forecast.cost_usd:.4f}" for key, forecast in self.estimates.items())


def stale_tables(instance: dg.DagsterInstance, found: dict[str, str]) -> dict[str, str]:
    """The tables whose catalog is missing or built from another version."""
    return {key: sha for key, sha in found.items() if built_version(instance, key) != sha}


def estimate_partition(key: str, fal: BaseFalResource, dataset: DatasetResource, prices, ledger) -> Estimate:
    """The partition's cost if it ran now, from its table (rows a run would reject cost nothing); a
    recipe is expanded into its partition's table first, as `prompts` does."""
    layout = dataset.layout
    path = partition_table(layout, key, dataset.request_defaults(), dataset.ledger_location())
    rows = (
        row
        for row in plan_rows(open_prompt_table(path), path, dataset.request_defaults(), layout.prompts_dir)
        if isinstance(row, PromptRow)
    )
    entry_of = PartitionLedger(ledger, key, RunContext("nightly-estimate", fal.backend)).snapshot()
    return estimate(rows, entry_of, prices, fal.backend, layout.outputs_dir, layout.prompts_dir)


def plan_night(instance, fal: BaseFalResource, dataset: DatasetResource, log) -> Night:
    """Every stale table with its estimate; a table that cannot be read is left out, with a warning
    (its run would fail before sending anything)."""
    stale = stale_tables(instance, scan_prompt_tables(dataset, log))
    prices = step_prices(fal, dataset, log) if stale else {}
    versions, estimates = {}, {}
    with RequestLedger(dataset.ledger_location()) as ledger:
        for key, sha in stale.items():
            try:
                estimates[key] = estimate_partition(key, fal, dataset, prices, ledger)
            except PromptTableError as exc:
                log.warning(f"not building {key} tonight: {exc}")
                continue
            versions[key] = sha
    return Night(versions, estimates)


@dg.schedule(
    job=build_dataset,
    cron_schedule=NIGHTLY_CRON,
    execution_timezone=NIGHTLY_TIMEZONE,
    default_status=dg.DefaultScheduleStatus.STOPPED,
    description="Every night, runs each partition whose prompt table is new or changed since its last "
    "build, when the night's estimate fits the dataset's nightly_budget_usd (otherwise nothing is sent).",
)
def nightly_backfill(
    context: dg.ScheduleEvaluationContext, fal: BaseFalResource, dataset: DatasetResource
) -> list[dg.RunRequest] | dg.SkipReason:
    night = plan_night(context.instance, fal, dataset, context.log)
    if not night.versions:
        return dg.SkipReason("every prompt table is built from its current version: nothing to do")
    budget = dataset.nightly_budget_usd
    if budget is not None and night.cost_usd > budget + 1e-9:
        return dg.SkipReason(
            f"the night's estimate ${night.cost_usd:.4f} ({night.summary()}) exceeds the nightly budget "
            f"${budget:.4f}: no run was requested and nothing was sent"
        )
    register_tables(context.instance, night.versions)
    date = context.scheduled_execution_time.date().isoformat() if context.scheduled_execution_time else "now"
    context.log.info(f"tonight ({date}): {night.summary()}, ${night.cost_usd:.4f} in all")
    return [
        dg.RunRequest(partition_key=key, run_key=f"{date}:{key}:{sha}", tags={NIGHT_TAG: date})
        for key, sha in night.versions.items()
    ]
