"""The code location: every definition in `flux_pipeline/defs/` (one module per asset family,
neighbours named by key), loaded as Dagster's dg layout does, with the resources configured from
the environment (defs/resources.py).

Every run executes in process, or on Celery workers with FLUX_EXECUTOR=celery (lib/executors.py).
Nothing starts runs by itself until a person turns on `prompt_table_sensor`, `dataset_automation`,
`review_sensor` or `nightly_backfill` in the UI (runs against real fal cost money)."""

from __future__ import annotations

from pathlib import Path

import dagster as dg

from .defs.resources import dataset_from_env, fal_from_env
from .resources import BaseFalResource, DatasetResource

PROJECT_ROOT = Path(__file__).parent.parent
"""The folder whose pyproject.toml names the defs module ([tool.dg.project])."""


def make_definitions(fal: BaseFalResource, dataset: DatasetResource) -> dg.Definitions:
    """Every definition in defs/, bound to these resources."""
    return dg.Definitions.merge(
        dg.load_from_defs_folder(path_within_project=PROJECT_ROOT),
        dg.Definitions(resources={"fal": fal, "dataset": dataset}),
    )


defs = make_definitions(fal_from_env(), dataset_from_env())
