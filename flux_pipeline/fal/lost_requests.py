"""Finding a submit whose response was lost (FalSubmitUncertain) in fal's request history.

`find_lost_request` lists the endpoint's requests sent since the submit (less a clock skew) and
keeps those whose `json_input` holds every field that was sent, with equal JSON values; fields
fal filled in are ignored. One match is the request; more than one raises
AmbiguousLostRequest; none is a certain "fal has none" only when a listing started after the
settle time (the submit's start plus `settle` seconds) found none, so until then it polls.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Set as AbstractSet
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from .errors import AmbiguousLostRequest
from .platform import FalPlatform


def _json(value: Any) -> Any:
    return json.loads(json.dumps(value))


def input_matches(received: dict | None, sent: dict) -> bool:
    """Whether fal's record of an input holds every field of `sent` with an equal JSON value."""
    received = _json(received or {})
    return all(name in received and received[name] == value for name, value in _json(sent).items())


async def find_lost_request(
    platform: FalPlatform,
    endpoint_id: str,
    sent_input: dict,
    submitted_at: datetime,
    *,
    settle: float,
    poll_interval: float = 2.0,
    skew: float = 5.0,
    exclude: AbstractSet[str] = frozenset(),
) -> str | None:
    """The id of the one request matching `sent_input`, or None once settled with no match.
    Requests in `exclude` (already known to be other rows') are never a match."""
    since = submitted_at - timedelta(seconds=skew)
    while True:
        settled = datetime.now(UTC) >= submitted_at + timedelta(seconds=settle)
        history = platform.requests_by_endpoint(endpoint_id, start=since)
        matches = {
            record.request_id
            async for record in history
            if record.request_id not in exclude and input_matches(record.json_input, sent_input)
        }
        if len(matches) > 1:
            raise AmbiguousLostRequest(endpoint_id, len(matches))
        if matches:
            return matches.pop()
        if settled:
            return None
        await asyncio.sleep(poll_interval)


@dataclass(frozen=True)
class PlatformHistory:
    """fal.batch.RequestHistory over fal's Platform API."""

    platform: FalPlatform
    settle: float
    poll_interval: float = 2.0

    async def find(self, endpoint: str, payload: dict, submitted_at: float, exclude: set[str]) -> str | None:
        sent = datetime.fromtimestamp(submitted_at, UTC)
        return await find_lost_request(
            self.platform,
            endpoint,
            payload,
            sent,
            settle=self.settle,
            poll_interval=self.poll_interval,
            exclude=exclude,
        )
