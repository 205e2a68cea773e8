"""What a training export keeps, how it is cut (filters, validation fraction, shard and batch sizes),
in which formats, and how many versions stay on disk."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field, field_validator

MIB = 1 << 20
WEBDATASET, HF_PARQUET, HF_PATHS = "webdataset", "hf_parquet", "hf_paths"
FORMATS = (WEBDATASET, HF_PARQUET, HF_PATHS)
DEFAULT_FORMATS = (WEBDATASET, HF_PARQUET)
"""What an export wrote before formats could be chosen, and what the README's commands write."""


class ExportOptions(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    formats: list[str] | None = Field(
        None,
        description="Any of webdataset (tar shards with a copy of each image), hf_parquet (Hugging Face "
        "Parquet with a copy of each image), hf_paths (Hugging Face Parquet that references the stored "
        "images by path: no copy, `datasets` decodes them from there); unset: webdataset and hf_parquet, "
        "or the dataset resource's export_formats.",
    )
    keep_versions: int | None = Field(
        None,
        ge=1,
        description="Complete export versions kept on disk, the one in force included; unset: 1, or the "
        "dataset resource's export_keep_versions.",
    )

    drop_rejected: bool = Field(True, description="Drop images a reviewer rejected (flux-pipeline review).")
    only_kept: bool = Field(False, description="Export only images a reviewer kept.")
    drop_nsfw: bool = Field(True, description="Drop images fal flagged as NSFW.")
    drop_exact_duplicates: bool = Field(
        True, description="Keep one image per content hash (the first by image_id)."
    )
    near_duplicate_distance: int | None = Field(
        4,
        ge=0,
        le=32,
        description="Drop an image whose perceptual hash (imagehash.phash, 64 bits) is within this Hamming "
        "distance of an image kept before it by image_id; 0 or None disables.",
    )
    min_width: int | None = Field(None, ge=1, description="Drop images narrower than this.")
    min_height: int | None = Field(None, ge=1, description="Drop images lower than this.")
    validation_fraction: float = Field(
        0.1, ge=0, le=1, description="Share of prompt ids (with all their images) in the validation split."
    )
    shard_max_samples: int = Field(1000, ge=1, description="WebDataset: samples per tar shard at most.")
    shard_max_bytes: int = Field(
        512 * MIB, ge=1, description="WebDataset: a new shard starts once a shard's content reaches this."
    )
    parquet_row_group_rows: int = Field(
        100, ge=1, description="Hugging Face Parquet: rows per row group (what the Hub uses for images)."
    )
    parquet_row_group_bytes: int = Field(
        2 * MIB, ge=1, description="Hugging Face Parquet: a row group ends once its images reach this."
    )
    batch_rows: int = Field(1024, ge=1, description="Catalog rows read at a time.")

    @field_validator("formats")
    @classmethod
    def _known_formats(cls, formats: list[str] | None) -> list[str] | None:
        if formats is None:
            return None
        if not formats:
            raise ValueError("name at least one format")
        if unknown := [name for name in formats if name not in FORMATS]:
            raise ValueError(f"unknown format(s) {', '.join(unknown)}; known: {', '.join(FORMATS)}")
        return list(dict.fromkeys(formats))

    @property
    def chosen_formats(self) -> tuple[str, ...]:
        return tuple(self.formats or DEFAULT_FORMATS)

    @property
    def versions_kept(self) -> int:
        return self.keep_versions or 1
