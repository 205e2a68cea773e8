"""What a catalog image carries from its prompt row (`axes`, a recipe's axes as JSON, and
`draft_image_id`, a final row's draft), and the images counted per axis value (the catalog's
balance table)."""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Iterable, Iterator

import pyarrow as pa

from ..files.layout import PartitionFiles
from ..files.storage import parquet_file

AXES_COLUMN = "axes"
ROW_COLUMNS = (AXES_COLUMN, "draft_image_id")
"""Catalog columns copied from the image's row of prompts.parquet."""


def attach_row_columns(
    batches: Iterable[pa.RecordBatch], row_columns: dict[str, dict]
) -> Iterator[pa.RecordBatch]:
    """Catalog batches with ROW_COLUMNS set from their prompt row's (prompt_id → {column: value})."""
    for batch in batches:
        rows = [row_columns.get(key, {}) for key in batch["prompt_id"].to_pylist()]
        for name in ROW_COLUMNS:
            values = pa.array([row.get(name) for row in rows], pa.string())
            batch = batch.set_column(batch.schema.get_field_index(name), name, values)
        yield batch


def row_columns(files: PartitionFiles, columns: tuple[str, ...]) -> dict[str, dict]:
    """prompt_id → the row's `columns` of prompts.parquet (null before they existed), for the rows
    with any of them set."""
    prompts = parquet_file(files.prompts)
    present = [name for name in columns if name in prompts.schema_arrow.names]
    table = prompts.read(columns=["prompt_id", *present])
    rows = zip(table["prompt_id"].to_pylist(), table.select(present).to_pylist())
    return {key: values for key, values in rows if any(v is not None for v in values.values())}


class AxisBalance:
    """Images per (axis, value) of catalog batches streaming past."""

    def __init__(self):
        self.counts: Counter[tuple[str, str]] = Counter()

    def observe(self, batches: Iterable[pa.RecordBatch]) -> Iterator[pa.RecordBatch]:
        for batch in batches:
            for axes in batch[AXES_COLUMN].to_pylist():
                self.counts.update(json.loads(axes).items() if axes else ())
            yield batch

    def markdown(self) -> str | None:
        """The balance table (axis, value, images), by axis then value; None without axes."""
        if not self.counts:
            return None
        lines = ["| axis | value | images |", "| --- | --- | ---: |"]
        cell = lambda text: text.replace("|", "\\|")
        for (axis, value), n in sorted(self.counts.items()):
            lines.append(f"| {cell(axis)} | {cell(value)} | {n} |")
        return "\n".join(lines)
