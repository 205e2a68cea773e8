"""One split's WebDataset: tar shards `{split}-000000.tar`, `{split}-000001.tar`, … written with
`webdataset.ShardWriter` (at most `max_samples` samples each; a new shard once one holds `max_bytes`).
A sample is `{image_id}.jpg` or `.png` (the generated file's bytes, not re-encoded) and
`{image_id}.json` (its metadata), so `webdataset.WebDataset(urls).decode("pil")` reads it as it is.
Each shard is written whole or not at all (storage.atomic_writer), locally and on object storage."""

from __future__ import annotations

import json
from contextlib import ExitStack
from typing import BinaryIO

import webdataset
from upath import UPath

from ..files.storage import atomic_writer
from .manifest import WEBDATASET_DIR, FileInfo
from .samples import Sample


class ShardSink:
    """A context manager: leaving it normally completes the last shard, an exception discards it."""

    _stream: BinaryIO
    """The open shard's file, from ShardWriter's first call of _open on."""

    def __init__(self, version_folder: UPath, split: str, max_samples: int, max_bytes: int):
        self.folder = version_folder / WEBDATASET_DIR
        self.shards: list[FileInfo] = []
        self._shard = ExitStack()
        self._writer = webdataset.ShardWriter(
            f"{split}-%06d.tar",
            maxcount=max_samples,
            maxsize=max_bytes,
            opener=self._open,
            post=self._complete,
            verbose=0,
            encoder=False,
        )

    def write(self, sample: Sample) -> None:
        self._writer.write(
            {
                "__key__": sample.image_id,
                sample.extension: sample.data,
                "json": json.dumps(sample.metadata, sort_keys=True).encode(),
            }
        )

    def _open(self, name: str) -> BinaryIO:
        self._stream = self._shard.enter_context(atomic_writer(self.folder / name))
        return self._stream

    def _complete(self, name: str) -> None:
        """ShardWriter closed the tar archive `name`; its file is committed here."""
        self.shards.append(
            FileInfo(file=f"{WEBDATASET_DIR}/{name}", samples=self._writer.count, bytes=self._stream.tell())
        )
        self._shard.close()

    def __enter__(self) -> ShardSink:
        return self

    def __exit__(self, *exc_info) -> None:
        if exc_info[0] is None:
            self._writer.close()
        else:
            self._shard.__exit__(*exc_info)
