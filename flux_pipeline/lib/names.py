"""What one dataset's definitions are called in a code location, so that several datasets live side
by side: this project's own keeps the plain names (`prompts`, `build_dataset`, `prompt_tables`,
the resources `fal` and `dataset`); a dataset named `birds` (a FluxDataset component) has its asset
keys under `birds/`, its group `birds`, and its jobs, sensors, schedules, partitions and resource
keys prefixed `birds__`."""

from __future__ import annotations

import functools
import inspect
import typing
from collections.abc import Callable
from dataclasses import dataclass
from functools import cached_property

import dagster as dg

GROUP = "flux_dataset"
"""The group of this project's own dataset."""


@dataclass(frozen=True)
class DatasetNames:
    prefix: str = ""

    def key(self, name: str) -> dg.AssetKey:
        return dg.AssetKey([self.prefix, name] if self.prefix else [name])

    def name(self, name: str) -> str:
        return f"{self.prefix}__{name}" if self.prefix else name

    @property
    def group(self) -> str:
        return self.prefix or GROUP

    @property
    def partitions(self) -> str:
        """The name of its dynamic partitions: one per prompt table (prompts/KEY.parquet) or recipe."""
        return self.name("prompt_tables")

    @cached_property
    def prompt_tables(self) -> dg.DynamicPartitionsDefinition:
        return dg.DynamicPartitionsDefinition(name=self.partitions)

    def resource_keys(self, function: Callable) -> Callable:
        """`function` (an asset's or a check's body) asking for its resources by this dataset's keys:
        Dagster names a resource by its parameter, so `dataset` becomes `birds__dataset` (the body is
        called with its own names). Unchanged for a dataset with no prefix."""
        if not self.prefix:
            return function
        hints = typing.get_type_hints(function)
        signature = inspect.signature(function)
        renamed = {name: self.name(name) for name in RESOURCE_PARAMETERS if name in signature.parameters}
        own = {key: name for name, key in renamed.items()}

        def called(kwargs: dict) -> dict:
            return {own.get(key, key): value for key, value in kwargs.items()}

        if inspect.isgeneratorfunction(function):  # Dagster reads a generator's output from its yields

            def body(*args, **kwargs):
                yield from function(*args, **called(kwargs))

        else:

            def body(*args, **kwargs):
                return function(*args, **called(kwargs))

        functools.update_wrapper(body, function)
        parameters = [
            parameter.replace(name=renamed.get(name, name), annotation=hints.get(name, parameter.annotation))
            for name, parameter in signature.parameters.items()
        ]
        body.__dict__["__signature__"] = signature.replace(parameters=parameters)
        body.__annotations__ = {renamed.get(name, name): hint for name, hint in hints.items()}
        return body


RESOURCE_PARAMETERS = ("fal", "dataset")
"""The parameters by which the pipeline's assets and checks ask for their resources."""
OWN = DatasetNames()
"""This project's own dataset's names."""
