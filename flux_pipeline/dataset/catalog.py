"""The lineage catalog: one row per output image, Parquet, one Hive-style folder per partition
(`partition=KEY/data.parquet`; the `partition` column lives in the folder name, as Hive readers
expect), readable as one dataset with pandas, pyarrow, DuckDB or Spark."""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field

import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.dataset as ds
import pyarrow.parquet as pq
from upath import UPath

from .storage import arrow_location, atomic_writer, parquet_batches

SCHEMA = pa.schema([
    ("image_id", pa.string()),
    ("partition", pa.string()),
    ("prompt_id", pa.string()),
    ("prompt", pa.string()),
    ("returned_prompt", pa.string()),
    ("endpoint", pa.string()),
    ("request_id", pa.string()),
    ("image_index", pa.int32()),
    ("seed", pa.int64()),
    ("width", pa.int32()),
    ("height", pa.int32()),
    ("output_format", pa.string()),
    ("content_hash", pa.string()),
    ("file_path", pa.string()),
    ("file_bytes", pa.int64()),
    ("nsfw", pa.bool_()),
    ("billed_megapixels", pa.int32()),
    ("price_per_megapixel", pa.float64()),
    ("megapixel_size", pa.int64()),
    ("cost_usd", pa.float64()),
    ("parent_image_id", pa.string()),
    ("parent_source", pa.string()),
    ("latency_s", pa.float64()),
    ("run_id", pa.string()),
    ("code_version", pa.string()),
    ("created_at", pa.timestamp("us", tz="UTC")),
])
"""`file_path` is relative to the output root; `content_hash` is the SHA-256 of the file;
`parent_source` is the path or URL a Redux image varied when its parent is not in the catalog."""


PARTITION_KEY = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,99}$")
"""A prompt table's file stem becomes its partition key and a folder name, so it must be safe."""

PARTITION_COLUMN = "partition"
FILE_SCHEMA = SCHEMA.remove(SCHEMA.get_field_index(PARTITION_COLUMN))
"""A partition file's columns: the partition is its folder's name."""


def write_parquet_atomically(table: pa.Table, path: UPath) -> None:
    """Readers never see half a file (storage.atomic_writer)."""
    with atomic_writer(path) as stream:
        pq.write_table(table, stream)


def partition_file(catalog_root: UPath, partition: str) -> UPath:
    return catalog_root / f"partition={partition}" / "data.parquet"


def replace_partition(catalog_root: UPath, partition: str, batches: Iterable[pa.RecordBatch]) -> UPath:
    """The partition's rows become exactly `batches` (re-materializing never duplicates rows),
    written as they come, so a partition of any size is written in constant memory."""
    path = partition_file(catalog_root, partition)
    with atomic_writer(path) as stream, pq.ParquetWriter(stream, FILE_SCHEMA) as writer:
        for batch in batches:
            writer.write_table(pa.Table.from_batches([batch]).cast(SCHEMA).drop_columns([PARTITION_COLUMN]))
    return path


def iter_partition(catalog_root: UPath, partition: str, columns: list[str],
                   batch_rows: int = 8192) -> Iterator[pa.RecordBatch]:
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
        return pa.Table.from_batches(self.head, schema=SCHEMA)


def read_catalog(catalog_root: UPath, partitions: list[str] | None = None, columns: list[str] | None = None) -> pd.DataFrame:
    """The whole catalog (or some partitions) as one DataFrame."""
    if not catalog_root.is_dir():
        return SCHEMA.empty_table().to_pandas()
    where, filesystem = arrow_location(catalog_root)
    partitioning = ds.partitioning(pa.schema([SCHEMA.field(PARTITION_COLUMN)]), flavor="hive")
    dataset = ds.dataset(where, filesystem=filesystem, format="parquet", schema=SCHEMA, partitioning=partitioning)
    filter_ = ds.field(PARTITION_COLUMN).isin(partitions) if partitions is not None else None
    return dataset.to_table(columns=columns, filter=filter_).to_pandas()


def cost_report(catalog_root: UPath) -> pd.DataFrame:
    """Cost, billed megapixels, image and NSFW counts per partition, with a TOTAL row."""
    catalog = read_catalog(catalog_root, columns=["partition", "cost_usd", "billed_megapixels", "nsfw", "endpoint"])
    counts = catalog.assign(
        images=1, nsfw_images=catalog["nsfw"].astype("int64"),
        redux_images=catalog["endpoint"].str.endswith("/redux").astype("int64"),
        billed_megapixels=catalog["billed_megapixels"].astype("int64"),
    )
    measures = ["images", "cost_usd", "billed_megapixels", "nsfw_images", "redux_images"]
    grouped = counts.groupby("partition", sort=True)[measures].sum().reset_index()
    total = pd.DataFrame([{"partition": "TOTAL", **grouped[measures].sum().to_dict()}])
    report = pd.concat([grouped, total], ignore_index=True)
    report["cost_usd"] = report["cost_usd"].astype(float).round(6)
    return report.astype({m: "int64" for m in measures if m != "cost_usd"})
