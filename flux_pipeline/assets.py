"""The dataset's asset graph, one partition per prompt table:
prompt_table_files → prompts → images → redux_variations → catalog → cost_report."""

import functools
import statistics
from collections.abc import Iterator
from itertools import chain

import dagster as dg
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
from upath import UPath

from .dataset.catalog import (
    SCHEMA, CatalogSummary, cost_report as compute_cost_report, replace_partition, write_parquet_atomically,
)
from .dataset.files import sha256_of
from .dataset.generation import PlannedRequest, StepResult, failure_row, run_step
from .dataset.preview import contact_sheet, markdown_image
from .dataset.rows import CatalogRowWriter, ParquetRowWriter
from .dataset.prompt_table import (
    GENERATED, PLANNED_SCHEMA, PromptTableError, Reject, open_prompt_table, plan_rows, planned_row_from_record,
    planned_row_record,
)
from .dataset.settings import DatasetSettings
from .dataset.storage import parquet_batches, parquet_file, write_bytes_atomically
from .fal.batch import GenerationJob
from .fal.models import REDUX, TEXT_TO_IMAGE
from .resources import FalResource

prompt_tables = dg.DynamicPartitionsDefinition(name="prompt_tables")
GROUP = "flux_dataset"
FAL_POOL = "fal"
"""Dagster concurrency pool shared by every step that calls fal (limit it on the instance)."""

FAILURE_SCHEMA = pa.schema([("prompt_id", pa.string()), ("endpoint", pa.string()), ("request_id", pa.string()),
                            ("field", pa.string()), ("error", pa.string()), ("status_code", pa.int32())])
REJECT_SCHEMA = pa.schema([("row", pa.int64()), ("prompt_id", pa.string()), ("field", pa.string()),
                           ("reason", pa.string())])


prompt_table_files = dg.AssetSpec(
    "prompt_table_files", partitions_def=prompt_tables, group_name=GROUP,
    description="The prompt tables (data/prompts/KEY.parquet), one per partition. An external asset: "
                "prompt_table_sensor reports a new version (the file's SHA-256) when a table appears or "
                "changes, which marks its downstream assets stale.",
)


@dg.asset(partitions_def=prompt_tables, deps=[prompt_table_files], group_name=GROUP, code_version="1",
          description="The table's rows validated into requests; rows that fail go to rejects.parquet.")
def prompts(context: dg.AssetExecutionContext, dataset: DatasetSettings) -> dg.MaterializeResult:
    key = context.partition_key
    path = dataset.table_path(key)
    try:
        table = open_prompt_table(path)
    except PromptTableError as exc:
        raise dg.Failure(description=str(exc), metadata={"table": dg.MetadataValue.path(str(path))}) from None
    folder = dataset.partition_dir(key)
    valid = redux_rows = 0
    rejects: list[dict] = []
    with ParquetRowWriter(folder / "prompts.parquet", PLANNED_SCHEMA) as planned, \
            ParquetRowWriter(folder / "rejects.parquet", REJECT_SCHEMA) as rejected:
        for outcome in plan_rows(table, dataset.request_defaults(), dataset.prompts_path):
            if isinstance(outcome, Reject):
                rejected.write([vars(outcome)])
                context.log.warning(f"{path.name} row {outcome.row} (prompt_id {outcome.prompt_id!r}) rejected: "
                                    f"{outcome.field}: {outcome.reason}")
                if len(rejects) < 20:
                    rejects.append(vars(outcome))
                continue
            planned.write([planned_row_record(outcome)])
            valid += 1
            redux_rows += outcome.redux is not None
    rejected_rows = table.metadata.num_rows - valid
    return dg.MaterializeResult(metadata={
        "table": dg.MetadataValue.path(str(path)),
        "rows": table.metadata.num_rows, "valid_rows": valid, "rejected_rows": rejected_rows,
        "redux_rows": redux_rows,
        "rejects": _table_preview(pd.DataFrame(rejects, columns=REJECT_SCHEMA.names)),
    }, data_version=dg.DataVersion(sha256_of(path)))


@dg.asset(partitions_def=prompt_tables, deps=[prompts], group_name=GROUP, pool=FAL_POOL, code_version="1",
          description="One FLUX1.1 [pro] text-to-image request per valid row, run concurrently.")
def images(context: dg.AssetExecutionContext, fal: FalResource, dataset: DatasetSettings) -> dg.MaterializeResult:
    plans = (PlannedRequest(GenerationJob(row.prompt_id, TEXT_TO_IMAGE, row.text_to_image), row.text_to_image.prompt,
                            identity=row.text_to_image.wire())
             for row in _planned_rows(dataset, context.partition_key))
    with CatalogRowWriter(_step_file(dataset, context.partition_key, "generated")) as rows:
        result = run_step(context, fal, dataset, plans, dataset.budget_usd, rows)
    return _finish_step(context, dataset, "generated", result, rows)


@dg.asset(partitions_def=prompt_tables, deps=[images], group_name=GROUP, pool=FAL_POOL, code_version="1",
          description="FLUX1.1 [pro] Redux variations of a given image or of the row's generated image.")
def redux_variations(context: dg.AssetExecutionContext, fal: FalResource,
                     dataset: DatasetSettings) -> dg.MaterializeResult:
    key = context.partition_key
    root = dataset.output_path

    @functools.cache
    def first_images() -> dict[str, dict]:
        """prompt_id → its first generated image; read only if a row varies its generated image."""
        generated = _read_step(dataset, key, "generated", columns=["prompt_id", "image_index", "image_id",
                                                                     "file_path", "content_hash"])
        first = generated.filter(pc.equal(generated["image_index"], 0))
        return dict(zip(first["prompt_id"].to_pylist(),
                        first.select(["image_id", "file_path", "content_hash"]).to_pylist()))
    early_failures = []

    def plans():
        for row in _planned_rows(dataset, key):
            if row.redux is not None and (plan := redux_plan(row)):
                yield plan

    def redux_plan(row) -> PlannedRequest | None:
        parent_id = parent_source = local = None
        if row.redux_source == GENERATED:
            parent = first_images().get(row.prompt_id)
            if parent is None:
                early_failures.append(failure_row(row.prompt_id, REDUX, None, "redux_image",
                                                  "the row's generated image is missing"))
                return None
            parent_id, local, source_id = parent["image_id"], root / parent["file_path"], parent["content_hash"]
        elif row.redux_source.startswith(("http://", "https://")):
            parent_source = source_id = row.redux_source
        else:
            parent_source, local = row.redux_source, dataset.location(row.redux_source)
            source_id = sha256_of(local)
        redux = row.redux if local else row.redux.model_copy(update={"image_url": row.redux_source})
        return PlannedRequest(GenerationJob(row.prompt_id, REDUX, redux, upload_path=local), row.redux.prompt,
                              identity={**row.redux.wire(), "image_url": source_id},
                              parent_image_id=parent_id, parent_source=parent_source)

    spent = pc.sum(_read_step(dataset, key, "generated", columns=["cost_usd"])["cost_usd"]).as_py() or 0.0
    budget_left = None if dataset.budget_usd is None else dataset.budget_usd - spent
    with CatalogRowWriter(_step_file(dataset, key, "variations")) as rows:
        result = run_step(context, fal, dataset, plans(), budget_left, rows)
    result.failures[:0] = early_failures
    return _finish_step(context, dataset, "variations", result, rows)


@dg.asset(partitions_def=prompt_tables, deps=[images, redux_variations], group_name=GROUP, code_version="1",
          description="Lineage catalog: one row per output image (data/catalog/partition=KEY/data.parquet).")
def catalog(context: dg.AssetExecutionContext, dataset: DatasetSettings) -> dg.MaterializeResult:
    key = context.partition_key
    summary = CatalogSummary()
    steps = chain(_step_batches(dataset, key, "generated"), _step_batches(dataset, key, "variations"))
    path = replace_partition(dataset.catalog_path, key, summary.observe(steps))
    head = summary.head_table()
    root = dataset.output_path
    sheet = contact_sheet([root / p for p in head["file_path"].to_pylist()])
    preview = head.select(["image_id", "prompt_id", "endpoint", "seed", "width", "height", "nsfw", "cost_usd",
                           "parent_image_id"]).slice(0, 20).to_pandas()
    metadata = {
        "path": dg.MetadataValue.path(str(path)), "images": summary.images,
        "cost_usd": round(summary.cost_usd, 6), "billed_megapixels": summary.billed_megapixels,
        "nsfw_images": summary.nsfw_images, "catalog_preview": _table_preview(preview),
    }
    if sheet:
        write_bytes_atomically(dataset.partition_dir(key) / "contact_sheet.png", sheet)
        metadata["preview"] = dg.MetadataValue.md(markdown_image(sheet, f"{key} contact sheet"))
    return dg.MaterializeResult(metadata=metadata)


@dg.asset(deps=[catalog], group_name=GROUP, description="Cost, megapixels, images and NSFW count per partition.")
def cost_report(context: dg.AssetExecutionContext, dataset: DatasetSettings) -> dg.MaterializeResult:
    report = compute_cost_report(dataset.catalog_path)
    path = dataset.reports_path / "cost_report.parquet"
    write_parquet_atomically(pa.Table.from_pandas(report, preserve_index=False), path)
    total = report.iloc[-1]
    return dg.MaterializeResult(metadata={
        "path": dg.MetadataValue.path(str(path)), "partitions": len(report) - 1,
        "total_cost_usd": float(total["cost_usd"]), "total_images": int(total["images"]),
        "total_billed_megapixels": int(total["billed_megapixels"]), "report": _table_preview(report),
    })


# -- helpers ---------------------------------------------------------------------------------------

def _planned_rows(dataset: DatasetSettings, key: str):
    """The validated rows, read a batch at a time."""
    for batch in parquet_file(dataset.partition_dir(key) / "prompts.parquet").iter_batches(batch_size=1024):
        yield from map(planned_row_from_record, batch.to_pylist())


def _step_file(dataset: DatasetSettings, key: str, step: str) -> UPath:
    return dataset.partition_dir(key) / f"{step}.parquet"


def _step_batches(dataset: DatasetSettings, key: str, step: str) -> Iterator[pa.RecordBatch]:
    """A step's catalog rows, a batch at a time."""
    return (batch.cast(SCHEMA) for batch in parquet_batches(_step_file(dataset, key, step)))


def _read_step(dataset: DatasetSettings, key: str, step: str, columns: list[str] | None = None) -> pa.Table:
    path = _step_file(dataset, key, step)
    schema = SCHEMA if columns is None else pa.schema([SCHEMA.field(c) for c in columns])
    return parquet_file(path).read(columns=columns).cast(schema) if path.is_file() else schema.empty_table()


def _finish_step(context: dg.AssetExecutionContext, dataset: DatasetSettings, step: str,
                 result: StepResult, rows: CatalogRowWriter) -> dg.MaterializeResult:
    """Persist the step's failures (its rows are written), then report; fail loudly when the
    budget stopped it."""
    folder = dataset.partition_dir(context.partition_key)
    write_parquet_atomically(pa.Table.from_pylist(result.failures, schema=FAILURE_SCHEMA), folder / f"{step}_failures.parquet")
    totals = rows.totals
    spent = round(totals.cost_usd, 6)
    latencies = sorted(result.latencies)
    metadata = {
        "images": totals.images, "requests_succeeded": rows.requests,
        "requests_failed": len(result.failures), "requests_reused": result.reused,
        "requests_resumed": result.resumed, "cost_usd": spent,
        "billed_megapixels": totals.billed_megapixels, "nsfw_images": totals.nsfw_images,
        "failures": _table_preview(pd.DataFrame(result.failures, columns=FAILURE_SCHEMA.names)),
    }
    if latencies:
        quantiles = statistics.quantiles(latencies, n=100, method="inclusive") if len(latencies) > 1 else latencies * 99
        metadata.update({"fal_latency_p50_s": round(quantiles[49], 3), "fal_latency_p90_s": round(quantiles[89], 3),
                         "fal_latency_p99_s": round(quantiles[98], 3)})
    if result.budget_stopped:
        raise dg.Failure(
            description=f"budget of ${dataset.budget_usd:.2f} for partition {context.partition_key!r} reached: "
                        f"spent ${spent:.2f} in this step, {result.not_sent} request(s) not sent",
            metadata={**metadata, "requests_not_sent": result.not_sent, "budget_usd": dataset.budget_usd},
        )
    return dg.MaterializeResult(metadata=metadata)


def _table_preview(frame: pd.DataFrame, limit: int = 20) -> dg.MetadataValue:
    head = frame.head(limit).astype(object).where(frame.head(limit).notna(), None)
    columns = [dg.TableColumn(str(c), "string") for c in head.columns]
    records = [dg.TableRecord({str(k): (v if isinstance(v, (int, float, bool)) or v is None else str(v))
                               for k, v in row.items()}) for row in head.to_dict("records")]
    return dg.MetadataValue.table(records, schema=dg.TableSchema(columns=columns))
