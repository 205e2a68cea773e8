"""Each partition's money reconciled with fal's own billing records (dataset.reconciliation),
downstream of `catalog`. It needs fal's admin key (FAL_ADMIN_KEY); without one it is skipped,
with a message saying so."""

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import dagster as dg
import pyarrow as pa

from .assets import catalog
from .dataset import reconciliation as rec
from .dataset.catalog import read_catalog
from .dataset.cost_report import requests_frame
from .dataset.ledger import RequestLedger
from .dataset.storage import write_parquet_atomically
from .metadata import table_preview
from .partitions import GROUP, prompt_tables
from .resources import BaseFalResource, DatasetResource

NO_BILLED_IMAGE_LOST = dg.AssetCheckSpec(
    "no_billed_image_lost", asset="billing_reconciliation", description="fal billed no request whose images "
    "are missing from the catalog."
)  # fmt: skip
BILLED_UNITS_MATCH = dg.AssetCheckSpec(
    "billed_units_match", asset="billing_reconciliation", description="fal billed each request the units "
    "its cataloged images account for."
)  # fmt: skip
CHECKS = {NO_BILLED_IMAGE_LOST.name: rec.BILLED_NOT_CATALOGED, BILLED_UNITS_MATCH.name: rec.UNITS_MISMATCH}
CATALOG_COLUMNS = ["request_id", "billing_unit", "billed_megapixels", "cost_usd"]
SKEW = timedelta(hours=1)
SKIPPED = (
    "billing_reconciliation skipped: fal's billing events need an admin key; set FAL_ADMIN_KEY to reconcile"
)


@dg.asset(
    partitions_def=prompt_tables,
    deps=[catalog],
    group_name=GROUP,
    code_version="1",
    kinds={"fal", "parquet"},
    output_required=False,
    check_specs=[NO_BILLED_IMAGE_LOST, BILLED_UNITS_MATCH],
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
    key, layout, now = context.partition_key, dataset.layout, datetime.now(UTC)
    with RequestLedger(dataset.ledger_location()) as ledger:
        requests = requests_frame(ledger.requests(key)).dropna(subset=["request_id"])
    events = []
    if len(requests):
        ids, start = requests["request_id"].tolist(), requests["submitted_at"].min().to_pydatetime() - SKEW
        events = fal.billing_events(ids, start, now + SKEW)
    cataloged = read_catalog(layout.catalog_dir, [key], CATALOG_COLUMNS)
    report = rec.reconcile(requests, cataloged, events, now, dataset.billing_grace_seconds)
    path = layout.reports_dir / "reconciliation" / f"partition={key}" / "data.parquet"
    write_parquet_atomically(pa.Table.from_pandas(report, preserve_index=False), path)
    counts = report["status"].value_counts().to_dict()
    yield dg.MaterializeResult(
        metadata={
            "fal_billed_usd": round(float(report["fal_cost_usd"].sum()), 6),
            "list_cost_usd": round(float(report["ledger_cost_usd"].sum()), 6),
            "discount_usd": round(
                float((report["ledger_cost_usd"] - report["fal_cost_usd"]).dropna().sum()), 6
            ),
            **{status: int(counts.get(status, 0)) for status in rec.STATUSES},
            "path": dg.MetadataValue.path(str(path)),
            "problems": table_preview(report[report["status"] != rec.MATCHED]),
        },
        check_results=[
            dg.AssetCheckResult(
                check_name=name, passed=not counts.get(status), metadata={status: counts.get(status, 0)}
            )
            for name, status in CHECKS.items()
        ],
    )
