"""fal.ai FLUX1.1 [pro] as Dagster resources: `FalResource` calls fal with a key;
`EmulatedFalResource` runs the bundled emulator in-process and calls that (synthetic images,
nothing billed). They share one interface, and `definitions.py` picks one: nothing falls back
from one to the other at run time."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Iterable, Iterator
from contextlib import aclosing, nullcontext
from pathlib import Path
from typing import Literal

import dagster as dg
from pydantic import Field, PrivateAttr

from ..fal.batch import DEFAULT_MAX_FILE_BYTES, BatchOptions, GenerationJob, Ledger, Outcome, run_batch
from ..fal.bridge import drive
from ..fal.client import FalClient
from ..fal.endpoints import FalUrls
from ..fal.retries import LOG, CallCounts, RetryPolicy

REDACTED = "**********"


class BaseFalResource(dg.ConfigurableResource):
    """How requests are made; where they go is the subclass's."""

    max_concurrency: int = Field(default=8, ge=1, description="Requests in flight at once.")
    status_updates: Literal["stream", "poll"] = Field(
        default="stream", description="Wait on fal's status stream (one call per request) or poll."
    )
    poll_interval: float = Field(
        default=0.25, gt=0, description="First poll delay in seconds; grows 1.5x per poll."
    )
    max_poll_interval: float = Field(default=2.0, gt=0)
    http_timeout: float = Field(default=60.0, gt=0, description="Seconds for one HTTP call.")
    request_deadline: float = Field(
        default=900.0,
        gt=0,
        description="Seconds a request may take from submit to COMPLETED before it is cancelled.",
    )
    max_attempts: int = Field(
        default=8, ge=1, description="Tries per HTTP call (429, 5xx, dropped connections)."
    )
    retry_budget: int = Field(default=10_000, ge=0, description="Retries allowed across one batch.")
    max_retry_after: float = Field(
        default=120.0,
        ge=0,
        description="Longest Retry-After honoured; a call asked to wait longer is not retried.",
    )
    webhook_port: int | None = Field(
        default=None,
        description="Listen for fal's webhooks on this port (finds submits whose response was lost). Keep it "
        "fixed so a re-run after a crash receives late deliveries.",
    )
    webhook_host: str = Field(default="127.0.0.1", description="Interface the webhook receiver binds.")
    webhook_public_url: str | None = Field(
        default=None, description="URL fal reaches the receiver at, when it is behind a proxy or tunnel."
    )

    def _connection(self) -> tuple[str, FalUrls]:
        """(key, base URLs) of the fal this resource calls."""
        raise NotImplementedError

    def _receives_webhooks(self) -> bool:
        return self.webhook_port is not None

    def client(
        self, call_counts: CallCounts | None = None, log: logging.Logger | logging.LoggerAdapter = LOG
    ) -> FalClient:
        """A FalClient for this configuration (use with `async with`)."""
        key, urls = self._connection()
        return FalClient(
            key,
            urls,
            poll_interval=self.poll_interval,
            max_poll_interval=self.max_poll_interval,
            status_updates=self.status_updates,
            http_timeout=self.http_timeout,
            max_connections=max(2 * self.max_concurrency, 8),
            call_counts=call_counts,
            log=log,
            retry=RetryPolicy(
                max_attempts=self.max_attempts, budget=self.retry_budget, max_retry_after=self.max_retry_after
            ),
        )

    def generate(
        self,
        jobs: Iterable[GenerationJob],
        *,
        ledger: Ledger | None = None,
        call_counts: CallCounts | None = None,
        log: logging.Logger | logging.LoggerAdapter = LOG,
        max_file_bytes: int = DEFAULT_MAX_FILE_BYTES,
    ) -> Iterator[Outcome]:
        """Run the jobs concurrently (up to `max_concurrency`), yielding each outcome as it
        finishes. Jobs are drawn, on the caller's thread, one per free slot. Closing the iterator
        early, or an interrupt, cancels the requests still in flight."""
        receiver = None
        if ledger is not None and self._receives_webhooks():
            from ..fal.webhooks import WebhookReceiver  # the server stack loads only when it listens

            receiver = WebhookReceiver(
                ledger.webhook_received,
                host=self.webhook_host,
                port=self.webhook_port or 0,
                public_url=self.webhook_public_url,
            )
        options = BatchOptions(
            self.max_concurrency,
            self.request_deadline,
            max_file_bytes,
            receiver.base_url if receiver else None,
        )

        async def outcomes(queued: AsyncIterator[GenerationJob]) -> AsyncIterator[Outcome]:
            async with (
                self.client(call_counts, log) as fal,
                aclosing(run_batch(fal, queued, options, ledger=ledger)) as run,
            ):
                async for outcome in run:
                    yield outcome

        with receiver or nullcontext():
            yield from drive(outcomes, jobs)

    def upload_file(self, path: str | Path) -> str:
        """Upload a local file to fal storage; returns the URL a request can reference."""

        async def upload() -> str:
            async with self.client() as fal:
                return await fal.upload_file(path)

        with asyncio.Runner() as runner:
            return runner.run(upload())


class FalResource(BaseFalResource):
    """Calls fal.ai. Set the key with `EnvVar("FAL_KEY")`."""

    key: str = Field(description="fal API key; set it with EnvVar('FAL_KEY'). Never logged or shown.")
    queue_url: str = Field(default=FalUrls.queue, description="Base URL of fal's queue API.")
    run_url: str = Field(default=FalUrls.run, description="Base URL of fal's sync API.")
    storage_url: str = Field(default=FalUrls.storage, description="Base URL of fal's storage API.")

    def __repr_args__(self):
        for name, value in super().__repr_args__():
            yield name, (REDACTED if name == "key" else value)

    def _connection(self) -> tuple[str, FalUrls]:
        return self.key, FalUrls(self.queue_url, self.run_url, self.storage_url)


class EmulatedFalResource(BaseFalResource):
    """Runs the bundled fal emulator on a local port for the run and calls it: synthetic images,
    nothing billed. Says so in the run log."""

    latency: float = Field(default=0.5, ge=0, description="Seconds each emulated request runs.")

    _server = PrivateAttr(default=None)

    def setup_for_execution(self, context: dg.InitResourceContext) -> None:
        context.log.warning(
            f"FAL_KEY is not set: calling the embedded fal emulator at {self._started().url} "
            "(synthetic images, nothing billed)."
        )

    def teardown_after_execution(self, context: dg.InitResourceContext) -> None:
        if self._server is not None:
            self._server.stop()
            self._server = None

    def _started(self):
        if self._server is None:
            from ..emulator.engine import EmulatorConfig  # the emulator's server stack loads only when used
            from ..emulator.server import EmulatorServer

            self._server = EmulatorServer(EmulatorConfig(latency=self.latency)).start()
        return self._server

    def _receives_webhooks(self) -> bool:
        return True  # the emulator reaches a local receiver

    def _connection(self) -> tuple[str, FalUrls]:
        return "emulator", FalUrls.single_base(self._started().url)
