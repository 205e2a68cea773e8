"""What the review page shows of one catalog partition: its images (generated ones each followed by
their Redux variations, as in the gallery), with the fields a reviewer judges by, any recipe axis
columns, and each image's decision in force."""

from __future__ import annotations

import math
from dataclasses import dataclass

import pyarrow.compute as pc
from upath import UPath

from ..dataset.catalog.gallery import image_groups
from ..dataset.catalog.table import partition_file
from ..dataset.files.layout import PARTITION_KEY
from ..dataset.files.storage import parquet_batches, parquet_file

AXIS_PREFIX = "axis_"
"""Catalog columns named `axis_<name>` (a recipe's axes) become filters on the page."""
SHOWN = ["image_id", "prompt_id", "prompt", "seed", "endpoint", "cost_usd", "nsfw", "width", "height"]
MODEL_COLUMNS = ("model", "endpoint")
"""The first of these the catalog has is shown as the image's model."""


class UnknownImage(LookupError):
    pass


@dataclass(frozen=True)
class PartitionView:
    rows: list[dict]
    """In page order, each with `model`, `parent_image_id` and its axis values."""
    axes: list[str]

    @property
    def image_ids(self) -> set[str]:
        return {row["image_id"] for row in self.rows}


def file_path_of(catalog_root: UPath, partition: str, image_id: str) -> str:
    """The catalog's file_path of one image, read with a filter on image_id (not the whole
    partition: the page asks for one image at a time); UnknownImage when it has none."""
    path = partition_file(catalog_root, partition)
    if not PARTITION_KEY.match(partition) or not path.is_file():
        raise FileNotFoundError(f"no catalog partition {partition!r}")
    found = parquet_file(path).read(columns=["image_id", "file_path"])
    found = found.filter(pc.equal(found["image_id"], image_id))
    if not found.num_rows:
        raise UnknownImage(image_id)
    return found["file_path"][0].as_py()


def catalog_partitions(catalog_root: UPath) -> list[str]:
    if not catalog_root.is_dir():
        return []
    names = (folder.name.removeprefix("partition=") for folder in catalog_root.iterdir())
    return sorted(name for name in names if PARTITION_KEY.match(name))


def read_partition(catalog_root: UPath, partition: str) -> PartitionView:
    """Raises FileNotFoundError when the partition has no catalog."""
    path = partition_file(catalog_root, partition)
    if not PARTITION_KEY.match(partition) or not path.is_file():
        raise FileNotFoundError(f"no catalog partition {partition!r}")
    raw = [row for batch in parquet_batches(path) for row in batch.to_pylist()]
    axes = sorted({column for row in raw[:1] for column in row if column.startswith(AXIS_PREFIX)})
    model = next((column for column in MODEL_COLUMNS if raw and column in raw[0]), "endpoint")
    rows = [
        {
            **{column: _plain(row.get(column)) for column in SHOWN},
            "model": row.get(model),
            "parent_image_id": row.get("parent_image_id"),
            "axes": {axis.removeprefix(AXIS_PREFIX): _plain(row.get(axis)) for axis in axes},
        }
        for row in raw
    ]
    ordered = [rows[index] for group in image_groups(rows) for index in group]
    return PartitionView(ordered, [axis.removeprefix(AXIS_PREFIX) for axis in axes])


def _plain(value):
    """JSON-safe: NaN becomes None."""
    return None if isinstance(value, float) and math.isnan(value) else value
