"""A version folder's data files: each sample goes to its split's WebDataset shards and Hugging Face
Parquet file as it comes, so at most a Parquet row group per split of image bytes (up to
`parquet_row_group_bytes`) is held. A split with no sample gets no file. If writing fails, no file
that was still open appears."""

from __future__ import annotations

from collections.abc import Iterable
from contextlib import ExitStack

from upath import UPath

from .hf_parquet import ParquetSink
from .manifest import SplitExport
from .options import ExportOptions
from .samples import Sample
from .splits import SPLITS, split_of
from .webdataset_shards import ShardSink


def write_splits(
    version_folder: UPath, samples: Iterable[Sample], options: ExportOptions
) -> tuple[dict[str, SplitExport], dict[str, ParquetSink]]:
    """Each split's files, and the Parquet sinks of the non-empty splits (their sizes make the card)."""
    shards: dict[str, ShardSink] = {}
    parquet: dict[str, ParquetSink] = {}
    with ExitStack() as sinks:
        for sample in samples:
            split = split_of(sample.metadata["prompt_id"], options.validation_fraction)
            if split not in shards:
                shards[split] = sinks.enter_context(
                    ShardSink(version_folder, split, options.shard_max_samples, options.shard_max_bytes)
                )
                parquet[split] = sinks.enter_context(
                    ParquetSink(
                        version_folder, split, options.parquet_row_group_rows, options.parquet_row_group_bytes
                    )
                )
            shards[split].write(sample)
            parquet[split].write(sample)
    exports = {
        split: SplitExport(
            samples=parquet[split].samples, webdataset=shards[split].shards, parquet=parquet[split].info
        )
        if split in parquet
        else SplitExport()
        for split in SPLITS
    }
    return exports, parquet
