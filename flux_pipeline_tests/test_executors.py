"""The executor comes from the environment: in process unless FLUX_EXECUTOR=celery, and the
embedded default never imports dagster_celery (a fresh `pip install -e .` has no broker)."""

from __future__ import annotations

import subprocess
import sys

import pytest

from flux_pipeline.lib.executors import EXECUTOR, executor_from_env

from .conftest import clean_env


def loaded_executor(**env: str) -> str:
    """The code location's executor, and whether dagster_celery was imported, in a fresh process."""
    probe = (
        "import sys; from flux_pipeline.definitions import defs; "
        "job = defs.resolve_job_def('build_dataset'); "
        "print(job.executor_def.name, 'dagster_celery' in sys.modules)"
    )
    return subprocess.run(
        [sys.executable, "-c", probe], env=clean_env(**env), capture_output=True, text=True, check=True
    ).stdout.strip()


def test_the_embedded_default_runs_in_process_without_dagster_celery():
    assert loaded_executor() == "in_process False"
    assert loaded_executor(FLUX_EXECUTOR="celery") == "celery True"


def configured(executor) -> dict:
    """The executor's config as a run gets it when the run config leaves it out."""
    return executor.config_schema.resolve_config({}).value["config"]


def test_the_celery_executor_takes_broker_and_backend_from_the_environment(monkeypatch):
    monkeypatch.setenv("FLUX_EXECUTOR", "celery")
    monkeypatch.setenv("FLUX_CELERY_BROKER", "redis://broker:6379/3")
    monkeypatch.delenv("FLUX_CELERY_BACKEND", raising=False)
    executor = executor_from_env()
    assert executor.name == "celery"
    assert configured(executor)["broker"] == configured(executor)["backend"] == "redis://broker:6379/3"
    monkeypatch.setenv("FLUX_CELERY_BACKEND", "redis://results:6379/4")
    assert configured(executor_from_env())["backend"] == "redis://results:6379/4"
    monkeypatch.setenv("FLUX_EXECUTOR", "in_process")
    assert executor_from_env() is EXECUTOR
    monkeypatch.setenv("FLUX_EXECUTOR", "multiprocess")
    with pytest.raises(ValueError, match="FLUX_EXECUTOR='multiprocess'"):
        executor_from_env()
