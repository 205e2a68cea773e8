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

from .asset_versions import DATA_VERSION_TAG, data_version, latest_data_version, latest_materialization
from .dataset.table_source import source_versions
from .jobs import build_dataset
from .partitions import prompt_tables
from .resources import DatasetResource

TABLE_ASSET, PROMPTS_ASSET, CATALOG_ASSET = (
    dg.AssetKey("prompt_table_files"),
    dg.AssetKey("prompts"),
    dg.AssetKey("catalog"),
)


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


def scan_prompt_tables(dataset: DatasetResource, log) -> dict[str, str]:
    """{partition key: file hash} of every prompt table and recipe with a usable name."""
    return source_versions(dataset.layout, log, dataset.ledger_location)


def table_version_events(partition: str, sha256: str) -> list:
    """A new version of an external prompt table, reported twice because Dagster 1.13 reads two
    records: a run records, for a partitioned input, the data version of its latest
    *materialization*; staleness compares an external asset's *observations* after that one.
    The observation goes first, so the materialization is the newer record of the pair."""
    tags = {DATA_VERSION_TAG: sha256}
    return [
        dg.AssetObservation(asset_key=TABLE_ASSET, partition=partition, tags=tags),
        dg.AssetMaterialization(asset_key=TABLE_ASSET, partition=partition, tags=tags),
    ]


def register_tables(instance: dg.DagsterInstance, versions: dict[str, str]) -> None:
    """Registers the partitions and records their table versions, which the runs then consume."""
    instance.add_dynamic_partitions(prompt_tables.name, list(versions))
    for key, sha in versions.items():
        for event in table_version_events(key, sha):
            instance.report_runless_asset_event(event)


def recorded_version(instance: dg.DagsterInstance, partition: str) -> str | None:
    """The table version last recorded for the partition."""
    return latest_data_version(instance, TABLE_ASSET, partition)


def built_version(instance: dg.DagsterInstance, partition: str) -> str | None:
    """The table version the partition's catalog is built from: that of its latest `prompts`,
    when a catalog materialization followed it."""
    prompts, catalog = (
        latest_materialization(instance, PROMPTS_ASSET, partition),
        latest_materialization(instance, CATALOG_ASSET, partition),
    )
    return data_version(prompts) if prompts and catalog and catalog.storage_id > prompts.storage_id else None


@dg.sensor(
    job=build_dataset,
    minimum_interval_seconds=30,
    description="Registers new prompt tables as partitions, records their versions and runs new or "
    "changed ones; adopts tables already built. A deleted table keeps its partition and catalog history.",
)
def prompt_table_sensor(context: dg.SensorEvaluationContext, dataset: DatasetResource) -> dg.SensorResult:
    instance, cursor = context.instance, SensorCursor.parse(context.cursor)
    found = scan_prompt_tables(dataset, context.log)
    known = set(instance.get_dynamic_partitions(prompt_tables.name))
    fresh = {key: sha for key, sha in found.items() if cursor.tables.get(key) != sha}
    to_run = [key for key, sha in fresh.items() if built_version(instance, key) != sha]
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
        dynamic_partitions_requests=[prompt_tables.build_add_request(new)] if new else [],
        asset_events=[
            event
            for key, sha in fresh.items()
            if recorded_version(instance, key) != sha
            for event in table_version_events(key, sha)
        ],
        cursor=SensorCursor(found, without_table).dump(),
    )
