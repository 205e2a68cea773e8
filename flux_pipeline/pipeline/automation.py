"""The sensor that evaluates the dataset assets' automation conditions (lib/automation.py)."""

import dagster as dg

from ..lib.assets import PerDataset

dataset_automation = PerDataset(
    lambda names, resources: dg.AutomationConditionSensorDefinition(
        names.name("dataset_automation"),
        target=dg.AssetSelection.groups(names.group),
        default_status=dg.DefaultSensorStatus.STOPPED,
        minimum_interval_seconds=30,
        description="Evaluates the dataset assets' automation conditions: runs missing partitions that "
        "have a prompt table, once, and refreshes cost_report after catalog changes. Off by default: "
        "runs against real fal cost money.",
    )
)
