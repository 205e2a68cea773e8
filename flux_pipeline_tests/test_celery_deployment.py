"""Runs on Celery workers (FLUX_EXECUTOR=celery) with nothing paid twice: the deployment of
deploy/dagster.yaml (instance and request ledger in PostgreSQL, the dataset in an S3 bucket over
real HTTP), `dagster-webserver` and `dagster-daemon` launching the runs, the local Redis as broker
and result backend, two `celery worker` processes started from working folders of their own, and
the fal emulator in a process of its own."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import time
from pathlib import Path

import dagster as dg
import pandas as pd
import pytest
import redis
from upath import UPath

from .conftest import SECRET_KEY
from .dataset_fixtures import write_table
from .local_deployment import LocalDeployment
from .postgres_deployment import BIN, EmulatorProcess, deployment_env, write_postgres_home

MAX_CONCURRENCY = 2
PARTITIONS = {"alpha": 8, "beta": 8, "gamma": 8}
KILLED, KILLED_ROWS = "delta", 16
MAX_RUNTIME = 40
"""The killed run's dagster/max_runtime: run monitoring marks it failed once this has passed."""


class CeleryWorker:
    """`celery -A flux_pipeline_deploy.celery_app worker -n NAME@%h`, two worker processes, started
    in `folder` (its working folder and log, shared with nothing) in a process group of its own."""

    def __init__(self, name: str, folder: Path, env: dict[str, str]):
        self.name, self.folder, self.env = name, folder, env
        self.process: subprocess.Popen | None = None

    def start(self) -> None:
        self.folder.mkdir(parents=True)
        with self.log_path.open("ab") as log:
            self.process = subprocess.Popen(
                [
                    *(str(BIN / "celery"), "-A", "flux_pipeline_deploy.celery_app", "worker"),
                    *("-Q", "dagster", "-n", f"{self.name}@%h", "--concurrency", "2"),
                    *("--without-gossip", "--without-mingle", "--loglevel", "INFO"),
                ],
                cwd=self.folder,
                env=self.env,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )

    @property
    def log_path(self) -> Path:
        return self.folder / "worker.log"

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def wait_until_ready(self, timeout: float = 120) -> None:
        deadline = time.monotonic() + timeout
        while " ready." not in self.log():
            if self.process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"worker {self.name} did not start:\n{self.log()}")
            time.sleep(0.5)

    def kill(self) -> None:
        """SIGKILL to the worker and its pool processes at once, as when its machine's power fails."""
        os.killpg(self.process.pid, signal.SIGKILL)
        self.process.wait()

    def stop(self) -> None:
        if self.process is None or self.process.poll() is not None:
            return
        os.killpg(self.process.pid, signal.SIGTERM)
        try:
            self.process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.kill()


def unused_redis_db() -> str:
    """A broker URL on an empty database of the local Redis, so that no other worker on this
    machine takes (or holds) the test's tasks."""
    for db in range(15, 0, -1):
        if redis.Redis(host="127.0.0.1", port=6379, db=db).dbsize() == 0:
            return f"redis://127.0.0.1:6379/{db}"
    raise RuntimeError("every database of the local Redis holds keys")


def step_workers(instance: dg.DagsterInstance, run_id: str) -> dict[str, str]:
    """{step key: the name of the Celery worker that executed it} of a run, from the engine event
    each worker records when it starts a step."""
    workers = {}
    for record in instance.all_logs(run_id, of_type=dg.DagsterEventType.ENGINE_EVENT):
        metadata = record.dagster_event.engine_event_data.metadata
        if "Celery worker" in metadata:
            workers[record.step_key] = metadata["Celery worker"].value.split("@")[0]
    return workers


def wait_for(predicate, timeout: float, what: str):
    deadline = time.monotonic() + timeout
    while not (value := predicate()):
        if time.monotonic() > deadline:
            raise TimeoutError(f"{what}: not within {timeout} s")
        time.sleep(0.2)
    return value


@pytest.mark.timeout(420)
def test_three_partitions_on_two_celery_workers_then_one_killed_mid_step(
    tmp_path, postgres_url, s3, bucket, monkeypatch
):
    began = time.monotonic()
    monkeypatch.setenv("DAGSTER_PG_URL", postgres_url)
    # the daemon looks at runs every 2 s (not 30) and frees a dead step's pool slot 2 s after its run ended
    home = write_postgres_home(
        tmp_path / "dagster_home", poll_interval_seconds=2, free_slots_after_run_end_seconds=2
    )
    data = f"s3://{bucket}/flux"
    tables = {**PARTITIONS, KILLED: KILLED_ROWS}
    for table, rows in tables.items():
        write_table(UPath(f"{data}/prompts/{table}.parquet", **s3), rows, prefix=f"{table}-")

    with EmulatorProcess(tmp_path / "emulator.log", "--latency", "1.0") as fal:
        env = {
            **deployment_env(home, fal.url, data, postgres_url, s3),
            "FLUX_EXECUTOR": "celery",
            "FLUX_CELERY_BROKER": unused_redis_db(),
            "FLUX_MAX_CONCURRENCY": str(MAX_CONCURRENCY),
            "FLUX_CLAIM_LEASE_SECONDS": "5",
        }
        workers = {
            name: CeleryWorker(name, tmp_path / f"{name}_cwd", {**os.environ, **env})
            for name in ("flux1", "flux2")
        }
        with contextlib.ExitStack() as stack:
            for worker in workers.values():
                worker.start()
                stack.callback(worker.stop)
            ui = stack.enter_context(LocalDeployment(home, env))
            instance = stack.enter_context(dg.DagsterInstance.from_config(str(home)))
            # as deploy/dagster.yaml says: set the pool once (`dagster instance concurrency set fal 1`)
            instance.event_log_storage.set_concurrency_slots("fal", 1)
            ui.add_partitions("prompt_tables", list(tables))
            for worker in workers.values():
                worker.wait_until_ready()

            # (a) three partitions at once through the workers
            launched = {ui.launch_run("build_dataset", {"dagster/partition": key}): key for key in PARTITIONS}
            runs = ui.wait_for_runs(lambda runs: {r.run_id for r in runs} >= set(launched), timeout=180)
            ours = [r for r in runs if r.run_id in launched]
            statuses = {launched[r.run_id]: r.status for r in ours}
            overlap = max(r.started for r in ours) < min(r.ended for r in ours)
            three = fal.stats()
            executed_by = {launched[run_id]: step_workers(instance, run_id) for run_id in launched}

            # (b) the worker executing a run's `images` step is SIGKILLed half way through its requests
            killed_run = ui.launch_run(
                "build_dataset", {"dagster/partition": KILLED, "dagster/max_runtime": str(MAX_RUNTIME)}
            )
            victim = workers[
                wait_for(
                    lambda: step_workers(instance, killed_run).get("images"), 90, "the images step started"
                )
            ]
            wait_for(
                lambda: fal.stats()["images_billed"] - three["images_billed"] >= 2, 60, "requests billed"
            )
            victim.kill()
            billed_before_kill = fal.stats()["images_billed"] - three["images_billed"]
            ui.wait_for_runs(
                lambda runs: any(r.run_id == killed_run and r.status == "FAILURE" for r in runs),
                timeout=MAX_RUNTIME + 60,
            )
            retry = ui.reexecute_from_failure(killed_run)
            runs = ui.wait_for_runs(lambda runs: any(r.run_id == retry for r in runs), timeout=150)
            retried = next(r for r in runs if r.run_id == retry)
            retry_workers = step_workers(instance, retry)
            killed_log = [record.message for record in instance.all_logs(killed_run)]
            final = fal.stats()
            logs = "".join([ui.log("webserver"), ui.log("daemon"), *(w.log() for w in workers.values())])
        logs += fal.log.read_text()
    seconds = time.monotonic() - began

    assert statuses == dict.fromkeys(PARTITIONS, "SUCCESS")
    assert overlap, "the three runs were in progress at once"
    assert three["images_billed"] == three["requests_billed"] == three["requests_submitted"] == 24
    assert three["peak_in_flight"] == MAX_CONCURRENCY, "one images step at a time, across both workers"
    assert {name for steps in executed_by.values() for name in steps.values()} == set(workers)
    assert all({"prompts", "images", "catalog"} <= set(steps) for steps in executed_by.values())

    assert 2 <= billed_before_kill < KILLED_ROWS, "the worker died in the middle of the images step"
    assert any(f"maximum runtime of {MAX_RUNTIME} seconds" in m for m in killed_log), "failed by monitoring"
    assert retried.status == "SUCCESS"
    assert set(retry_workers.values()) == set(workers) - {victim.name}, "the surviving worker took over"
    assert "images" in retry_workers
    assert final["requests_submitted"] == final["requests_billed"] == 24 + KILLED_ROWS, "nothing sent twice"
    assert final["peak_in_flight"] <= MAX_CONCURRENCY
    catalog = pd.read_parquet(f"{data}/catalog", storage_options=s3)
    assert len(catalog) == final["images_billed"] == 24 + KILLED_ROWS, "billed == cataloged"
    assert catalog["request_id"].is_unique
    assert catalog.groupby("partition", observed=True).size().to_dict() == tables
    assert not list(tmp_path.glob("*_cwd/**/*.parquet")), "nothing of the dataset in a worker's folder"
    assert SECRET_KEY not in logs
    print(
        f"billed {final['images_billed']} == cataloged {len(catalog)}, {billed_before_kill} of {KILLED}'s "
        f"{KILLED_ROWS} billed before the kill, peak in flight {final['peak_in_flight']}, {seconds:.0f} s"
    )
