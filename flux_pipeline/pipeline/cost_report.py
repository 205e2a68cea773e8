"""`cost_report` (unpartitioned): spend and list value per partition, spend per run and backfill,
per day and per model, and every request, from the ledger and the catalog (dataset.costs.cost_report)."""

import dagster as dg
import pandas as pd
import pyarrow as pa
from upath import UPath

from ..dataset.costs import cost_report as cost_views
from ..dataset.files.storage import write_parquet_atomically
from ..lib.assets import PerDataset
from ..lib.automation import REPORT_CONDITION
from ..lib.metadata import table_preview
from ..resources import DatasetResource

PREVIEWED = ("cost_by_partition", "cost_by_run", "cost_by_day", "cost_by_model")
"""The views the materialization shows, as by_partition, by_run, by_day and by_model."""


def _cost_report(context: dg.AssetExecutionContext, dataset: DatasetResource) -> dg.MaterializeResult:
    layout = dataset.layout
    with dataset.request_ledger() as ledger:
        views = _views(layout.catalog_dir, cost_views.requests_frame(ledger.requests()))
    for name, frame in views.items():
        write_parquet_atomically(
            pa.Table.from_pandas(frame, preserve_index=False), layout.reports_dir / f"{name}.parquet"
        )
    total = views["cost_by_partition"].iloc[-1]
    return dg.MaterializeResult(
        metadata={
            "total_spent_usd": float(total["spent_usd"]),
            "total_emulated_usd": float(total["emulated_usd"]),
            "total_partition_cost_usd": float(total["partition_cost_usd"]),
            "total_images": int(total["images"]),
            "partitions": len(views["cost_by_partition"]) - 1,
            "reports": dg.MetadataValue.path(str(layout.reports_dir)),
            **{name.removeprefix("cost_"): table_preview(views[name]) for name in PREVIEWED},
        }
    )


cost_report = PerDataset(
    lambda names, resources: dg.asset(
        key=names.key("cost_report"),
        deps=[names.key("catalog")],
        automation_condition=REPORT_CONDITION,
        group_name=names.group,
        kinds={"parquet"},
        description="Spend and list value per partition, spend per run and backfill, per day and per model, "
        "and every request (data/reports/*.parquet).",
    )(names.resource_keys(_cost_report))
)


def _views(catalog_dir: UPath, requests: pd.DataFrame) -> dict[str, pd.DataFrame]:
    """Each report's name (reports/<name>.parquet) and table."""
    return {
        "cost_by_partition": cost_views.by_partition(catalog_dir, requests),
        "cost_by_run": cost_views.by_run(requests),
        "cost_by_day": cost_views.by_day(requests),
        "cost_by_model": cost_views.by_model(requests),
        "requests": requests,
    }
