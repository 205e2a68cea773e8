"""The manifest of one partition's export (JSON): what was kept and dropped, and every file written,
relative to the version folder that holds it."""

from __future__ import annotations

from datetime import datetime

from pydantic import BaseModel

from .options import ExportOptions

WEBDATASET_DIR = "webdataset"
HF_DIR = "hf"
HF_PATHS_DIR = "hf_paths"
"""The Hugging Face Parquet that references the stored images instead of copying them."""
DATASET_CARD = f"{HF_DIR}/README.md"
CARD_FILE = "README.md"


class FileInfo(BaseModel):
    file: str
    """Relative to the version folder."""
    samples: int
    bytes: int


class SplitExport(BaseModel):
    samples: int = 0
    webdataset: list[FileInfo] = []
    """The split's tar shards, in order."""
    parquet: FileInfo | None = None
    """The split's Hugging Face Parquet file (none when the split is empty or the format not chosen)."""
    parquet_paths: FileInfo | None = None
    """The split's Hugging Face Parquet of image paths (format `hf_paths`)."""


class ExportManifest(BaseModel):
    partition: str
    version: str
    """The folder beside the pointer that holds this export."""
    created_at: datetime
    catalog_rows: int
    exported: int
    removed: dict[str, int]
    """Rows each filter dropped (a row counts against the first filter that drops it)."""
    splits: dict[str, SplitExport]
    options: ExportOptions
    source_version: str | None = None
    """What it was made from (the caller's digest of the catalog partition, decisions and options):
    an export asked for again from the same source can be left as it is."""
    dataset_card: str | None = None
    """The Hugging Face dataset card (README.md) of the first Parquet format; none when nothing was
    exported or no Parquet format was chosen (each Parquet folder has its own)."""
