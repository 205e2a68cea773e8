"""The sensor that evaluates the dataset assets' automation conditions (lib/automation.py)."""

import dagster as dg

dataset_automation = dg.AutomationConditionSensorDefinition(
    "dataset_automation",
    target=dg.AssetSelection.all(),
    default_status=dg.DefaultSensorStatus.STOPPED,
    minimum_interval_seconds=30,
    description="Evaluates the dataset assets' automation conditions: runs missing partitions that "
    "have a prompt table, once, and refreshes cost_report after catalog changes. Off by default: "
    "runs against real fal cost money.",
)
