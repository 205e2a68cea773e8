"""Spend per run, where a person looking at a run sees it: the run tag `flux/spent_usd`, the sum
of the `spent_usd` that the run's fal steps report in their metadata (what a paying backend
billed; each step adds its own as it ends, also when it then fails, e.g. on a budget stop), and
beside it `flux/emulated_usd`, what the emulator billed at list prices (nothing paid). A run whose
steps report none has no tag. A backfill's total is the sum over its runs: `backfill_spend`,
`flux-pipeline spend --backfill ID`, or the runs page filtered by the backfill's tag.

`orphaned_spend_claims` finds the spend that a run claimed (dataset.money.ledger) and died before its
materialization reported, so that the next materialization reports it."""

from __future__ import annotations

import time
from collections.abc import Mapping
from dataclasses import dataclass

import dagster as dg

from ..dataset.money.ledger import RequestLedger

SPENT_KEY, EMULATED_KEY = "spent_usd", "emulated_usd"
SPENT_TAG, EMULATED_TAG = "flux/spent_usd", "flux/emulated_usd"
TAG_OF = {SPENT_KEY: SPENT_TAG, EMULATED_KEY: EMULATED_TAG}
BACKFILL_TAG = "dagster/backfill"


def add_run_spend(context: dg.AssetExecutionContext, metadata: Mapping) -> None:
    """Adds the step's `spent_usd` and `emulated_usd` (those its metadata has) to its run's tags."""
    instance, run_id = context.instance, context.run.run_id
    added = {}
    for key, tag in TAG_OF.items():
        value = metadata.get(key)
        if value is None:
            continue
        value = value.value if isinstance(value, dg.MetadataValue) else value
        added[tag] = f"{(run_tag(instance, run_id, tag) or 0.0) + value:.4f}"
    if added:
        instance.add_run_tags(run_id, added)


def run_tag(instance: dg.DagsterInstance, run_id: str, tag: str = SPENT_TAG) -> float | None:
    """The run's tagged spend in USD (`tag`: SPENT_TAG, what a paying backend billed, or
    EMULATED_TAG), read afresh: earlier steps of the run add to it; None when its steps reported
    none, or the instance has no such run."""
    run = instance.get_run_by_id(run_id)
    value = run.tags.get(tag) if run else None
    return float(value) if value is not None else None


@dataclass(frozen=True)
class BackfillSpend:
    paid_usd: float
    emulated_usd: float
    runs: int
    """Runs tagged with their spend."""


def backfill_spend(instance: dg.DagsterInstance, backfill_id: str) -> BackfillSpend:
    """What the backfill's runs spent, paid and emulated apart."""
    runs = instance.get_runs(filters=dg.RunsFilter(tags={BACKFILL_TAG: backfill_id}))
    tagged = [run for run in runs if SPENT_TAG in run.tags or EMULATED_TAG in run.tags]
    total = {tag: round(sum(float(run.tags.get(tag, 0)) for run in tagged), 6) for tag in TAG_OF.values()}
    return BackfillSpend(total[SPENT_TAG], total[EMULATED_TAG], len(tagged))


def backfill_known(instance: dg.DagsterInstance, backfill_id: str) -> bool:
    """Whether the instance has the backfill, or runs tagged with it."""
    if instance.get_backfill(backfill_id) is not None:
        return True
    return bool(instance.get_run_ids(filters=dg.RunsFilter(tags={BACKFILL_TAG: backfill_id}), limit=1))


def orphaned_spend_claims(
    context: dg.AssetExecutionContext, ledger: RequestLedger, endpoint: str, lease_seconds: float
) -> list[str]:
    """The other runs whose claims on this step's spend (partition, endpoint) no materialization
    of this asset reported: runs that ended without one, or that claimed longer than a lease ago
    and have none (a killed run stays "started"). Runs found materialized are confirmed."""
    partition, instance = context.partition_key, context.instance
    orphaned = []
    for run_id, claimed_at in ledger.unconfirmed_spend_claims(
        partition, endpoint, context.run.run_id
    ).items():
        if _materialized_in(instance, run_id, context.asset_key, partition):
            ledger.confirm_spend(partition, endpoint, run_id)
            continue
        run = instance.get_run_by_id(run_id)
        if run is None:
            continue  # a run of another Dagster instance sharing the ledger: not ours to judge
        if run.is_finished or claimed_at < time.time() - lease_seconds:
            orphaned.append(run_id)
    return orphaned


def _materialized_in(instance: dg.DagsterInstance, run_id: str, asset: dg.AssetKey, partition: str) -> bool:
    events = instance.all_logs(run_id, of_type=dg.DagsterEventType.ASSET_MATERIALIZATION)
    return any(
        (event := record.dagster_event) is not None
        and event.asset_key == asset
        and event.partition == partition
        for record in events
    )
