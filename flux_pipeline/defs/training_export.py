"""The training export of each catalog partition, downstream of `catalog`: WebDataset shards and a
Hugging Face `datasets` Parquet export with its dataset card (dataset.export)."""

import dagster as dg

from ..dataset.export import ExportOptions, export_partition, version_folder
from ..lib.assets import dataset_asset
from ..resources import DatasetResource


class ExportConfig(dg.Config, ExportOptions):
    """Run config of `training_export`: the fields of ExportOptions."""


@dataset_asset(
    deps=["catalog", "review_decisions"],
    kinds={"parquet", "huggingface"},
    description="Training-ready export of the partition (exports/KEY/latest.json names the current "
    "version): WebDataset shards and Hugging Face Parquet per split, reviewer-rejected, NSFW and duplicate "
    "images filtered, splits stable by prompt_id.",
)
def training_export(context: dg.AssetExecutionContext, config: ExportConfig, dataset: DatasetResource):
    layout = dataset.layout
    with dataset.decision_log() as log:
        decisions = {image: entry["decision"] for image, entry in log.latest(context.partition_key).items()}
    manifest = export_partition(
        layout.catalog_dir, layout.outputs_dir, layout.exports_dir, context.partition_key, config, decisions
    )
    folder = version_folder(layout.exports_dir, manifest)
    metadata: dict[str, dg.RawMetadataValue] = {
        "path": dg.MetadataValue.path(str(folder)),
        "catalog_rows": manifest.catalog_rows,
        "exported": manifest.exported,
        **{f"removed_{name}": count for name, count in manifest.removed.items()},
        **{f"{split}_samples": export.samples for split, export in manifest.splits.items()},
        "shards": sum(len(export.webdataset) for export in manifest.splits.values()),
    }
    return dg.MaterializeResult(metadata=metadata)
