"""How a run's steps execute, chosen from the environment when the code location loads.

FLUX_EXECUTOR=celery: every step is a task on Celery workers (`pip install -e '.[celery]'`; the
workers start with `celery -A flux_pipeline_deploy.celery_app worker`), through the broker
FLUX_CELERY_BROKER (default redis://127.0.0.1:6379/0) and the result backend FLUX_CELERY_BACKEND
(default: the broker). Unset (or `in_process`): EXECUTOR, every step in the run's own process;
dagster_celery is then not imported, so the embedded default needs no broker."""

from __future__ import annotations

import os

import dagster as dg

EXECUTOR = dg.in_process_executor
"""Each run executes its steps one after another in the run's own process: a partition's steps
form a chain, and the concurrency that matters (requests to fal) lives inside a step, so a process
per step buys no parallelism (README, "The Dagster UI", has the measured difference). Set as the
Definitions' executor, so that the UI's materializations, asset backfills and automation runs
execute as `build_dataset` does."""

DEFAULT_BROKER = "redis://127.0.0.1:6379/0"


def celery_settings() -> dict[str, str]:
    """The broker and backend the executor and the workers (flux_pipeline_deploy.celery_app) share."""
    broker = os.environ.get("FLUX_CELERY_BROKER") or DEFAULT_BROKER
    return {"broker": broker, "backend": os.environ.get("FLUX_CELERY_BACKEND") or broker}


def executor_from_env(choice: str | None = None) -> dg.ExecutorDefinition:
    """`choice` (a component's setting), else FLUX_EXECUTOR, else in process."""
    choice = choice or os.environ.get("FLUX_EXECUTOR") or "in_process"
    if choice == "in_process":
        return EXECUTOR
    if choice != "celery":
        raise ValueError(f"FLUX_EXECUTOR={choice!r}: expected 'celery' or 'in_process'")
    from dagster_celery import celery_executor

    return celery_executor.configured(celery_settings())
