"""Spend per run, where a person looking at a run sees it: the run tag `flux/spent_usd`, the sum
of the `spent_usd` metadata that the run's fal steps report (on their materialization, or on
their failure, e.g. a budget stop). Runs whose steps report none get no tag. A backfill's total
is the sum over its runs (`backfill_spend`; `flux-pipeline spend --backfill ID`).

The sensors `tag_run_spend_on_success` / `_on_failure` tag each finished run of this code
location (they are on by default: they only write tags, they never launch a run);
`flux-pipeline run` tags its runs itself."""

from __future__ import annotations

import dagster as dg

SPENT_KEY = "spent_usd"
SPENT_TAG = "flux/spent_usd"
BACKFILL_TAG = "dagster/backfill"
_EVENTS = {dg.DagsterEventType.ASSET_MATERIALIZATION, dg.DagsterEventType.STEP_FAILURE}


def _metadata(entry: dg.EventLogEntry) -> dict:
    if entry.asset_materialization is not None:
        return entry.asset_materialization.metadata
    failure = entry.dagster_event.step_failure_data.user_failure_data
    return failure.metadata if failure else {}


def run_spend(instance: dg.DagsterInstance, run_id: str) -> float | None:
    """What the run's steps report having spent, in USD; None when none reports it."""
    amounts = [
        metadata[SPENT_KEY].value
        for entry in instance.all_logs(run_id, of_type=_EVENTS)
        if SPENT_KEY in (metadata := _metadata(entry))
    ]
    return round(sum(amounts), 6) if amounts else None


def tag_run_spend(instance: dg.DagsterInstance, run_id: str) -> float | None:
    """Tags the run with its spend (when its steps report one); the spend."""
    spent = run_spend(instance, run_id)
    if spent is not None:
        instance.add_run_tags(run_id, {SPENT_TAG: f"{spent:.4f}"})
    return spent


def backfill_spend(instance: dg.DagsterInstance, backfill_id: str) -> tuple[float, int]:
    """(USD, runs) over the backfill's runs tagged with their spend."""
    runs = instance.get_runs(filters=dg.RunsFilter(tags={BACKFILL_TAG: backfill_id}))
    spends = [float(run.tags[SPENT_TAG]) for run in runs if SPENT_TAG in run.tags]
    return round(sum(spends), 6), len(spends)


def _spend_sensor(status: dg.DagsterRunStatus) -> dg.SensorDefinition:
    @dg.run_status_sensor(
        name=f"tag_run_spend_on_{status.value.lower()}",
        run_status=status,
        default_status=dg.DefaultSensorStatus.RUNNING,
        description=f"Tags each run that ends in {status.value} with its fal spend ({SPENT_TAG}).",
    )
    def tag_spend(context: dg.RunStatusSensorContext) -> None:
        tag_run_spend(context.instance, context.dagster_run.run_id)

    return tag_spend


SPEND_SENSORS = [_spend_sensor(dg.DagsterRunStatus.SUCCESS), _spend_sensor(dg.DagsterRunStatus.FAILURE)]
