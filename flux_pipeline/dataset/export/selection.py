"""Which rows of a catalog partition a training export keeps. The filters run in this order and a
dropped row counts against the first one that drops it: a reviewer's rejection, not kept by a
reviewer (only with `only_kept`), NSFW, minimum size, exact duplicate (same
content hash), near duplicate (perceptual hash within a Hamming distance). Among duplicates the first
by image_id stays, so the choice does not depend on the catalog's row order.

The catalog is read a batch at a time, only the columns the filters need. What is held is per row
(ids and hashes), never image bytes. The perceptual hash is the catalog's, computed when the file
was stored; only a row cataloged before that column existed has its file checked against its
content hash and decoded for it, then let go."""

from __future__ import annotations

import functools
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field

import pyarrow as pa
import pyarrow.compute as pc
from upath import UPath

from ..catalog.decisions import KEEP, REJECT
from ..catalog.table import FILE_SCHEMA, conform, iter_partition
from ..files.image_hashes import from_int64, perceptual_hash_of
from .near_duplicates import NearDuplicateIndex
from .options import ExportOptions
from .samples import verified_file

FILTERS = ("rejected", "not_kept", "nsfw", "min_size", "exact_duplicate", "near_duplicate")
CANDIDATE_COLUMNS = ["image_id", "content_hash", "file_path", "perceptual_hash"]
CANDIDATE_SCHEMA = pa.schema([FILE_SCHEMA.field(name) for name in CANDIDATE_COLUMNS])
FILTER_COLUMNS = [*CANDIDATE_COLUMNS, "nsfw", "width", "height"]
FILTER_SCHEMA = pa.schema([FILE_SCHEMA.field(name) for name in FILTER_COLUMNS])


@dataclass
class Selection:
    catalog_rows: int = 0
    removed: dict[str, int] = field(default_factory=lambda: dict.fromkeys(FILTERS, 0))
    kept: set[str] = field(default_factory=set)

    def drop(self, batch: pa.RecordBatch, mask: pa.Array | None, name: str) -> pa.RecordBatch:
        """`batch` without the rows `mask` marks, counted against filter `name`."""
        if mask is None:
            return batch
        self.removed[name] += pc.sum(mask).as_py() or 0
        return batch.filter(pc.invert(mask))


def select_images(
    catalog_root: UPath,
    output_root: UPath,
    partition: str,
    options: ExportOptions,
    decisions: Mapping[str, str] | None = None,
) -> Selection:
    """`decisions`: image_id → its reviewer's decision in force (`keep` or `reject`)."""
    selection = Selection()
    rejected, kept = _decided(decisions or {})
    candidates = []
    for batch in iter_partition(catalog_root, partition, FILTER_COLUMNS, options.batch_rows):
        batch = conform(batch, FILTER_SCHEMA)
        selection.catalog_rows += batch.num_rows
        batch = selection.drop(batch, _marked(batch, rejected, options.drop_rejected), "rejected")
        batch = selection.drop(batch, _marked(batch, kept, options.only_kept, invert=True), "not_kept")
        nsfw = pc.fill_null(batch["nsfw"], False) if options.drop_nsfw else None
        batch = selection.drop(batch, nsfw, "nsfw")
        batch = selection.drop(batch, _too_small(batch, options), "min_size")
        candidates.append(batch.select(CANDIDATE_COLUMNS))
    seen_hashes: set[str] = set()
    distance = options.near_duplicate_distance
    similar = NearDuplicateIndex(distance) if distance else None  # 0 or None: not looked for
    for row in _by_image_id(pa.Table.from_batches(candidates, CANDIDATE_SCHEMA), options.batch_rows):
        if options.drop_exact_duplicates and row["content_hash"] in seen_hashes:
            selection.removed["exact_duplicate"] += 1
            continue
        seen_hashes.add(row["content_hash"])
        if similar is not None:
            fingerprint = _perceptual_hash(output_root, row)
            if similar.near(fingerprint):
                selection.removed["near_duplicate"] += 1
                continue
            similar.add(fingerprint)
        selection.kept.add(row["image_id"])
    return selection


def _perceptual_hash(output_root: UPath, row: dict) -> int:
    if row["perceptual_hash"] is not None:
        return from_int64(row["perceptual_hash"])
    return perceptual_hash_of(verified_file(output_root, row))


def _decided(decisions: Mapping[str, str]) -> tuple[pa.Array, pa.Array]:
    """The ids of the rejected and of the kept images."""
    return tuple(
        pa.array(sorted(image for image, decision in decisions.items() if decision == wanted), pa.string())
        for wanted in (REJECT, KEEP)
    )


def _marked(batch: pa.RecordBatch, ids: pa.Array, active: bool, invert: bool = False) -> pa.Array | None:
    """Rows whose image_id is in `ids` (with `invert`: is not), when the filter is active."""
    if not active:
        return None
    found = pc.is_in(batch["image_id"], value_set=ids)
    return pc.invert(found) if invert else found


def _too_small(batch: pa.RecordBatch, options: ExportOptions) -> pa.Array | None:
    """Rows below the minimum width or height (an unknown size does not meet a minimum)."""
    masks = [
        pc.fill_null(pc.less(batch[column], minimum), True)
        for column, minimum in (("width", options.min_width), ("height", options.min_height))
        if minimum
    ]
    return functools.reduce(pc.or_, masks) if masks else None


def _by_image_id(candidates: pa.Table, batch_rows: int) -> Iterator[dict]:
    for batch in candidates.sort_by("image_id").to_batches(max_chunksize=batch_rows):
        yield from batch.to_pylist()
