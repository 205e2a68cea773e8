"""Asset checks on a catalog partition. Each re-reads what is on disk, so it also catches a file
changed or deleted after the run (execute them from the UI at any time). They read the partition
a batch at a time, only the columns they need.

They are partitioned like the catalog, so each result (and a run that failed before its checks)
shows on its own partition. Partitioned checks are a Dagster 1.13 preview; `partition_check`
silences its PreviewWarning for these definitions alone."""

import warnings
from collections.abc import Callable, Iterator

import dagster as dg
import pyarrow as pa
import pyarrow.compute as pc

from .assets import catalog
from .dataset.catalog import iter_partition
from .dataset.files import file_problem
from .dataset.pricing import UnitPrice
from .fal.models import billed_megapixels
from .partitions import prompt_tables
from .resources import DatasetResource

EXAMPLES = 10


def _partition_rows(
    context: dg.AssetCheckExecutionContext, dataset: DatasetResource, columns: list[str]
) -> Iterator[dict]:
    for batch in iter_partition(dataset.layout.catalog_dir, context.partition_key, columns):
        yield from batch.to_pylist()


def partition_check(asset, description: str, blocking: bool = False) -> Callable:
    """@dg.asset_check on one partition of `asset`."""

    def define(function: Callable) -> dg.AssetChecksDefinition:
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", category=dg.PreviewWarning)
            return dg.asset_check(
                asset=asset, partitions_def=prompt_tables, blocking=blocking, description=description
            )(function)

    return define


def _examples(image_ids: list[str]) -> str:
    return ", ".join(image_ids[:EXAMPLES]) or "none"


@partition_check(catalog, "Every catalog row's file exists and has the recorded SHA-256.", blocking=True)
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


@partition_check(catalog, "No image id appears twice in the partition.", blocking=True)
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


@partition_check(catalog, "Each row's cost recomputes from its size, billing unit and unit price.")
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


@partition_check(catalog, "Warns when the share of NSFW-flagged images exceeds the configured rate.")
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


CATALOG_CHECKS = [files_match_hashes, unique_image_ids, cost_recomputes, nsfw_rate]
