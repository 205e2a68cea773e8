"""Exported images: each kept catalog row's metadata (the same fields, typed as in the catalog, in
every export format) with its file's bytes as generated, checked against the catalog's content hash.
Streams the catalog a batch at a time and reads one file at a time."""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import PurePosixPath

import pyarrow as pa
import pyarrow.compute as pc
from upath import UPath

from ..catalog.table import iter_partition

METADATA_COLUMNS = [
    "image_id",
    "prompt_id",
    "prompt",
    "returned_prompt",
    "seed",
    "width",
    "height",
    "endpoint",
    "request_id",
    "parent_image_id",
    "nsfw",
    "cost_usd",
    "content_hash",
    "axes",
    "draft_image_id",
]


@dataclass(frozen=True)
class Sample:
    metadata: dict
    data: bytes
    extension: str
    """The file's extension (`jpg` or `png`): it tells readers how to decode `data`."""
    stored_at: str = ""
    """Where the stored image is (a local path or an object-storage URL)."""

    @property
    def image_id(self) -> str:
        return self.metadata["image_id"]

    @property
    def file_name(self) -> str:
        return f"{self.image_id}.{self.extension}"


def catalog_samples(
    catalog_root: UPath, output_root: UPath, partition: str, image_ids: set[str], batch_rows: int
) -> Iterator[Sample]:
    """The partition's rows whose image_id is in `image_ids`, in catalog order."""
    wanted = pa.array(sorted(image_ids), pa.string())
    for batch in iter_partition(catalog_root, partition, [*METADATA_COLUMNS, "file_path"], batch_rows):
        for row in batch.filter(pc.is_in(batch["image_id"], value_set=wanted)).to_pylist():
            yield read_sample(output_root, row)


def read_sample(output_root: UPath, row: dict) -> Sample:
    metadata = {column: row[column] for column in METADATA_COLUMNS}
    return Sample(
        metadata,
        verified_file(output_root, row),
        PurePosixPath(row["file_path"]).suffix.removeprefix(".").lower(),
        str(output_root / row["file_path"]),
    )


def verified_file(output_root: UPath, row: dict) -> bytes:
    """The bytes of the row's file, which must match its `content_hash`."""
    path = output_root / row["file_path"]
    data = path.read_bytes()
    if hashlib.sha256(data).hexdigest() != row["content_hash"]:
        raise ValueError(f"{path} does not match the catalog's content hash of image {row['image_id']}")
    return data
