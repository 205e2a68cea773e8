"""`prompt_table_sensor` (off by default: runs against real fal cost money; turn it on in the UI).

Each tick it hashes the prompt tables in the prompts folder and the recipes in the recipes folder
and, for every one new or changed since its cursor (on the first tick, or with a lost cursor:
every one):
- registers the partition when it is new (it never deletes one: a deleted table keeps its
  partition and catalog history);
- records the table's version (its SHA-256) as an event of `prompt_table_files`, unless that
  version is already recorded, which marks the partition's assets stale in the UI;
- requests a run, unless the partition's catalog is already built from that version: such a
  table is adopted, not run again (e.g. after `flux-pipeline run`).
It says once, in its log, which registered partitions have no table."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field

import dagster as dg

from ..lib.assets import dataset_sensor
from ..lib.names import DatasetNames
from ..lib.table_versions import built_version, recorded_version, scan_prompt_tables, table_version_events
from ..resources import DatasetResource


@dataclass
class SensorCursor:
    tables: dict[str, str] = field(default_factory=dict)
    """{partition key: SHA-256} of the tables seen on the last tick."""
    without_table: list[str] = field(default_factory=list)
    """Registered partitions already reported as having no table."""

    @classmethod
    def parse(cls, text: str | None) -> SensorCursor:
        data = json.loads(text) if text else {}
        return cls(data.get("tables", {}), data.get("without_table", []))

    def dump(self) -> str:
        return json.dumps(asdict(self), sort_keys=True)


@dataset_sensor(
    "prompt_table_sensor",
    job="build_dataset",
    description="Registers new prompt tables as partitions, records their versions and runs new or "
    "changed ones; adopts tables already built. A deleted table keeps its partition and catalog history.",
)
def prompt_table_sensor(
    context: dg.SensorEvaluationContext, dataset: DatasetResource, names: DatasetNames
) -> dg.SensorResult:
    """One tick of the sensor, for the dataset `names` names."""
    instance, cursor = context.instance, SensorCursor.parse(context.cursor)
    found = scan_prompt_tables(dataset, context.log)
    known = set(instance.get_dynamic_partitions(names.partitions))
    fresh = {key: sha for key, sha in found.items() if cursor.tables.get(key) != sha}
    to_run = [key for key, sha in fresh.items() if built_version(instance, key, names) != sha]
    if adopted := sorted(fresh.keys() - set(to_run)):
        context.log.info(f"already built from their current table: {', '.join(adopted)} (not run again)")
    without_table = sorted(known - found.keys())
    if unreported := [key for key in without_table if key not in cursor.without_table]:
        context.log.warning(
            f"partition(s) {', '.join(unreported)} have no prompt table in {dataset.layout.prompts_dir} "
            f"(nor recipe in {dataset.layout.recipes_dir}): "
            "automation never targets them and a run of one fails. Add the table, or delete the partition."
        )
    new = [key for key in fresh if key not in known]
    return dg.SensorResult(
        run_requests=[dg.RunRequest(partition_key=key, run_key=f"{key}:{fresh[key]}") for key in to_run],
        dynamic_partitions_requests=[names.prompt_tables.build_add_request(new)] if new else [],
        asset_events=[
            event
            for key, sha in fresh.items()
            if recorded_version(instance, key, names) != sha
            for event in table_version_events(key, sha, names)
        ],
        cursor=SensorCursor(found, without_table).dump(),
    )
