"""The documented multi-process deployment (deploy/dagster.yaml): a PostgreSQL-backed instance
whose "fal" concurrency pool caps the requests that concurrent runs send to fal."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import dagster as dg
import pytest

from flux_pipeline.emulator.engine import EmulatorConfig
from flux_pipeline.emulator.server import EmulatorServer
from flux_pipeline.postgres_storage import PoolSafePostgresEventLogStorage

from .conftest import SECRET_KEY
from .dataset_fixtures import write_table

REPO = Path(__file__).resolve().parent.parent
SERVER = "postgresql://postgres@127.0.0.1:5432"
MAX_CONCURRENCY = 3


@pytest.fixture
def database():
    psycopg2 = pytest.importorskip("psycopg2")
    try:
        admin = psycopg2.connect(f"{SERVER}/postgres")
    except psycopg2.OperationalError as exc:
        if os.environ.get("CI"):
            raise
        pytest.skip(f"no local PostgreSQL server: {exc}")
    admin.autocommit = True
    name = f"flux_test_{uuid.uuid4().hex[:12]}"
    admin.cursor().execute(f"CREATE DATABASE {name}")
    try:
        # dagster-postgres ships psycopg2; SQLAlchemy's default PostgreSQL driver is now psycopg 3
        yield f"{SERVER.replace('postgresql://', 'postgresql+psycopg2://')}/{name}"
    finally:
        admin.cursor().execute(f"DROP DATABASE {name} WITH (FORCE)")
        admin.close()


def test_two_runs_share_the_fal_pool_on_postgres(tmp_path, database, monkeypatch):
    monkeypatch.setenv("DAGSTER_PG_URL", database)
    home = tmp_path / "dagster_home"
    home.mkdir()
    (home / "dagster.yaml").write_text((REPO / "deploy" / "dagster.yaml").read_text())
    data = tmp_path / "data"
    for table in ("alpha", "beta"):
        write_table(data / "prompts" / f"{table}.parquet", 12, prefix=f"{table}-")

    with EmulatorServer(EmulatorConfig(latency=0.4)) as server:
        env = dict(os.environ, DAGSTER_HOME=str(home), DAGSTER_PG_URL=database, FAL_KEY=SECRET_KEY,
                   FAL_QUEUE_URL=server.url, FAL_RUN_URL=f"{server.url}/run", FAL_STORAGE_URL=server.url,
                   FLUX_DATA_DIR=str(data), FLUX_MAX_CONCURRENCY=str(MAX_CONCURRENCY))
        with dg.DagsterInstance.from_config(str(home)) as instance:
            instance.add_dynamic_partitions("prompt_tables", ["alpha", "beta"])
            # as deploy/dagster.yaml says: set the pool once (`dagster instance concurrency set fal 1`)
            instance.event_log_storage.set_concurrency_slots("fal", 1)
        dagster = str(Path(sys.executable).parent / "dagster")
        runs = [subprocess.Popen([dagster, "job", "execute", "-m", "flux_pipeline.definitions", "-j", "build_dataset",
                                  "--tags", json.dumps({"dagster/partition": key})], cwd=REPO, env=env,
                                 stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
                for key in ("alpha", "beta")]
        outputs = [run.communicate(timeout=600)[0] for run in runs]
        stats = server.emulator.stats()

    for run, output in zip(runs, outputs):
        assert run.returncode == 0, output[-3000:]
        assert SECRET_KEY not in output
    assert stats["images_billed"] == 24 and stats["requests_billed"] == 24
    assert stats["peak_in_flight"] <= MAX_CONCURRENCY, "one pool slot: never two fal steps at once"

    with dg.DagsterInstance.from_config(str(home)) as instance:
        records = instance.get_run_records(dg.RunsFilter(job_name="build_dataset"))
        assert {r.dagster_run.tags["dagster/partition"] for r in records} == {"alpha", "beta"}
        assert all(r.dagster_run.status == dg.DagsterRunStatus.SUCCESS for r in records)
        first, second = sorted(records, key=lambda r: r.start_time)
        assert second.start_time < first.end_time, "the two runs executed concurrently"
        assert instance.get_materialized_partitions(dg.AssetKey("catalog")) == {"alpha", "beta"}


def test_one_pool_slot_goes_to_one_of_many_simultaneous_claims(database):
    """The stock dagster-postgres storage lets simultaneous claims share a slot (more than one
    of 8 claimers won in 28 of 50 trials); this one must give a 1-slot pool to exactly one."""
    storage = PoolSafePostgresEventLogStorage(database)
    storage.set_concurrency_slots("fal", 1)
    claimers = 8
    try:
        for trial in range(30):
            barrier = threading.Barrier(claimers)
            run_ids = [f"run-{trial}-{i}" for i in range(claimers)]

            def claim(run_id: str) -> bool:
                barrier.wait()
                return storage.claim_concurrency_slot("fal", run_id, "images").is_claimed

            with ThreadPoolExecutor(claimers) as pool:
                winners = [run_id for run_id, won in zip(run_ids, pool.map(claim, run_ids)) if won]
            assert len(winners) == 1, f"trial {trial}: {winners} all claimed the single slot"
            for run_id in run_ids:
                storage.free_concurrency_slots_for_run(run_id)
    finally:
        storage.dispose()
