"""Reading what the instance recorded of an asset partition: its latest materialization and the
data version that carries."""

from __future__ import annotations

import dagster as dg

DATA_VERSION_TAG = "dagster/data_version"
"""The tag an asset event carries its data version in."""


def latest_materialization(
    instance: dg.DagsterInstance, key: dg.AssetKey, partition: str
) -> dg.EventLogRecord | None:
    records = instance.fetch_materializations(
        dg.AssetRecordsFilter(asset_key=key, asset_partitions=[partition]), limit=1
    ).records
    return records[0] if records else None


def data_version(record: dg.EventLogRecord | None) -> str | None:
    materialization = record.asset_materialization if record else None
    return (materialization.tags or {}).get(DATA_VERSION_TAG) if materialization else None


def latest_data_version(instance: dg.DagsterInstance, key: dg.AssetKey, partition: str) -> str | None:
    """The data version of the asset partition's latest materialization."""
    return data_version(latest_materialization(instance, key, partition))
