"""One split of a Hugging Face `datasets` export: the Parquet file
`data/{split}-00000-of-00001.parquet` whose `image` column has the `datasets.Image` layout (a struct
of the file's bytes, as generated, and its name; or, `by_path`, no bytes and the stored image's
path, which `datasets` opens when it decodes the row) and whose schema carries the `datasets`
feature metadata, so `datasets.load_dataset("parquet", data_files=…)` returns PIL images and every
column typed. Rows are written a row group at a time; the file appears whole or not at all."""

from __future__ import annotations

from contextlib import ExitStack

import pyarrow as pa
import pyarrow.parquet as pq
from datasets import Features, Image
from datasets.features.features import generate_from_arrow_type
from upath import UPath

from ..catalog.table import FILE_SCHEMA
from ..files.storage import atomic_writer
from .manifest import FileInfo
from .samples import METADATA_COLUMNS, Sample

FEATURES = Features(
    {
        "image": Image(),
        **{name: generate_from_arrow_type(FILE_SCHEMA.field(name).type) for name in METADATA_COLUMNS},
    }
)
ARROW_SCHEMA = FEATURES.arrow_schema
WRITER_OPTIONS = {"compression": "none"}
"""Images are compressed already (JPEG, PNG), and they are nearly all of the bytes: compressing
them again costs CPU and buffers for nothing."""
"""With the `huggingface` schema metadata that `datasets` reads the features from."""


def data_file(split: str) -> str:
    return f"data/{split}-00000-of-00001.parquet"


class ParquetSink:
    """A context manager: leaving it normally completes the file, an exception discards it."""

    def __init__(
        self, folder: UPath, split: str, row_group_rows: int, row_group_bytes: int, *, by_path: bool = False
    ):
        """`folder`: the format's folder of the version (`hf/`, `hf_paths/`)."""
        self.folder, self.by_path = folder, by_path
        self.name = data_file(split)
        self.row_group_rows, self.row_group_bytes = row_group_rows, row_group_bytes
        self.samples = 0
        self.arrow_bytes = 0
        """The split's size in Arrow (what a dataset card calls its `num_bytes`)."""
        self.file_bytes = 0
        self._rows: list[dict] = []
        self._row_bytes = 0
        self._file = ExitStack()
        self._stream = self._file.enter_context(atomic_writer(folder / self.name))
        self._file.callback(self._measure)
        self._writer = self._file.enter_context(
            pq.ParquetWriter(self._stream, ARROW_SCHEMA, **WRITER_OPTIONS)
        )

    def info(self, version_folder: UPath) -> FileInfo:
        file = (self.folder / self.name).path.removeprefix(version_folder.path.rstrip("/") + "/")
        return FileInfo(file=file, samples=self.samples, bytes=self.file_bytes)

    def write(self, sample: Sample) -> None:
        image = (
            {"bytes": None, "path": sample.stored_at}
            if self.by_path
            else {"bytes": sample.data, "path": sample.file_name}
        )
        self._rows.append({"image": image, **sample.metadata})
        self._row_bytes += 0 if self.by_path else len(sample.data)
        if len(self._rows) >= self.row_group_rows or self._row_bytes >= self.row_group_bytes:
            self._flush()

    def _flush(self) -> None:
        if self._rows:
            table = pa.Table.from_pylist(self._rows, schema=ARROW_SCHEMA)
            self._writer.write_table(table)
            self.samples += table.num_rows
            self.arrow_bytes += table.nbytes
            self._rows, self._row_bytes = [], 0

    def _measure(self) -> None:
        """Runs once the Parquet footer is written, before the file is committed."""
        self.file_bytes = self._stream.tell()

    def __enter__(self) -> ParquetSink:
        return self

    def __exit__(self, *exc_info) -> None:
        if exc_info[0] is None:
            self._flush()
        self._file.__exit__(*exc_info)
