"""The code location's resources, configured from the environment (flux_pipeline.definitions binds
them to the definitions; tests bind others through make_definitions).

fal: with FAL_KEY set, `FalResource` calls fal.ai; without it, `EmulatedFalResource` runs the
bundled emulator and says so in the run log. The choice is made here, once: nothing falls back
from one to the other at run time. Strings come through `dg.EnvVar`, resolved by Dagster when a
run starts (never stored in the definitions): FAL_KEY, FAL_ADMIN_KEY (billing reconciliation),
FAL_QUEUE_URL, FAL_RUN_URL, FAL_STORAGE_URL, FAL_API_URL (fal's Platform API),
FAL_WEBHOOK_JWKS_URL, FLUX_DATA_DIR (a folder or an fsspec URL such as s3://bucket/prefix) and
FLUX_LEDGER (a SQLite file or a postgresql:// URL; required when FLUX_DATA_DIR is a URL). Numbers
are read here, so that their bounds are checked: FLUX_MAX_CONCURRENCY, FLUX_BUDGET_USD,
FLUX_NIGHTLY_BUDGET_USD, FLUX_CLAIM_LEASE_SECONDS (Dagster's EnvVar.int bypasses field bounds, and
it has no float EnvVar)."""

from __future__ import annotations

import os

import dagster as dg

from ..resources import BaseFalResource, DatasetResource, EmulatedFalResource, FalResource


def _env(name: str, of=dg.EnvVar):
    """`of(name)` when the variable is set, else None (the field keeps its default)."""
    return of(name) if os.environ.get(name) else None


def _settings(**values) -> dict:
    return {name: value for name, value in values.items() if value is not None}


def fal_from_env(max_concurrency: int | None = None) -> BaseFalResource:
    """`max_concurrency` (a component's setting) over FLUX_MAX_CONCURRENCY."""
    from_env = _env("FLUX_MAX_CONCURRENCY", of=lambda name: int(os.environ[name]))
    common = _settings(max_concurrency=max_concurrency or from_env)
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


def dataset_from_env(**settings) -> DatasetResource:
    """`settings` (a component's) over the environment's."""
    as_float = lambda name: float(os.environ[name])
    from_env = _settings(
        data_dir=_env("FLUX_DATA_DIR"),
        ledger=_env("FLUX_LEDGER"),
        budget_usd=_env("FLUX_BUDGET_USD", of=as_float),
        nightly_budget_usd=_env("FLUX_NIGHTLY_BUDGET_USD", of=as_float),
        claim_lease_seconds=_env("FLUX_CLAIM_LEASE_SECONDS", of=as_float),
    )
    return DatasetResource(**{**from_env, **settings})
