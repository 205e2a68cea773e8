"""The training export of each catalog partition, downstream of `catalog`: in the chosen formats
(WebDataset shards, Hugging Face Parquet with the images, or Parquet that references the stored
images by path), older versions removed past the number kept (dataset.export)."""

import hashlib
import json

import dagster as dg
import pyarrow as pa

from ..dataset.catalog.table import CATALOG_SCHEMA, iter_partition
from ..dataset.export import ExportManifest, ExportOptions, export_partition, read_latest, version_folder
from ..dataset.files.layout import DatasetLayout
from ..lib.assets import dataset_asset
from ..resources import DatasetResource

EXPORTED = [name for name in CATALOG_SCHEMA.names if name not in ("partition", "latency_s")]
"""The catalog columns an export's source is: all but fal's latency (the same images again)."""


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
    layout, key = dataset.layout, context.partition_key
    with dataset.decision_log() as log:
        decisions = {image: entry["decision"] for image, entry in log.latest(key).items()}
    options = dataset.export_options(config)
    source = source_version(dataset, key, decisions, options)
    if (latest := read_latest(layout.exports_dir, key)) is not None and latest.source_version == source:
        context.log.info(
            f"the catalog, decisions and options are those of export {latest.version}: kept as it is"
        )
        return dg.MaterializeResult(metadata={**_metadata(layout, latest, options, 0), "unchanged": True})
    exported = export_partition(
        layout.catalog_dir, layout.outputs_dir, layout.exports_dir, key, options, decisions, source
    )
    if exported.freed_bytes:
        context.log.info(f"older export versions removed: {exported.freed_bytes / 1e6:.1f} MB freed")
    return dg.MaterializeResult(
        metadata={**_metadata(layout, exported.manifest, options, exported.freed_bytes), "unchanged": False}
    )


def source_version(
    dataset: DatasetResource, partition: str, decisions: dict[str, str], options: ExportOptions
) -> str:
    """What an export is made from: the catalog partition's rows (in image_id order: a re-run writes
    them in the order its requests finish), the decisions in force and the options."""
    rows = pa.Table.from_batches(list(iter_partition(dataset.layout.catalog_dir, partition, EXPORTED)))
    sink = pa.BufferOutputStream()
    with pa.ipc.new_stream(sink, rows.schema) as stream:
        stream.write_table(rows.sort_by("image_id"))
    digest = hashlib.sha256(sink.getvalue())
    digest.update(json.dumps(sorted(decisions.items())).encode())
    digest.update(options.model_dump_json().encode())
    return digest.hexdigest()


def _metadata(layout: DatasetLayout, manifest: ExportManifest, options: ExportOptions, freed: int) -> dict:
    return {
        "path": dg.MetadataValue.path(str(version_folder(layout.exports_dir, manifest))),
        "formats": ", ".join(options.chosen_formats),
        "catalog_rows": manifest.catalog_rows,
        "exported": manifest.exported,
        **{f"removed_{name}": count for name, count in manifest.removed.items()},
        **{f"{split}_samples": export.samples for split, export in manifest.splits.items()},
        "shards": sum(len(export.webdataset) for export in manifest.splits.values()),
        "export_bytes": _bytes_written(manifest),
        "freed_bytes": freed,
    }


def _bytes_written(manifest: ExportManifest) -> int:
    files = [
        f
        for split in manifest.splits.values()
        for f in (*split.webdataset, split.parquet, split.parquet_paths)
        if f
    ]
    return sum(f.bytes for f in files)
