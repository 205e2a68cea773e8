"""The Hugging Face dataset card (`README.md`) of an export: YAML front matter as the Hub expects it
(`dataset_info` with the features and each split's `num_examples` and `num_bytes`, and `configs`
naming each split's data files), built with `datasets`' own card writers, then a short description."""

from __future__ import annotations

from datasets import DatasetInfo, SplitDict, SplitInfo
from datasets.info import DatasetInfosDict
from datasets.utils.metadata import MetadataConfigs
from huggingface_hub import DatasetCardData

from .hf_parquet import FEATURES, ParquetSink, data_file
from .manifest import ExportManifest


def dataset_card(manifest: ExportManifest, parquet: dict[str, ParquetSink]) -> str:
    """`parquet`: the non-empty splits' Parquet files, as written."""
    card = DatasetCardData(
        pretty_name=f"flux_pipeline {manifest.partition}",
        task_categories=["text-to-image"],
        tags=["synthetic", "flux"],
    )
    splits = SplitDict()
    for split, sink in parquet.items():
        splits.add(SplitInfo(name=split, num_bytes=sink.arrow_bytes, num_examples=sink.samples))
    info = DatasetInfo(
        features=FEATURES,
        splits=splits,
        download_size=sum(s.file_bytes for s in parquet.values()),
        dataset_size=sum(s.arrow_bytes for s in parquet.values()),
    )
    DatasetInfosDict({"default": info}).to_dataset_card_data(card)
    data_files = [{"split": split, "path": data_file(split)} for split in parquet]
    MetadataConfigs({"default": {"data_files": data_files}}).to_dataset_card_data(card)
    removed = ", ".join(f"{name}: {count}" for name, count in manifest.removed.items())
    return (
        f"---\n{card.to_yaml()}\n---\n\n# flux_pipeline: {manifest.partition}\n\n"
        "Synthetic images generated with fal.ai FLUX1.1 [pro] from the prompt table "
        f"`{manifest.partition}` (export version `{manifest.version}`, "
        f"{manifest.created_at.isoformat()}).\n\n"
        f"{manifest.exported} of {manifest.catalog_rows} catalog images; dropped by filter: {removed}.\n"
        "Each row keeps its catalog `image_id`; a Redux variation names its parent in `parent_image_id` "
        "and is in the same split (splits are assigned by a hash of `prompt_id`).\n"
    )
