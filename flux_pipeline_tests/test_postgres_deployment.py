"""The documented multi-machine deployment (deploy/dagster.yaml): a PostgreSQL-backed instance
whose "fal" concurrency pool caps the requests that concurrent runs send to fal, the request
ledger in PostgreSQL and the dataset in object storage."""

from __future__ import annotations

import json
import os
import subprocess
import threading
from concurrent.futures import ThreadPoolExecutor

import dagster as dg
import pandas as pd
import pytest
from upath import UPath

from flux_pipeline.emulator.engine import EmulatorConfig
from flux_pipeline.emulator.server import EmulatorServer
from flux_pipeline_deploy.postgres_pool import PoolSafePostgresEventLogStorage, check_version

from .conftest import SECRET_KEY
from .dataset_fixtures import write_table
from .postgres_deployment import BIN, deployment_env, write_postgres_home

MAX_CONCURRENCY = 3


def test_two_runs_share_the_fal_pool_on_postgres(tmp_path, postgres_url, s3, bucket, monkeypatch):
    """The whole multi-machine configuration, each run its own process: instance and request
    ledger in PostgreSQL, prompt tables, images and catalog in an S3 bucket."""
    monkeypatch.setenv("DAGSTER_PG_URL", postgres_url)
    home = write_postgres_home(tmp_path / "dagster_home")
    data = f"s3://{bucket}/flux"
    for table in ("alpha", "beta"):
        write_table(UPath(f"{data}/prompts/{table}.parquet", **s3), 12, prefix=f"{table}-")

    with EmulatorServer(EmulatorConfig(latency=0.4)) as server:
        env = {
            **os.environ,
            **deployment_env(home, server.url, data, postgres_url, s3),
            "FLUX_MAX_CONCURRENCY": str(MAX_CONCURRENCY),
        }
        with dg.DagsterInstance.from_config(str(home)) as instance:
            instance.add_dynamic_partitions("prompt_tables", ["alpha", "beta"])
            # as deploy/dagster.yaml says: set the pool once (`dagster instance concurrency set fal 1`)
            instance.event_log_storage.set_concurrency_slots("fal", 1)

        def execute(*partitions: str) -> list[tuple[str, int]]:
            runs = [
                subprocess.Popen(
                    [
                        str(BIN / "dagster"),
                        "job",
                        "execute",
                        "-m",
                        "flux_pipeline.definitions",
                        "-j",
                        "build_dataset",
                        "--tags",
                        json.dumps({"dagster/partition": key}),
                    ],
                    cwd=tmp_path,
                    env=env,
                    stdout=subprocess.PIPE,
                    stderr=subprocess.STDOUT,
                    text=True,
                )
                for key in partitions
            ]
            return [(run.communicate(timeout=600)[0], run.returncode) for run in runs]

        outcomes = execute("alpha", "beta")
        stats = server.emulator.stats()
        again = execute("alpha")  # as if on another machine: only PostgreSQL and the bucket are shared
        billed_after_rerun = server.emulator.stats()["images_billed"]

    for output, code in outcomes + again:
        assert code == 0, output[-3000:]
        assert SECRET_KEY not in output
    assert stats["images_billed"] == 24 and stats["requests_billed"] == 24
    assert stats["peak_in_flight"] <= MAX_CONCURRENCY, "one pool slot: never two fal steps at once"
    assert billed_after_rerun == 24, "the re-run found every request in the shared ledger and bucket"
    catalog = pd.read_parquet(f"{data}/catalog", storage_options=s3)
    assert catalog.groupby("partition", observed=True).size().to_dict() == {"alpha": 12, "beta": 12}
    assert not list(tmp_path.glob("**/*.parquet")), "nothing of the dataset on local disk"

    with dg.DagsterInstance.from_config(str(home)) as instance:
        records = sorted(
            instance.get_run_records(dg.RunsFilter(job_name="build_dataset")), key=lambda r: r.start_time
        )
        assert [r.dagster_run.status for r in records] == [dg.DagsterRunStatus.SUCCESS] * 3
        first, second, _ = records
        assert {
            first.dagster_run.tags["dagster/partition"],
            second.dagster_run.tags["dagster/partition"],
        } == {"alpha", "beta"}
        assert second.start_time < first.end_time, "the two runs executed concurrently"
        assert instance.get_materialized_partitions(dg.AssetKey("catalog")) == {"alpha", "beta"}


def test_one_pool_slot_goes_to_one_of_many_simultaneous_claims(postgres_url):
    """The stock dagster-postgres storage lets simultaneous claims share a slot (more than one
    of 8 claimers won in 28 of 50 trials); this one must give a 1-slot pool to exactly one."""
    storage = PoolSafePostgresEventLogStorage(postgres_url)
    storage.set_concurrency_slots("fal", 1)
    claimers = 8
    try:
        for trial in range(30):
            barrier = threading.Barrier(claimers)
            run_ids = [f"run-{trial}-{i}" for i in range(claimers)]

            def claim(run_id: str, barrier: threading.Barrier = barrier) -> bool:
                barrier.wait()
                return storage.claim_concurrency_slot("fal", run_id, "images").is_claimed

            with ThreadPoolExecutor(claimers) as pool:
                winners = [run_id for run_id, won in zip(run_ids, pool.map(claim, run_ids)) if won]
            assert len(winners) == 1, f"trial {trial}: {winners} all claimed the single slot"
            for run_id in run_ids:
                storage.free_concurrency_slots_for_run(run_id)
    finally:
        storage.dispose()


def test_the_pool_patch_refuses_a_dagster_postgres_it_was_not_written_for():
    check_version("0.29.27")
    with pytest.raises(RuntimeError, match=r"written for dagster-postgres 0\.29\.x, not 0\.30\.0"):
        check_version("0.30.0")
