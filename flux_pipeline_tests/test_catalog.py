"""The catalog's streaming writer and reader on real Parquet files."""

from __future__ import annotations

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from upath import UPath

from flux_pipeline.dataset.catalog.table import (
    CATALOG_SCHEMA,
    PARTITION_COLUMN,
    CatalogSummary,
    iter_partition,
    partition_file,
    read_catalog,
    replace_partition,
)


def catalog_rows(partition: str, start: int, count: int) -> pa.RecordBatch:
    values = {field.name: [None] * count for field in CATALOG_SCHEMA}
    values.update(
        {
            "image_id": [f"img{i:05d}" for i in range(start, start + count)],
            "partition": [partition] * count,
            "file_path": [f"{partition}/images/img{i:05d}.jpg" for i in range(start, start + count)],
            "cost_usd": [0.04] * count,
            "billed_megapixels": [1] * count,
            "nsfw": [i % 10 == 0 for i in range(count)],
        }
    )
    return pa.RecordBatch.from_pydict(values, schema=CATALOG_SCHEMA)


def test_a_partition_is_written_from_batches_as_they_come(tmp_path):
    root = UPath(tmp_path)
    summary = CatalogSummary()
    batches = (catalog_rows("big", start, 1000) for start in range(0, 5000, 1000))
    path = replace_partition(root, "big", summary.observe(batches))

    assert PARTITION_COLUMN not in pq.read_schema(path).names, "the partition is the folder's name"
    assert pq.ParquetFile(path).metadata.num_row_groups == 5, "one row group per batch: nothing was gathered"
    assert (summary.images, summary.billed_megapixels, summary.nsfw_images) == (5000, 5000, 500)
    assert summary.cost_usd == pytest.approx(200.0)
    assert summary.head_table()["image_id"].to_pylist() == [f"img{i:05d}" for i in range(24)]

    read = [batch["image_id"] for batch in iter_partition(root, "big", ["image_id"], batch_rows=700)]
    assert len(read) == 8 and sum(len(ids) for ids in read) == 5000
    assert set(read_catalog(root)["partition"]) == {"big"}


def test_a_failed_rewrite_keeps_the_partition_as_it_was(tmp_path):
    root = UPath(tmp_path)
    replace_partition(root, "big", [catalog_rows("big", 0, 10)])
    before = partition_file(root, "big").read_bytes()

    def failing():
        yield catalog_rows("big", 0, 1000)
        raise OSError("step file unreadable")

    with pytest.raises(OSError, match="unreadable"):
        replace_partition(root, "big", failing())
    assert partition_file(root, "big").read_bytes() == before
    assert [p.name for p in partition_file(root, "big").parent.iterdir()] == ["data.parquet"], (
        "no temporary left"
    )
    assert list(iter_partition(root, "missing", ["image_id"])) == []
