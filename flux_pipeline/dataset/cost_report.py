"""Cost views for auditors, from the catalog (what the images are worth at list price) and the
request ledger (what fal billed, by the run and backfill that submitted each request):

- by partition: images, their list value, what was spent on the partition and how much of it on
  nothing (requests fal billed whose answers could not be cataloged), NSFW and Redux counts;
- by run: each run's (and backfill's) requests and spend;
- by day: spend per UTC day a request was billed;
- by model: each partition's billed requests, units and spend per endpoint and billing unit;
- requests: every request ever submitted, for any other question (pandas, DuckDB)."""

from __future__ import annotations

import pandas as pd
from upath import UPath

from .catalog import read_catalog
from .ledger import REQUEST_COLUMNS, UNUSABLE

TOTAL = "TOTAL"


def requests_frame(rows: list[tuple]) -> pd.DataFrame:
    frame = pd.DataFrame(rows, columns=REQUEST_COLUMNS)
    for column in ("submitted_at", "billed_at"):
        frame[column] = pd.to_datetime(frame[column].astype("float64"), unit="s", utc=True)
    frame["cost_usd"] = frame["cost_usd"].astype("float64")
    frame["superseded"] = frame["superseded"].astype(bool)
    frame["billed"] = frame["billed_at"].notna()
    frame["spent_on_nothing"] = frame["billed"] & (frame["state"] == UNUSABLE)
    return frame


def _with_total(frame: pd.DataFrame, key: str, measures: list[str]) -> pd.DataFrame:
    total = pd.DataFrame([{key: TOTAL, **frame[measures].sum().to_dict()}])
    return pd.concat([frame, total], ignore_index=True) if len(frame) else total


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
        spent_usd=("cost_usd", "sum"),
        requests_billed=("cost_usd", "size"),
        spent_on_nothing_usd=("nothing_usd", "sum"),
        requests_unusable=("spent_on_nothing", "sum"),
    )
    report = images.join(spent, how="outer").fillna(0).reset_index().sort_values("partition")
    report = _with_total(report, "partition", [c for c in report.columns if c != "partition"])
    counts = [
        "images",
        "billed_megapixels",
        "nsfw_images",
        "redux_images",
        "requests_billed",
        "requests_unusable",
    ]
    money = {"partition_cost_usd": 6, "spent_usd": 6, "spent_on_nothing_usd": 6}
    return report.astype({c: "int64" for c in counts}).round(money)


def by_run(requests: pd.DataFrame) -> pd.DataFrame:
    runs = (
        requests.assign(backfill_id=requests["backfill_id"].fillna(""))
        .groupby(["run_id", "backfill_id"])
        .agg(
            requests=("request_id", "size"),
            requests_billed=("billed", "sum"),
            spent_usd=("cost_usd", "sum"),
            first_submitted_at=("submitted_at", "min"),
            last_submitted_at=("submitted_at", "max"),
        )
        .reset_index()
        .sort_values("first_submitted_at")
    )
    return runs.astype({"requests_billed": "int64"}).round({"spent_usd": 6})


def by_day(requests: pd.DataFrame) -> pd.DataFrame:
    billed = requests[requests["billed"]]
    days = (
        billed.assign(day=billed["billed_at"].dt.strftime("%Y-%m-%d"))
        .groupby("day")
        .agg(requests_billed=("cost_usd", "size"), spent_usd=("cost_usd", "sum"))
        .reset_index()
    )
    return days.round({"spent_usd": 6})


def by_model(requests: pd.DataFrame) -> pd.DataFrame:
    billed = requests[requests["billed"]]
    models = (
        billed.assign(billed_units=billed["billed_units"].astype("float64"))
        .groupby(["partition", "endpoint", "billing_unit"])
        .agg(
            requests_billed=("cost_usd", "size"),
            billed_units=("billed_units", "sum"),
            spent_usd=("cost_usd", "sum"),
        )
        .reset_index()
        .sort_values(["partition", "endpoint"])
    )
    return models.astype({"requests_billed": "int64"}).round({"spent_usd": 6})
