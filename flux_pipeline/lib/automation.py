"""Declarative automation of the dataset's assets, evaluated by the sensor `dataset_automation`,
which is off by default (runs against real fal cost money): turn it on in the UI.

- A partition's dataset assets (`prompts` … `training_export`) are requested once when they are
  missing and the partition's prompt table has a recorded version (prompt_table_sensor or
  `flux-pipeline run` records it). A partition with no table (e.g. one added in the launch
  dialog) is never targeted. Any run of the partition (requested here, by the sensor, a backfill
  or the UI) counts as handling it, so a failed partition is not retried: it stays missing until a
  person or a new table version runs it.
- `cost_report` (unpartitioned, in no partition run) is brought up to date after any catalog
  partition changes, once no catalog partition is in progress, so one report follows a backfill."""

import dagster as dg

AC = dg.AutomationCondition

HANDLED = (AC.newly_requested() | AC.newly_updated() | AC.in_progress()).with_label(
    "requested, updated or in progress"
)

DATASET_CONDITION = (
    AC.missing().newly_true().since(HANDLED).with_label("missing and not yet handled")
    & ~AC.any_deps_missing().with_label("a dependency, e.g. the prompt table's version, is missing")
    & ~AC.any_deps_in_progress()
    & ~AC.in_progress()
).with_label("missing partition with a prompt table")
"""On each partitioned dataset asset."""

REPORT_CONDITION = (
    (AC.missing().newly_true() | AC.any_deps_updated()).since(HANDLED).with_label("catalog changed")
    & ~AC.any_deps_in_progress()
    & ~AC.in_progress()
).with_label("after catalog partitions change")
"""On `cost_report`."""
