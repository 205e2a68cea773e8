"""Asset checks on a catalog partition. Each re-reads what is on disk, so it also catches a file
changed or deleted after the run (execute them from the UI at any time)."""

import dagster as dg

from .assets import catalog, prompt_tables
from .dataset.catalog import read_catalog
from .dataset.files import file_problem
from .dataset.settings import DatasetSettings
from .fal.models import billed_megapixels


def _partition_rows(context: dg.AssetCheckExecutionContext, dataset: DatasetSettings):
    return read_catalog(dataset.catalog_path, partitions=[context.partition_key])


@dg.asset_check(asset=catalog, partitions_def=prompt_tables, blocking=True,
                description="Every catalog row's file exists and has the recorded SHA-256.")
def files_match_hashes(context: dg.AssetCheckExecutionContext, dataset: DatasetSettings) -> dg.AssetCheckResult:
    frame = _partition_rows(context, dataset)
    root = dataset.output_path
    missing, mismatched = [], []
    for row in frame.itertuples():
        problem = file_problem(root / row.file_path, row.content_hash)
        if problem:
            (missing if problem == "missing" else mismatched).append(row.image_id)
    return dg.AssetCheckResult(passed=not missing and not mismatched, metadata={
        "rows": len(frame), "missing_files": len(missing), "hash_mismatches": len(mismatched),
        "examples": ", ".join((missing + mismatched)[:10]) or "none"})


@dg.asset_check(asset=catalog, partitions_def=prompt_tables, blocking=True,
                description="No image id appears twice in the partition.")
def unique_image_ids(context: dg.AssetCheckExecutionContext, dataset: DatasetSettings) -> dg.AssetCheckResult:
    ids = _partition_rows(context, dataset)["image_id"]
    duplicates = sorted(ids[ids.duplicated()].unique())
    return dg.AssetCheckResult(passed=not duplicates, metadata={
        "rows": len(ids), "duplicate_ids": len(duplicates), "examples": ", ".join(duplicates[:10]) or "none"})


@dg.asset_check(asset=catalog, partitions_def=prompt_tables,
                description="Each row's cost recomputes from its width, height, megapixel size and price.")
def cost_recomputes(context: dg.AssetCheckExecutionContext, dataset: DatasetSettings) -> dg.AssetCheckResult:
    frame = _partition_rows(context, dataset)
    wrong = []
    for row in frame.itertuples():
        megapixels = billed_megapixels(row.width, row.height, row.megapixel_size)
        if megapixels != row.billed_megapixels or abs(megapixels * row.price_per_megapixel - row.cost_usd) > 1e-9:
            wrong.append(row.image_id)
    return dg.AssetCheckResult(passed=not wrong, metadata={
        "rows": len(frame), "wrong_costs": len(wrong), "examples": ", ".join(wrong[:10]) or "none",
        "cost_usd": round(float(frame["cost_usd"].sum()), 6)})


@dg.asset_check(asset=catalog, partitions_def=prompt_tables,
                description="Warns when the share of NSFW-flagged images exceeds the configured rate.")
def nsfw_rate(context: dg.AssetCheckExecutionContext, dataset: DatasetSettings) -> dg.AssetCheckResult:
    flags = _partition_rows(context, dataset)["nsfw"]
    rate = float(flags.mean()) if len(flags) else 0.0
    return dg.AssetCheckResult(passed=rate <= dataset.nsfw_warn_rate, severity=dg.AssetCheckSeverity.WARN,
                               metadata={"nsfw_rate": round(rate, 4), "threshold": dataset.nsfw_warn_rate,
                                         "nsfw_images": int(flags.sum()), "images": len(flags)})


CATALOG_CHECKS = [files_match_hashes, unique_image_ids, cost_recomputes, nsfw_rate]
