"""fal.ai FLUX1.1 [pro] as Dagster resources: `FalResource` calls fal with a key;
`EmulatedFalResource` runs the bundled emulator in-process and calls that (synthetic images at
list prices, nothing paid). They share one interface, and `defs/resources.py` picks one: nothing
falls back from one to the other at run time."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncGenerator, AsyncIterator, Generator, Iterable
from contextlib import aclosing, nullcontext
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Literal
from urllib.parse import urlsplit

import dagster as dg
from pydantic import Field, PrivateAttr

from ..fal.batch import BatchOptions, run_batch
from ..fal.bridge import drive
from ..fal.client import FalClient
from ..fal.endpoints import JWKS_PATH, JWKS_URL, FalUrls
from ..fal.errors import FalError
from ..fal.lost_requests import PlatformHistory
from ..fal.platform import FalPlatform
from ..fal.platform_models import BillingEvent
from ..fal.redaction import SECRETS
from ..fal.retries import LOG, CallCounts, RetryPolicy
from ..fal.types import DEFAULT_MAX_FILE_BYTES, GenerationRequest, Ledger, Outcome

REDACTED = "**********"
PLATFORM_URL = "https://api.fal.ai"
EMULATOR = "emulator"
"""The backend name of every request the embedded emulator makes (its port changes per run)."""
EMULATOR_ADMIN_KEY = "emulator-admin"


@dataclass(frozen=True)
class FalAccount:
    """Where requests go, and with which keys."""

    backend: str
    """Recorded with every request: fal's queue host, or `emulator`."""
    key: str = field(repr=False)
    urls: FalUrls
    platform_url: str
    admin_key: str | None = field(default=None, repr=False)
    webhook_jwks_url: str = JWKS_URL
    """Where the public keys that sign fal's webhooks are published."""


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

    lost_request_settle: float = Field(
        default=60.0,
        ge=0,
        description="Seconds after a submit whose response was lost (and no webhook receiver) before fal's "
        "request history is trusted to say it has no such request and the submit is sent again.",
    )

    def account(self) -> FalAccount:
        """Where requests go, and with which keys."""
        raise NotImplementedError

    @property
    def backend(self) -> str:
        """What the ledger and catalog record as the backend of every request."""
        return self.account().backend

    def _receives_webhooks(self) -> bool:
        return self.webhook_port is not None

    def _retry_policy(self) -> RetryPolicy:
        return RetryPolicy(
            max_attempts=self.max_attempts, budget=self.retry_budget, max_retry_after=self.max_retry_after
        )

    def client(
        self, call_counts: CallCounts | None = None, log: logging.Logger | logging.LoggerAdapter = LOG
    ) -> FalClient:
        """A FalClient for this configuration (use with `async with`)."""
        account = self.account()
        return FalClient(
            account.key,
            account.urls,
            poll_interval=self.poll_interval,
            max_poll_interval=self.max_poll_interval,
            status_updates=self.status_updates,
            http_timeout=self.http_timeout,
            max_connections=max(2 * self.max_concurrency, 8),
            call_counts=call_counts,
            log=log,
            retry=self._retry_policy(),
        )

    def platform(self, *, admin: bool = False, call_counts: CallCounts | None = None) -> FalPlatform:
        """A FalPlatform client (use with `async with`); `admin` uses the admin key."""
        account = self.account()
        key = account.admin_key if admin else account.key
        if key is None:
            raise FalError("no fal admin key is configured (FAL_ADMIN_KEY)")
        return FalPlatform(
            key,
            account.platform_url,
            http_timeout=self.http_timeout,
            retry=self._retry_policy(),
            call_counts=call_counts,
        )

    @property
    def has_admin_key(self) -> bool:
        return self.account().admin_key is not None

    def generate(
        self,
        requests: Iterable[GenerationRequest],
        *,
        ledger: Ledger | None = None,
        call_counts: CallCounts | None = None,
        log: logging.Logger | logging.LoggerAdapter = LOG,
        max_file_bytes: int = DEFAULT_MAX_FILE_BYTES,
    ) -> Generator[Outcome, None, None]:
        """Run the requests concurrently (up to `max_concurrency`), yielding each outcome as it
        finishes. Requests are drawn, on the caller's thread, one per free slot. Closing the iterator
        early, or an interrupt, cancels the requests still in flight. A submit whose response is
        lost is found through its webhook when a receiver listens, else in fal's request history."""
        receiver = self._webhook_receiver(ledger) if ledger is not None else None

        async def outcomes(queued: AsyncIterator[GenerationRequest]) -> AsyncGenerator[Outcome, None]:
            async with (
                self.client(call_counts, log) as fal,
                self.platform(call_counts=call_counts) as platform,
            ):
                history = PlatformHistory(
                    platform, self.lost_request_settle, poll_interval=min(2.0, self.lost_request_settle)
                )
                webhook_url = receiver.base_url if receiver else None
                options = BatchOptions(
                    self.max_concurrency, self.request_deadline, max_file_bytes, webhook_url, history
                )
                async with aclosing(run_batch(fal, queued, options, ledger=ledger)) as run:
                    async for outcome in run:
                        yield outcome

        with receiver or nullcontext():
            yield from drive(outcomes, requests)

    def _webhook_receiver(self, ledger: Ledger):
        """A receiver of fal's webhooks into `ledger`, when this resource listens for them."""
        if not self._receives_webhooks():
            return None
        from ..fal.webhook_signatures import WebhookVerifier  # the server stack and cryptography
        from ..fal.webhooks import WebhookReceiver  # load only when it listens

        return WebhookReceiver(
            ledger.webhook_received,
            WebhookVerifier(self.account().webhook_jwks_url),
            host=self.webhook_host,
            port=self.webhook_port or 0,
            public_url=self.webhook_public_url,
        )

    def upload_file(self, path: str | Path) -> str:
        """Upload a local file to fal storage; returns the URL a request can reference."""
        return _run(self.client(), lambda fal: fal.upload_file(path))

    def prices(self, endpoints: list[str]) -> dict[str, tuple[float, str]]:
        """endpoint → (unit price, unit) from fal's pricing API; raises FalError when it fails."""
        found = _run(self.platform(), lambda platform: platform.prices(endpoints))
        return {endpoint: (price.unit_price, price.unit) for endpoint, price in found.items()}

    def billing_events(self, request_ids: list[str], start: datetime, end: datetime) -> list[BillingEvent]:
        """fal's billing events of these requests (needs the admin key)."""
        return _run(self.platform(admin=True), lambda p: p.billing_events(request_ids, start=start, end=end))


def _run(session, call):
    """`call(session)` inside `async with session`, from sync code."""

    async def once():
        async with session as opened:
            return await call(opened)

    with asyncio.Runner() as runner:
        return runner.run(once())


class FalResource(BaseFalResource):
    """Calls fal.ai. Set the key with `EnvVar("FAL_KEY")`."""

    key: str = Field(
        default=dg.EnvVar("FAL_KEY"),
        description="fal API key, EnvVar('FAL_KEY') unless set otherwise; run config that sets other fields "
        "keeps it (Dagster replaces a resource's configured values with a launch's run config). Never logged "
        "or shown.",
    )
    admin_key: str | None = Field(
        default=None,
        description="fal admin API key for billing events (EnvVar('FAL_ADMIN_KEY')); without it billing "
        "reconciliation is skipped. Never logged or shown.",
    )
    queue_url: str = Field(default=FalUrls.queue, description="Base URL of fal's queue API.")
    run_url: str = Field(default=FalUrls.run, description="Base URL of fal's sync API.")
    storage_url: str = Field(default=FalUrls.storage, description="Base URL of fal's storage API.")
    platform_url: str = Field(
        default=PLATFORM_URL, description="Base URL of fal's Platform API (pricing, billing)."
    )
    webhook_jwks_url: str = Field(
        default=JWKS_URL, description="fal's public keys (JWKS) that webhook signatures are verified with."
    )

    def __repr_args__(self):
        for name, value in super().__repr_args__():
            yield name, (REDACTED if name in ("key", "admin_key") and value else value)

    def account(self) -> FalAccount:
        SECRETS.add(self.key, self.admin_key)
        return FalAccount(
            urlsplit(self.queue_url).netloc,
            self.key,
            FalUrls(self.queue_url, self.run_url, self.storage_url),
            self.platform_url,
            self.admin_key,
            self.webhook_jwks_url,
        )


class EmulatedFalResource(BaseFalResource):
    """Runs the bundled fal emulator on a local port for the run and calls it: synthetic images,
    priced at fal's list prices (what the run reports as spent), nothing paid. Says so in the run
    log."""

    latency: float = Field(default=0.5, ge=0, description="Seconds each emulated request runs.")
    lost_request_settle: float = Field(default=2.0, ge=0, description="The emulator's history is immediate.")

    _server = PrivateAttr(default=None)

    def setup_for_execution(self, context: dg.InitResourceContext) -> None:
        (context.log or LOG).warning(
            f"FAL_KEY is not set: calling the embedded fal emulator at {self._started().url} "
            "(synthetic images at fal's list prices: nothing is paid)."
        )

    def teardown_after_execution(self, context: dg.InitResourceContext) -> None:
        if self._server is not None:
            self._server.stop()
            self._server = None

    def _started(self):
        if self._server is None:
            from ..emulator.engine import EmulatorConfig  # the emulator's server stack loads only when used
            from ..emulator.server import EmulatorServer

            config = EmulatorConfig(latency=self.latency, admin_keys=(EMULATOR_ADMIN_KEY,))
            self._server = EmulatorServer(config).start()
        return self._server

    def _receives_webhooks(self) -> bool:
        return True  # the emulator reaches a local receiver

    def account(self) -> FalAccount:
        url = self._started().url
        return FalAccount(
            EMULATOR, "emulator", FalUrls.single_base(url), url, EMULATOR_ADMIN_KEY, f"{url}{JWKS_PATH}"
        )
