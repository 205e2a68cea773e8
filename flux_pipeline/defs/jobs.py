"""The dataset's jobs, and how every run of this code location executes."""

import dagster as dg

from ..lib.executors import executor_from_env

build_dataset = dg.define_asset_job(
    "build_dataset",
    selection=dg.AssetSelection.assets(
        "prompts",
        "images",
        "redux_variations",
        "catalog",
        "review_decisions",
        "training_export",
        "billing_reconciliation",
    ),
    description="Prompt table → images → Redux variations → catalog (and its checks) → review decisions "
    "→ training export, and billing reconciliation, for one partition. The unpartitioned cost_report is "
    "not part of it: automation brings it up to date after catalog partitions change.",
)

report_costs = dg.define_asset_job(
    "report_costs",
    selection=dg.AssetSelection.assets("cost_report"),
    description="The cost report over every catalog partition (what automation runs after catalog changes).",
)

defs = dg.Definitions(jobs=[build_dataset, report_costs], executor=executor_from_env())
"""The jobs, and the executor every run of the code location uses (lib/executors.py)."""
