"""Each partition's money reconciled with fal's own billing records (dataset.costs.reconciliation),
downstream of `catalog`: the requests the configured backend made (another backend's, e.g. the
emulator's before a switch to fal, are not in its bills). It needs fal's admin key
(FAL_ADMIN_KEY); without one it is skipped, with a message saying so."""

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import dagster as dg
import httpx
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
from upath import UPath

from ..dataset.catalog.table import read_catalog
from ..dataset.costs import reconciliation as rec
from ..dataset.costs.cost_report import requests_frame
from ..dataset.files.storage import write_parquet_atomically
from ..fal.errors import FalError
from ..fal.platform_models import BillingEvent
from ..lib.assets import dataset_asset, partition_check
from ..lib.metadata import table_preview
from ..resources import BaseFalResource, DatasetResource

CATALOG_COLUMNS = ["request_id", "billing_unit", "billed_megapixels", "cost_usd"]
SKEW = timedelta(hours=1)
SKIPPED = (
    "billing_reconciliation skipped: fal's billing events need an admin key; set FAL_ADMIN_KEY to reconcile"
)


@dataset_asset(
    deps=["catalog"],
    kinds={"fal", "parquet"},
    output_required=False,
    description="Every request of the partition beside fal's billing event for it (reports/reconciliation/"
    "partition=KEY/data.parquet): matched, billed_not_cataloged, cataloged_not_billed, units_mismatch or "
    "pending.",
)
def billing_reconciliation(
    context: dg.AssetExecutionContext, fal: BaseFalResource, dataset: DatasetResource
) -> Iterator[dg.MaterializeResult]:
    if not fal.has_admin_key:
        context.log.warning(SKIPPED)
        return
    key, now = context.partition_key, datetime.now(UTC)
    with dataset.request_ledger() as ledger:
        requests = requests_frame(ledger.requests(key)).dropna(subset=["request_id"])
    requests = requests[requests["backend"] == fal.backend]  # another backend's bills are not this one's
    try:
        events = billing_events(fal, requests, now)
    except (FalError, httpx.HTTPError) as exc:
        context.log.warning(f"billing_reconciliation skipped: fal's billing events could not be read ({exc})")
        return
    cataloged = read_catalog(dataset.layout.catalog_dir, [key], CATALOG_COLUMNS)
    report = rec.reconcile(requests, cataloged, events, now, dataset.billing_grace_seconds)
    path = report_path(dataset, key)
    write_parquet_atomically(pa.Table.from_pandas(report, preserve_index=False), path)
    yield dg.MaterializeResult(metadata=report_metadata(report, path))


def billing_events(fal: BaseFalResource, requests: pd.DataFrame, now: datetime) -> list[BillingEvent]:
    """fal's billing events of the partition's requests, from their first submit (less a clock
    skew) on; none when there is no request."""
    if not len(requests):
        return []
    start = requests["submitted_at"].min().to_pydatetime(warn=False) - SKEW
    return fal.billing_events(requests["request_id"].tolist(), start, now + SKEW)


def report_metadata(report: pd.DataFrame, path: UPath) -> dict:
    counts = report["status"].value_counts().to_dict()
    return {
        "fal_billed_usd": round(float(report["fal_cost_usd"].sum()), 6),
        "list_cost_usd": round(float(report["ledger_cost_usd"].sum()), 6),
        "discount_usd": round(float((report["ledger_cost_usd"] - report["fal_cost_usd"]).dropna().sum()), 6),
        "spent_on_nothing_usd": round(
            float(report.loc[report["status"] == rec.BILLED_UNUSABLE, "fal_cost_usd"].sum()), 6
        ),
        **{status: int(counts.get(status, 0)) for status in rec.STATUSES},
        "path": dg.MetadataValue.path(str(path)),
        "problems": table_preview(report[report["status"] != rec.MATCHED]),
    }


def report_path(dataset: DatasetResource, partition: str) -> UPath:
    return dataset.layout.reports_dir / "reconciliation" / f"partition={partition}" / "data.parquet"


def _status_check(status: str, context: dg.AssetCheckExecutionContext, dataset: DatasetResource):
    statuses = pq.read_table(report_path(dataset, context.partition_key).open("rb"), columns=["status"])
    found = statuses["status"].to_pylist().count(status)
    return dg.AssetCheckResult(passed=not found, metadata={status: found})


@partition_check("billing_reconciliation", "fal billed no request whose images are missing from the catalog.")
def no_billed_image_lost(
    context: dg.AssetCheckExecutionContext, dataset: DatasetResource
) -> dg.AssetCheckResult:
    return _status_check(rec.BILLED_NOT_CATALOGED, context, dataset)


@partition_check(
    "billing_reconciliation", "fal billed each request the units its cataloged images account for."
)
def billed_units_match(
    context: dg.AssetCheckExecutionContext, dataset: DatasetResource
) -> dg.AssetCheckResult:
    return _status_check(rec.UNITS_MISMATCH, context, dataset)
