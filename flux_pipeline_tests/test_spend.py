"""Spend per run: the `spent_usd` that steps report becomes the run's tag; a backfill's total
sums its runs."""

from __future__ import annotations

import dagster as dg
import pytest

from flux_pipeline.spend import SPENT_TAG, backfill_spend, run_spend, tag_run_spend


@dg.asset
def paid() -> dg.MaterializeResult:
    return dg.MaterializeResult(metadata={"spent_usd": 0.12})


@dg.asset(deps=[paid])
def stopped_by_budget() -> None:
    raise dg.Failure(description="budget reached", metadata={"spent_usd": 0.04})


@dg.asset
def free() -> None:
    return None


def run(instance, selection, backfill: str) -> str:
    job = dg.define_asset_job("spend", selection=selection)
    defs = dg.Definitions(assets=[paid, stopped_by_budget, free], jobs=[job])
    result = defs.resolve_job_def("spend").execute_in_process(
        instance=instance, tags={"dagster/backfill": backfill}, raise_on_error=False
    )
    return result.run_id


def test_a_run_is_tagged_with_what_its_steps_spent_even_when_one_fails():
    with dg.instance_for_test() as instance:
        spent = run(instance, [paid, stopped_by_budget], "b1")
        assert tag_run_spend(instance, spent) == pytest.approx(0.16)
        assert instance.get_run_by_id(spent).tags[SPENT_TAG] == "0.1600"

        unreported = run(instance, [free], "b1")
        assert run_spend(instance, unreported) is None
        assert tag_run_spend(instance, unreported) is None
        assert SPENT_TAG not in instance.get_run_by_id(unreported).tags

        assert tag_run_spend(instance, run(instance, [paid], "b1")) == pytest.approx(0.12)
        tag_run_spend(instance, run(instance, [paid], "other"))
        assert backfill_spend(instance, "b1") == (pytest.approx(0.28), 2)
