"""The dataset resource: where the dataset lives, table-level request defaults, pricing and guards."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import dagster as dg
from pydantic import Field

from ..dataset.catalog.decisions import DecisionLog
from ..dataset.costs.pricing import CONFIGURED, MEGAPIXELS, UnitPrice
from ..dataset.export.options import DEFAULT_FORMATS, ExportOptions
from ..dataset.files.layout import DatasetLayout
from ..dataset.files.storage import is_local, open_location
from ..dataset.money.ledger import RequestLedger
from ..fal.types import DEFAULT_MAX_FILE_BYTES

DEFAULT_DATA_DIR = str(Path(__file__).resolve().parents[2] / "data")


class DatasetResource(dg.ConfigurableResource):
    """`data_dir` may be a local folder or an fsspec URL (s3://bucket/prefix, gs://, az://);
    its layout is dataset.files.layout.DatasetLayout."""

    data_dir: str = Field(
        default=DEFAULT_DATA_DIR, description="Root folder of the dataset (or an fsspec URL)."
    )
    storage_options: dict[str, Any] = Field(
        default_factory=dict,
        description="fsspec options for a URL data_dir, e.g. {'endpoint_url': ...}; prefer the "
        "filesystem's own environment variables for credentials.",
    )
    ledger: str | None = Field(
        default=None,
        description="The request ledger: a SQLite file, or a postgresql:// URL that every machine "
        "running the dataset's steps reaches. Default: ledger/requests.sqlite under a local data_dir.",
    )
    claim_lease_seconds: float = Field(
        default=120.0,
        gt=0,
        description="How long a run's claim on a request outlives its last renewal (a run "
        "renews its claims every third of it); a dead run's requests are taken over after it.",
    )
    lost_request_wait: float = Field(
        default=120.0,
        ge=0,
        description="Seconds to wait for the webhook of a submit whose response was lost "
        "before giving up on it for this run.",
    )
    billing_grace_seconds: float = Field(
        default=3600.0,
        ge=0,
        description="How long after a request finished its missing billing event is "
        "pending rather than cataloged_not_billed (fal's billing lags).",
    )
    image_size: str = Field(default="landscape_4_3", description="Default preset size for rows without one.")
    num_images: int = Field(default=1, description="Default images per row.")
    output_format: str = Field(default="jpeg")
    safety_tolerance: str = Field(default="2")
    enhance_prompt: bool = Field(default=False)
    price_per_megapixel: float = Field(
        default=0.04, ge=0, description="USD per billed megapixel when fal's pricing API cannot be read."
    )
    megapixel_size: int = Field(default=1024 * 1024, gt=0, description="Pixels in one billed megapixel.")
    budget_usd: float | None = Field(
        default=None, ge=0, description="Most a partition may spend; None: no limit."
    )
    nightly_budget_usd: float | None = Field(
        default=None,
        ge=0,
        description="Most one night of `nightly_backfill` may spend (estimated "
        "before anything is sent); None: no limit.",
    )
    nsfw_warn_rate: float = Field(
        default=0.2, ge=0, le=1, description="NSFW share above which a check warns."
    )
    max_download_bytes: int = Field(
        default=DEFAULT_MAX_FILE_BYTES, gt=0, description="Largest result file accepted."
    )
    export_formats: list[str] = Field(
        default=list(DEFAULT_FORMATS),
        min_length=1,
        description="training_export's formats unless its run config names others: webdataset and "
        "hf_parquet copy each image; hf_paths references the stored images by path.",
    )
    export_keep_versions: int = Field(
        default=1,
        ge=1,
        description="Complete export versions training_export keeps, the one in force included.",
    )

    @property
    def layout(self) -> DatasetLayout:
        return DatasetLayout(open_location(self.data_dir, self.storage_options))

    def ledger_location(self) -> str:
        if self.ledger:
            return self.ledger
        layout = self.layout
        if not is_local(layout.root):
            raise ValueError(
                f"data_dir is {self.data_dir}: set the ledger to a postgresql:// URL that every machine "
                "reaches (or to a local SQLite file when all runs execute on this host)"
            )
        return str(layout.default_ledger)

    def request_ledger(self) -> RequestLedger:
        """The request ledger, opened; use it as a context manager (`with dataset.request_ledger()
        as ledger:`), which closes it."""
        return RequestLedger(self.ledger_location())

    def decision_log(self) -> DecisionLog:
        """The review decisions log (in the ledger's database), opened; a context manager too."""
        return DecisionLog(self.ledger_location())

    def request_defaults(self) -> dict:
        return {
            "image_size": self.image_size,
            "num_images": self.num_images,
            "output_format": self.output_format,
            "safety_tolerance": self.safety_tolerance,
            "enhance_prompt": self.enhance_prompt,
        }

    def export_options(self, run_config: ExportOptions) -> ExportOptions:
        """training_export's options: its run config, with this resource's formats and versions kept
        where the run config leaves them unset."""
        return ExportOptions(
            **{
                **run_config.model_dump(),
                "formats": run_config.formats or self.export_formats,
                "keep_versions": run_config.keep_versions or self.export_keep_versions,
            }
        )

    def configured_price(self) -> UnitPrice:
        """The price used when fal's pricing API cannot be read."""
        return UnitPrice(self.price_per_megapixel, MEGAPIXELS, CONFIGURED, self.megapixel_size)
