"""A recipe's axes in the catalog: each image gets its prompt row's axes (the `axes` JSON column),
and the images are counted per axis value (the catalog's balance table)."""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Iterable, Iterator

import pyarrow as pa

AXES_COLUMN = "axes"


def attach_axes(batches: Iterable[pa.RecordBatch], axes_of: dict[str, str]) -> Iterator[pa.RecordBatch]:
    """Catalog batches with `axes` set from their prompt row's (prompt_id → axes JSON)."""
    for batch in batches:
        values = pa.array([axes_of.get(key) for key in batch["prompt_id"].to_pylist()], pa.string())
        yield batch.set_column(batch.schema.get_field_index(AXES_COLUMN), AXES_COLUMN, values)


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
