"""One generation step of a partition (text-to-image or Redux), in three phases, each a plain
function run on the step's own thread (fal's event loop runs on another, see fal.bridge):

- triage: a job against its ledger entry (same fingerprint only). Stored with intact files →
  Reuse its rows, nothing is sent; submitted (or stored, files lost) → Resume by request id
  (status and result are free); submitting (its response was lost) → Resume through its webhook;
  anything else → Send.
- admit: a new request is sent while its cost fits in what is left of the partition's budget;
  once one does not, no new request is (resumed ones, already paid for, still are).
- record: an outcome's files stored, its catalog rows written and the ledger told; or a failure.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Iterator
from contextlib import closing
from dataclasses import dataclass, field
from datetime import UTC, datetime

import dagster as dg
import pyarrow as pa

from . import __version__
from .dataset.files import files_intact, image_id, store_image
from .dataset.layout import PartitionFiles
from .dataset.ledger import LedgerEntry, PartitionLedger, RequestLedger
from .dataset.plans import Lineage, RowFailure
from .dataset.rows import CatalogRowWriter
from .fal.batch import Generation, GenerationFailure, GenerationJob, Outcome
from .fal.models import billed_megapixels
from .fal.retries import CallCounts
from .resources import BaseFalResource, DatasetResource

FAILURE_SCHEMA = pa.schema(
    [
        ("prompt_id", pa.string()),
        ("endpoint", pa.string()),
        ("request_id", pa.string()),
        ("field", pa.string()),
        ("error", pa.string()),
        ("status_code", pa.int32()),
    ]
)
PROBLEM_LEVELS = ("WARN", "ERROR", "STDERR")


@dataclass(frozen=True)
class Reuse:
    job: GenerationJob
    rows: list[dict]


@dataclass(frozen=True)
class Resume:
    job: GenerationJob


@dataclass(frozen=True)
class Send:
    job: GenerationJob


@dataclass
class StepTally:
    """What a step did beyond its rows (which go to a CatalogRowWriter)."""

    failures: list[dict] = field(default_factory=list)
    latencies: list[float] = field(default_factory=list)
    committed_usd: float = 0.0
    budget_stopped: bool = False
    not_sent: int = 0
    reused: int = 0
    resumed: int = 0
    call_counts: CallCounts = field(default_factory=CallCounts)


def failure_row(
    prompt_id: str,
    endpoint: str,
    request_id: str | None,
    field_name: str | None,
    error: str,
    status_code: int | None = None,
) -> dict:
    return {
        "prompt_id": prompt_id,
        "endpoint": endpoint,
        "request_id": request_id,
        "field": field_name,
        "error": error,
        "status_code": status_code,
    }


def request_cost(dataset: DatasetResource, job: GenerationJob) -> float:
    """What fal will bill for the job if it succeeds: known before sending."""
    width, height = job.input.size()
    return dataset.cost_of(billed_megapixels(width, height, dataset.megapixel_size) * job.input.num_images)


# -- triage ----------------------------------------------------------------------------------------


def triage(job: GenerationJob, entry: LedgerEntry | None, files: PartitionFiles) -> Reuse | Resume | Send:
    if entry is None or entry.fingerprint != job.fingerprint:
        return Send(job)
    if entry.state == "stored" and files_intact(files.outputs_dir, entry.rows):
        return Reuse(job, entry.rows)
    if entry.state in ("submitted", "stored") and entry.request_id:
        return Resume(dataclasses.replace(job, request_id=entry.request_id))
    if entry.state == "submitting":
        return Resume(dataclasses.replace(job, lost_token=entry.token))
    return Send(job)


# -- admit -----------------------------------------------------------------------------------------


def admit(verdict: Resume | Send, cost: float, budget_left: float | None, tally: StepTally) -> bool:
    if isinstance(verdict, Send) and (
        tally.budget_stopped or (budget_left is not None and tally.committed_usd + cost > budget_left + 1e-9)
    ):
        tally.budget_stopped = True
        tally.not_sent += 1
        return False
    tally.committed_usd += cost
    tally.resumed += isinstance(verdict, Resume)
    return True


# -- record ----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class StepOutput:
    """Where a step's results go."""

    partition: str
    run_id: str
    files: PartitionFiles
    rows: CatalogRowWriter
    ledger: PartitionLedger
    dataset: DatasetResource
    log: dg.DagsterLogManager


def record_reuse(reuse: Reuse, out: StepOutput, tally: StepTally) -> None:
    out.rows.write(reuse.rows)
    tally.committed_usd += sum(row["cost_usd"] for row in reuse.rows)
    tally.reused += 1


def record_row_failure(failure: RowFailure, out: StepOutput, tally: StepTally) -> None:
    tally.failures.append(
        failure_row(failure.prompt_id, failure.endpoint, None, failure.field, failure.error)
    )
    out.log.warning(f"prompt_id {failure.prompt_id!r} ({failure.endpoint}): {failure.field}: {failure.error}")


def record(outcome: Outcome, out: StepOutput, tally: StepTally) -> None:
    job = outcome.job
    for line in outcome.logs:
        if line.get("level") in PROBLEM_LEVELS:
            out.log.warning(f"fal {outcome.request_id}: {line.get('message', '')}")
    if outcome.logs:
        messages = " | ".join(str(line.get("message", "")) for line in outcome.logs)
        out.log.debug(f"fal {outcome.request_id} logs: {messages}")
    if isinstance(outcome, GenerationFailure):
        # A definitive answer from fal (a rejected submit, or a 4xx result such as 422 or cancelled)
        # is not billed: a re-run may send it again. Anything else stays resumable in the ledger.
        code = outcome.status_code
        if code is not None and (
            outcome.request_id is None or (400 <= code < 500 and code not in (408, 429))
        ):
            out.ledger.failed(job, outcome.error)
        field_name = outcome.field_errors[0][0] if outcome.field_errors else None
        tally.failures.append(
            failure_row(job.prompt_id, job.endpoint, outcome.request_id, field_name, outcome.error, code)
        )
        out.log.warning(f"request for prompt_id {job.prompt_id!r} ({job.endpoint}) failed: {outcome.error}")
        return
    rows = catalog_rows(outcome, out)
    out.ledger.stored(job, outcome.request_id, rows)
    out.rows.write(rows)
    tally.latencies.append(outcome.latency_s)


def catalog_rows(outcome: Generation, out: StepOutput) -> list[dict]:
    """Store the outcome's files; one catalog row per image."""
    job, data, dataset = outcome.job, outcome.job.input, out.dataset
    lineage = job.origin or Lineage()
    width, height = data.size()
    flags = outcome.output.has_nsfw_concepts or [False] * len(outcome.files)
    created = datetime.now(UTC)
    megapixels = billed_megapixels(width, height, dataset.megapixel_size)
    rows = []
    for index, (file, nsfw) in enumerate(zip(outcome.files, flags, strict=True)):
        image = store_image(
            out.files.images_dir,
            image_id(out.partition, job.prompt_id, job.endpoint, index),
            file.data,
            data.output_format,
        )
        rows.append(
            {
                "image_id": image.path.stem,
                "partition": out.partition,
                "prompt_id": job.prompt_id,
                "prompt": data.prompt,
                "returned_prompt": outcome.output.prompt,
                "endpoint": job.endpoint,
                "request_id": outcome.request_id,
                "image_index": index,
                "seed": outcome.output.seed,
                "width": width,
                "height": height,
                "output_format": data.output_format,
                "content_hash": image.sha256,
                "file_path": f"{out.partition}/images/{image.path.name}",
                "file_bytes": image.size_bytes,
                "nsfw": bool(nsfw),
                "billed_megapixels": megapixels,
                "price_per_megapixel": dataset.price_per_megapixel,
                "megapixel_size": dataset.megapixel_size,
                "cost_usd": dataset.cost_of(megapixels),
                "parent_image_id": lineage.parent_image_id,
                "parent_source": lineage.parent_source,
                "latency_s": round(outcome.latency_s, 4),
                "run_id": out.run_id,
                "code_version": __version__,
                "created_at": created,
            }
        )
    return rows


# -- the step --------------------------------------------------------------------------------------


def jobs_to_send(
    planned: Iterable[GenerationJob | RowFailure],
    out: StepOutput,
    budget_left: float | None,
    tally: StepTally,
) -> Iterator[GenerationJob]:
    """Triage and admit, a job at a time, as the batch asks for the next one."""
    for item in planned:
        if isinstance(item, RowFailure):
            record_row_failure(item, out, tally)
            continue
        verdict = triage(item, out.ledger.entry(item), out.files)
        if isinstance(verdict, Reuse):
            record_reuse(verdict, out, tally)
        elif admit(verdict, request_cost(out.dataset, item), budget_left, tally):
            yield verdict.job


def run_generation_step(
    context: dg.AssetExecutionContext,
    fal: BaseFalResource,
    dataset: DatasetResource,
    planned: Iterable[GenerationJob | RowFailure],
    budget_left: float | None,
    rows: CatalogRowWriter,
) -> StepTally:
    """Jobs are drawn lazily and only requests in flight are held, so memory stays flat as the
    partition grows; every output image's row goes to `rows` as soon as its file is stored."""
    tally = StepTally()
    partition = context.partition_key
    with RequestLedger(dataset.ledger_location()) as ledger:
        out = StepOutput(
            partition,
            context.run.run_id,
            dataset.layout.partition_files(partition),
            rows,
            ledger.partition(partition, dataset.lost_request_wait),
            dataset,
            context.log,
        )
        outcomes = fal.generate(
            jobs_to_send(planned, out, budget_left, tally),
            ledger=out.ledger,
            call_counts=tally.call_counts,
            log=context.log,
            max_file_bytes=dataset.max_download_bytes,
        )
        with closing(outcomes):
            for outcome in outcomes:
                record(outcome, out, tally)
    return tally
