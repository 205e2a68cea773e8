"""The code location: every definition in `flux_pipeline/defs/` (one module per asset family,
neighbours named by key), loaded as Dagster's dg layout does, with the resources configured from
the environment (defs/resources.py).

Every run executes in process, or on Celery workers with FLUX_EXECUTOR=celery (lib/executors.py).
Nothing starts runs by itself until a person turns on `prompt_table_sensor`, `dataset_automation`,
`review_sensor` or `nightly_backfill` in the UI (runs against real fal cost money)."""

from __future__ import annotations

from pathlib import Path

import dagster as dg

from .resources import BaseFalResource, DatasetResource

PROJECT_ROOT = Path(__file__).parent.parent
"""The folder whose pyproject.toml names the defs module ([tool.dg.project])."""

defs = dg.load_from_defs_folder(path_within_project=PROJECT_ROOT)


def make_definitions(fal: BaseFalResource, dataset: DatasetResource) -> dg.Definitions:
    """The code location's definitions with these resources instead of the environment's (tests,
    benchmarks)."""
    return dg.Definitions(
        assets=defs.assets,
        asset_checks=defs.asset_checks,
        jobs=defs.jobs,
        sensors=defs.sensors,
        schedules=defs.schedules,
        executor=defs.executor,
        resources={"fal": fal, "dataset": dataset},
    )
