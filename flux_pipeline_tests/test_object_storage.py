"""The dataset on object storage: prompt tables, images, catalog and reports in an S3 bucket
(moto's S3 server over real HTTP, reached through s3fs / universal-pathlib), nothing on local disk
but the request ledger."""

from __future__ import annotations

import hashlib
import logging

import dagster as dg
import pandas as pd
import pytest
from upath import UPath

from flux_pipeline.dataset.files.storage import atomic_writer, write_bytes_atomically
from flux_pipeline.definitions import make_definitions
from flux_pipeline.emulator.engine import EmulatorConfig
from flux_pipeline.emulator.server import EmulatorServer
from flux_pipeline.lib.table_versions import scan_prompt_tables
from flux_pipeline.resources import DatasetResource

from .conftest import resource_for
from .dataset_fixtures import SAMPLE_PROMPTS, Project


def upload_samples(prompts: UPath) -> None:
    for path in SAMPLE_PROMPTS.rglob("*"):
        if path.is_file():
            (prompts / path.relative_to(SAMPLE_PROMPTS).as_posix()).write_bytes(path.read_bytes())


def test_whole_graph_with_the_dataset_in_a_bucket(s3, bucket, tmp_path):
    root = f"s3://{bucket}/flux"
    dataset = DatasetResource(
        data_dir=root, storage_options=s3, ledger=str(tmp_path / "ledger" / "requests.sqlite")
    )
    upload_samples(dataset.layout.prompts_dir)
    tables = scan_prompt_tables(dataset, logging.getLogger(__name__))  # what the sensor sees
    assert tables["animals"] == hashlib.sha256((SAMPLE_PROMPTS / "animals.parquet").read_bytes()).hexdigest()
    assert sorted(tables) == ["animals", "landscapes"]
    with EmulatorServer(EmulatorConfig(latency=0.05)) as server, dg.instance_for_test() as instance:
        project = Project(
            tmp_path, server, instance, dataset, make_definitions(resource_for(server), dataset)
        )
        for partition in ("animals", "landscapes"):
            result = project.run(partition)
            assert result.success, partition
            assert all(e.passed for e in result.get_asset_check_evaluations())
        billed = server.emulator.stats()["images_billed"]
        assert project.report().success

        catalog = pd.read_parquet(f"{root}/catalog", storage_options=s3)  # as a user reads it
        assert len(catalog) == billed == 11
        assert round(catalog["cost_usd"].sum(), 2) == 0.44
        for row in catalog.itertuples():
            served = server.emulator.own_file(
                server.emulator.requests[row.request_id].body["images"][row.image_index]["url"]
            )
            stored = (dataset.layout.outputs_dir / row.file_path).read_bytes()
            assert stored == served.data and hashlib.sha256(stored).hexdigest() == row.content_hash
        coast = catalog.set_index("prompt_id").loc["coast-01"]
        coast_redux = coast[coast["endpoint"].str.endswith("/redux")].iloc[0]
        assert coast_redux["parent_source"] == f"{root}/prompts/source_images/lighthouse.png"
        report = pd.read_parquet(f"{root}/reports/cost_by_partition.parquet", storage_options=s3).set_index(
            "partition"
        )
        assert report.loc["TOTAL", "images"] == 11
        assert (dataset.layout.partition_files("animals").folder / "contact_sheet.png").is_file()
        assert sorted(p.name for p in tmp_path.iterdir()) == ["ledger"], "only the ledger is local"

        assert project.run("animals").success
        assert server.emulator.stats()["images_billed"] == billed, "a re-run reuses what the bucket holds"
        assert len(pd.read_parquet(f"{root}/catalog", storage_options=s3)) == 11


def test_an_object_appears_whole_or_not_at_all(s3, bucket):
    folder = UPath(f"s3://{bucket}/atomic", **s3)
    with pytest.raises(RuntimeError), atomic_writer(folder / "streamed.parquet") as stream:
        stream.write(b"x" * (1 << 20))
        raise RuntimeError("the writer failed half way")
    assert not (folder / "streamed.parquet").exists()
    with atomic_writer(folder / "streamed.parquet") as stream:
        stream.write(b"y" * (1 << 20))
    write_bytes_atomically(folder / "image.png", b"png bytes")
    assert (folder / "streamed.parquet").stat().st_size == 1 << 20
    assert (folder / "image.png").read_bytes() == b"png bytes"
