"""The code location: `flux_pipeline/defs/`, loaded as Dagster's dg layout does, holds one
FluxDataset component (flux_pipeline.components) with no prefix: this project's own dataset, its
resources configured from the environment (pipeline/resources.py). `make_definitions` makes one
dataset's definitions (pipeline/build.py) with given resources: what the component and the tests use.

Every run executes in process, or on Celery workers with FLUX_EXECUTOR=celery (lib/executors.py).
Nothing starts runs by itself until a person turns on `prompt_table_sensor`, `dataset_automation`,
`review_sensor` or `nightly_backfill` in the UI (runs against real fal cost money)."""

from __future__ import annotations

from pathlib import Path

import dagster as dg

from .pipeline.build import make_definitions

__all__ = ["PROJECT_ROOT", "defs", "make_definitions"]

PROJECT_ROOT = Path(__file__).parent.parent
"""The folder whose pyproject.toml names the defs module ([tool.dg.project])."""


defs = dg.load_from_defs_folder(path_within_project=PROJECT_ROOT)
"""The code location: defs/dataset/defs.yaml, a FluxDataset with no prefix (flux_pipeline.components)."""
