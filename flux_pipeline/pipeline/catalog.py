"""The lineage catalog (one row per output image, catalog/partition=KEY/data.parquet) and its
checks. Each check re-reads what is on disk, so it also catches a file changed or deleted after
the run (execute them from the UI at any time); they read the partition a batch at a time, only
the columns they need, and are partitioned like the catalog, so each result (and a run that
failed before its checks) shows on its own partition."""

from collections.abc import Iterator
from itertools import chain

import dagster as dg
import pyarrow as pa
import pyarrow.compute as pc

from ..dataset.catalog.axes import ROW_COLUMNS, AxisBalance, attach_row_columns, row_columns
from ..dataset.catalog.gallery import write_gallery
from ..dataset.catalog.steps import step_batches
from ..dataset.catalog.table import CatalogSummary, iter_partition, replace_partition
from ..dataset.costs.pricing import UnitPrice
from ..dataset.files.images import file_problem
from ..dataset.files.layout import GENERATED_STEP, VARIATIONS_STEP
from ..fal.models import billed_megapixels
from ..lib.assets import dataset_asset, partition_check
from ..lib.metadata import preview_metadata, table_preview
from ..resources import DatasetResource

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


@dataset_asset(
    deps=["images", "redux_variations"],
    kinds={"parquet"},
    description="Lineage catalog: one row per output image (data/catalog/partition=KEY/data.parquet).",
)
def catalog(context: dg.AssetExecutionContext, dataset: DatasetResource) -> dg.MaterializeResult:
    layout, key = dataset.layout, context.partition_key
    files, summary, balance = layout.partition_files(key), CatalogSummary(), AxisBalance()
    steps = chain(step_batches(files, GENERATED_STEP), step_batches(files, VARIATIONS_STEP))
    rows = balance.observe(attach_row_columns(steps, row_columns(files, ROW_COLUMNS)))
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


EXAMPLES = 10


def _partition_rows(
    context: dg.AssetCheckExecutionContext, dataset: DatasetResource, columns: list[str]
) -> Iterator[dict]:
    for batch in iter_partition(dataset.layout.catalog_dir, context.partition_key, columns):
        yield from batch.to_pylist()


def _examples(image_ids: list[str]) -> str:
    return ", ".join(image_ids[:EXAMPLES]) or "none"


@partition_check("catalog", "Every catalog row's file exists and has the recorded SHA-256.", blocking=True)
def files_match_hashes(
    context: dg.AssetCheckExecutionContext, dataset: DatasetResource
) -> dg.AssetCheckResult:
    root = dataset.layout.outputs_dir
    rows, problems = 0, {"missing": 0, "hash mismatch": 0}
    examples: list[str] = []
    for row in _partition_rows(context, dataset, ["image_id", "file_path", "content_hash"]):
        rows += 1
        if problem := file_problem(root / row["file_path"], row["content_hash"]):
            problems[problem] += 1
            if len(examples) < EXAMPLES:
                examples.append(row["image_id"])
    return dg.AssetCheckResult(
        passed=not any(problems.values()),
        metadata={
            "rows": rows,
            "missing_files": problems["missing"],
            "hash_mismatches": problems["hash mismatch"],
            "examples": _examples(examples),
        },
    )


@partition_check("catalog", "No image id appears twice in the partition.", blocking=True)
def unique_image_ids(context: dg.AssetCheckExecutionContext, dataset: DatasetResource) -> dg.AssetCheckResult:
    # Holds the one id column in Arrow (about 30 bytes a row), not the partition.
    batches = iter_partition(dataset.layout.catalog_dir, context.partition_key, ["image_id"])
    ids = pa.chunked_array([batch["image_id"] for batch in batches], type=pa.string())
    counts = pc.value_counts(ids)
    duplicates = sorted(counts.filter(pc.greater(counts.field("counts"), 1)).field("values").to_pylist())
    return dg.AssetCheckResult(
        passed=not duplicates,
        metadata={"rows": len(ids), "duplicate_ids": len(duplicates), "examples": _examples(duplicates)},
    )


@partition_check("catalog", "Each row's cost recomputes from its size, billing unit and unit price.")
def cost_recomputes(context: dg.AssetCheckExecutionContext, dataset: DatasetResource) -> dg.AssetCheckResult:
    rows, cost, wrong = 0, 0.0, 0
    examples: list[str] = []
    columns = ["image_id", "width", "height", "megapixel_size", "billed_megapixels", "billing_unit"]
    columns += ["unit_price", "cost_usd"]
    for row in _partition_rows(context, dataset, columns):
        rows, cost = rows + 1, cost + row["cost_usd"]
        price = UnitPrice(row["unit_price"], row["billing_unit"], megapixel_size=row["megapixel_size"])
        megapixels = billed_megapixels(row["width"], row["height"], row["megapixel_size"])
        expected = price.cost(price.units(row["width"], row["height"]))
        if megapixels != row["billed_megapixels"] or abs(expected - row["cost_usd"]) > 1e-9:
            wrong += 1
            if len(examples) < EXAMPLES:
                examples.append(row["image_id"])
    return dg.AssetCheckResult(
        passed=not wrong,
        metadata={
            "rows": rows,
            "wrong_costs": wrong,
            "examples": _examples(examples),
            "cost_usd": round(cost, 6),
        },
    )


@partition_check("catalog", "Warns when the share of NSFW-flagged images exceeds the configured rate.")
def nsfw_rate(context: dg.AssetCheckExecutionContext, dataset: DatasetResource) -> dg.AssetCheckResult:
    images = flagged = 0
    for batch in iter_partition(dataset.layout.catalog_dir, context.partition_key, ["nsfw"]):
        images += batch.num_rows
        flagged += pc.sum(pc.cast(batch["nsfw"], pa.int64())).as_py() or 0
    rate = flagged / images if images else 0.0
    return dg.AssetCheckResult(
        passed=rate <= dataset.nsfw_warn_rate,
        severity=dg.AssetCheckSeverity.WARN,
        metadata={
            "nsfw_rate": round(rate, 4),
            "threshold": dataset.nsfw_warn_rate,
            "nsfw_images": flagged,
            "images": images,
        },
    )
