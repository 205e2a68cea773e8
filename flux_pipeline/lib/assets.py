"""Definitions made once per dataset (`PerDataset`), from its names (lib/names.py) and resources,
and the decorators every partitioned dataset asset and check shares, instead of a keyword block
repeated on each. A module of flux_pipeline/pipeline/ holds PerDataset values; pipeline/build.py
makes them for a dataset."""

from __future__ import annotations

import os
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import dagster as dg

from ..resources import BaseFalResource, DatasetResource
from .automation import DATASET_CONDITION
from .names import DatasetNames


@dataclass(frozen=True)
class NightlySchedule:
    """When `nightly_backfill` ticks, and whether it starts on (off unless a person turns it on:
    runs against real fal cost money)."""

    cron: str = "0 2 * * *"
    timezone: str = "UTC"
    running: bool = False

    @classmethod
    def from_env(cls) -> NightlySchedule:
        """FLUX_NIGHTLY_CRON and FLUX_NIGHTLY_TIMEZONE, read when the code location loads."""
        return cls(
            os.environ.get("FLUX_NIGHTLY_CRON", cls.cron),
            os.environ.get("FLUX_NIGHTLY_TIMEZONE", cls.timezone),
        )

    @property
    def status(self) -> dg.DefaultScheduleStatus:
        return dg.DefaultScheduleStatus.RUNNING if self.running else dg.DefaultScheduleStatus.STOPPED


@dataclass(frozen=True)
class DatasetSetup:
    """What one dataset's definitions are made with besides its names: its resources (which its
    sensors and schedule evaluate with; its assets are handed them by Dagster) and its schedule."""

    fal: BaseFalResource
    dataset: DatasetResource
    schedule: NightlySchedule = field(default_factory=NightlySchedule.from_env)
    executor: str | None = None
    """`in_process` or `celery`; None: FLUX_EXECUTOR, else in process."""


@dataclass(frozen=True)
class PerDataset:
    """A definition of one dataset: `build(names, resources)` makes it."""

    build: Callable[[DatasetNames, DatasetSetup], Any]


def dataset_asset(
    *,
    deps: Sequence[str],
    kinds: set[str],
    description: str,
    name: str | None = None,
    blocking_checks: dict[str, str] | None = None,
    **more: Any,
) -> Callable[[Callable], PerDataset]:
    """@dg.asset on one partition of a dataset: partitioned by its prompt tables, in its group,
    automated by DATASET_CONDITION, code version 1; keyed `name` (default: the function's), `deps`
    naming its upstream assets and `blocking_checks` ({name: description}) its blocking checks,
    all within the dataset."""

    def define(function: Callable) -> PerDataset:
        def build(names: DatasetNames, setup: DatasetSetup) -> dg.AssetsDefinition:
            key = names.key(name or function.__name__)
            checks = [
                dg.AssetCheckSpec(check, asset=key, blocking=True, description=text)
                for check, text in (blocking_checks or {}).items()
            ]
            return dg.asset(
                key=key,
                partitions_def=names.prompt_tables,
                automation_condition=DATASET_CONDITION,
                group_name=names.group,
                code_version="1",
                deps=[names.key(dep) for dep in deps],
                kinds=kinds,
                description=description,
                check_specs=checks or None,
                **more,
            )(names.resource_keys(function))

        return PerDataset(build)

    return define


SensorBody = Callable[[dg.SensorEvaluationContext, DatasetResource, DatasetNames], dg.SensorResult]


def dataset_sensor(name: str, job: str, description: str) -> Callable[[SensorBody], PerDataset]:
    """A sensor of a dataset, stopped until a person turns it on, requesting runs of its job `job`:
    the decorated body evaluates one tick with the dataset's resource and names."""

    def define(evaluate: SensorBody) -> PerDataset:
        def build(names: DatasetNames, setup: DatasetSetup) -> dg.SensorDefinition:
            def tick(context: dg.SensorEvaluationContext) -> dg.SensorResult:
                return evaluate(context, setup.dataset.process_config_and_initialize(), names)

            return dg.SensorDefinition(
                name=names.name(name),
                evaluation_fn=tick,
                job_name=names.name(job),
                minimum_interval_seconds=30,
                default_status=dg.DefaultSensorStatus.STOPPED,
                description=description,
            )

        return PerDataset(build)

    return define


def partition_check(asset: str, description: str, blocking: bool = False) -> Callable[[Callable], PerDataset]:
    """@dg.asset_check on one partition of the dataset's asset `asset`. Partitioned checks are a
    Dagster 1.13 preview: its PreviewWarning is silenced for these definitions alone."""

    def define(function: Callable) -> PerDataset:
        def build(names: DatasetNames, setup: DatasetSetup) -> dg.AssetChecksDefinition:
            with warnings.catch_warnings():
                warnings.filterwarnings("ignore", category=dg.PreviewWarning)
                return dg.asset_check(
                    asset=names.key(asset),
                    partitions_def=names.prompt_tables,
                    blocking=blocking,
                    description=description,
                    name=function.__name__,
                )(names.resource_keys(function))

        return PerDataset(build)

    return define
