"""What a night would build and cost: every prompt table that is new or changed since its catalog
was built, each estimated as the `prompts` asset does (fal's prices; requests fal already has
cost nothing). Read by the schedule `nightly_backfill`."""

from __future__ import annotations

from dataclasses import dataclass

import dagster as dg

from ..dataset.costs.estimate import Estimate, estimate
from ..dataset.costs.pricing import UnitPrice
from ..dataset.money.ledger import RequestLedger
from ..dataset.plan.prompt_table import PromptRow, PromptTableError, open_prompt_table
from ..dataset.plan.table_source import partition_table, planned_rows
from ..resources import BaseFalResource, DatasetResource
from .generation_step import step_prices
from .names import OWN, DatasetNames
from .table_versions import built_version, scan_prompt_tables


@dataclass
class Night:
    """What one tick would build: {partition: table version} and {partition: estimate}."""

    versions: dict[str, str]
    estimates: dict[str, Estimate]

    @property
    def cost_usd(self) -> float:
        return round(sum(forecast.cost_usd for forecast in self.estimates.values()), 6)

    def summary(self) -> str:
        return ", ".join(f"{key} ${forecast.cost_usd:.4f}" for key, forecast in self.estimates.items())


def stale_tables(
    instance: dg.DagsterInstance, found: dict[str, str], names: DatasetNames = OWN
) -> dict[str, str]:
    """The tables whose catalog is missing or built from another version."""
    return {key: sha for key, sha in found.items() if built_version(instance, key, names) != sha}


def estimate_partition(
    key: str,
    fal: BaseFalResource,
    dataset: DatasetResource,
    prices: dict[str, UnitPrice],
    ledger: RequestLedger,
) -> Estimate:
    """The partition's cost if it ran now, from its table (rows a run would reject cost nothing); a
    recipe is expanded into its partition's table first, as `prompts` does."""
    layout = dataset.layout
    path = partition_table(layout, key, dataset.request_defaults(), dataset.ledger_location())
    planned = planned_rows(
        layout.source(key), open_prompt_table(path), path, dataset.request_defaults(), layout.prompts_dir
    )
    rows = (row for row in planned if isinstance(row, PromptRow))
    return estimate(rows, ledger.entries(key), prices, fal.backend, layout.outputs_dir, layout.prompts_dir)


def plan_night(
    instance: dg.DagsterInstance,
    fal: BaseFalResource,
    dataset: DatasetResource,
    log,
    names: DatasetNames = OWN,
) -> Night:
    """Every stale table with its estimate; a table that cannot be read is left out, with a warning
    (its run would fail before sending anything)."""
    stale = stale_tables(instance, scan_prompt_tables(dataset, log), names)
    prices = step_prices(fal, dataset, log) if stale else {}
    versions, estimates = {}, {}
    with dataset.request_ledger() as ledger:
        for key, sha in stale.items():
            try:
                estimates[key] = estimate_partition(key, fal, dataset, prices, ledger)
            except PromptTableError as exc:
                log.warning(f"not building {key} tonight: {exc}")
                continue
            versions[key] = sha
    return Night(versions, estimates)
