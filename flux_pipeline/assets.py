"""The dataset's asset graph, one partition per prompt table:
prompt_table_files → prompts → images → redux_variations → catalog → cost_report (unpartitioned).
Their automation conditions are in automation.py."""

from functools import partial
from itertools import chain

import dagster as dg
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
from pydantic import Field
from upath import UPath

from .automation import DATASET_CONDITION, REPORT_CONDITION
from .dataset import cost_report as cost_views
from .dataset.axes import ROW_COLUMNS, AxisBalance, attach_row_columns
from .dataset.catalog import CatalogSummary, replace_partition
from .dataset.estimate import Estimate, estimate
from .dataset.gallery import write_gallery
from .dataset.layout import DatasetLayout, PartitionFiles
from .dataset.ledger import PartitionLedger, RequestLedger, RunContext
from .dataset.plans import redux_jobs, text_to_image_job
from .dataset.prompt_table import (
    PROMPT_ROW_SCHEMA,
    PromptTableError,
    Reject,
    open_prompt_table,
    plan_rows,
    prompt_row_record,
)
from .dataset.reject_summary import RejectSummary
from .dataset.rows import CatalogRowWriter, ParquetRowWriter
from .dataset.storage import write_parquet_atomically
from .dataset.table_source import partition_table, source_version
from .fal.models import REDUX_ENDPOINTS, TEXT_TO_IMAGE_ENDPOINTS
from .metadata import preview_metadata, step_metadata, table_preview
from .partitions import FAL_POOL, GROUP, prompt_tables
from .resources import BaseFalResource, DatasetResource
from .spend import add_run_spend
from .step_engine import FAILURE_SCHEMA, report_spend, run_generation_step, step_prices

REJECT_SCHEMA = pa.schema(
    [("row", pa.int64()), ("prompt_id", pa.string()), ("field", pa.string()), ("reason", pa.string())]
)
GENERATED_STEP, VARIATIONS_STEP = "generated", "variations"
STEP_ENDPOINTS = {GENERATED_STEP: TEXT_TO_IMAGE_ENDPOINTS, VARIATIONS_STEP: REDUX_ENDPOINTS}
ESTIMATE_WITHIN_BUDGET = dg.AssetCheckSpec(
    "estimate_within_budget",
    asset="prompts",
    blocking=True,
    description="The partition's estimated cost fits budget_usd; when it does not, nothing is sent.",
)
CATALOG_PREVIEW_COLUMNS = [
    "image_id",
    "prompt_id",
    "endpoint",
    "seed",
    "width",
    "height",
    "nsfw",
    "cost_usd",
    "parent_image_id",
]


class GenerationConfig(dg.Config):
    """Run config of the steps that call fal."""

    pay_again_for_unusable: bool = Field(
        default=False,
        description="Send again, and pay fal again for, the requests it billed whose answers could not "
        "be cataloged (wrong image count, NSFW flags or seed). Off: they stay failures, never resent.",
    )


prompt_table_files = dg.AssetSpec(
    "prompt_table_files",
    partitions_def=prompt_tables,
    group_name=GROUP,
    kinds={"parquet"},
    description="The prompt tables (data/prompts/KEY.parquet) or recipes (data/recipes/KEY.yaml), one "
    "per partition. An external asset: "
    "prompt_table_sensor reports a new version (the file's SHA-256) when a table appears or "
    "changes, which marks its downstream assets stale.",
)


@dg.asset(
    partitions_def=prompt_tables,
    automation_condition=DATASET_CONDITION,
    deps=[prompt_table_files],
    group_name=GROUP,
    code_version="1",
    kinds={"parquet"},
    description="The table's rows validated into requests (rows that fail go to rejects.parquet), and "
    "what they will cost: a blocking check stops the partition before anything is sent when the estimate "
    "exceeds budget_usd.",
    check_specs=[ESTIMATE_WITHIN_BUDGET],
)
def prompts(
    context: dg.AssetExecutionContext, fal: BaseFalResource, dataset: DatasetResource
) -> dg.MaterializeResult:
    layout = dataset.layout
    source = _table_source(context, layout)
    files = layout.partition_files(context.partition_key)
    try:
        path = partition_table(
            layout, context.partition_key, dataset.request_defaults(), dataset.ledger_location()
        )
        table = open_prompt_table(path)
        outcomes = plan_rows(table, path, dataset.request_defaults(), layout.prompts_dir)
        valid, redux_rows, rejects = _write_prompt_rows(context, outcomes, files)
    except PromptTableError as exc:
        metadata = {"table": dg.MetadataValue.path(str(source))}
        raise dg.Failure(description=str(exc), metadata=metadata) from None
    forecast = _estimate(context, fal, dataset, files)
    return dg.MaterializeResult(
        metadata={
            "estimated_cost_usd": forecast.cost_usd,
            "estimated_megapixels": forecast.megapixels,
            "new_requests": forecast.new_requests,
            "paid_requests": forecast.paid_requests,
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


@dg.asset(
    partitions_def=prompt_tables,
    automation_condition=DATASET_CONDITION,
    deps=[prompts],
    group_name=GROUP,
    pool=FAL_POOL,
    code_version="1",
    kinds={"fal", "parquet"},
    description="One FLUX1.1 [pro] text-to-image request per valid row, run concurrently.",
)
def images(
    context: dg.AssetExecutionContext,
    config: GenerationConfig,
    fal: BaseFalResource,
    dataset: DatasetResource,
) -> dg.MaterializeResult:
    files = dataset.layout.partition_files(context.partition_key)
    jobs = map(text_to_image_job, files.prompt_rows())
    return _generation_step(context, config, fal, dataset, GENERATED_STEP, jobs, dataset.budget_usd)


@dg.asset(
    partitions_def=prompt_tables,
    automation_condition=DATASET_CONDITION,
    deps=[images],
    group_name=GROUP,
    pool=FAL_POOL,
    code_version="1",
    kinds={"fal", "parquet"},
    description="FLUX1.1 [pro] Redux variations of a given image or of the row's generated image.",
)
def redux_variations(
    context: dg.AssetExecutionContext,
    config: GenerationConfig,
    fal: BaseFalResource,
    dataset: DatasetResource,
) -> dg.MaterializeResult:
    files = dataset.layout.partition_files(context.partition_key)
    jobs = redux_jobs(
        files.prompt_rows(),
        files.outputs_dir,
        dataset.layout.prompts_dir,
        partial(files.first_images, GENERATED_STEP),
    )
    budget_left = None
    if dataset.budget_usd is not None:
        spent = pc.sum(files.read_step(GENERATED_STEP, ["cost_usd"])["cost_usd"]).as_py() or 0.0
        budget_left = dataset.budget_usd - spent
    return _generation_step(context, config, fal, dataset, VARIATIONS_STEP, jobs, budget_left)


@dg.asset(
    partitions_def=prompt_tables,
    automation_condition=DATASET_CONDITION,
    deps=[images, redux_variations],
    group_name=GROUP,
    code_version="1",
    kinds={"parquet"},
    description="Lineage catalog: one row per output image (data/catalog/partition=KEY/data.parquet).",
)
def catalog(context: dg.AssetExecutionContext, dataset: DatasetResource) -> dg.MaterializeResult:
    layout, key = dataset.layout, context.partition_key
    files, summary, balance = layout.partition_files(key), CatalogSummary(), AxisBalance()
    steps = chain(files.step_batches(GENERATED_STEP), files.step_batches(VARIATIONS_STEP))
    rows = balance.observe(attach_row_columns(steps, files.row_columns(ROW_COLUMNS)))
    path = replace_partition(layout.catalog_dir, key, summary.observe(rows))
    head = summary.head_table()
    gallery = write_gallery(layout.catalog_dir, layout.outputs_dir, key)
    return dg.MaterializeResult(
        metadata={
            "path": dg.MetadataValue.path(str(path)),
            "gallery": dg.MetadataValue.path(str(gallery)),
            "images": summary.images,
            "partition_cost_usd": round(summary.cost_usd, 6),
            "billed_megapixels": summary.billed_megapixels,
            "nsfw_images": summary.nsfw_images,
            **({"axis_balance": dg.MetadataValue.md(table)} if (table := balance.markdown()) else {}),
            "catalog_preview": table_preview(head.select(CATALOG_PREVIEW_COLUMNS).slice(0, 20).to_pandas()),
            **preview_metadata(
                layout.outputs_dir, head, f"{key} contact sheet", files.folder / "contact_sheet.png"
            ),
        }
    )


@dg.asset(
    deps=[catalog],
    automation_condition=REPORT_CONDITION,
    group_name=GROUP,
    kinds={"parquet"},
    description="Spend and list value per partition, spend per run and backfill, per day and per model, "
    "and every request (data/reports/*.parquet).",
)
def cost_report(context: dg.AssetExecutionContext, dataset: DatasetResource) -> dg.MaterializeResult:
    layout = dataset.layout
    with RequestLedger(dataset.ledger_location()) as ledger:
        requests = cost_views.requests_frame(ledger.requests())
    views = {
        "cost_by_partition": cost_views.by_partition(layout.catalog_dir, requests),
        "cost_by_run": cost_views.by_run(requests),
        "cost_by_day": cost_views.by_day(requests),
        "cost_by_model": cost_views.by_model(requests),
        "requests": requests,
    }
    for name, frame in views.items():
        write_parquet_atomically(
            pa.Table.from_pandas(frame, preserve_index=False), layout.reports_dir / f"{name}.parquet"
        )
    total = views["cost_by_partition"].iloc[-1]
    return dg.MaterializeResult(
        metadata={
            "total_spent_usd": float(total["spent_usd"]),
            "total_partition_cost_usd": float(total["partition_cost_usd"]),
            "total_images": int(total["images"]),
            "partitions": len(views["cost_by_partition"]) - 1,
            "reports": dg.MetadataValue.path(str(layout.reports_dir)),
            "by_partition": table_preview(views["cost_by_partition"]),
            "by_run": table_preview(views["cost_by_run"]),
            "by_day": table_preview(views["cost_by_day"]),
            "by_model": table_preview(views["cost_by_model"]),
        }
    )


# -- the work behind the asset bodies --------------------------------------------------------------


def _estimate(
    context: dg.AssetExecutionContext, fal: BaseFalResource, dataset: DatasetResource, files: PartitionFiles
) -> Estimate:
    prices = step_prices(fal, dataset, context.log)
    with RequestLedger(dataset.ledger_location()) as ledger:
        entry_of = PartitionLedger(
            ledger, context.partition_key, RunContext(context.run.run_id, fal.backend)
        ).snapshot()
        layout = dataset.layout
        return estimate(
            files.prompt_rows(), entry_of, prices, fal.backend, layout.outputs_dir, layout.prompts_dir
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
        check_name=ESTIMATE_WITHIN_BUDGET.name,
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


def _generation_step(
    context: dg.AssetExecutionContext,
    config: GenerationConfig,
    fal: BaseFalResource,
    dataset: DatasetResource,
    step: str,
    jobs,
    budget_left: float | None,
) -> dg.MaterializeResult:
    """Run the step, persist its failures (its rows are written as they come), fail loudly when
    the budget stopped it, else claim its spend and report."""
    files = dataset.layout.partition_files(context.partition_key)
    with CatalogRowWriter(files.step_rows(step)) as rows:
        tally = run_generation_step(
            context, fal, dataset, jobs, budget_left, rows, config.pay_again_for_unusable
        )
    failures = pa.Table.from_pylist(tally.failures, schema=FAILURE_SCHEMA)
    write_parquet_atomically(failures, files.step_failures(step))
    if tally.budget_stopped:
        raise dg.Failure(
            description=f"budget of ${dataset.budget_usd:.2f} for partition {context.partition_key!r} "
            f"reached: ${tally.committed_usd:.2f} committed in this step, "
            f"{tally.not_sent} request(s) not sent",
            metadata={"requests_not_sent": tally.not_sent, "budget_usd": dataset.budget_usd},
        )
    report_spend(context, dataset, STEP_ENDPOINTS[step], tally)
    metadata = step_metadata(tally, rows)
    metadata.update(preview_metadata(dataset.layout.outputs_dir, rows.totals.head_table(), f"{step} images"))
    add_run_spend(context, metadata)
    return dg.MaterializeResult(metadata=metadata)
