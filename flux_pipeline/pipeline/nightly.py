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

import dagster as dg

from ..lib.assets import DatasetSetup, PerDataset
from ..lib.names import DatasetNames
from ..lib.night import plan_night
from ..lib.table_versions import register_tables
from ..resources import BaseFalResource, DatasetResource

NIGHT_TAG = "flux/night"


def _schedule(names: DatasetNames, setup: DatasetSetup) -> dg.ScheduleDefinition:
    @dg.schedule(
        name=names.name("nightly_backfill"),
        job_name=names.name("build_dataset"),
        cron_schedule=setup.schedule.cron,
        execution_timezone=setup.schedule.timezone,
        default_status=setup.schedule.status,
        description="Every night, runs each partition whose prompt table is new or changed since its last "
        "build, when the night's estimate fits the dataset's nightly_budget_usd (otherwise nothing is sent).",
    )
    def nightly_backfill(context: dg.ScheduleEvaluationContext) -> list[dg.RunRequest] | dg.SkipReason:
        fal = setup.fal.process_config_and_initialize()
        return evaluate(context, fal, setup.dataset.process_config_and_initialize(), names)

    return nightly_backfill


nightly_backfill = PerDataset(_schedule)


def evaluate(
    context: dg.ScheduleEvaluationContext, fal: BaseFalResource, dataset: DatasetResource, names: DatasetNames
) -> list[dg.RunRequest] | dg.SkipReason:
    """One tick of the schedule, for the dataset `names` names."""
    night = plan_night(context.instance, fal, dataset, context.log, names)
    if not night.versions:
        return dg.SkipReason("every prompt table is built from its current version: nothing to do")
    budget = dataset.nightly_budget_usd
    if budget is not None and night.cost_usd > budget + 1e-9:
        return dg.SkipReason(
            f"the night's estimate ${night.cost_usd:.4f} ({night.summary()}) exceeds the nightly budget "
            f"${budget:.4f}: no run was requested and nothing was sent"
        )
    register_tables(context.instance, night.versions, names)
    date = context.scheduled_execution_time.date().isoformat() if context.scheduled_execution_time else "now"
    context.log.info(f"tonight ({date}): {night.summary()}, ${night.cost_usd:.4f} in all")
    return [
        dg.RunRequest(partition_key=key, run_key=f"{date}:{key}:{sha}", tags={NIGHT_TAG: date})
        for key, sha in night.versions.items()
    ]
