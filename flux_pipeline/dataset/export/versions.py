"""A partition's exports under `export_root/<partition>/`: each export is written into a fresh
version folder; once it is complete, the pointer `latest.json` (the manifest, naming its version) is
replaced atomically, and older versions are deleted afterwards. A reader that follows the pointer
therefore never sees half a shard set, on local disk as on object storage."""

from __future__ import annotations

import re
import uuid
from datetime import UTC, datetime

from upath import UPath

from ..storage import remove_tree, write_bytes_atomically
from .manifest import ExportManifest

POINTER = "latest.json"
MANIFEST = "manifest.json"
VERSION = re.compile(r"^v\d{8}T\d{12}-[0-9a-f]{8}$")


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


def publish(export_root: UPath, manifest: ExportManifest) -> None:
    """Makes the complete version folder of `manifest` the one the pointer names, then deletes the
    versions older than it (a newer one being written by a concurrent export is left alone)."""
    document = manifest.model_dump_json(indent=2).encode()
    write_bytes_atomically(version_folder(export_root, manifest) / MANIFEST, document)
    exports = partition_exports(export_root, manifest.partition)
    write_bytes_atomically(exports / POINTER, document)
    for folder in exports.iterdir():
        if VERSION.match(folder.name) and folder.name < manifest.version:
            remove_tree(folder)
