"""Training-ready exports of one catalog partition, free of Dagster:

    export_partition(catalog_root, output_root, export_root, partition, options) -> Exported

filters the partition's images (selection), splits them by prompt id (splits), and writes
`export_root/<partition>/<version>/` in the chosen formats (`options.formats`): WebDataset tar
shards (`webdataset/`), a Hugging Face `datasets` Parquet file per split holding the images
(`hf/`), one referencing the stored images by path (`hf_paths/`), each Parquet folder with its
dataset card, and `manifest.json`; then the pointer `export_root/<partition>/latest.json` switches
to it and older versions past `options.keep_versions` go (versions). Works on local folders and on
object storage (UPath)."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime

from upath import UPath

from ..catalog.table import partition_file
from ..files.layout import PARTITION_KEY
from ..files.storage import remove_tree, write_bytes_atomically
from .manifest import CARD_FILE, ExportManifest, FileInfo, SplitExport
from .options import DEFAULT_FORMATS, FORMATS, ExportOptions
from .samples import Sample, catalog_samples
from .selection import FILTERS, select_images
from .splits import SPLITS, TRAIN, VALIDATION, split_of
from .versions import POINTER, new_version, publish, read_latest, version_folder

__all__ = [
    "DEFAULT_FORMATS",
    "FILTERS",
    "FORMATS",
    "POINTER",
    "SPLITS",
    "TRAIN",
    "VALIDATION",
    "ExportManifest",
    "ExportOptions",
    "Exported",
    "FileInfo",
    "SplitExport",
    "export_partition",
    "read_latest",
    "split_of",
    "version_folder",
]


@dataclass(frozen=True)
class Exported:
    manifest: ExportManifest
    """The export in force (`latest.json`)."""
    freed_bytes: int
    """What publishing it removed: older versions past `keep_versions`, abandoned ones."""


def export_partition(
    catalog_root: UPath,
    output_root: UPath,
    export_root: UPath,
    partition: str,
    options: ExportOptions | None = None,
    decisions: Mapping[str, str] | None = None,
    source_version: str | None = None,
) -> Exported:
    """Exports the partition's images (files under `output_root`, as the catalog names them) and
    returns the manifest that `export_root/<partition>/latest.json` now holds (a newer one when a
    concurrent export of the partition published after this one began). Raises before the pointer
    moves (leaving the previous export in place) when the partition is not in the catalog or a file
    is missing or does not match its content hash. `decisions`: image_id → the reviewer's decision
    in force (decisions.DecisionLog.latest), for the `drop_rejected` and `only_kept` filters;
    `source_version` is recorded in the manifest."""
    options = options or ExportOptions()
    if not PARTITION_KEY.match(partition):
        raise ValueError(f"unsafe partition key {partition!r}")
    if not partition_file(catalog_root, partition).is_file():
        raise FileNotFoundError(f"no catalog partition {partition!r} in {catalog_root}")
    selection = select_images(catalog_root, output_root, partition, options, decisions)
    created_at = datetime.now(UTC)
    manifest = ExportManifest(
        partition=partition,
        version=new_version(created_at),
        created_at=created_at,
        catalog_rows=selection.catalog_rows,
        exported=0,
        removed=selection.removed,
        splits={},
        options=options,
        source_version=source_version,
    )
    folder = version_folder(export_root, manifest)
    samples = catalog_samples(catalog_root, output_root, partition, selection.kept, options.batch_rows)
    try:
        manifest = _write_version(folder, manifest, samples)
    except BaseException:
        remove_tree(folder)
        raise
    return Exported(*publish(export_root, manifest, manifest.options.versions_kept))


def _write_version(folder: UPath, manifest: ExportManifest, samples: Iterable[Sample]) -> ExportManifest:
    """The version folder's data files and dataset card; the manifest that lists them. The writers
    are imported here: they need `datasets`, which takes 0.3 s and 26 MB to import, and only an
    export uses it, not every process that loads the definitions."""
    from .dataset_card import dataset_card
    from .writer import write_splits

    splits, parquet = write_splits(folder, samples, manifest.options)
    manifest = manifest.model_copy(
        update={
            "splits": splits,
            "exported": sum(s.samples for s in splits.values()),
            "dataset_card": f"{next(iter(parquet))}/{CARD_FILE}" if parquet else None,
        }
    )
    for parquet_folder, sinks in parquet.items():
        write_bytes_atomically(folder / parquet_folder / CARD_FILE, dataset_card(manifest, sinks).encode())
    return manifest
