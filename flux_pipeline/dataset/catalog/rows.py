"""Rows streamed to Parquet as they are produced, a batch at a time, so a step's memory does not
grow with its partition. The file appears, whole, when the writer closes; when the block fails,
only if the writer was told to keep what was written (`commit_on_error`)."""

from __future__ import annotations

from contextlib import ExitStack

import pyarrow as pa
import pyarrow.parquet as pq
from upath import UPath

from ..files.storage import atomic_writer
from .table import CATALOG_SCHEMA, CatalogSummary


class ParquetRowWriter:
    """`with ParquetRowWriter(path, schema, commit_on_error=...) as out: out.write(rows)`.

    `commit_on_error`: when the block raises, True still writes the rows so far (what was paid for
    is kept); False leaves `path` as it was (a half-read input is no result)."""

    _writer: pq.ParquetWriter
    """Open from __enter__ on."""

    def __init__(self, path: UPath, schema: pa.Schema, *, commit_on_error: bool, batch_rows: int = 1024):
        self.path, self.schema, self.batch_rows = path, schema, batch_rows
        self.commit_on_error = commit_on_error
        self._pending: list[dict] = []
        self._destination = ExitStack()

    def __enter__(self):
        stream = self._destination.enter_context(atomic_writer(self.path))
        self._writer = pq.ParquetWriter(stream, self.schema)
        return self

    def write(self, rows: list[dict]) -> None:
        self._pending.extend(rows)
        if len(self._pending) >= self.batch_rows:
            self._flush()

    def _flush(self) -> None:
        if self._pending:
            self._write_batch(pa.RecordBatch.from_pylist(self._pending, schema=self.schema))
            self._pending = []

    def _write_batch(self, batch: pa.RecordBatch) -> None:
        self._writer.write_batch(batch)

    def __exit__(self, exc_type, exc, traceback) -> None:
        if exc_type is None or self.commit_on_error:
            self._flush()
            self._writer.close()
            self._destination.close()
            return
        self._writer.close()
        self._destination.__exit__(exc_type, exc, traceback)  # the atomic writer discards the file


class CatalogRowWriter(ParquetRowWriter):
    """Catalog rows, one request's images per `write`, kept even when the step fails (what was
    paid for is kept); `totals` (for metadata) is complete once the writer is closed."""

    def __init__(self, path: UPath, batch_rows: int = 1024):
        super().__init__(path, CATALOG_SCHEMA, commit_on_error=True, batch_rows=batch_rows)
        self.requests = 0
        self.totals = CatalogSummary(head_rows=12)

    def write(self, rows: list[dict]) -> None:
        self.requests += 1
        super().write(rows)

    def _write_batch(self, batch: pa.RecordBatch) -> None:
        self.totals.add(batch)
        super()._write_batch(batch)
