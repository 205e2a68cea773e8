"""`review_decisions`: a partition's reviewer decisions (dataset.catalog.decisions) as a Dagster asset. It
snapshots the append-only log to `reports/review/partition=KEY/decisions.parquet` and reports
kept / rejected / undecided and rejections by reason; its data version is a hash of the decisions
in force, so a changed decision marks `training_export` stale once this asset is materialized
again: by `build_dataset`, a person in the UI, or `review_sensor`, which refreshes it (no fal
call, nothing paid) for every partition whose decisions in force changed."""

import dagster as dg
import pyarrow as pa

from ..dataset.catalog.decisions import decision_counts, decisions_version
from ..dataset.catalog.table import iter_partition
from ..dataset.files.storage import write_parquet_atomically
from ..lib.asset_versions import latest_data_version
from ..lib.assets import PerDataset, dataset_asset, dataset_sensor
from ..lib.executors import executor_from_env
from ..lib.names import DatasetNames
from ..resources import DatasetResource

REVIEW_ASSET = "review_decisions"


def decisions_snapshot(dataset: DatasetResource, partition: str):
    return dataset.layout.reports_dir / "review" / f"partition={partition}" / "decisions.parquet"


def catalog_ids(dataset: DatasetResource, partition: str) -> set[str]:
    return {
        image
        for batch in iter_partition(dataset.layout.catalog_dir, partition, ["image_id"])
        for image in batch["image_id"].to_pylist()
    }


@dataset_asset(
    deps=["catalog"],
    kinds={"parquet"},
    description="Reviewers' keep/reject decisions on the partition's images (flux-pipeline review), "
    "snapshotted from the append-only log; version = hash of the decisions in force.",
)
def review_decisions(context: dg.AssetExecutionContext, dataset: DatasetResource) -> dg.MaterializeResult:
    key = context.partition_key
    with dataset.decision_log() as log:
        frame = log.frame(key)
    entries = frame.to_dict("records")
    path = decisions_snapshot(dataset, key)
    write_parquet_atomically(pa.Table.from_pandas(frame, preserve_index=False), path)
    counts, by_reason = decision_counts(entries, catalog_ids(dataset, key))
    return dg.MaterializeResult(
        metadata={
            **counts,
            "rejected_by_reason": dg.MetadataValue.json(by_reason),
            "decisions_logged": len(entries),
            "path": dg.MetadataValue.path(str(path)),
        },
        data_version=dg.DataVersion(decisions_version(entries)),
    )


refresh_review = PerDataset(
    lambda names, setup: dg.define_asset_job(
        names.name("refresh_review"),
        selection=[names.key("review_decisions")],
        executor_def=executor_from_env(setup.executor),
        description="Re-snapshots a partition's review decisions (no fal call), so a changed decision "
        "marks its training_export stale.",
    )
)


@dataset_sensor(
    "review_sensor",
    job="refresh_review",
    description="Refreshes review_decisions for every built partition whose decisions in force differ "
    "from its latest snapshot (costs nothing: no fal call).",
)
def review_sensor(
    context: dg.SensorEvaluationContext, dataset: DatasetResource, names: DatasetNames
) -> dg.SensorResult:
    """One tick of the sensor, for the dataset `names` names."""
    instance, requests = context.instance, []
    with dataset.decision_log() as log:
        for key in instance.get_dynamic_partitions(names.partitions):
            recorded = latest_data_version(instance, names.key(REVIEW_ASSET), key)
            version = decisions_version(log.entries(key))
            if recorded is not None and recorded != version:
                requests.append(dg.RunRequest(partition_key=key, run_key=f"{key}:{version}"))
    return dg.SensorResult(run_requests=requests)
