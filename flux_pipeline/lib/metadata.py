"""What the dataset's materializations show in the Dagster UI."""

from __future__ import annotations

import statistics

import dagster as dg
import pandas as pd
import pyarrow as pa
from upath import UPath

from ..dataset.catalog.preview import contact_sheet, markdown_image
from ..dataset.catalog.rows import CatalogRowWriter
from ..dataset.files.storage import write_bytes_atomically
from ..generation.engine import FAILURE_SCHEMA, StepTally


def table_preview(frame: pd.DataFrame, limit: int = 20) -> dg.MetadataValue:
    head = frame.head(limit).astype(object).where(frame.head(limit).notna(), None)
    columns = [dg.TableColumn(str(c), "string") for c in head.columns]
    records = [
        dg.TableRecord(
            {
                str(k): (v if isinstance(v, (int, float, bool)) or v is None else str(v))
                for k, v in row.items()
            }
        )
        for row in head.to_dict("records")
    ]
    return dg.MetadataValue.table(records, schema=dg.TableSchema(columns=columns))


def preview_metadata(outputs_dir: UPath, head: pa.Table, title: str, save_to: UPath | None = None) -> dict:
    """A contact sheet of the first images (labelled with their prompt_id) as Markdown, when
    there are any; also written to `save_to`."""
    paths = [outputs_dir / path for path in head["file_path"].to_pylist()]
    sheet = contact_sheet(paths, labels=head["prompt_id"].to_pylist())
    if sheet is None:
        return {}
    if save_to is not None:
        write_bytes_atomically(save_to, sheet)
    return {"preview": dg.MetadataValue.md(markdown_image(sheet, title))}


def step_metadata(tally: StepTally, rows: CatalogRowWriter) -> dict:
    """What a generation step spent (what a paying backend newly billed for it: the number to plot
    and add up; what the emulator billed at list prices, nothing paid, is `emulated_usd`),
    the value of its images (`partition_cost_usd`, the same on a re-run), requests, fal calls and
    retries, and fal latency quantiles."""
    totals = rows.totals
    metadata = {
        "spent_usd": tally.spend.paid_usd,
        "emulated_usd": tally.spend.emulated_usd,
        "spent_megapixels": tally.spend.paid_megapixels,
        "emulated_megapixels": tally.spend.emulated_megapixels,
        "images": totals.images,
        "partition_cost_usd": round(totals.cost_usd, 6),
        "billed_megapixels": totals.billed_megapixels,
        "requests_succeeded": rows.requests,
        "requests_failed": len(tally.failures),
        "requests_reused": tally.reused,
        "requests_resumed": tally.resumed,
        "requests_unusable": tally.unusable,
        "nsfw_images": totals.nsfw_images,
        "fal_calls": sum(tally.call_counts.calls.values()),
        "fal_retries": sum(tally.call_counts.retries.values()),
        "fal_calls_by_kind": dg.MetadataValue.json(dict(tally.call_counts.calls)),
        "failures": table_preview(pd.DataFrame(tally.failures, columns=FAILURE_SCHEMA.names)),
    }
    return metadata | latency_quantiles(tally.latencies)


def latency_quantiles(latencies: list[float]) -> dict:
    """fal latency's p50, p90 and p99 in seconds (none without a request)."""
    if not (latencies := sorted(latencies)):
        return {}
    quantiles = (
        statistics.quantiles(latencies, n=100, method="inclusive") if len(latencies) > 1 else latencies * 99
    )
    return {f"fal_latency_p{q}_s": round(quantiles[q - 1], 3) for q in (50, 90, 99)}
