"""A partition's exports under `export_root/<partition>/`: each export is written into a fresh
version folder; once it is complete, the pointer `latest.json` (the manifest, naming its version)
is replaced atomically, and older versions past the number kept are deleted afterwards. A reader
that follows the pointer therefore never sees half a shard set, on local disk as on object
storage. Concurrent exports of one partition (two runs at once) never delete each other's folder
mid-write, and the pointer never moves back to an older version."""

from __future__ import annotations

import re
import uuid
from datetime import UTC, datetime, timedelta

from upath import UPath

from ..files.storage import remove_tree, write_bytes_atomically
from .manifest import ExportManifest

POINTER = "latest.json"
MANIFEST = "manifest.json"
VERSION = re.compile(r"^v(\d{8}T\d{12})-[0-9a-f]{8}$")
ABANDONED_AFTER = timedelta(hours=1)
"""A version folder without its manifest this old was left by an export that died."""


def new_version(now: datetime) -> str:
    """Sorts by creation time."""
    return f"v{now.astimezone(UTC):%Y%m%dT%H%M%S%f}-{uuid.uuid4().hex[:8]}"


def partition_exports(export_root: UPath, partition: str) -> UPath:
    return export_root / partition


def version_folder(export_root: UPath, manifest: ExportManifest) -> UPath:
    return partition_exports(export_root, manifest.partition) / manifest.version


def read_latest(export_root: UPath, partition: str) -> ExportManifest | None:
    """The manifest the pointer names, or None before the first export."""
    pointer = partition_exports(export_root, partition) / POINTER
    return ExportManifest.model_validate_json(pointer.read_bytes()) if pointer.is_file() else None


def publish(export_root: UPath, manifest: ExportManifest, keep: int = 1) -> tuple[ExportManifest, int]:
    """Makes the complete version folder of `manifest` the one the pointer names, unless a newer
    export was published meanwhile (this one is then superseded); returns the manifest in force
    and the bytes freed. Then deletes the versions older than it that are abandoned, and the
    complete ones but the newest `keep - 1`: an export that a concurrent run is still writing is
    left alone."""
    document = manifest.model_dump_json(indent=2).encode()
    write_bytes_atomically(version_folder(export_root, manifest) / MANIFEST, document)
    exports = partition_exports(export_root, manifest.partition)
    in_force = read_latest(export_root, manifest.partition)
    if in_force is None or in_force.version < manifest.version:
        write_bytes_atomically(exports / POINTER, document)
    in_force = read_latest(export_root, manifest.partition) or manifest  # a concurrent publish may have won
    return in_force, _remove_older_versions(exports, in_force.version, keep - 1)


def _remove_older_versions(exports: UPath, in_force: str, keep_older: int) -> int:
    """Bytes freed."""
    abandoned_before = f"{datetime.now(UTC) - ABANDONED_AFTER:%Y%m%dT%H%M%S%f}"
    older = sorted(
        (
            (match.group(1), folder)
            for folder in exports.iterdir()
            if (match := VERSION.match(folder.name)) and folder.name < in_force
        ),
        key=lambda pair: pair[1].name,
        reverse=True,
    )
    complete = [folder for _, folder in older if (folder / MANIFEST).is_file()]
    abandoned = [folder for made, folder in older if folder not in complete and made < abandoned_before]
    freed = 0
    for folder in complete[keep_older:] + abandoned:
        freed += sum(path.stat().st_size for path in folder.rglob("*") if path.is_file())
        remove_tree(folder)
    return freed
