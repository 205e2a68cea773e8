"""A prompt table's version (its file's SHA-256), as recorded on the external asset
`prompt_table_files`, and the version a partition's catalog was built from, for the dataset
`names` names (this project's own unless told). Shared by the table sensor, the nightly schedule and
`flux-pipeline run`."""

from __future__ import annotations

import dagster as dg

from ..dataset.plan.table_source import source_versions
from ..resources import DatasetResource
from .asset_versions import DATA_VERSION_TAG, data_version, latest_data_version, latest_materialization
from .names import OWN, DatasetNames

TABLE_ASSET, PROMPTS_ASSET, CATALOG_ASSET = "prompt_table_files", "prompts", "catalog"


def scan_prompt_tables(dataset: DatasetResource, log) -> dict[str, str]:
    """{partition key: version} of every prompt table and recipe with a usable name."""
    return source_versions(dataset.layout, log, dataset.ledger_location)


def table_version_events(partition: str, sha256: str, names: DatasetNames = OWN) -> list:
    """A new version of an external prompt table, reported twice because Dagster 1.13 reads two
    records: a run records, for a partitioned input, the data version of its latest
    *materialization*; staleness compares an external asset's *observations* after that one.
    The observation goes first, so the materialization is the newer record of the pair."""
    tags, key = {DATA_VERSION_TAG: sha256}, names.key(TABLE_ASSET)
    return [
        dg.AssetObservation(asset_key=key, partition=partition, tags=tags),
        dg.AssetMaterialization(asset_key=key, partition=partition, tags=tags),
    ]


def register_tables(
    instance: dg.DagsterInstance, versions: dict[str, str], names: DatasetNames = OWN
) -> None:
    """Registers the partitions and records their table versions, which the runs then consume."""
    instance.add_dynamic_partitions(names.partitions, list(versions))
    for key, sha in versions.items():
        for event in table_version_events(key, sha, names):
            instance.report_runless_asset_event(event)


def recorded_version(instance: dg.DagsterInstance, partition: str, names: DatasetNames = OWN) -> str | None:
    """The table version last recorded for the partition."""
    return latest_data_version(instance, names.key(TABLE_ASSET), partition)


def built_version(instance: dg.DagsterInstance, partition: str, names: DatasetNames = OWN) -> str | None:
    """The table version the partition's catalog is built from: that of its latest `prompts`,
    when a catalog materialization followed it."""
    prompts, catalog = (
        latest_materialization(instance, names.key(PROMPTS_ASSET), partition),
        latest_materialization(instance, names.key(CATALOG_ASSET), partition),
    )
    return data_version(prompts) if prompts and catalog and catalog.storage_id > prompts.storage_id else None
