"""Cost views for auditors, from the catalog (what the images are worth at list price) and the
request ledger (what fal billed, by the run and backfill that submitted each request). Every
view's `spent_usd` is money a paying backend billed (`requests_billed` of them); what the
emulator billed at its list prices, for which nothing was paid, is apart (`emulated_usd`,
`requests_emulated`):

- by partition: images, their list value, what was spent on the partition and how much of it on
  nothing (requests fal billed whose answers could not be cataloged), NSFW and Redux counts;
- by run: each run's (and backfill's) requests and spend;
- by day: spend per UTC day a request was billed;
- by model: each partition's billed requests, units and spend per endpoint and billing unit;
- requests: every request ever submitted, for any other question (pandas, DuckDB)."""

from __future__ import annotations

import pandas as pd
from upath import UPath

from ..catalog.table import read_catalog
from ..money.ledger import REQUEST_COLUMNS, UNUSABLE

TOTAL = "TOTAL"


def requests_frame(rows: list[tuple]) -> pd.DataFrame:
    """The requests as a frame, with `billed`, `paid` (billed by a paying backend), and the costs
    apart: `spent_usd` (paid), `emulated_usd` (the emulator's list prices, nothing paid)."""
    frame = pd.DataFrame(rows, columns=REQUEST_COLUMNS)
    for column in ("submitted_at", "billed_at"):
        frame[column] = pd.to_datetime(frame[column].astype("float64"), unit="s", utc=True)
    frame["cost_usd"] = frame["cost_usd"].astype("float64")
    frame["superseded"] = frame["superseded"].astype(bool)
    frame["billed"] = frame["billed_at"].notna()
    frame["paid"] = frame["billed"] & (frame["paid"].astype("float64") != 0)
    frame["emulated"] = frame["billed"] & ~frame["paid"]
    frame["spent_usd"] = frame["cost_usd"].where(frame["paid"], 0.0)
    frame["emulated_usd"] = frame["cost_usd"].where(frame["emulated"], 0.0)
    frame["spent_on_nothing"] = frame["paid"] & (frame["state"] == UNUSABLE)
    return frame


def _with_total(frame: pd.DataFrame, key: str, measures: list[str]) -> pd.DataFrame:
    total = pd.DataFrame([{key: TOTAL, **frame[measures].sum().to_dict()}])
    return pd.concat([frame, total], ignore_index=True) if len(frame) else total


SPEND = {
    "requests_billed": ("paid", "sum"),
    "spent_usd": ("spent_usd", "sum"),
    "requests_emulated": ("emulated", "sum"),
    "emulated_usd": ("emulated_usd", "sum"),
}
"""How each view sums its requests' spend: what paying backends billed, and apart what the emulator did."""
SPEND_TYPES = {"requests_billed": "int64", "requests_emulated": "int64"}
SPEND_ROUNDING = {"spent_usd": 6, "emulated_usd": 6}


def by_partition(catalog_dir: UPath, requests: pd.DataFrame) -> pd.DataFrame:
    catalog = read_catalog(
        catalog_dir, columns=["partition", "cost_usd", "billed_megapixels", "nsfw", "endpoint"]
    )
    images = (
        catalog.assign(
            images=1,
            partition=catalog["partition"].astype(str),
            nsfw_images=catalog["nsfw"].astype("int64"),
            redux_images=catalog["endpoint"].str.endswith("/redux").astype("int64"),
            billed_megapixels=catalog["billed_megapixels"].astype("int64"),
        )
        .rename(columns={"cost_usd": "partition_cost_usd"})
        .groupby("partition")[
            ["images", "partition_cost_usd", "billed_megapixels", "nsfw_images", "redux_images"]
        ]
        .sum()
    )
    billed = requests[requests["billed"]]
    spent = billed.assign(nothing_usd=billed["cost_usd"].where(billed["spent_on_nothing"], 0.0))
    spent = spent.groupby("partition").agg(
        **SPEND, spent_on_nothing_usd=("nothing_usd", "sum"), requests_unusable=("spent_on_nothing", "sum")
    )
    report = images.join(spent, how="outer").fillna(0).reset_index().sort_values("partition")
    report = _with_total(report, "partition", [c for c in report.columns if c != "partition"])
    counts = ["images", "billed_megapixels", "nsfw_images", "redux_images", "requests_unusable"]
    money = {"partition_cost_usd": 6, "spent_on_nothing_usd": 6, **SPEND_ROUNDING}
    return report.astype({**{c: "int64" for c in counts}, **SPEND_TYPES}).round(money)


def by_run(requests: pd.DataFrame) -> pd.DataFrame:
    runs = (
        requests.assign(backfill_id=requests["backfill_id"].fillna(""))
        .groupby(["run_id", "backfill_id", "backend"], dropna=False)
        .agg(
            requests=("request_id", "size"),
            **SPEND,
            first_submitted_at=("submitted_at", "min"),
            last_submitted_at=("submitted_at", "max"),
        )
        .reset_index()
        .sort_values("first_submitted_at")
    )
    return runs.astype(SPEND_TYPES).round(SPEND_ROUNDING)


def by_day(requests: pd.DataFrame) -> pd.DataFrame:
    billed = requests[requests["billed"]]
    days = (
        billed.assign(day=billed["billed_at"].dt.strftime("%Y-%m-%d"))
        .groupby("day")
        .agg(**SPEND)
        .reset_index()
    )
    return days.astype(SPEND_TYPES).round(SPEND_ROUNDING)


def by_model(requests: pd.DataFrame) -> pd.DataFrame:
    billed = requests[requests["billed"]]
    models = (
        billed.assign(billed_units=billed["billed_units"].astype("float64"))
        .groupby(["partition", "endpoint", "billing_unit", "backend"])
        .agg(**SPEND, billed_units=("billed_units", "sum"))
        .reset_index()
        .sort_values(["partition", "endpoint"])
    )
    return models.astype(SPEND_TYPES).round(SPEND_ROUNDING)
