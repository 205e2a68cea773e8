"""One generation step of a partition (text-to-image or Redux): consult the ledger, send what
still needs sending through the fal resource under the partition's budget, store each file, and
describe each output image as a catalog row and each failed request as a failure row.

Per request, by its ledger entry (same fingerprint only): stored with intact files → its rows
are reused, nothing is sent; submitted (or stored, files lost) → resumed by request id (status
and result are free); submitting (response lost) → looked for through its webhook; otherwise
submitted anew."""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from datetime import datetime, timezone
import dagster as dg

from .. import __version__
from ..fal.batch import Generation, GenerationFailure, GenerationJob
from ..fal.models import billed_megapixels
from ..resources import FalResource
from .files import files_intact, image_id, store_image
from .ledger import RequestLedger, fingerprint
from .rows import CatalogRowWriter
from .settings import DatasetSettings


@dataclass(frozen=True)
class PlannedRequest:
    job: GenerationJob
    prompt: str
    identity: dict
    """The input as fingerprinted (an uploaded file stands as its content hash)."""
    parent_image_id: str | None = None
    parent_source: str | None = None


@dataclass
class StepResult:
    """What a step did beyond its rows (which went to a CatalogRowWriter)."""

    failures: list[dict] = field(default_factory=list)
    latencies: list[float] = field(default_factory=list)
    committed_usd: float = 0.0
    budget_stopped: bool = False
    not_sent: int = 0
    reused: int = 0
    resumed: int = 0


class LedgerTracker:
    """The batch runner's RequestTracker, writing to the request ledger for one partition.
    `fingerprints` holds the requests in flight only."""

    def __init__(self, ledger: RequestLedger, partition: str, lost_wait: float):
        self.ledger, self.partition, self.lost_wait = ledger, partition, lost_wait
        self.fingerprints: dict[tuple[str, str], str] = {}

    def submitting(self, job: GenerationJob) -> str:
        return self.ledger.submitting(self.partition, job.key, job.endpoint, self.fingerprints[job.key, job.endpoint])

    def submitted(self, job: GenerationJob, request_id: str) -> None:
        self.ledger.submitted(self.partition, job.key, job.endpoint, request_id)

    async def find_lost(self, job: GenerationJob, token: str) -> str | None:
        return await self.ledger.wait_for_webhook(token, self.lost_wait)

    def webhook_received(self, token: str, body: dict) -> None:
        self.ledger.record_webhook(token, body["request_id"], body.get("status"))


def request_cost(settings: DatasetSettings, job: GenerationJob) -> float:
    """What fal will bill for the job if it succeeds: known before sending."""
    width, height = job.input.size()
    return settings.cost_of(billed_megapixels(width, height, settings.megapixel_size) * job.input.num_images)


def failure_row(prompt_id: str | None, endpoint: str, request_id: str | None, field_name: str | None,
                error: str, status_code: int | None = None) -> dict:
    return {"prompt_id": prompt_id, "endpoint": endpoint, "request_id": request_id, "field": field_name,
            "error": error, "status_code": status_code}


def run_step(context: dg.AssetExecutionContext, fal: FalResource, settings: DatasetSettings,
             plans: Iterable[PlannedRequest], budget_left: float | None, rows: CatalogRowWriter) -> StepResult:
    """Plans are drawn lazily and only requests in flight are held, so memory stays flat as the
    partition grows; every output image's row goes to `rows` as soon as its file is stored."""
    partition = context.partition_key
    root = settings.output_path
    with RequestLedger(settings.ledger_location) as ledger:
        tracker = LedgerTracker(ledger, partition, settings.lost_request_wait)
        result = StepResult()
        in_flight: dict[tuple[str, str], PlannedRequest] = {}

        def to_send() -> Iterator[PlannedRequest]:
            """Plans that need fal, after the ledger's verdict; reused requests are written here."""
            for plan in plans:
                key = plan.job.key, plan.job.endpoint
                current = fingerprint(plan.job.endpoint, plan.identity)
                entry = ledger.entry(partition, *key)
                if entry is not None and entry.fingerprint == current:
                    if entry.state == "stored" and files_intact(root, entry.rows):
                        rows.write(entry.rows)
                        result.committed_usd += sum(r["cost_usd"] for r in entry.rows)
                        result.reused += 1
                        continue
                    if entry.state in ("submitted", "stored") and entry.request_id:
                        plan = dataclasses.replace(plan, job=dataclasses.replace(plan.job, request_id=entry.request_id))
                        result.resumed += 1
                    elif entry.state == "submitting":
                        plan = dataclasses.replace(plan, job=dataclasses.replace(plan.job, lost_token=entry.token))
                        result.resumed += 1
                tracker.fingerprints[key] = current
                yield plan

        def admitted() -> Iterator[GenerationJob]:
            candidates = to_send()
            for plan in candidates:
                job = plan.job
                cost = request_cost(settings, job)
                if job.request_id is None and job.lost_token is None:
                    if budget_left is not None and result.committed_usd + cost > budget_left + 1e-9:
                        result.budget_stopped = True
                        result.not_sent = 1 + sum(1 for p in candidates if p.job.request_id is None)
                        return
                result.committed_usd += cost
                in_flight[job.key, job.endpoint] = plan
                yield job

        progress: dict[str, list[str]] = {}

        def forward_log(request_id: str, line: dict) -> None:
            # Problems reach the Dagster log at once; routine progress goes as one event per request
            # (one event per line made the event log the run's bottleneck: 28 per image).
            if line.get("level") in ("WARN", "ERROR", "STDERR"):
                context.log.warning(f"fal {request_id}: {line.get('message', '')}")
            else:
                progress.setdefault(request_id, []).append(str(line.get("message", "")))

        for outcome in fal.generate(admitted(), tracker=tracker, on_log=forward_log,
                                    max_file_bytes=settings.max_download_bytes):
            key = outcome.job.key, outcome.job.endpoint
            plan = in_flight.pop(key)
            tracker.fingerprints.pop(key, None)
            if lines := progress.pop(outcome.request_id, None):
                context.log.debug(f"fal {outcome.request_id} logs: {' | '.join(lines)}")
            if isinstance(outcome, GenerationFailure):
                _record_failure(context, ledger, result, outcome)
                continue
            new_rows = _catalog_rows(context, settings, plan, outcome)
            ledger.stored(partition, plan.job.key, plan.job.endpoint, outcome.request_id, new_rows)
            rows.write(new_rows)
            result.latencies.append(outcome.latency_s)
        return result


def _record_failure(context, ledger: RequestLedger, result: StepResult, outcome: GenerationFailure) -> None:
    job, code = outcome.job, outcome.status_code
    # A definitive answer from fal (a rejected submit, or a 4xx result such as 422 or cancelled)
    # is not billed: a re-run may send it again. Anything else stays resumable in the ledger.
    definitive = code is not None and (outcome.request_id is None or (400 <= code < 500 and code not in (408, 429)))
    if definitive:
        ledger.failed(context.partition_key, job.key, job.endpoint, outcome.error)
    field_name = outcome.field_errors[0][0] if outcome.field_errors else None
    result.failures.append(failure_row(job.key, job.endpoint, outcome.request_id, field_name, outcome.error, code))
    context.log.warning(f"request for prompt_id {job.key!r} ({job.endpoint}) failed: {outcome.error}")


def _catalog_rows(context: dg.AssetExecutionContext, settings: DatasetSettings, plan: PlannedRequest,
                  outcome: Generation) -> list[dict]:
    partition, data = context.partition_key, plan.job.input
    width, height = data.size()
    folder = settings.partition_dir(partition) / "images"
    flags = outcome.output.has_nsfw_concepts or [False] * len(outcome.files)
    created = datetime.now(timezone.utc)
    megapixels = billed_megapixels(width, height, settings.megapixel_size)
    rows = []
    for index, (file, nsfw) in enumerate(zip(outcome.files, flags, strict=True)):
        image = store_image(folder, image_id(partition, plan.job.key, plan.job.endpoint, index), file.data,
                            data.output_format)
        rows.append({
            "image_id": image.path.stem, "partition": partition, "prompt_id": plan.job.key,
            "prompt": plan.prompt, "returned_prompt": outcome.output.prompt, "endpoint": plan.job.endpoint,
            "request_id": outcome.request_id, "image_index": index, "seed": outcome.output.seed,
            "width": width, "height": height, "output_format": data.output_format,
            "content_hash": image.sha256, "file_path": f"{partition}/images/{image.path.name}",
            "file_bytes": image.size_bytes, "nsfw": bool(nsfw), "billed_megapixels": megapixels,
            "price_per_megapixel": settings.price_per_megapixel, "megapixel_size": settings.megapixel_size,
            "cost_usd": settings.cost_of(megapixels), "parent_image_id": plan.parent_image_id,
            "parent_source": plan.parent_source, "latency_s": round(outcome.latency_s, 4),
            "run_id": context.run.run_id, "code_version": __version__, "created_at": created,
        })
    return rows
