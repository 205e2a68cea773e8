"""One dataset's definitions: every PerDataset of this package's modules, made with its names and
setup, and its resources under its own keys (`fal` and `dataset`, or `birds__fal` and
`birds__dataset`), so several live in one code location, each with its own fal resource, folders
and ledger. Every job names its executor; the dataset with no prefix, its code location's own,
also sets the code location's (which automation's runs use)."""

from __future__ import annotations

import dagster as dg

from ..lib.assets import DatasetSetup, NightlySchedule, PerDataset
from ..lib.executors import executor_from_env
from ..lib.names import OWN, DatasetNames
from ..resources import BaseFalResource, DatasetResource
from . import (
    automation,
    billing_reconciliation,
    catalog,
    cost_report,
    generation,
    jobs,
    nightly,
    prompts,
    review,
    table_sensor,
    training_export,
)

MODULES = (
    prompts,
    generation,
    catalog,
    review,
    training_export,
    billing_reconciliation,
    cost_report,
    jobs,
    automation,
    table_sensor,
    nightly,
)
"""One module per asset family; neighbours name each other by key."""


def dataset_definitions(names: DatasetNames, setup: DatasetSetup) -> dg.Definitions:
    made = [
        value.build(names, setup)
        for module in MODULES
        for value in vars(module).values()
        if isinstance(value, PerDataset)
    ]
    kinds: dict[str, list] = {"asset_checks": [], "assets": [], "sensors": [], "schedules": [], "jobs": []}
    for definition in made:
        kinds[_kind(definition)].append(definition)
    resources = {names.name("fal"): setup.fal, names.name("dataset"): setup.dataset}
    return dg.Definitions(
        assets=kinds["assets"],
        asset_checks=kinds["asset_checks"],
        jobs=kinds["jobs"],
        sensors=kinds["sensors"],
        schedules=kinds["schedules"],
        resources=resources,
        executor=None if names.prefix else executor_from_env(setup.executor),
    )


def _kind(definition: object) -> str:
    """Which argument of dg.Definitions takes it (an asset job has no public class: the rest)."""
    if isinstance(definition, dg.AssetChecksDefinition):  # an AssetsDefinition too: first
        return "asset_checks"
    if isinstance(definition, dg.AssetsDefinition | dg.AssetSpec):
        return "assets"
    if isinstance(definition, dg.SensorDefinition):
        return "sensors"
    if isinstance(definition, dg.ScheduleDefinition):
        return "schedules"
    return "jobs"


def make_definitions(
    fal: BaseFalResource,
    dataset: DatasetResource,
    names: DatasetNames = OWN,
    schedule: NightlySchedule | None = None,
    executor: str | None = None,
) -> dg.Definitions:
    """Every definition of one dataset (pipeline/build.py), with these resources; `executor`:
    `in_process` or `celery` (default: FLUX_EXECUTOR, else in process)."""
    setup = DatasetSetup(fal, dataset, schedule or NightlySchedule.from_env(), executor)
    return dataset_definitions(names, setup)
