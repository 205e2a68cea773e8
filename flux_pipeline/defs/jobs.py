"""The dataset's job, and how every run of this code location executes."""

import dagster as dg

EXECUTOR = dg.in_process_executor
"""Each run executes its steps one after another in the run's own process. A partition's steps
form a chain, and the concurrency that matters (requests to fal) lives inside a step, so the
multiprocess executor bought no parallelism: it started a new Python process per step.
benchmarks/backfill.py, 2-core machine, daemon-launched runs of 2-image partitions: one partition
alone 54.5 s from launch to end with a process per step, 5.8 s in process; a 20-partition backfill
951 s (runs 368 s median, 10 at once) against 112 s (runs 9.4 s median from launch, 4 at once).
Set as the Definitions' executor, so that the UI's materializations, asset backfills and
automation runs execute as `build_dataset` does."""


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

defs = dg.Definitions(jobs=[build_dataset, report_costs], executor=EXECUTOR)
"""The jobs, and the executor every run of the code location uses."""
