"""Training exports of a real catalog partition (files written with Pillow), read back with the real
readers: `webdataset.WebDataset` for the tar shards and `datasets.load_dataset` for the Hugging Face
Parquet files, on local disk and on S3 (moto's server through s3fs)."""

from __future__ import annotations

import hashlib
import io
import json
import tracemalloc
from datetime import UTC, datetime, timedelta

import datasets
import numpy as np
import pyarrow.parquet as pq
import pytest
import webdataset
import yaml
from PIL import Image
from upath import UPath

from flux_pipeline.dataset.export import (
    POINTER,
    SPLITS,
    Exported,
    ExportManifest,
    ExportOptions,
    export_partition,
    read_latest,
    selection,
    split_of,
    version_folder,
    versions,
)
from flux_pipeline.dataset.export.samples import METADATA_COLUMNS
from flux_pipeline.dataset.files.image_hashes import perceptual_hash, perceptual_hash_of, to_int64
from flux_pipeline.dataset.files.storage import write_bytes_atomically

from .catalog_fixtures import PARTITION, Cases, Shots, encode, make_shots

OPTIONS = ExportOptions(
    min_width=32,
    min_height=32,
    validation_fraction=0.3,
    shard_max_samples=3,
    parquet_row_group_rows=4,
    batch_rows=4,
)


@pytest.fixture
def local(tmp_path) -> tuple[Shots, Cases, UPath]:
    root = UPath(tmp_path)
    return (*make_shots(root / "catalog", root / "outputs"), root / "exports")


def export(shots: Shots, export_root: UPath, options: ExportOptions = OPTIONS) -> ExportManifest:
    return exported(shots, export_root, options).manifest


def exported(shots: Shots, export_root: UPath, options: ExportOptions = OPTIONS) -> Exported:
    return export_partition(shots.catalog_root, shots.output_root, export_root, PARTITION, options)


def shard_samples(folder: UPath, manifest: ExportManifest, split: str, decode: bool = True) -> list[dict]:
    urls = [str(folder / shard.file) for shard in manifest.splits[split].webdataset]
    dataset = webdataset.WebDataset(urls, shardshuffle=False)
    return list(dataset.decode("pil") if decode else dataset)


def hf_split(folder: UPath, manifest: ExportManifest, split: str, cache: str) -> datasets.Dataset:
    files = {split: str(folder / manifest.splits[split].parquet.file)}
    return datasets.load_dataset("parquet", data_files=files, cache_dir=cache)[split]


def exported_splits(manifest: ExportManifest, folder: UPath) -> dict[str, str]:
    """image_id → split, read from the WebDataset shards."""
    return {
        sample["__key__"]: split
        for split in SPLITS
        for sample in shard_samples(folder, manifest, split, decode=False)
    }


def test_filters_drop_exactly_their_rows(local):
    shots, cases, export_root = local
    manifest = export(shots, export_root)
    assert manifest.catalog_rows == len(shots.rows) == 22
    assert manifest.removed == {
        "rejected": 0,
        "not_kept": 0,
        "nsfw": 1,
        "min_size": 1,
        "exact_duplicate": 1,
        "near_duplicate": 1,
    }
    dropped = {cases.nsfw, cases.tiny, cases.duplicate_pair[1], cases.near_pair[1]}
    exported = exported_splits(manifest, version_folder(export_root, manifest))
    assert set(exported) == {row["image_id"] for row in shots.rows} - dropped
    assert manifest.exported == len(exported) == 18

    everything = ExportOptions(drop_nsfw=False, drop_exact_duplicates=False, near_duplicate_distance=0)
    manifest = export(shots, export_root, everything)
    assert manifest.exported == 22 and set(manifest.removed.values()) == {0}

    only_perceptual = everything.model_copy(update={"near_duplicate_distance": 4})
    manifest = export(shots, export_root, only_perceptual)
    assert manifest.removed["near_duplicate"] == 2, "the same bytes are also at perceptual distance 0"
    assert set(exported_splits(manifest, version_folder(export_root, manifest))) == (
        {row["image_id"] for row in shots.rows} - {cases.duplicate_pair[1], cases.near_pair[1]}
    )

    nothing = export(shots, export_root, ExportOptions(min_width=4096))
    assert (nothing.exported, nothing.removed["nsfw"], nothing.removed["min_size"]) == (0, 1, 21)
    assert nothing.dataset_card is None and all(not split.webdataset for split in nothing.splits.values())
    assert read_latest(export_root, PARTITION) == nothing
    assert sorted(p.name for p in version_folder(export_root, nothing).iterdir()) == ["manifest.json"]


def test_webdataset_shards_round_trip_images_and_metadata(local):
    shots, cases, export_root = local
    manifest = export(shots, export_root)
    folder = version_folder(export_root, manifest)
    for split in SPLITS:
        shards = manifest.splits[split].webdataset
        assert shards and all(0 < shard.samples <= 3 for shard in shards)
        assert [shard.bytes for shard in shards] == [(folder / shard.file).stat().st_size for shard in shards]
        raw = shard_samples(folder, manifest, split, decode=False)
        decoded = shard_samples(folder, manifest, split)
        assert len(raw) == len(decoded) == manifest.splits[split].samples == sum(s.samples for s in shards)
        for plain, sample in zip(raw, decoded):
            row = shots.row(sample["__key__"])
            extension = "png" if row["output_format"] == "png" else "jpg"
            assert plain[extension] == (shots.output_root / row["file_path"]).read_bytes(), "not re-encoded"
            assert hashlib.sha256(plain[extension]).hexdigest() == row["content_hash"]
            assert isinstance(sample[extension], Image.Image)
            assert sample[extension].size == (row["width"], row["height"])
            assert sample["json"] == {column: row[column] for column in METADATA_COLUMNS}
    hostile_split = shard_samples(folder, manifest, split_of("hostile", 0.3))
    hostile = next(sample for sample in hostile_split if sample["__key__"] == cases.hostile)
    assert hostile["json"]["prompt"] == shots.row(cases.hostile)["prompt"]


def test_hugging_face_parquet_and_dataset_card(local, tmp_path):
    shots, _, export_root = local
    manifest = export(shots, export_root)
    folder = version_folder(export_root, manifest)
    for split in SPLITS:
        rows = hf_split(folder, manifest, split, str(tmp_path / "cache"))
        assert len(rows) == manifest.splits[split].samples == manifest.splits[split].parquet.samples
        assert rows.features["image"] == datasets.Image()
        for record in rows:
            row = shots.row(record["image_id"])
            assert isinstance(record["image"], Image.Image)
            assert record["image"].size == (row["width"], row["height"])
            assert all(record[column] == row[column] for column in METADATA_COLUMNS)
        stored = rows.cast_column("image", datasets.Image(decode=False))
        for record in stored:
            row = shots.row(record["image_id"])
            assert record["image"]["bytes"] == (shots.output_root / row["file_path"]).read_bytes()
            assert record["image"]["path"] == row["file_path"].rsplit("/", 1)[1]

    card = (folder / manifest.dataset_card).read_text()
    front_matter = yaml.safe_load(card.split("---\n")[1])
    splits = {s["name"]: s for s in front_matter["dataset_info"]["splits"]}
    samples = {split: manifest.splits[split].samples for split in SPLITS}
    assert {name: s["num_examples"] for name, s in splits.items()} == samples
    assert all(s["num_bytes"] > 0 for s in splits.values())
    assert front_matter["dataset_info"]["features"][0] == {"name": "image", "dtype": "image"}
    assert front_matter["configs"][0]["data_files"] == [
        {"split": s, "path": manifest.splits[s].parquet.file.removeprefix("hf/")} for s in SPLITS
    ]
    from_card = datasets.load_dataset(str(folder / "hf"), cache_dir=str(tmp_path / "card-cache"))
    assert {split: len(rows) for split, rows in from_card.items()} == samples


def test_splits_follow_the_prompt_id_and_survive_a_re_export(local):
    shots, cases, export_root = local
    first = export(shots, export_root)
    before = exported_splits(first, version_folder(export_root, first))
    assert set(before.values()) == set(SPLITS), "the test data reaches both splits"
    assert {before[cases.parent], *(before[v] for v in cases.variations)} == {before[cases.parent]}
    assert all(split == split_of(shots.row(image)["prompt_id"], 0.3) for image, split in before.items())

    second = export(shots, export_root, OPTIONS.model_copy(update={"shard_max_samples": 2, "batch_rows": 3}))
    assert exported_splits(second, version_folder(export_root, second)) == before
    assert {s: second.splits[s].samples for s in SPLITS} == {s: first.splits[s].samples for s in SPLITS}


def test_a_re_export_replaces_the_previous_one_whole(local):
    shots, cases, export_root = local
    first = export(shots, export_root)
    second = export(shots, export_root)
    exports = export_root / PARTITION
    assert second.version > first.version
    assert sorted(p.name for p in exports.iterdir()) == [POINTER, second.version], "the old version is gone"
    assert read_latest(export_root, PARTITION) == second
    in_folder = (exports / second.version / "manifest.json").read_bytes()
    assert ExportManifest.model_validate_json(in_folder) == second

    broken = shots.row(cases.parent)
    write_bytes_atomically(shots.output_root / broken["file_path"], b"not the image the catalog hashed")
    with pytest.raises(ValueError, match=f"content hash of image {cases.parent}"):
        export(shots, export_root)
    assert read_latest(export_root, PARTITION) == second, "a failed export leaves the pointer where it was"
    assert sorted(p.name for p in exports.iterdir()) == [POINTER, second.version], "and nothing half written"
    assert len(shard_samples(exports / second.version, second, "train")) == second.splits["train"].samples

    with pytest.raises(FileNotFoundError, match="no catalog partition"):
        export_partition(shots.catalog_root, shots.output_root, export_root, "elsewhere", OPTIONS)


def test_the_same_export_on_object_storage(s3, bucket, local, tmp_path):
    local_shots, _, local_exports = local
    expected = export(local_shots, local_exports)
    root = UPath(f"s3://{bucket}/flux", **s3)
    shots, _cases = make_shots(root / "catalog", root / "outputs")
    first = export(shots, root / "exports")
    second = export(shots, root / "exports")
    assert (second.removed, second.exported) == (expected.removed, expected.exported)
    assert {s: second.splits[s].samples for s in SPLITS} == {s: expected.splits[s].samples for s in SPLITS}
    exports = root / "exports" / PARTITION
    assert sorted(p.name for p in exports.iterdir()) == [POINTER, second.version]
    assert json.loads((exports / POINTER).read_bytes())["version"] == second.version != first.version
    assert read_latest(root / "exports", PARTITION) == second

    folder = version_folder(root / "exports", second)
    copy = UPath(tmp_path / "copy")
    folder.fs.get(folder.path, str(copy), recursive=True)
    assert exported_splits(second, copy) == exported_splits(expected, version_folder(local_exports, expected))
    rows = hf_split(copy, second, "train", str(tmp_path / "cache"))  # offline, `datasets` reads no URL
    train = sorted(image for image, split in exported_splits(second, copy).items() if split == "train")
    assert sorted(rows["image_id"]) == train
    assert all(isinstance(image, Image.Image) for image in rows["image"])


def test_image_bytes_are_streamed_not_gathered(tmp_path):
    """30 images of about 440 KB: a row group of up to 100 rows ends at 500 KB of images."""
    root = UPath(tmp_path)
    shots = Shots(root / "catalog", root / "outputs")
    noise = np.random.default_rng(0)
    for i in range(30):
        pixels = noise.integers(0, 256, (384, 384, 3), dtype=np.uint8)
        shots.add(f"noise-{i:02d}", encode(pixels, "png"), "png")
    shots.write_catalog()
    total = sum(row["file_bytes"] for row in shots.rows)
    perceptual_hash(Image.new("RGB", (8, 8)))  # imports scipy's FFT first: what it allocates is no image
    tracemalloc.start()
    try:
        manifest = export(
            shots,
            root / "exports",
            OPTIONS.model_copy(update={"parquet_row_group_rows": 100, "parquet_row_group_bytes": 500_000}),
        )
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert manifest.exported == 30 and total > 12_000_000
    assert peak < total / 4, f"peak {peak} bytes of Python objects for {total} bytes of images"


def test_concurrent_exports_never_delete_each_other_mid_write_nor_move_the_pointer_back(local):
    """Two runs of one partition at once export it at once: the later publish must not delete the
    folder the earlier export is still writing, and the earlier, finishing last, is superseded."""
    shots, _, export_root = local
    exports = export_root / PARTITION
    first = export(shots, export_root)
    in_progress = exports / versions.new_version(datetime.now(UTC))
    write_bytes_atomically(in_progress / "webdataset" / "train-000000.tar", b"half a shard")
    abandoned = exports / versions.new_version(datetime.now(UTC) - timedelta(hours=2))
    write_bytes_atomically(abandoned / "webdataset" / "train-000000.tar", b"left by a killed run")

    published = exported(shots, export_root)
    newer = published.manifest
    assert published.freed_bytes > 0, "the first export's and the abandoned folder's bytes"
    assert newer.version > in_progress.name
    assert sorted(p.name for p in exports.iterdir()) == sorted([POINTER, in_progress.name, newer.version])
    assert first.version not in {p.name for p in exports.iterdir()} and not abandoned.exists()

    late = newer.model_copy(update={"version": in_progress.name})
    in_force, freed = versions.publish(export_root, late)
    assert in_force == newer, "the newer export stays in force"
    assert freed > len(b"half a shard"), "the superseded folder, with the manifest it was given"
    assert read_latest(export_root, PARTITION) == newer
    assert sorted(p.name for p in exports.iterdir()) == [POINTER, newer.version], "the superseded one goes"


def test_each_format_is_chosen_and_loads_and_paths_reference_the_stored_images(local, tmp_path):
    shots, _, export_root = local
    paths_only = export(shots, export_root, OPTIONS.model_copy(update={"formats": ["hf_paths"]}))
    folder = version_folder(export_root, paths_only)
    assert sorted(p.name for p in folder.iterdir()) == ["hf_paths", "manifest.json"], "no copy of any image"
    assert paths_only.dataset_card == "hf_paths/README.md"
    by_id = {row["image_id"]: row for row in shots.rows}
    written = pq.read_table(str(folder / paths_only.splits["train"].parquet_paths.file)).to_pylist()
    assert all(row["image"]["bytes"] is None for row in written), "a path, not a copy of the image"
    assert {row["image"]["path"] for row in written} == {
        str(shots.output_root / by_id[row["image_id"]]["file_path"]) for row in written
    }
    loaded = {}
    for split in SPLITS:
        files = {split: str(folder / paths_only.splits[split].parquet_paths.file)}
        for row in datasets.load_dataset("parquet", data_files=files, cache_dir=str(tmp_path / "cache"))[
            split
        ]:
            loaded[row["image_id"]] = row["image"]
    assert len(loaded) == paths_only.exported
    for image_id, image in loaded.items():
        stored_image = Image.open(io.BytesIO((shots.output_root / by_id[image_id]["file_path"]).read_bytes()))
        assert (
            image.size == stored_image.size and image.tobytes() == stored_image.convert(image.mode).tobytes()
        )

    shards_only = export(shots, export_root, OPTIONS.model_copy(update={"formats": ["webdataset"]}))
    folder = version_folder(export_root, shards_only)
    assert sorted(p.name for p in folder.iterdir()) == ["manifest.json", "webdataset"]
    assert shards_only.dataset_card is None and shards_only.splits["train"].parquet is None
    assert {s["__key__"] for split in SPLITS for s in shard_samples(folder, shards_only, split)} == set(
        loaded
    )
    with pytest.raises(ValueError, match="name at least one format"):
        ExportOptions(formats=[])
    with pytest.raises(ValueError, match=r"unknown format\(s\) tar; known: webdataset, hf_parquet, hf_paths"):
        ExportOptions(formats=["tar"])


def test_older_versions_are_kept_up_to_the_number_asked_and_the_freed_bytes_reported(local):
    shots, _, export_root = local
    keep_two = OPTIONS.model_copy(update={"keep_versions": 2})
    first = export(shots, export_root, keep_two)
    first_bytes = sum(p.stat().st_size for p in version_folder(export_root, first).rglob("*") if p.is_file())
    second = exported(shots, export_root, keep_two)
    assert second.freed_bytes == 0
    second, third = second.manifest, exported(shots, export_root, keep_two)
    folders = {p.name for p in (export_root / PARTITION).iterdir()} - {POINTER}
    assert folders == {second.version, third.manifest.version}, "the one in force and the newest older one"
    assert third.freed_bytes == first_bytes
    fourth = exported(shots, export_root)  # keep_versions 1: only the one in force
    assert {p.name for p in (export_root / PARTITION).iterdir()} == {POINTER, fourth.manifest.version}
    assert fourth.freed_bytes > 0


def test_near_duplicates_come_from_the_catalogs_hashes_without_decoding_an_image(local, monkeypatch):
    """A catalog written by the pipeline holds each image's perceptual hash: the export filters on
    it and decodes nothing; rows cataloged before the column existed are hashed from their files."""
    shots, cases, export_root = local
    from_files = export(shots, export_root)
    for row in shots.rows:
        data = (shots.output_root / row["file_path"]).read_bytes()
        row["perceptual_hash"] = to_int64(perceptual_hash_of(data))
    shots.write_catalog()

    def decode(data: bytes) -> int:
        raise AssertionError("an image was decoded for its perceptual hash")

    monkeypatch.setattr(selection, "perceptual_hash_of", decode)
    from_catalog = export(shots, export_root)
    assert from_catalog.removed == from_files.removed and from_catalog.removed["near_duplicate"] == 1
    exported = exported_splits(from_catalog, version_folder(export_root, from_catalog))
    assert cases.near_pair[1] not in exported and cases.near_pair[0] in exported
