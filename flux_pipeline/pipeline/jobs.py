"""The dataset's jobs, each executing as the environment says (lib/executors.py)."""

import dagster as dg

from ..lib.assets import DatasetSetup, PerDataset
from ..lib.executors import executor_from_env
from ..lib.names import DatasetNames

PARTITION_ASSETS = (
    "prompts",
    "images",
    "redux_variations",
    "catalog",
    "review_decisions",
    "training_export",
    "billing_reconciliation",
)


def _build_dataset(names: DatasetNames, setup: DatasetSetup):
    return dg.define_asset_job(
        names.name("build_dataset"),
        selection=dg.AssetSelection.assets(*map(names.key, PARTITION_ASSETS)),
        executor_def=executor_from_env(setup.executor),
        description="Prompt table → images → Redux variations → catalog (and its checks) → review decisions "
        "→ training export, and billing reconciliation, for one partition. The unpartitioned cost_report is "
        "not part of it: automation brings it up to date after catalog partitions change.",
    )


def _report_costs(names: DatasetNames, setup: DatasetSetup):
    return dg.define_asset_job(
        names.name("report_costs"),
        selection=dg.AssetSelection.assets(names.key("cost_report")),
        executor_def=executor_from_env(setup.executor),
        description="The cost report over every catalog partition (what automation runs after catalog "
        "changes).",
    )


build_dataset = PerDataset(_build_dataset)
report_costs = PerDataset(_report_costs)
