"""The catalog's and ledger's money beside fal's own billing records, one row per request the ledger
holds for a partition, each with a status:

- matched: fal billed the units the catalog holds (or neither billed nor cataloged anything);
- billed_not_cataloged: fal charged and no image is in the catalog (money lost);
- billed_unusable: fal charged for an answer that could not be cataloged (money spent on nothing,
  recorded with its reason in the ledger, not sent again);
- superseded: fal charged for a request a later one for the same row replaced (paid again, or the
  row was edited);
- cataloged_not_billed: images are cataloged but fal has no billing event, past the grace period;
- units_mismatch: fal billed other units than the catalog's images account for;
- pending: no billing event yet, inside the grace period (fal's billing lags)."""

from __future__ import annotations

from datetime import datetime

import pandas as pd

from ...fal.platform_models import BillingEvent
from ..money.ledger import UNUSABLE
from .pricing import IMAGES

MATCHED, BILLED_NOT_CATALOGED = "matched", "billed_not_cataloged"
BILLED_UNUSABLE, SUPERSEDED = "billed_unusable", "superseded"
CATALOGED_NOT_BILLED, UNITS_MISMATCH, PENDING = "cataloged_not_billed", "units_mismatch", "pending"
STATUSES = [
    MATCHED, BILLED_NOT_CATALOGED, BILLED_UNUSABLE, SUPERSEDED, CATALOGED_NOT_BILLED, UNITS_MISMATCH, PENDING
]  # fmt: skip
FAL_COLUMNS = ["fal_units", "fal_unit_price", "fal_percent_discount", "fal_cost_usd"]
CATALOG_COLUMNS = ["catalog_images", "catalog_units", "catalog_cost_usd"]
COLUMNS = [
    "request_id", "prompt_id", "endpoint", "state", "superseded", "submitted_at", "ledger_units",
    "ledger_cost_usd",
    *CATALOG_COLUMNS, *FAL_COLUMNS, "status",
]  # fmt: skip


def catalog_by_request(catalog: pd.DataFrame) -> pd.DataFrame:
    """Images, units and list cost per request id, from catalog rows (request_id, billing_unit,
    billed_megapixels, cost_usd)."""
    units = catalog["billed_megapixels"].where(catalog["billing_unit"] != IMAGES, 1)
    return (
        catalog.assign(units=units)
        .groupby("request_id")
        .agg(
            catalog_images=("units", "size"),
            catalog_units=("units", "sum"),
            catalog_cost_usd=("cost_usd", "sum"),
        )
    )


def status(row: pd.Series, grace: pd.Timedelta, now: datetime) -> str:
    billed, cataloged = pd.notna(row["fal_units"]), row["catalog_images"] > 0
    if billed and not cataloged:
        if row["superseded"]:
            return SUPERSEDED
        return BILLED_UNUSABLE if row["state"] == UNUSABLE else BILLED_NOT_CATALOGED
    if billed:
        return MATCHED if abs(row["fal_units"] - row["catalog_units"]) < 1e-9 else UNITS_MISMATCH
    if row["finished_at"] + grace > now:
        return PENDING
    return CATALOGED_NOT_BILLED if cataloged else MATCHED


def reconcile(
    requests: pd.DataFrame,
    catalog: pd.DataFrame,
    events: list[BillingEvent],
    now: datetime,
    grace_seconds: float,
) -> pd.DataFrame:
    """`requests`: the partition's ledger rows (cost_report.requests_frame) that have a request id."""
    records = [
        (e.request_id, float(e.output_units), e.unit_price, e.percent_discount, e.cost_usd) for e in events
    ]
    fal = pd.DataFrame(records, columns=["request_id", *FAL_COLUMNS]).set_index("request_id")
    report = (
        requests.rename(columns={"billed_units": "ledger_units", "cost_usd": "ledger_cost_usd"})
        .set_index("request_id")
        .join(catalog_by_request(catalog), how="left")
        .join(fal, how="left")
        .reset_index()
    )
    report[CATALOG_COLUMNS] = report[CATALOG_COLUMNS].fillna(0)
    report["finished_at"] = report["billed_at"].fillna(report["submitted_at"])
    grace = pd.Timedelta(seconds=grace_seconds)
    report["status"] = report.apply(status, axis=1, grace=grace, now=now) if len(report) else []
    return report.reindex(columns=COLUMNS).astype({"catalog_images": "int64"})
