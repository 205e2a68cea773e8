"""A version folder's data files: each sample goes, as it comes, to its split's sink of every chosen
format (WebDataset shards, Hugging Face Parquet with the image bytes, Hugging Face Parquet of image
paths), so at most a Parquet row group per split of image bytes (up to `parquet_row_group_bytes`)
is held. A split with no sample gets no file. If writing fails, no file that was still open
appears."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable
from contextlib import ExitStack

from upath import UPath

from .hf_parquet import ParquetSink
from .manifest import HF_DIR, HF_PATHS_DIR, SplitExport
from .options import HF_PARQUET, HF_PATHS, WEBDATASET, ExportOptions
from .samples import Sample
from .splits import SPLITS, split_of
from .webdataset_shards import ShardSink

PARQUET_FOLDERS = {HF_PARQUET: HF_DIR, HF_PATHS: HF_PATHS_DIR}
"""Each Parquet format's folder in the version."""


def write_splits(
    version_folder: UPath, samples: Iterable[Sample], options: ExportOptions
) -> tuple[dict[str, SplitExport], dict[str, dict[str, ParquetSink]]]:
    """Each split's files, and for each Parquet format's folder the sinks of its non-empty splits
    (their sizes make that folder's dataset card)."""
    shards: dict[str, ShardSink] = {}
    formats = options.chosen_formats
    parquet: dict[str, dict[str, ParquetSink]] = {f: {} for f in PARQUET_FOLDERS if f in formats}
    counts: Counter[str] = Counter()
    with ExitStack() as sinks:
        for sample in samples:
            split = split_of(sample.metadata["prompt_id"], options.validation_fraction)
            if split not in counts:
                if WEBDATASET in formats:
                    shard = ShardSink(
                        version_folder, split, options.shard_max_samples, options.shard_max_bytes
                    )
                    shards[split] = sinks.enter_context(shard)
                for kind, by_split in parquet.items():
                    folder = version_folder / PARQUET_FOLDERS[kind]
                    sink = ParquetSink(
                        folder,
                        split,
                        options.parquet_row_group_rows,
                        options.parquet_row_group_bytes,
                        by_path=kind == HF_PATHS,
                    )
                    by_split[split] = sinks.enter_context(sink)
            counts[split] += 1
            if split in shards:
                shards[split].write(sample)
            for by_split in parquet.values():
                by_split[split].write(sample)

    def info(kind: str, split: str):
        sink = parquet.get(kind, {}).get(split)
        return sink.info(version_folder) if sink else None

    exports = {
        split: SplitExport(
            samples=counts[split],
            webdataset=shards[split].shards if split in shards else [],
            parquet=info(HF_PARQUET, split),
            parquet_paths=info(HF_PATHS, split),
        )
        for split in SPLITS
    }
    return exports, {PARQUET_FOLDERS[kind]: by_split for kind, by_split in parquet.items() if by_split}
