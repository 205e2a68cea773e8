"""One generation step of a partition (text-to-image or Redux), in three phases, each a plain
function run on the step's own thread (fal's event loop runs on another, see fal.bridge). It
imports no Dagster and no resource: the Dagster side is lib/generation_step.py.

- triage: a request against its ledger entry (same fingerprint and backend only). Stored with intact
  files → Reuse its rows, nothing is sent. Billed but unusable → Final: a failure row, nothing is
  sent (unless the run is configured to pay again for it). Otherwise the run claims
  the row (atomically; a row another live run holds is deferred until that run has stored it or
  its lease ran out), then:
  submitted (or stored, files lost) → Resume by request id (status and result are free);
  submitting (its response was lost) → Resume by finding it (webhook or fal's request history);
  anything else → Send.
- admit: a new request is sent while its cost fits in what is left of the partition's budget;
  once one does not, no new request is (resumed ones, already paid for, still are).
- record: an outcome's files stored, its catalog rows written and the ledger told; what fal
  billed recorded once, and counted as this step's spend the first time; or a failure: not
  billed (may be sent again), billed with files that could not be fetched (resumed for free
  next time), or billed and unusable (final). Nothing fal answers fails more than its own row.
"""

from __future__ import annotations

import dataclasses
import logging
import time
from collections.abc import Generator, Iterable, Iterator
from contextlib import closing
from dataclasses import dataclass, field
from typing import Protocol

import pyarrow as pa

from ..dataset.catalog.rows import CatalogRowWriter
from ..dataset.costs.pricing import UnitPrice, request_cost
from ..dataset.files.images import files_intact
from ..dataset.files.layout import PartitionFiles
from ..dataset.money.ledger import UNUSABLE, Billing, LedgerEntry, RequestKey, RequestLedger, RunLedger, Spend
from ..dataset.plan.requests import RowFailure
from ..fal.models import FluxOutput
from ..fal.retries import CallCounts
from ..fal.types import Generation, GenerationFailure, GenerationRequest, Ledger, LostSubmit, Outcome
from .budget import Budget
from .results import RowContext, UnusableResult, catalog_rows

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
CLAIM_POLL_SECONDS = 1.0


@dataclass(frozen=True)
class Reuse:
    request: GenerationRequest
    rows: list[dict]


@dataclass(frozen=True)
class Resume:
    request: GenerationRequest


@dataclass(frozen=True)
class Send:
    request: GenerationRequest


@dataclass(frozen=True)
class Final:
    """fal billed the request and its answer could not be cataloged: it is not sent again."""

    request: GenerationRequest
    entry: LedgerEntry


@dataclass
class StepTally:
    """What a step did beyond its rows (which go to a CatalogRowWriter)."""

    budget: Budget
    failures: list[dict] = field(default_factory=list)
    latencies: list[float] = field(default_factory=list)
    reused: int = 0
    resumed: int = 0
    unusable: int = 0
    """Requests fal billed whose answers could not be cataloged (this run's and earlier ones)."""
    spend: Spend = field(default_factory=Spend)
    """What fal billed that no materialization reported before (RequestLedger.report_spend)."""
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


class Sender(Protocol):
    """What sends a batch of requests to fal and yields each outcome as it finishes (the fal
    resource's `generate`)."""

    def generate(
        self,
        requests: Iterable[GenerationRequest],
        *,
        ledger: Ledger | None = None,
        call_counts: CallCounts | None = None,
        log: logging.Logger | logging.LoggerAdapter = ...,
        max_file_bytes: int = ...,
    ) -> Generator[Outcome, None, None]: ...


# -- triage ----------------------------------------------------------------------------------------


def triage(
    request: GenerationRequest,
    entry: LedgerEntry | None,
    files: PartitionFiles,
    backend: str,
    pay_again_for_unusable: bool = False,
) -> Reuse | Resume | Send | Final:
    if entry is None or entry.fingerprint != request.fingerprint or entry.backend != backend:
        return Send(request)
    if entry.state == "stored" and entry.rows is not None and files_intact(files.outputs_dir, entry.rows):
        return Reuse(request, entry.rows)
    if entry.state == UNUSABLE:
        return Send(request) if pay_again_for_unusable else Final(request, entry)
    if entry.resumable:
        return Resume(dataclasses.replace(request, request_id=entry.request_id))
    if entry.state == "submitting" and entry.token is not None:
        lost = LostSubmit(entry.token, entry.payload or {}, entry.submitted_at or entry.updated_at)
        return Resume(dataclasses.replace(request, lost=lost))
    return Send(request)


def claimed_verdict(request: GenerationRequest, out: StepOutput) -> Reuse | Resume | Send | Final | None:
    """The verdict on a request this run may work on, or None while another live run holds it."""
    verdict = out.triage(request)
    if isinstance(verdict, Reuse | Final):
        return verdict
    if not out.run_ledger.claim(request):
        return None
    return out.triage(request)  # as it is now that it is ours


# -- record ----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class StepOutput:
    """Where a step's results go."""

    where: RowContext
    rows: CatalogRowWriter
    run_ledger: RunLedger
    prices: dict[str, UnitPrice]
    log: logging.Logger
    pay_again_for_unusable: bool = False

    @property
    def files(self) -> PartitionFiles:
        return self.where.files

    @property
    def ledger(self) -> RequestLedger:
        return self.run_ledger.ledger

    def key(self, request: GenerationRequest) -> RequestKey:
        return self.run_ledger.key(request)

    def triage(self, request: GenerationRequest) -> Reuse | Resume | Send | Final:
        entry = self.ledger.entry(self.key(request))
        return triage(request, entry, self.files, self.where.backend, self.pay_again_for_unusable)


def record_reuse(reuse: Reuse, out: StepOutput, tally: StepTally) -> None:
    out.rows.write(reuse.rows)
    tally.budget.commit(sum(row["cost_usd"] for row in reuse.rows))
    tally.reused += 1


def record_final(final: Final, out: StepOutput, tally: StepTally) -> None:
    request, entry = final.request, final.entry
    error = f"not sent again: fal billed it, and its answer could not be cataloged ({entry.error})"
    tally.failures.append(
        failure_row(request.prompt_id, request.endpoint, entry.request_id, entry.error_field, error)
    )
    tally.unusable += 1


def record_row_failure(failure: RowFailure, out: StepOutput, tally: StepTally) -> None:
    tally.failures.append(
        failure_row(failure.prompt_id, failure.endpoint, None, failure.field, failure.error)
    )
    out.log.warning(f"prompt_id {failure.prompt_id!r} ({failure.endpoint}): {failure.field}: {failure.error}")


def record_billing(request: GenerationRequest, output: FluxOutput, out: StepOutput) -> None:
    """fal bills a completed request by its output images (the emulator too, but nothing is paid)."""
    price = out.prices[request.endpoint]
    width, height = request.input.size()
    images = len(output.images)
    units = price.units(width, height, images)
    megapixels = price.megapixels(width, height, images)
    paid = not output.emulated
    billing = Billing(price.unit, units, price.unit_price, price.source, price.cost(units), megapixels, paid)
    out.ledger.billed(out.key(request), billing)


def record_failure(outcome: GenerationFailure, out: StepOutput, tally: StepTally) -> None:
    request, code = outcome.request, outcome.status_code
    if outcome.output is not None:
        # completed, so billed, but its files could not be fetched: it stays submitted, and a
        # re-run fetches them again for free
        record_billing(request, outcome.output, out)
    elif outcome.request_failed or (
        code is not None and (outcome.request_id is None or (400 <= code < 500 and code not in (408, 429)))
    ):
        # A definitive answer from fal (a rejected submit, a 4xx result such as 422 or cancelled,
        # a request fal completed with an error) is not billed: a re-run may send it again.
        # Anything else stays resumable.
        out.ledger.failed(out.key(request), outcome.error)
    field_name = outcome.field_errors[0][0] if outcome.field_errors else None
    _report_failure(request, outcome.request_id, field_name, outcome.error, code, out, tally)


def record_unusable(outcome: Generation, problem: UnusableResult, out: StepOutput, tally: StepTally) -> None:
    """Billed and final: recorded with its cost and why, kept out of the catalog."""
    record_billing(outcome.request, outcome.output, out)
    out.ledger.unusable(out.key(outcome.request), problem.field, str(problem))
    tally.unusable += 1
    error = f"{type(problem).__name__}: {problem}"
    _report_failure(outcome.request, outcome.request_id, problem.field, error, None, out, tally)


def _report_failure(
    request: GenerationRequest,
    request_id: str | None,
    field_name: str | None,
    error: str,
    code: int | None,
    out: StepOutput,
    tally: StepTally,
) -> None:
    tally.failures.append(
        failure_row(request.prompt_id, request.endpoint, request_id, field_name, error, code)
    )
    out.log.warning(f"request for prompt_id {request.prompt_id!r} ({request.endpoint}) failed: {error}")


def record(outcome: Outcome, out: StepOutput, tally: StepTally) -> None:
    for line in outcome.logs:
        if line.get("level") in PROBLEM_LEVELS:
            out.log.warning(f"fal {outcome.request_id}: {line.get('message', '')}")
    if outcome.logs:
        messages = " | ".join(str(line.get("message", "")) for line in outcome.logs)
        out.log.debug(f"fal {outcome.request_id} logs: {messages}")
    if isinstance(outcome, GenerationFailure):
        return record_failure(outcome, out, tally)
    request = outcome.request
    try:
        rows = catalog_rows(outcome, out.prices[request.endpoint], out.where)
    except UnusableResult as problem:
        return record_unusable(outcome, problem, out, tally)
    except OSError as exc:
        error = f"{type(exc).__name__}: {exc}"
        return record_failure(
            GenerationFailure(request, outcome.request_id, error, output=outcome.output), out, tally
        )
    record_billing(request, outcome.output, out)
    out.ledger.stored(out.key(request), outcome.request_id, rows)
    out.rows.write(rows)
    tally.latencies.append(outcome.latency_s)


# -- the step --------------------------------------------------------------------------------------


def requests_to_send(
    planned: Iterable[GenerationRequest | RowFailure],
    out: StepOutput,
    tally: StepTally,
    deferred: list[GenerationRequest],
) -> Iterator[GenerationRequest]:
    """Triage and admit, a request at a time, as the batch asks for the next one; a request another live
    run holds goes to `deferred`."""
    for item in planned:
        if isinstance(item, RowFailure):
            record_row_failure(item, out, tally)
        elif (verdict := claimed_verdict(item, out)) is None:
            deferred.append(item)
        elif isinstance(verdict, Reuse):
            record_reuse(verdict, out, tally)
        elif isinstance(verdict, Final):
            record_final(verdict, out, tally)
        elif tally.budget.admit(request_cost(out.prices[item.endpoint], item), new=isinstance(verdict, Send)):
            tally.resumed += isinstance(verdict, Resume)
            yield verdict.request


def send_rounds(
    fal: Sender,
    planned: Iterable[GenerationRequest | RowFailure],
    out: StepOutput,
    tally: StepTally,
    max_file_bytes: int,
) -> None:
    """Rounds until no request is left, each one batch through fal with each outcome recorded as it
    finishes; the requests another live run holds are deferred to the next round."""
    pending = planned
    while pending:
        deferred: list[GenerationRequest] = []
        requests = requests_to_send(pending, out, tally, deferred)
        outcomes = fal.generate(
            requests,
            ledger=out.run_ledger,
            call_counts=tally.call_counts,
            log=out.log,
            max_file_bytes=max_file_bytes,
        )
        with closing(outcomes):
            for outcome in outcomes:
                record(outcome, out, tally)
        if pending := deferred:
            out.log.info(f"{len(deferred)} request(s) are held by another run: waiting for them")
            time.sleep(CLAIM_POLL_SECONDS)
