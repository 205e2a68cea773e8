"""The dataset's job, and how every run of this code location executes."""

import dagster as dg

from .assets import catalog, cost_report, images, prompts, redux_variations
from .export_asset import training_export

EXECUTOR = dg.in_process_executor
"""Each run executes its steps one after another in the run's own process. The steps of a
partition depend on one another in a chain, and the concurrency that matters (requests to fal)
lives inside a step, so the multiprocess executor bought no parallelism: it spent a new Python
process per step, 3-13 s each on 2 cores (benchmarks/backfill.py: about 80 s of a partition run,
against 7 s in process). Set as the Definitions' executor, so that the UI's materializations, asset
backfills and automation runs execute the same way as `build_dataset`."""

build_dataset = dg.define_asset_job(
    "build_dataset",
    selection=dg.AssetSelection.assets(prompts, images, redux_variations, catalog, training_export),
    description="Prompt table → images → Redux variations → catalog (and its checks) → training "
    "export, for one partition. The unpartitioned cost_report is not part of it: automation brings "
    "it up to date after catalog partitions change.",
)

report_costs = dg.define_asset_job(
    "report_costs",
    selection=dg.AssetSelection.assets(cost_report),
    description="The cost report over every catalog partition (what automation runs after catalog changes).",
)
