"""The partition's prompt table (an external asset, one table per partition) and `prompts`: its
rows validated into requests, and what they will cost, checked against the budget before anything
is sent."""

import dagster as dg
import pandas as pd
import pyarrow as pa
from upath import UPath

from ..dataset.catalog.rows import ParquetRowWriter
from ..dataset.costs.estimate import Estimate, estimate
from ..dataset.files.layout import DatasetLayout, PartitionFiles
from ..dataset.plan.prompt_table import (
    PROMPT_ROW_SCHEMA,
    PromptTableError,
    Reject,
    open_prompt_table,
    prompt_row_record,
    read_prompt_rows,
)
from ..dataset.plan.reject_summary import RejectSummary
from ..dataset.plan.table_source import partition_table, planned_rows, source_version
from ..lib.assets import PerDataset, dataset_asset
from ..lib.generation_step import step_prices
from ..lib.metadata import table_preview
from ..resources import BaseFalResource, DatasetResource

REJECT_SCHEMA = pa.schema(
    [("row", pa.int64()), ("prompt_id", pa.string()), ("field", pa.string()), ("reason", pa.string())]
)
ESTIMATE_WITHIN_BUDGET = "estimate_within_budget"

prompt_table_files = PerDataset(
    lambda names, resources: dg.AssetSpec(
        names.key("prompt_table_files"),
        partitions_def=names.prompt_tables,
        group_name=names.group,
        kinds={"parquet"},
        description="The prompt tables (data/prompts/KEY.parquet) or recipes (data/recipes/KEY.yaml), one "
        "per partition. An external asset: "
        "prompt_table_sensor reports a new version (the file's SHA-256) when a table appears or "
        "changes, which marks its downstream assets stale.",
    )
)


@dataset_asset(
    deps=["prompt_table_files"],
    kinds={"parquet"},
    description="The table's rows validated into requests (rows that fail go to rejects.parquet), and "
    "what they will cost: a blocking check stops the partition before anything is sent when the estimate "
    "exceeds budget_usd.",
    blocking_checks={
        ESTIMATE_WITHIN_BUDGET: "The partition's estimated cost fits budget_usd; when it does not, nothing "
        "is sent."
    },
)
def prompts(
    context: dg.AssetExecutionContext, fal: BaseFalResource, dataset: DatasetResource
) -> dg.MaterializeResult:
    layout, key = dataset.layout, context.partition_key
    source, files = _table_source(context, layout), layout.partition_files(key)
    try:
        path = partition_table(layout, key, dataset.request_defaults(), dataset.ledger_location())
        table = open_prompt_table(path)
        outcomes = planned_rows(source, table, path, dataset.request_defaults(), layout.prompts_dir)
        valid, redux_rows, rejects = _write_prompt_rows(context, outcomes, files)
    except PromptTableError as exc:
        raise dg.Failure(
            description=str(exc), metadata={"table": dg.MetadataValue.path(str(source))}
        ) from None
    forecast = _estimate(context, fal, dataset, files)
    if warning := forecast.remade_warning(fal.backend):
        context.log.warning(warning)
    return dg.MaterializeResult(
        metadata={
            **_forecast_metadata(forecast),
            "table": dg.MetadataValue.path(str(source)),
            "rows": table.metadata.num_rows,
            "valid_rows": valid,
            "rejected_rows": table.metadata.num_rows - valid,
            "redux_rows": redux_rows,
            "rejects": table_preview(pd.DataFrame(rejects, columns=REJECT_SCHEMA.names)),
        },
        data_version=dg.DataVersion(source_version(layout, source, dataset.ledger_location)),
        check_results=[_budget_check(forecast, dataset.budget_usd)],
    )


def _forecast_metadata(forecast: Estimate) -> dict[str, float | int]:
    return {
        "estimated_cost_usd": forecast.cost_usd,
        "estimated_megapixels": forecast.megapixels,
        "new_requests": forecast.new_requests,
        "paid_requests": forecast.paid_requests,
        "remade_requests": forecast.remade_requests,
        "remade_cost_usd": forecast.remade_cost_usd,
    }


def _estimate(
    context: dg.AssetExecutionContext, fal: BaseFalResource, dataset: DatasetResource, files: PartitionFiles
) -> Estimate:
    prices = step_prices(fal, dataset, context.log)
    with dataset.request_ledger() as ledger:
        entry_of = ledger.entries(context.partition_key)
        layout = dataset.layout
        return estimate(
            read_prompt_rows(files), entry_of, prices, fal.backend, layout.outputs_dir, layout.prompts_dir
        )


def _table_source(context: dg.AssetExecutionContext, layout: DatasetLayout) -> UPath:
    """The partition's prompt table or recipe, which must exist."""
    path = layout.source(context.partition_key)
    if not path.exists():
        recipe = layout.recipe(context.partition_key)
        raise dg.Failure(
            description=f"partition {context.partition_key!r} has no prompt table: expected {path} (or the "
            f"recipe {recipe}). Add one, or delete the partition (automation never runs a partition "
            "without a table).",
            metadata={"table": dg.MetadataValue.path(str(path))},
        )
    return path


def _budget_check(forecast: Estimate, budget_usd: float | None) -> dg.AssetCheckResult:
    within = budget_usd is None or forecast.cost_usd <= budget_usd + 1e-9
    return dg.AssetCheckResult(
        check_name=ESTIMATE_WITHIN_BUDGET,
        passed=within,
        metadata={"estimated_cost_usd": forecast.cost_usd, "budget_usd": budget_usd},
        description=None
        if within
        else f"estimated ${forecast.cost_usd:.2f} exceeds the budget of ${budget_usd:.2f}: nothing was sent",
    )


def _write_prompt_rows(
    context: dg.AssetExecutionContext, outcomes, files: PartitionFiles
) -> tuple[int, int, list]:
    """prompts.parquet and rejects.parquet from the validated rows, committed only when every row
    was read; the rejects summed up in one warning. (valid, Redux rows, first rejects)."""
    valid = redux_rows = 0
    summary = RejectSummary()
    with (
        ParquetRowWriter(files.prompts, PROMPT_ROW_SCHEMA, commit_on_error=False) as planned,
        ParquetRowWriter(files.rejects, REJECT_SCHEMA, commit_on_error=False) as rejected,
    ):
        for outcome in outcomes:
            if isinstance(outcome, Reject):
                rejected.write([vars(outcome)])
                summary.add(outcome)
                continue
            planned.write([prompt_row_record(outcome)])
            valid += 1
            redux_rows += outcome.redux is not None
    if text := summary.text():
        context.log.warning(text)
    return valid, redux_rows, [vars(reject) for reject in summary.first]
