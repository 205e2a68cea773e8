"""The Dagster resource for fal.ai FLUX1.1 [pro]."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Literal, TypeVar

import dagster as dg
from pydantic import Field, PrivateAttr

from .emulator.engine import EmulatorConfig
from .emulator.server import EmulatorServer
from .fal.batch import DEFAULT_MAX_FILE_BYTES, BatchOptions, GenerationJob, Outcome, RequestTracker, run_batch
from .fal.client import FalClient, LogSink, RetryPolicy
from .fal.endpoints import FalUrls
from .fal.webhooks import WebhookReceiver

T = TypeVar("T")
REDACTED = "**********"


class FalResource(dg.ConfigurableResource):
    """Calls fal's queue API. With no `key`, starts the bundled fal emulator in-process and calls
    that instead (synthetic images, nothing billed), and says so in the log."""

    key: str | None = Field(default=None, description="fal API key; set it with EnvVar('FAL_KEY').")
    queue_url: str = Field(default=FalUrls.queue, description="Base URL of fal's queue API.")
    run_url: str = Field(default=FalUrls.run, description="Base URL of fal's sync API.")
    storage_url: str = Field(default=FalUrls.storage, description="Base URL of fal's storage API.")
    max_concurrency: int = Field(default=8, ge=1, description="Requests in flight at once.")
    status_updates: Literal["stream", "poll"] = Field(
        default="stream", description="Wait on fal's status stream (one call per request) or poll."
    )
    poll_interval: float = Field(default=0.25, gt=0, description="First poll delay in seconds; grows 1.5x per poll.")
    max_poll_interval: float = Field(default=2.0, gt=0)
    http_timeout: float = Field(default=60.0, gt=0, description="Seconds for one HTTP call.")
    request_deadline: float = Field(
        default=900.0, gt=0, description="Seconds a request may take from submit to COMPLETED before it is cancelled."
    )
    max_attempts: int = Field(default=8, ge=1, description="Tries per HTTP call (429, 5xx, dropped connections).")
    retry_budget: int = Field(default=10_000, ge=0, description="Retries allowed across one batch.")
    webhook_port: int | None = Field(
        default=None, description="Listen for fal's webhooks on this port (finds submits whose response was "
                                  "lost). Keep it fixed so a re-run after a crash receives late deliveries.")
    webhook_host: str = Field(default="127.0.0.1", description="Interface the webhook receiver binds.")
    webhook_public_url: str | None = Field(
        default=None, description="URL fal reaches the receiver at, when it is behind a proxy or tunnel.")
    emulator_latency: float = Field(default=0.5, ge=0, description="Latency of the embedded emulator (no key).")

    _emulator: EmulatorServer | None = PrivateAttr(default=None)

    def __repr_args__(self):
        for name, value in super().__repr_args__():
            yield name, (REDACTED if name == "key" and value else value)

    # -- lifecycle -----------------------------------------------------------------------------

    def setup_for_execution(self, context: dg.InitResourceContext) -> None:
        if not self.key:
            self._start_emulator()
            context.log.warning(
                f"FAL_KEY is not set: calling the embedded fal emulator at {self._emulator.url} "
                "(synthetic images, nothing billed)."
            )

    def teardown_after_execution(self, context: dg.InitResourceContext) -> None:
        if self._emulator is not None:
            self._emulator.stop()
            self._emulator = None

    def _start_emulator(self) -> None:
        if self._emulator is None:
            self._emulator = EmulatorServer(EmulatorConfig(latency=self.emulator_latency)).start()

    @property
    def uses_emulator(self) -> bool:
        return not self.key

    def client(self) -> FalClient:
        """A FalClient for this configuration (use with `async with`)."""
        if self.key:
            key, urls = self.key, FalUrls(self.queue_url, self.run_url, self.storage_url)
        else:
            self._start_emulator()
            key, urls = "emulator", FalUrls.single_base(self._emulator.url)
        return FalClient(
            key, urls, poll_interval=self.poll_interval, max_poll_interval=self.max_poll_interval,
            status_updates=self.status_updates, http_timeout=self.http_timeout,
            max_connections=max(2 * self.max_concurrency, 8),
            retry=RetryPolicy(max_attempts=self.max_attempts, budget=self.retry_budget),
        )

    def _webhook_receiver(self, tracker: RequestTracker | None) -> WebhookReceiver | None:
        if tracker is None or (self.webhook_port is None and not self.uses_emulator):
            return None
        return WebhookReceiver(tracker.webhook_received, host=self.webhook_host, port=self.webhook_port or 0,
                               public_url=self.webhook_public_url)

    # -- sync facade for asset code ------------------------------------------------------------

    def generate(self, jobs: Iterable[GenerationJob], *, tracker: RequestTracker | None = None,
                 on_log: LogSink | None = None, max_file_bytes: int = DEFAULT_MAX_FILE_BYTES) -> Iterator[Outcome]:
        """Run the jobs concurrently (up to `max_concurrency`), yielding each outcome as it
        finishes. Stopping the iteration early cancels the requests still in flight."""
        receiver = self._webhook_receiver(tracker)
        options = BatchOptions(self.max_concurrency, self.request_deadline, max_file_bytes,
                               receiver.base_url if receiver else None)

        async def outcomes():
            async with self.client() as fal:
                async for outcome in run_batch(fal, jobs, options, tracker=tracker, on_log=on_log):
                    yield outcome

        if receiver is None:
            return _drive(outcomes())
        return _with_server(receiver, _drive(outcomes()))

    def upload_file(self, path: str | Path) -> str:
        """Upload a local file to fal storage; returns the URL a request can reference."""
        return self._call(lambda fal: fal.upload_file(path))

    def _call(self, call: Callable[[FalClient], "asyncio.Future[T]"]) -> T:
        async def once():
            async with self.client() as fal:
                return await call(fal)

        return asyncio.run(once())


def _with_server(server, items: Iterator) -> Iterator:
    with server:
        yield from items


def _drive(agen) -> Iterator:
    """Iterate an async generator from sync code on a private event loop. On early exit or an
    interrupt (e.g. Dagster terminating the run) every task is cancelled and awaited, so the
    generator's clean-up (cancelling fal requests) runs before the loop closes."""
    loop = asyncio.new_event_loop()
    try:
        while True:
            try:
                item = loop.run_until_complete(agen.__anext__())
            except StopAsyncIteration:
                return
            yield item
    finally:
        loop.run_until_complete(_cancel_all_then_close(agen))
        loop.run_until_complete(loop.shutdown_asyncgens())
        loop.close()


async def _cancel_all_then_close(agen) -> None:
    others = [task for task in asyncio.all_tasks() if task is not asyncio.current_task()]
    for task in others:
        task.cancel()
    await asyncio.gather(*others, return_exceptions=True)
    await agen.aclose()
