"""Spend per run: the `spent_usd` (paid) and `emulated_usd` that steps report become their run's
tags, also when a step then fails; a backfill's totals sum its runs, paid and emulated apart."""

import dagster as dg
import pytest

from flux_pipeline.lib.spend import (
    EMULATED_TAG,
    SPENT_TAG,
    BackfillSpend,
    add_run_spend,
    backfill_known,
    backfill_spend,
    run_tag,
)


@dg.asset
def paid(context: dg.AssetExecutionContext) -> dg.MaterializeResult:
    metadata = {"spent_usd": 0.12, "images": 3}
    add_run_spend(context, metadata)
    return dg.MaterializeResult(metadata=metadata)


@dg.asset(deps=[paid])
def stopped_by_budget(context: dg.AssetExecutionContext) -> None:
    metadata = {"spent_usd": dg.MetadataValue.float(0.04)}
    add_run_spend(context, metadata)
    raise dg.Failure(description="budget reached", metadata=metadata)


@dg.asset
def rehearsed(context: dg.AssetExecutionContext) -> dg.MaterializeResult:
    metadata = {"spent_usd": 0.0, "emulated_usd": 0.5}  # what the emulator billed: nothing paid
    add_run_spend(context, metadata)
    return dg.MaterializeResult(metadata=metadata)


@dg.asset
def unreported(context: dg.AssetExecutionContext) -> dg.MaterializeResult:
    metadata = {"cost_usd": 0.5}  # steps that do not report spent_usd leave no tag
    add_run_spend(context, metadata)
    return dg.MaterializeResult(metadata=metadata)


def run(instance, selection, backfill: str) -> str:
    job = dg.define_asset_job("spend", selection=selection)
    defs = dg.Definitions(assets=[paid, stopped_by_budget, rehearsed, unreported], jobs=[job])
    result = defs.resolve_job_def("spend").execute_in_process(
        instance=instance, tags={"dagster/backfill": backfill}, raise_on_error=False
    )
    return result.run_id


def test_a_run_is_tagged_with_what_its_steps_spent_even_when_one_fails():
    with dg.instance_for_test() as instance:
        spent = run(instance, [paid, stopped_by_budget], "b1")
        assert run_tag(instance, spent) == pytest.approx(0.16)
        assert instance.get_run_by_id(spent).tags[SPENT_TAG] == "0.1600"
        assert EMULATED_TAG not in instance.get_run_by_id(spent).tags

        free = run(instance, [unreported], "b1")
        assert run_tag(instance, free) is None and SPENT_TAG not in instance.get_run_by_id(free).tags

        run(instance, [paid], "b1")
        run(instance, [paid], "another backfill")
        assert backfill_spend(instance, "b1") == BackfillSpend(pytest.approx(0.28), 0.0, 2)
        assert backfill_known(instance, "b1") and not backfill_known(instance, "no such backfill")


def test_emulated_spend_is_tagged_apart_and_never_summed_as_paid():
    with dg.instance_for_test() as instance:
        both = run(instance, [paid, rehearsed], "b2")
        assert run_tag(instance, both, SPENT_TAG) == pytest.approx(0.12)
        assert run_tag(instance, both, EMULATED_TAG) == pytest.approx(0.5)
        run(instance, [rehearsed], "b2")
        assert backfill_spend(instance, "b2") == BackfillSpend(pytest.approx(0.12), pytest.approx(1.0), 2)
