"""The project's single Definitions. Paths default to the repository's data/ folder.

Environment: FAL_KEY (absent: the embedded fal emulator is used), FAL_QUEUE_URL, FAL_RUN_URL,
FAL_STORAGE_URL (default the real fal hosts), FLUX_MAX_CONCURRENCY, FLUX_DATA_DIR (a folder or
an fsspec URL such as s3://bucket/prefix), FLUX_LEDGER (the request ledger: a SQLite file or a
postgresql:// URL; required when FLUX_DATA_DIR is a URL), FLUX_BUDGET_USD."""

from __future__ import annotations

import os
from pathlib import Path

import dagster as dg

from .assets import catalog, cost_report, images, prompt_table_files, prompts, redux_variations
from .automation import build_dataset, prompt_table_sensor, unmaterialized_partitions
from .checks import CATALOG_CHECKS
from .dataset.settings import DatasetSettings
from .fal.endpoints import FalUrls
from .resources import FalResource

DATA_DIR = os.getenv("FLUX_DATA_DIR", str(Path(__file__).resolve().parent.parent / "data")).rstrip("/")


def fal_resource_from_env() -> FalResource:
    return FalResource(
        key=dg.EnvVar("FAL_KEY") if os.getenv("FAL_KEY") else None,
        queue_url=os.getenv("FAL_QUEUE_URL", FalUrls.queue),
        run_url=os.getenv("FAL_RUN_URL", FalUrls.run),
        storage_url=os.getenv("FAL_STORAGE_URL", FalUrls.storage),
        max_concurrency=int(os.getenv("FLUX_MAX_CONCURRENCY", "8")),
    )


def dataset_settings_from_env() -> DatasetSettings:
    budget = os.getenv("FLUX_BUDGET_USD")
    ledger = os.getenv("FLUX_LEDGER")
    if ledger is None:
        if "://" in DATA_DIR:
            raise ValueError(f"FLUX_DATA_DIR is {DATA_DIR}: set FLUX_LEDGER to a postgresql:// URL that every "
                             "machine reaches (or to a local SQLite file when all runs execute on this host)")
        ledger = f"{DATA_DIR}/ledger/requests.sqlite"
    return DatasetSettings(
        prompts_dir=f"{DATA_DIR}/prompts", output_root=f"{DATA_DIR}/outputs",
        catalog_root=f"{DATA_DIR}/catalog", reports_dir=f"{DATA_DIR}/reports", ledger_path=ledger,
        budget_usd=float(budget) if budget else None,
    )


def make_definitions(fal: FalResource, dataset: DatasetSettings) -> dg.Definitions:
    return dg.Definitions(
        assets=[prompt_table_files, prompts, images, redux_variations, catalog, cost_report],
        asset_checks=CATALOG_CHECKS,
        jobs=[build_dataset],
        sensors=[prompt_table_sensor],
        schedules=[unmaterialized_partitions],
        resources={"fal": fal, "dataset": dataset},
    )


defs = make_definitions(fal_resource_from_env(), dataset_settings_from_env())
