"""What starts runs: a sensor for new or changed prompt tables, a schedule for partitions never
materialized. Both are off by default (runs against real fal cost money): turn them on in the UI."""

import json

import dagster as dg

from .assets import catalog, cost_report, images, prompt_table_files, prompts, redux_variations
from .dataset.files import sha256_of
from .dataset.layout import PARTITION_KEY
from .export_asset import training_export
from .partitions import prompt_tables
from .reconciliation_asset import billing_reconciliation
from .resources import DatasetResource

DATA_VERSION_TAG = "dagster/data_version"
"""The tag an asset event carries its data version in."""

build_dataset = dg.define_asset_job(
    "build_dataset",
    selection=dg.AssetSelection.assets(
        prompts, images, redux_variations, catalog, training_export, billing_reconciliation, cost_report
    ),
    description="Prompt table → images → Redux variations → catalog → training export, cost report.",
)

ACTIVE_STATUSES = [
    dg.DagsterRunStatus.QUEUED,
    dg.DagsterRunStatus.NOT_STARTED,
    dg.DagsterRunStatus.STARTING,
    dg.DagsterRunStatus.STARTED,
]


def scan_prompt_tables(dataset: DatasetResource, log) -> dict[str, str]:
    """{partition key: file hash} of every prompt table with a usable name."""
    found = {}
    for path in sorted(dataset.layout.prompts_dir.glob("*.parquet")):
        if PARTITION_KEY.match(path.stem):
            found[path.stem] = sha256_of(path)
        else:
            log.warning(f"skipping {path.name}: a table name must match {PARTITION_KEY.pattern}")
    return found


@dg.sensor(
    job=build_dataset,
    minimum_interval_seconds=30,
    description="Registers new prompt tables as partitions and runs new or changed ones. "
    "A deleted table keeps its partition and catalog history.",
)
def prompt_table_sensor(context: dg.SensorEvaluationContext, dataset: DatasetResource) -> dg.SensorResult:
    seen: dict[str, str] = json.loads(context.cursor) if context.cursor else {}
    found = scan_prompt_tables(dataset, context.log)
    known = set(context.instance.get_dynamic_partitions(prompt_tables.name))
    new = [key for key in found if key not in known]
    changed = [key for key in found if key in known and seen.get(key) != found[key]]
    return dg.SensorResult(
        run_requests=[
            dg.RunRequest(partition_key=key, run_key=f"{key}:{found[key]}") for key in new + changed
        ],
        dynamic_partitions_requests=[prompt_tables.build_add_request(new)] if new else [],
        asset_events=[event for key in new + changed for event in table_version_events(key, found[key])],
        cursor=json.dumps({**seen, **found}, sort_keys=True),
    )


def table_version_events(partition: str, sha256: str) -> list:
    """A new version of an external prompt table, reported twice because Dagster 1.13 reads two
    records: a run records, for a partitioned input, the data version of its latest
    *materialization*; staleness compares an external asset's *observations* after that one.
    The observation goes first, so the materialization is the newer record of the pair."""
    tags = {DATA_VERSION_TAG: sha256}
    return [
        dg.AssetObservation(asset_key=prompt_table_files.key, partition=partition, tags=tags),
        dg.AssetMaterialization(asset_key=prompt_table_files.key, partition=partition, tags=tags),
    ]


@dg.schedule(
    job=build_dataset,
    cron_schedule="0 * * * *",
    description="Hourly: runs every registered partition whose catalog was never materialized.",
)
def unmaterialized_partitions(context: dg.ScheduleEvaluationContext):
    instance = context.instance
    done = instance.get_materialized_partitions(catalog.key)
    for key in instance.get_dynamic_partitions(prompt_tables.name):
        if key in done:
            continue
        active = instance.get_runs(
            filters=dg.RunsFilter(
                job_name=build_dataset.name, statuses=ACTIVE_STATUSES, tags={"dagster/partition": key}
            ),
            limit=1,
        )
        if not active:
            yield dg.RunRequest(
                partition_key=key, run_key=f"{key}:{context.scheduled_execution_time.isoformat()}"
            )
