"""The project's single Definitions.

fal: with FAL_KEY set, `FalResource` calls fal.ai; without it, `EmulatedFalResource` runs the
bundled emulator and says so in the run log. The choice is made here, once: nothing falls back
from one to the other at run time. Strings come through `dg.EnvVar`, resolved by Dagster when a
run starts (never stored in the definitions): FAL_KEY, FAL_ADMIN_KEY (billing reconciliation),
FAL_QUEUE_URL, FAL_RUN_URL, FAL_STORAGE_URL, FAL_API_URL (fal's Platform API), FLUX_DATA_DIR
(a folder or an fsspec URL such as s3://bucket/prefix) and FLUX_LEDGER (a SQLite file or a
postgresql:// URL; required when FLUX_DATA_DIR is a URL). Numbers are read here, so that their
bounds are checked: FLUX_MAX_CONCURRENCY, FLUX_BUDGET_USD, FLUX_NIGHTLY_BUDGET_USD,
FLUX_CLAIM_LEASE_SECONDS (Dagster's EnvVar.int bypasses field bounds, and it has no float EnvVar).

Every run executes in process (jobs.EXECUTOR), or on Celery workers with FLUX_EXECUTOR=celery
(executors.py). Nothing starts runs by itself until a person turns
on `prompt_table_sensor`, `dataset_automation` or `nightly_backfill` in the UI (runs against real
fal cost money)."""

from __future__ import annotations

import os

import dagster as dg

from .assets import catalog, cost_report, images, prompt_table_files, prompts, redux_variations
from .automation import dataset_automation
from .checks import CATALOG_CHECKS
from .executors import executor_from_env
from .export_asset import training_export
from .jobs import EXECUTOR, build_dataset, report_costs
from .nightly import nightly_backfill
from .reconciliation_asset import RECONCILIATION_CHECKS, billing_reconciliation
from .resources import BaseFalResource, DatasetResource, EmulatedFalResource, FalResource
from .review_asset import refresh_review, review_decisions, review_sensor
from .table_sensor import prompt_table_sensor


def _env(name: str, of=dg.EnvVar):
    """`of(name)` when the variable is set, else None (the field keeps its default)."""
    return of(name) if os.environ.get(name) else None


def _settings(**values) -> dict:
    return {name: value for name, value in values.items() if value is not None}


def fal_from_env() -> BaseFalResource:
    common = _settings(max_concurrency=_env("FLUX_MAX_CONCURRENCY", of=lambda name: int(os.environ[name])))
    if "FAL_KEY" not in os.environ:
        return EmulatedFalResource(**common)
    return FalResource(
        key=dg.EnvVar("FAL_KEY"),
        **common,
        **_settings(
            admin_key=_env("FAL_ADMIN_KEY"),
            queue_url=_env("FAL_QUEUE_URL"),
            run_url=_env("FAL_RUN_URL"),
            storage_url=_env("FAL_STORAGE_URL"),
            platform_url=_env("FAL_API_URL"),
            webhook_jwks_url=_env("FAL_WEBHOOK_JWKS_URL"),
        ),
    )


def dataset_from_env() -> DatasetResource:
    as_float = lambda name: float(os.environ[name])
    return DatasetResource(
        **_settings(
            data_dir=_env("FLUX_DATA_DIR"),
            ledger=_env("FLUX_LEDGER"),
            budget_usd=_env("FLUX_BUDGET_USD", of=as_float),
            nightly_budget_usd=_env("FLUX_NIGHTLY_BUDGET_USD", of=as_float),
            claim_lease_seconds=_env("FLUX_CLAIM_LEASE_SECONDS", of=as_float),
        )
    )


def make_definitions(
    fal: BaseFalResource, dataset: DatasetResource, executor: dg.ExecutorDefinition = EXECUTOR
) -> dg.Definitions:
    return dg.Definitions(
        assets=[
            prompt_table_files,
            prompts,
            images,
            redux_variations,
            catalog,
            review_decisions,
            training_export,
            billing_reconciliation,
            cost_report,
        ],
        asset_checks=[*CATALOG_CHECKS, *RECONCILIATION_CHECKS],
        jobs=[build_dataset, report_costs, refresh_review],
        sensors=[prompt_table_sensor, dataset_automation, review_sensor],
        schedules=[nightly_backfill],
        resources={"fal": fal, "dataset": dataset},
        executor=executor,
    )


defs = make_definitions(fal_from_env(), dataset_from_env(), executor_from_env())
