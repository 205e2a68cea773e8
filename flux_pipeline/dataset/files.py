"""Generated files on disk: stable safe names, written whole or not at all."""

from __future__ import annotations

import hashlib
import os
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

EXTENSIONS = {"jpeg": "jpg", "png": "png"}


@dataclass(frozen=True)
class StoredImage:
    path: Path
    sha256: str
    size_bytes: int


def image_id(partition: str, prompt_id: str, endpoint: str, index: int) -> str:
    """Stable across runs (re-materializing overwrites, never duplicates); no user text in it."""
    return hashlib.sha256(f"{partition}\0{prompt_id}\0{endpoint}\0{index}".encode()).hexdigest()[:24]


@contextmanager
def atomic_destination(path: Path) -> Iterator[Path]:
    """A temporary name beside `path` to write to; renamed to `path` on leaving the block, so a
    file under its final name is always whole."""
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(f".{path.name}.{uuid.uuid4().hex}.tmp")
    yield temporary
    os.replace(temporary, path)


def store_image(folder: Path, image_id: str, data: bytes, output_format: str) -> StoredImage:
    """The bytes were verified on download (fal.verify)."""
    path = folder / f"{image_id}.{EXTENSIONS[output_format]}"
    with atomic_destination(path) as temporary:
        temporary.write_bytes(data)
    return StoredImage(path, hashlib.sha256(data).hexdigest(), len(data))


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as stream:
        for chunk in iter(lambda: stream.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def file_problem(path: Path, content_hash: str) -> str | None:
    """"missing", "hash mismatch", or None when the file is there with the recorded hash."""
    if not path.is_file():
        return "missing"
    return None if sha256_of(path) == content_hash else "hash mismatch"


def files_intact(root: Path, rows: list[dict]) -> bool:
    """Every row's file exists under `root` with its recorded hash."""
    return all(file_problem(root / r["file_path"], r["content_hash"]) is None for r in rows)
