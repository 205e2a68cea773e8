"""One HTTP call to a fal API with bounded, logged retries (the discipline of openai-python's
base client): 408, 429, 5xx and dropped connections are retried with exponential backoff and full
jitter, or after the server's Retry-After up to a cap, beyond which the call is not retried. A
call that is not idempotent (a submit, a sync run) is retried only when it certainly never left
this machine; otherwise FalSubmitUncertain is raised, since sending it again could pay twice.
Every retry is counted by kind of call and logged with its reason."""

from __future__ import annotations

import asyncio
import logging
import random
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from typing import Any

import httpx

from .errors import FalApiError, FalSubmitUncertain
from .redaction import secret_texts

LOG = logging.getLogger("flux_pipeline.fal")

RETRYABLE_STATUS = {408, 429, 500, 502, 503, 504}
BodyReader = Callable[[httpx.Response], Awaitable[Any]]
"""Consumes a successful response's body from its stream."""
UNSENT_ERRORS = (httpx.ConnectError, httpx.ConnectTimeout, httpx.PoolTimeout)
"""Transport errors raised before a request left this machine: safe to retry even a submit."""


@dataclass
class RetryPolicy:
    """Exponential backoff with full jitter, or the server's Retry-After up to `max_retry_after`
    (beyond it the call is not retried, as openai-python does); `budget` caps retries across one
    client session."""

    max_attempts: int = 8
    base_delay: float = 0.2
    max_delay: float = 20.0
    max_retry_after: float = 120.0
    budget: int = 10_000

    def delay(self, attempt: int, retry_after: float | None = None) -> float | None:
        """Seconds to wait before the next attempt; None when the server asks for longer than the cap."""
        if retry_after is not None:
            return retry_after if retry_after <= self.max_retry_after else None
        return random.uniform(0, min(self.max_delay, self.base_delay * 2 ** (attempt - 1)))


@dataclass
class CallCounts:
    """HTTP calls and retries by kind (submit, status, result, cancel, download, upload), for
    the step's metadata."""

    calls: Counter = field(default_factory=Counter)
    retries: Counter = field(default_factory=Counter)


def retry_after_seconds(response: httpx.Response) -> float | None:
    value = response.headers.get("retry-after")
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        return max(0.0, (parsedate_to_datetime(value) - datetime.now(UTC)).total_seconds())
    except (TypeError, ValueError):
        return None


async def read_whole(response: httpx.Response) -> None:
    """The default body reader: the body into `response.content`."""
    await response.aread()


def is_retryable(response: httpx.Response) -> bool:
    # fal marks a caller's own start deadline with this header: retrying cannot help (protocol.md 7).
    return response.status_code in RETRYABLE_STATUS and not response.headers.get("x-fal-request-timeout-type")


class Retrier:
    """Retries calls within `policy` (attempts per call, a budget across the session), counting
    calls and retries in `call_counts` and logging each retry to `log`. `keys` (those the calls
    carry) are redacted from every error a server answers."""

    def __init__(
        self,
        policy: RetryPolicy | None = None,
        call_counts: CallCounts | None = None,
        log: logging.Logger | logging.LoggerAdapter = LOG,
        *,
        keys: tuple[str, ...] = (),
    ):
        self.policy = policy or RetryPolicy()
        self.call_counts = call_counts or CallCounts()
        self.log = log
        self.secrets = tuple(text for key in keys for text in secret_texts(key))

    def error(self, response: httpx.Response, **where: str | None) -> FalApiError:
        """The FalApiError of an error response (`where`: endpoint, request_id), secrets redacted."""
        return FalApiError.from_response(response, **where, secrets=self.secrets)

    async def backoff(self, kind: str, attempt: int, reason: str, retry_after: float | None = None) -> bool:
        """Wait before retrying a failed attempt; False when no retry is allowed (attempts or
        budget spent, or a Retry-After beyond the cap)."""
        delay = self.policy.delay(attempt, retry_after)
        if attempt >= self.policy.max_attempts or self.policy.budget <= 0 or delay is None:
            return False
        self.policy.budget -= 1
        self.call_counts.retries[kind] += 1
        self.log.warning(f"fal {kind} attempt {attempt} failed ({reason}); retrying in {delay:.2f} s")
        await asyncio.sleep(delay)
        return True

    async def send(
        self,
        http: httpx.AsyncClient,
        kind: str,
        method: str,
        url: str,
        *,
        idempotent: bool = True,
        retry_status: bool = True,
        endpoint: str | None = None,
        request_id: str | None = None,
        read_body: BodyReader = read_whole,
        **kwargs: Any,
    ) -> httpx.Response:
        """The response of one logical call; an error status raises FalApiError. `read_body`
        consumes a successful response's body (a transport error on the way is retried like any
        other; whatever else it raises ends the call); with `retry_status` False an error status is
        the answer, never retried; `kwargs` are httpx's `build_request`'s."""
        attempt = 0
        while True:
            attempt += 1
            self.call_counts.calls[kind] += 1
            try:
                response = await http.send(http.build_request(method, url, **kwargs), stream=True)
                try:
                    await (response.aread() if response.is_error else read_body(response))
                finally:
                    await response.aclose()
            except httpx.TransportError as exc:
                if not idempotent and not isinstance(exc, UNSENT_ERRORS):
                    raise FalSubmitUncertain(endpoint or url, exc) from None
                if await self.backoff(kind, attempt, type(exc).__name__):
                    continue
                raise
            if response.is_error and retry_status and is_retryable(response):
                reason = f"HTTP {response.status_code}"
                if await self.backoff(kind, attempt, reason, retry_after_seconds(response)):
                    continue
            if response.is_error:
                raise self.error(response, endpoint=endpoint, request_id=request_id)
            return response
