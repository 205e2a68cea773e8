"""Many requests through one FalClient: up to `max_concurrency` in flight, each pipelined
submit → wait → result → download, outcomes yielded as they finish (no batch barriers).

A failed request becomes a GenerationFailure and never affects the others. Closing the stream
early (a budget stop, a terminated run) cancels every in-flight request that fal has not yet
finished, so queued work is not billed. A Ledger, when given, records each submit before it is
sent and after fal accepts it (in a worker thread, never on the event loop), so a crash or
re-run resumes instead of paying again.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import time
from collections.abc import AsyncGenerator, AsyncIterator
from dataclasses import dataclass

import httpx

from .client import FalClient, LogSink
from .errors import FalApiError, FalError, FalSubmitUncertain, FalTimeoutError
from .models import FluxOutput
from .types import (
    DEFAULT_MAX_FILE_BYTES,
    FileToUpload,
    GeneratedFile,
    Generation,
    GenerationFailure,
    GenerationRequest,
    Ledger,
    LostSubmit,
    Outcome,
    RequestHistory,
)
from .verify import InvalidImageError, verify_image

DOWNLOAD_ATTEMPTS = 4
CANCELLED_STATUS = 400
"""What fal's result answers for a cancelled request (protocol.md 3.5; real fal's exact body is unknown)."""
FAILURES = (FalError, InvalidImageError, httpx.HTTPError, KeyError, ValueError)
"""What fails one request and never the batch (ValueError also covers malformed JSON and responses
that do not match the output schema)."""


@dataclass
class BatchOptions:
    max_concurrency: int = 8
    deadline_s: float = 900.0
    max_file_bytes: int = DEFAULT_MAX_FILE_BYTES
    webhook_base: str | None = None
    """fal POSTs each outcome to `{webhook_base}/{token}`; None sends no webhook."""
    history: RequestHistory | None = None
    """fal's request history, to find a lost submit when no webhook receiver listens."""


class Uploads:
    """Local files put in fal storage once per batch, however many requests use them."""

    def __init__(self, fal: FalClient):
        self._fal = fal
        self._urls: dict[str, asyncio.Task[str]] = {}

    def url(self, path: str | FileToUpload) -> asyncio.Task[str]:
        if str(path) not in self._urls:
            self._urls[str(path)] = asyncio.ensure_future(self._fal.upload_file(path))
        return self._urls[str(path)]


async def _find_lost(
    request: GenerationRequest, lost: LostSubmit, ledger: Ledger, options: BatchOptions
) -> str | None:
    """The request id of a lost submit: through its webhook when a receiver listens, else
    through fal's request history; None once fal certainly has no such request."""
    if options.webhook_base is not None:
        return await ledger.find_lost(request, lost.token)
    if options.history is None:
        raise FalError(
            f"a submit to {request.endpoint} was lost and nothing can find it (no webhook, no history)"
        )
    exclude = await asyncio.to_thread(ledger.known_request_ids, request.endpoint)
    return await options.history.find(request.endpoint, lost.payload, lost.submitted_at, exclude)


async def _submit(
    fal: FalClient, request: GenerationRequest, ledger: Ledger | None, options: BatchOptions, uploads: Uploads
) -> str:
    """Submit once, never twice: a submit whose response was lost is looked for (_find_lost),
    and only sent again once fal certainly has no such request."""
    if (
        request.lost is not None
        and ledger is not None
        and (found := await _find_lost(request, request.lost, ledger, options))
    ):
        return found
    data = request.input
    if request.upload_path:
        data = data.model_copy(update={"image_url": await uploads.url(request.upload_path)})
    if ledger is None:
        return await fal.submit(request.endpoint, data)
    payload = data.wire()
    for _ in range(fal.max_attempts):
        token = await asyncio.to_thread(ledger.submitting, request, payload)
        sent_at = time.time()
        webhook = f"{options.webhook_base}/{token}" if options.webhook_base else None
        try:
            request_id = await fal.submit(request.endpoint, data, webhook_url=webhook)
        except FalSubmitUncertain:
            found = await _find_lost(request, LostSubmit(token, payload, sent_at), ledger, options)
            if found is None:
                continue  # fal certainly has none: it was not queued
            request_id = found
        await asyncio.to_thread(ledger.submitted, request, request_id)
        return request_id
    raise FalError(f"submit to {request.endpoint} failed {fal.max_attempts} times without a response")


async def _download_verified(
    fal: FalClient, request: GenerationRequest, url: str, max_bytes: int
) -> GeneratedFile:
    """The file at `url`, checked to be the image the request asked for; a broken download is tried
    again (up to DOWNLOAD_ATTEMPTS in all), a file over `max_bytes` is not."""
    attempts = 1
    while True:
        data, content_type = await fal.download(url, max_bytes=max_bytes)
        try:
            verify_image(
                data, content_type, output_format=request.input.output_format, size=request.input.size()
            )
            return GeneratedFile(data, content_type, url)
        except InvalidImageError:
            if attempts == DOWNLOAD_ATTEMPTS:
                raise
            attempts += 1


@dataclass
class Settled:
    """fal's part of a request, done: the request completed and its result was fetched."""

    request: GenerationRequest
    request_id: str
    output: FluxOutput
    started: float
    logs: list[dict]


async def _settle(
    fal: FalClient, request: GenerationRequest, ledger: Ledger | None, options: BatchOptions, uploads: Uploads
) -> Settled | GenerationFailure:
    """Submit (or resume), wait and fetch the result: everything that holds one of fal's
    concurrency slots. A request left unfinished (error or cancellation) is cancelled at fal."""
    started = time.monotonic()
    request_id = request.request_id
    finished = False
    logs: list[dict] = []

    def on_log(_: str, line: dict) -> None:
        logs.append(line)

    try:
        if request_id is None:
            request_id = await _submit(fal, request, ledger, options, uploads)
        try:
            output = await _wait_and_fetch(fal, request, request_id, options, on_log)
        except FalApiError as exc:
            if not (request.request_id and exc.status_code == CANCELLED_STATUS):
                raise
            # A resumed request that ended cancelled (its earlier run was stopped) was never
            # billed: send it again rather than lose the row.
            request_id = await _submit(
                fal, dataclasses.replace(request, request_id=None, lost=None), ledger, options, uploads
            )
            output = await _wait_and_fetch(fal, request, request_id, options, on_log)
        finished = True
        return Settled(request, request_id, output, started, logs)
    except FalApiError as exc:
        finished = True
        return GenerationFailure(
            request, request_id, str(exc), exc.status_code, exc.field_errors, logs, exc.request_failed
        )
    except FAILURES as exc:
        return GenerationFailure(request, request_id, f"{type(exc).__name__}: {exc}", logs=logs)
    finally:
        if request_id is not None and not finished:
            with contextlib.suppress(Exception):
                await asyncio.shield(fal.cancel(request.endpoint, request_id))


async def _fetch_files(fal: FalClient, settled: Settled, options: BatchOptions) -> Outcome:
    """Download and verify a settled request's files (fal billed it, whatever happens here)."""
    request, request_id, output = settled.request, settled.request_id, settled.output
    try:
        files = [
            await _download_verified(fal, request, image.url, options.max_file_bytes)
            for image in output.images
        ]
    except FAILURES as exc:
        return GenerationFailure(
            request, request_id, f"{type(exc).__name__}: {exc}", logs=settled.logs, output=output
        )
    return Generation(request, request_id, output, files, time.monotonic() - settled.started, settled.logs)


async def _wait_and_fetch(
    fal: FalClient, request: GenerationRequest, request_id: str, options: BatchOptions, on_log: LogSink | None
) -> FluxOutput:
    try:
        async with asyncio.timeout(options.deadline_s):
            final = await fal.wait(request.endpoint, request_id, on_log)
    except TimeoutError:
        raise FalTimeoutError(
            f"request {request_id} did not complete within {options.deadline_s:g} s"
        ) from None
    return await fal.result(request.endpoint, request_id, failed=final.error is not None)


class _Batch:
    """One batch's fal slots, its finished outcomes and the tasks that make them (run_batch)."""

    def __init__(
        self,
        fal: FalClient,
        requests: AsyncIterator[GenerationRequest],
        options: BatchOptions,
        ledger: Ledger | None,
    ):
        self.fal, self.requests, self.options, self.ledger = fal, requests, options, ledger
        self.fal_slots = asyncio.Semaphore(options.max_concurrency)
        self.unread = asyncio.Semaphore(2 * options.max_concurrency)
        self.finished: asyncio.Queue[Outcome | None] = asyncio.Queue()
        self.running: set[asyncio.Task] = set()
        self.uploads = Uploads(fal)

    async def one(self, request: GenerationRequest) -> None:
        try:
            settled = await _settle(self.fal, request, self.ledger, self.options, self.uploads)
        finally:
            self.fal_slots.release()
        if isinstance(settled, Settled):
            await self.finished.put(await _fetch_files(self.fal, settled, self.options))
        else:
            await self.finished.put(settled)

    async def feed(self) -> None:
        """Start a request per free slot until none is left, then wait for the last; None ends
        the outcomes."""
        try:
            while True:
                await self.unread.acquire()
                await self.fal_slots.acquire()
                if (request := await anext(self.requests, None)) is None:
                    break
                task = asyncio.create_task(self.one(request))
                self.running.add(task)
                task.add_done_callback(self.running.discard)
            while self.running:
                await asyncio.gather(*self.running)
        finally:
            await self.finished.put(None)

    async def stop(self, feeder: asyncio.Task) -> None:
        feeder.cancel()
        for task in list(self.running):
            task.cancel()
        await asyncio.gather(feeder, *self.running, return_exceptions=True)


async def run_batch(
    fal: FalClient,
    requests: AsyncIterator[GenerationRequest],
    options: BatchOptions,
    *,
    ledger: Ledger | None = None,
) -> AsyncGenerator[Outcome, None]:
    """Yield one Outcome per request, in completion order. Requests are drawn lazily, one per free
    slot.

    A request holds one of fal's `max_concurrency` slots only while fal works on it: the slot frees
    when the result is fetched, so downloads overlap the next requests. Downloading and finished
    requests the caller has not taken yet are bounded too (another `max_concurrency`)."""
    batch = _Batch(fal, requests, options, ledger)
    feeder = asyncio.create_task(batch.feed())
    try:
        while (outcome := await batch.finished.get()) is not None:
            batch.unread.release()  # frees once the caller takes the outcome: bounded memory
            yield outcome
        await feeder  # surfaces an error raised by the requests iterable
    finally:
        await batch.stop(feeder)
