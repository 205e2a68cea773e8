"""The decorators every partitioned dataset asset and check shares, instead of a keyword block
repeated on each."""

from __future__ import annotations

import warnings
from collections.abc import Callable, Sequence
from typing import Any

import dagster as dg

from .automation import DATASET_CONDITION
from .partitions import GROUP, prompt_tables


def dataset_asset(*, deps: Sequence[str], kinds: set[str], description: str, **more: Any) -> Callable:
    """@dg.asset on one partition of the dataset: partitioned by prompt table, in the dataset's
    group, automated by DATASET_CONDITION, code version 1; `deps` name the upstream assets by key."""
    return dg.asset(
        partitions_def=prompt_tables,
        automation_condition=DATASET_CONDITION,
        group_name=GROUP,
        code_version="1",
        deps=list(deps),
        kinds=kinds,
        description=description,
        **more,
    )


def partition_check(asset: str, description: str, blocking: bool = False) -> Callable:
    """@dg.asset_check on one partition of the asset keyed `asset`. Partitioned checks are a
    Dagster 1.13 preview: its PreviewWarning is silenced for these definitions alone."""

    def define(function: Callable) -> dg.AssetChecksDefinition:
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", category=dg.PreviewWarning)
            return dg.asset_check(
                asset=asset, partitions_def=prompt_tables, blocking=blocking, description=description
            )(function)

    return define
