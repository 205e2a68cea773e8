"""Spend per run, where a person looking at a run sees it: the run tag `flux/spent_usd`, the sum
of the `spent_usd` that the run's fal steps report in their metadata (each step adds its own as
it ends, also when it then fails, e.g. on a budget stop). A run whose steps report none has no
tag. A backfill's total is the sum over its runs: `backfill_spend`, `flux-pipeline spend
--backfill ID`, or the runs page filtered by the backfill's tag."""

from __future__ import annotations

from collections.abc import Mapping

import dagster as dg

SPENT_KEY = "spent_usd"
SPENT_TAG = "flux/spent_usd"
BACKFILL_TAG = "dagster/backfill"


def add_run_spend(context: dg.AssetExecutionContext, metadata: Mapping) -> None:
    """Adds the step's `spent_usd` (when its metadata has one) to its run's tag."""
    spent = metadata.get(SPENT_KEY)
    if spent is None:
        return
    spent = spent.value if isinstance(spent, dg.MetadataValue) else spent
    instance, run_id = context.instance, context.run.run_id
    before = float(instance.get_run_by_id(run_id).tags.get(SPENT_TAG, 0))
    instance.add_run_tags(run_id, {SPENT_TAG: f"{before + spent:.4f}"})


def run_spend(instance: dg.DagsterInstance, run_id: str) -> float | None:
    """The run's tagged spend in USD; None when its steps reported none."""
    tag = instance.get_run_by_id(run_id).tags.get(SPENT_TAG)
    return float(tag) if tag is not None else None


def backfill_spend(instance: dg.DagsterInstance, backfill_id: str) -> tuple[float, int]:
    """(USD, runs) over the backfill's runs tagged with their spend."""
    runs = instance.get_runs(filters=dg.RunsFilter(tags={BACKFILL_TAG: backfill_id}))
    spends = [float(run.tags[SPENT_TAG]) for run in runs if SPENT_TAG in run.tags]
    return round(sum(spends), 6), len(spends)
