"""The training export of each catalog partition, downstream of `catalog`: in the chosen formats
(WebDataset shards, Hugging Face Parquet with the images, or Parquet that references the stored
images by path), older versions removed past the number kept (dataset.export)."""

import dagster as dg

from ..dataset.export import ExportManifest, ExportOptions, export_partition, version_folder
from ..lib.assets import dataset_asset
from ..resources import DatasetResource


class ExportConfig(dg.Config, ExportOptions):
    """Run config of `training_export`: the fields of ExportOptions; `formats` and `keep_versions`
    left unset take the dataset resource's `export_formats` and `export_keep_versions`."""


@dataset_asset(
    deps=["catalog", "review_decisions"],
    kinds={"parquet", "huggingface"},
    description="Training-ready export of the partition (exports/KEY/latest.json names the current "
    "version) in the chosen formats: WebDataset shards, Hugging Face Parquet with the images, or Parquet "
    "of paths to the stored images; reviewer-rejected, NSFW and duplicate images filtered, splits stable "
    "by prompt_id; older versions removed past the number kept.",
)
def training_export(context: dg.AssetExecutionContext, config: ExportConfig, dataset: DatasetResource):
    layout = dataset.layout
    with dataset.decision_log() as log:
        decisions = {image: entry["decision"] for image, entry in log.latest(context.partition_key).items()}
    options = dataset.export_options(config)
    exported = export_partition(
        layout.catalog_dir, layout.outputs_dir, layout.exports_dir, context.partition_key, options, decisions
    )
    manifest = exported.manifest
    if exported.freed_bytes:
        context.log.info(f"older export versions removed: {exported.freed_bytes / 1e6:.1f} MB freed")
    folder = version_folder(layout.exports_dir, manifest)
    metadata: dict[str, dg.RawMetadataValue] = {
        "path": dg.MetadataValue.path(str(folder)),
        "formats": ", ".join(options.chosen_formats),
        "catalog_rows": manifest.catalog_rows,
        "exported": manifest.exported,
        **{f"removed_{name}": count for name, count in manifest.removed.items()},
        **{f"{split}_samples": export.samples for split, export in manifest.splits.items()},
        "shards": sum(len(export.webdataset) for export in manifest.splits.values()),
        "export_bytes": _bytes_written(manifest),
        "freed_bytes": exported.freed_bytes,
    }
    return dg.MaterializeResult(metadata=metadata)


def _bytes_written(manifest: ExportManifest) -> int:
    files = [
        f
        for split in manifest.splits.values()
        for f in (*split.webdataset, split.parquet, split.parquet_paths)
        if f
    ]
    return sum(f.bytes for f in files)
