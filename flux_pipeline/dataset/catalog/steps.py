"""A generation step's catalog rows in a partition's files (outputs/KEY/<step>.parquet), before the
`catalog` asset merges them into the catalog."""

from __future__ import annotations

from collections.abc import Iterator

import pyarrow as pa
import pyarrow.compute as pc

from ..files.layout import PartitionFiles
from ..files.storage import parquet_batches, parquet_file
from .table import CATALOG_SCHEMA, conform


def step_batches(files: PartitionFiles, step: str) -> Iterator[pa.RecordBatch]:
    """A step's catalog rows, a batch at a time (none before the step has run)."""
    return (conform(batch, CATALOG_SCHEMA) for batch in parquet_batches(files.step_rows(step)))


def first_images(files: PartitionFiles, step: str) -> dict[str, dict]:
    """prompt_id → the image_id, file_path and content_hash of its first image in a step."""
    table = read_step(files, step, ["prompt_id", "image_index", "image_id", "file_path", "content_hash"])
    first = table.filter(pc.equal(table["image_index"], 0))
    return dict(
        zip(
            first["prompt_id"].to_pylist(),
            first.select(["image_id", "file_path", "content_hash"]).to_pylist(),
        )
    )


def read_step(files: PartitionFiles, step: str, columns: list[str]) -> pa.Table:
    path = files.step_rows(step)
    schema = pa.schema([CATALOG_SCHEMA.field(c) for c in columns])
    return parquet_file(path).read(columns=columns).cast(schema) if path.is_file() else schema.empty_table()
