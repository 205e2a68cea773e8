"""The lineage catalog: one row per output image, Parquet, one Hive-style folder per partition
(`partition=KEY/data.parquet`; the `partition` column lives in the folder name, as Hive readers
expect), readable as one dataset with pandas, pyarrow, DuckDB or Spark."""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field

import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.dataset as ds
import pyarrow.parquet as pq
from upath import UPath

from ..files.storage import arrow_location, atomic_writer, parquet_batches

CATALOG_SCHEMA = pa.schema(
    [
        ("image_id", pa.string()),
        ("partition", pa.string()),
        ("prompt_id", pa.string()),
        ("prompt", pa.string()),
        ("returned_prompt", pa.string()),
        ("endpoint", pa.string()),
        ("request_id", pa.string()),
        ("backend", pa.string()),
        ("image_index", pa.int32()),
        ("seed", pa.int64()),
        ("width", pa.int32()),
        ("height", pa.int32()),
        ("output_format", pa.string()),
        ("content_hash", pa.string()),
        ("file_path", pa.string()),
        ("file_bytes", pa.int64()),
        ("perceptual_hash", pa.int64()),
        ("nsfw", pa.bool_()),
        ("billed_megapixels", pa.int32()),
        ("megapixel_size", pa.int64()),
        ("billing_unit", pa.string()),
        ("unit_price", pa.float64()),
        ("price_source", pa.string()),
        ("cost_usd", pa.float64()),
        ("parent_image_id", pa.string()),
        ("parent_source", pa.string()),
        ("latency_s", pa.float64()),
        ("run_id", pa.string()),
        ("code_version", pa.string()),
        ("created_at", pa.timestamp("us", tz="UTC")),
        ("axes", pa.string()),
        ("draft_image_id", pa.string()),
    ]
)
"""`file_path` is relative to the output root; `content_hash` is the SHA-256 of the file;
`parent_source` is the path or URL a Redux image varied when its parent is not in the catalog;
`backend` is fal's queue host, or `emulator`; `cost_usd` is the image's list cost: its units
(`billing_unit`: megapixels, each image rounded up to whole ones of `megapixel_size` pixels, or
one image) times `unit_price`, which came from fal's pricing API or the configuration
(`price_source`); `axes` is the JSON object {axis: value} of the row's `axis_*` columns (a recipe's
axes), null for a row without them (one JSON column keeps the schema the same in every partition);
`draft_image_id` is, for a final render of a draft recipe's row, the draft image it replaces."""


PARTITION_COLUMN = "partition"
FILE_SCHEMA = CATALOG_SCHEMA.remove(CATALOG_SCHEMA.get_field_index(PARTITION_COLUMN))
"""A partition file's columns: the partition is its folder's name."""


def conform(batch: pa.RecordBatch, schema: pa.Schema) -> pa.RecordBatch:
    """`batch` with exactly `schema`'s columns, in its order and types; a column it lacks (a file
    written before the column existed) is null."""
    columns = [
        batch.column(f.name).cast(f.type)
        if f.name in batch.schema.names
        else pa.nulls(batch.num_rows, f.type)
        for f in schema
    ]
    return pa.RecordBatch.from_arrays(columns, schema=schema)


def partition_file(catalog_root: UPath, partition: str) -> UPath:
    return catalog_root / f"partition={partition}" / "data.parquet"


def replace_partition(catalog_root: UPath, partition: str, batches: Iterable[pa.RecordBatch]) -> UPath:
    """The partition's rows become exactly `batches` (re-materializing never duplicates rows),
    written as they come, so a partition of any size is written in constant memory."""
    path = partition_file(catalog_root, partition)
    with atomic_writer(path) as stream, pq.ParquetWriter(stream, FILE_SCHEMA) as writer:
        for batch in batches:
            writer.write_table(
                pa.Table.from_batches([batch]).cast(CATALOG_SCHEMA).drop_columns([PARTITION_COLUMN])
            )
    return path


def iter_partition(
    catalog_root: UPath, partition: str, columns: list[str], batch_rows: int = 8192
) -> Iterator[pa.RecordBatch]:
    """One partition's rows (without the `partition` column), a batch at a time."""
    return parquet_batches(partition_file(catalog_root, partition), columns, batch_rows)


@dataclass
class CatalogSummary:
    """Totals and the first rows of catalog batches, taken as they are written (`add`) or
    stream past (`observe`)."""

    head_rows: int = 24
    images: int = 0
    cost_usd: float = 0.0
    billed_megapixels: int = 0
    nsfw_images: int = 0
    head: list[pa.RecordBatch] = field(default_factory=list)

    def add(self, batch: pa.RecordBatch) -> None:
        self.images += batch.num_rows
        self.cost_usd += pc.sum(batch["cost_usd"]).as_py() or 0.0
        self.billed_megapixels += pc.sum(batch["billed_megapixels"]).as_py() or 0
        self.nsfw_images += pc.sum(pc.cast(batch["nsfw"], pa.int64())).as_py() or 0
        if (missing := self.head_rows - sum(b.num_rows for b in self.head)) > 0:
            self.head.append(batch.slice(0, missing))

    def observe(self, batches: Iterable[pa.RecordBatch]) -> Iterator[pa.RecordBatch]:
        for batch in batches:
            self.add(batch)
            yield batch

    def head_table(self) -> pa.Table:
        return pa.Table.from_batches(self.head, schema=CATALOG_SCHEMA)


def read_catalog(
    catalog_root: UPath, partitions: list[str] | None = None, columns: list[str] | None = None
) -> pd.DataFrame:
    """The whole catalog (or some partitions) as one DataFrame."""
    if not catalog_root.is_dir():
        return CATALOG_SCHEMA.empty_table().to_pandas()
    where, filesystem = arrow_location(catalog_root)
    partitioning = ds.partitioning(pa.schema([CATALOG_SCHEMA.field(PARTITION_COLUMN)]), flavor="hive")
    dataset = ds.dataset(
        where, filesystem=filesystem, format="parquet", schema=CATALOG_SCHEMA, partitioning=partitioning
    )
    filter_ = ds.field(PARTITION_COLUMN).isin(partitions) if partitions is not None else None
    return dataset.to_table(columns=columns, filter=filter_).to_pandas()
