"""Where dataset files live: a local folder or any fsspec URL (s3://, gs://, az://, memory://),
as universal-pathlib paths, so every machine of a deployment can reach the same dataset."""

from __future__ import annotations

import os
import shutil
import uuid
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any, BinaryIO

import pyarrow as pa
import pyarrow.parquet as pq
from typing_extensions import TypeIs
from upath import UPath

LOCAL_PROTOCOLS = ("", "file", "local")


def open_location(where: str, storage_options: Mapping[str, Any] | None = None) -> UPath:
    """A folder or file: a URL with a protocol goes to fsspec with `storage_options`; anything
    else is a local path, made absolute."""
    if "://" in where and not where.startswith("file://"):
        return UPath(where, **(storage_options or {}))
    return UPath(Path(where.removeprefix("file://")).resolve())


def is_local(path: UPath | Path) -> TypeIs[Path]:
    """A local path (a local UPath is a pathlib.Path too, so os and shutil take it)."""
    return getattr(path, "protocol", "") in LOCAL_PROTOCOLS


@contextmanager
def atomic_writer(path: UPath) -> Iterator[BinaryIO]:
    """A binary stream whose content appears under `path` whole or not at all. Locally: a
    temporary name beside it, renamed on success. On object storage an object is only created
    when its upload is committed, so the upload is discarded if the block fails."""
    if is_local(path):
        path.parent.mkdir(parents=True, exist_ok=True)
        temporary = path.with_name(f".{path.name}.{uuid.uuid4().hex}.tmp")
        try:
            with open(temporary, "wb") as stream:
                yield stream
            os.replace(temporary, path)
        finally:
            temporary.unlink(missing_ok=True)
        return
    stream = path.fs.open(path.path, "wb", autocommit=False)
    try:
        yield stream
        stream.close()
        stream.commit()
    except BaseException:
        stream.discard()
        stream.closed = True  # else fsspec would flush what is left when the object is collected
        raise


def write_parquet_atomically(table: pa.Table, path: UPath) -> None:
    """Readers never see half a file."""
    with atomic_writer(path) as stream:
        pq.write_table(table, stream)


def write_bytes_atomically(path: UPath, data: bytes) -> None:
    if is_local(path):
        with atomic_writer(path) as stream:
            stream.write(data)
    else:
        path.fs.pipe_file(path.path, data)  # one PUT: the object is whole or absent


def parquet_file(path: UPath) -> pq.ParquetFile:
    """A Parquet file opened for batch reads, wherever it is."""
    return pq.ParquetFile(str(path) if is_local(path) else path.fs.open(path.path, "rb"))


def parquet_batches(
    path: UPath, columns: list[str] | None = None, batch_rows: int = 8192
) -> Iterator[pa.RecordBatch]:
    """A Parquet file's rows a batch at a time (none when there is no file)."""
    if path.is_file():
        yield from parquet_file(path).iter_batches(batch_size=batch_rows, columns=columns)


def arrow_location(path: UPath) -> tuple[str, object | None]:
    """(path, filesystem) as pyarrow wants them: its own local filesystem, else the fsspec one."""
    return (str(path), None) if is_local(path) else (path.path, path.fs)


def remove_tree(path: UPath) -> None:
    """A folder and everything under it (on object storage: every object under its prefix)."""
    if is_local(path):
        shutil.rmtree(path, ignore_errors=True)
    elif path.exists():
        path.fs.rm(path.path, recursive=True)
