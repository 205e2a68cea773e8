"""Where the dataset lives and how it is made: the resource every dataset asset reads."""

from __future__ import annotations

from typing import Any

import dagster as dg
from pydantic import Field
from upath import UPath

from ..fal.batch import DEFAULT_MAX_FILE_BYTES
from .catalog import PARTITION_KEY
from .storage import open_location


class DatasetSettings(dg.ConfigurableResource):
    """Folders, table-level request defaults, pricing and guards of the dataset. Every folder
    but the ledger's may be a local path or an fsspec URL (s3://bucket/prefix, gs://, az://)."""

    prompts_dir: str = Field(default="data/prompts", description="Folder of prompt tables (*.parquet).")
    output_root: str = Field(default="data/outputs", description="Root of generated files, one folder per partition.")
    catalog_root: str = Field(default="data/catalog", description="Root of the Parquet catalog (partition=KEY/).")
    storage_options: dict[str, Any] = Field(
        default_factory=dict, description="fsspec options for URL folders, e.g. {'endpoint_url': ...}; "
                                          "prefer the filesystem's own environment variables for credentials.")
    ledger_path: str = Field(default="data/ledger/requests.sqlite",
                             description="The request ledger: a SQLite file, or a postgresql:// URL that every "
                                         "machine running the dataset's steps reaches.")
    lost_request_wait: float = Field(
        default=120.0, ge=0, description="Seconds to wait for the webhook of a submit whose response was lost "
                                         "before giving up on it for this run.")
    reports_dir: str = Field(default="data/reports", description="Folder of dataset-wide reports (cost).")
    image_size: str = Field(default="landscape_4_3", description="Default preset size for rows without one.")
    num_images: int = Field(default=1, description="Default images per row.")
    output_format: str = Field(default="jpeg")
    safety_tolerance: str = Field(default="2")
    enhance_prompt: bool = Field(default=False)
    price_per_megapixel: float = Field(default=0.04, ge=0, description="USD per billed megapixel.")
    megapixel_size: int = Field(default=1024 * 1024, gt=0, description="Pixels in one billed megapixel.")
    budget_usd: float | None = Field(default=None, ge=0, description="Most a partition may spend; None: no limit.")
    nsfw_warn_rate: float = Field(default=0.2, ge=0, le=1, description="NSFW share above which a check warns.")
    max_download_bytes: int = Field(default=DEFAULT_MAX_FILE_BYTES, gt=0, description="Largest result file accepted.")

    def request_defaults(self) -> dict:
        return {"image_size": self.image_size, "num_images": self.num_images, "output_format": self.output_format,
                "safety_tolerance": self.safety_tolerance, "enhance_prompt": self.enhance_prompt}

    def location(self, where: str) -> UPath:
        """A folder or file of this dataset, local or on object storage."""
        return open_location(where, self.storage_options)

    @property
    def prompts_path(self) -> UPath:
        return self.location(self.prompts_dir)

    def table_path(self, partition: str) -> UPath:
        return self.prompts_path / f"{partition}.parquet"

    @property
    def output_path(self) -> UPath:
        """Catalog rows' `file_path` is relative to this root."""
        return self.location(self.output_root)

    def partition_dir(self, partition: str) -> UPath:
        if not PARTITION_KEY.match(partition):
            raise ValueError(f"unsafe partition key {partition!r}")
        return self.output_path / partition

    @property
    def ledger_location(self) -> str:
        return self.ledger_path

    @property
    def reports_path(self) -> UPath:
        return self.location(self.reports_dir)

    @property
    def catalog_path(self) -> UPath:
        return self.location(self.catalog_root)

    def cost_of(self, megapixels: int) -> float:
        return round(megapixels * self.price_per_megapixel, 6)
