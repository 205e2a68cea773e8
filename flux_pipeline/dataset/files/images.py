"""Generated files: stable safe names, written whole or not at all, checked against their hash."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

from upath import UPath

from .storage import write_bytes_atomically

EXTENSIONS = {"jpeg": "jpg", "png": "png"}


@dataclass(frozen=True)
class StoredImage:
    path: UPath
    sha256: str
    size_bytes: int


def image_id(partition: str, prompt_id: str, endpoint: str, index: int) -> str:
    """Stable across runs (re-materializing overwrites, never duplicates); no user text in it."""
    return hashlib.sha256(f"{partition}\0{prompt_id}\0{endpoint}\0{index}".encode()).hexdigest()[:24]


def store_image(folder: UPath, image_id: str, data: bytes, output_format: str) -> StoredImage:
    """The bytes were verified on download (fal.verify)."""
    path = folder / f"{image_id}.{EXTENSIONS[output_format]}"
    write_bytes_atomically(path, data)
    return StoredImage(path, hashlib.sha256(data).hexdigest(), len(data))


def sha256_of(path: UPath) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as stream:
        for chunk in iter(lambda: stream.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def file_problem(path: UPath, content_hash: str) -> str | None:
    """ "missing", "hash mismatch", or None when the file is there with the recorded hash."""
    if not path.is_file():
        return "missing"
    return None if sha256_of(path) == content_hash else "hash mismatch"


def files_intact(root: UPath, rows: list[dict]) -> bool:
    """Every row's file exists under `root` with its recorded hash."""
    return all(file_problem(root / r["file_path"], r["content_hash"]) is None for r in rows)
