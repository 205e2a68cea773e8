"""Async client for fal's Platform APIs at `{base_url}/v1` (shared/fal-api/platform.md): prices,
cost estimates, billing events, usage and the request history of an endpoint.

Every call is idempotent, so 429, 5xx and transport errors are retried with the queue client's
backoff (honouring Retry-After); other errors raise FalApiError. Multi-value filters are sent in
chunks of at most 50, billing ranges in windows of at most 90 days, and every listing follows
`next_cursor` to its end. The key goes only into the Authorization header: never into repr,
errors or logs. Datetimes must be timezone-aware; they are sent as UTC ISO 8601 with `Z`.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterable, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any, Literal

import httpx

from .platform_models import BillingEvent, Price, RequestRecord, UsageBucket
from .retries import CallCounts, Retrier, RetryPolicy

MAX_FILTER_VALUES = 50
MAX_BILLING_RANGE = timedelta(days=90)
MAX_BILLING_PAGE = 10_000
MAX_REQUESTS_PAGE = 100
Timeframe = Literal["minute", "hour", "day", "week", "month"]


def iso_utc(moment: datetime) -> str:
    if moment.tzinfo is None:
        raise ValueError("platform datetimes must be timezone-aware")
    return moment.astimezone(UTC).isoformat().replace("+00:00", "Z")


def chunks(values: Iterable[str], size: int = MAX_FILTER_VALUES) -> list[list[str]]:
    values = list(dict.fromkeys(values))
    return [values[i : i + size] for i in range(0, len(values), size)]


def windows(
    start: datetime, end: datetime, span: timedelta = MAX_BILLING_RANGE
) -> list[tuple[datetime, datetime]]:
    """[start, end) cut into consecutive ranges of at most `span`."""
    cuts = []
    while start < end:
        cuts.append((start, min(start + span, end)))
        start = cuts[-1][1]
    return cuts


class FalPlatform:
    """One connection to fal's Platform APIs. Use as `async with FalPlatform(key) as platform:`.
    `call_counts` counts HTTP calls and retries by API (e.g. `billing-events`)."""

    def __init__(
        self,
        key: str,
        base_url: str = "https://api.fal.ai",
        *,
        http_timeout: float = 60.0,
        retry: RetryPolicy | None = None,
        call_counts: CallCounts | None = None,
    ):
        self.base_url = base_url.rstrip("/")
        self._http = httpx.AsyncClient(
            base_url=f"{self.base_url}/v1",
            timeout=httpx.Timeout(http_timeout),
            headers={"Authorization": f"Key {key}", "User-Agent": "flux-pipeline"},
        )
        self._retrier = Retrier(retry, call_counts, keys=(key,))
        self.call_counts = self._retrier.call_counts

    def __repr__(self) -> str:
        return f"FalPlatform(base_url={self.base_url!r})"

    async def __aenter__(self) -> FalPlatform:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self._http.aclose()

    # -- plumbing ------------------------------------------------------------------------------

    async def _call(self, method: str, path: str, **kwargs: Any) -> dict:
        """The JSON body of one call to `/v1{path}`, after retries."""
        kind = path.rsplit("/", 1)[-1]
        response = await self._retrier.send(self._http, kind, method, path, endpoint=f"/v1{path}", **kwargs)
        return response.json()

    async def _pages(self, path: str, items_key: str, params: dict[str, Any]) -> AsyncIterator[dict]:
        """Every item of a paginated listing, following `next_cursor` while `has_more`."""
        cursor = None
        while True:
            page = await self._call("GET", path, params={**params, **({"cursor": cursor} if cursor else {})})
            for item in page.get(items_key) or []:
                yield item
            cursor = page.get("next_cursor")
            if not (page.get("has_more") and cursor):
                return

    # -- the APIs ------------------------------------------------------------------------------

    async def prices(self, endpoint_ids: Iterable[str]) -> dict[str, Price]:
        """Unit price per endpoint id; an id fal does not price is absent."""
        prices = {}
        for ids in chunks(endpoint_ids):
            async for item in self._pages("/models/pricing", "prices", {"endpoint_id": ids}):
                price = Price.model_validate(item)
                prices[price.endpoint_id] = price
        return prices

    async def estimate(
        self,
        quantities: dict[str, float],
        estimate_type: Literal["unit_price", "historical_api_price"] = "unit_price",
    ) -> float:
        """Estimated total cost in USD: `quantities` are units per endpoint for `unit_price`,
        calls per endpoint for `historical_api_price`."""
        field = "unit_quantity" if estimate_type == "unit_price" else "call_quantity"
        body = {"estimate_type": estimate_type, "endpoints": {e: {field: q} for e, q in quantities.items()}}
        return float((await self._call("POST", "/models/pricing/estimate", json=body))["total_cost"])

    async def billing_events(
        self, request_ids: Iterable[str], *, start: datetime, end: datetime, limit: int = MAX_BILLING_PAGE
    ) -> list[BillingEvent]:
        """The billing events of these requests billed in [start, end). Needs an admin key."""
        events = []
        for ids in chunks(request_ids):
            for since, until in windows(start, end):
                params = {"request_id": ids, "start": iso_utc(since), "end": iso_utc(until), "limit": limit}
                events += [
                    BillingEvent.model_validate(item)
                    async for item in self._pages("/models/billing-events", "billing_events", params)
                ]
        return events

    async def requests_by_endpoint(
        self,
        endpoint_id: str,
        *,
        start: datetime,
        end: datetime | None = None,
        request_id: str | None = None,
        payloads: bool = True,
        limit: int = MAX_REQUESTS_PAGE,
    ) -> AsyncIterator[RequestRecord]:
        """The endpoint's requests sent in [start, end) (end: now), with their inputs and outputs
        when `payloads`. `limit` is the page size (at most 100)."""
        if not 1 <= limit <= MAX_REQUESTS_PAGE:
            raise ValueError(f"limit must be within 1..{MAX_REQUESTS_PAGE}")
        params = {
            "endpoint_id": endpoint_id,
            "start": iso_utc(start),
            "end": end and iso_utc(end),
            "limit": limit,
            "request_id": request_id,
            "expand": "payloads" if payloads else None,
        }
        params = {name: value for name, value in params.items() if value is not None}
        async for item in self._pages("/models/requests/by-endpoint", "items", params):
            yield RequestRecord.model_validate(item)

    async def usage(
        self,
        endpoint_ids: Sequence[str] = (),
        *,
        start: datetime | None = None,
        end: datetime | None = None,
        timeframe: Timeframe | None = None,
    ) -> list[UsageBucket]:
        """Billed usage per time bucket (fal picks the timeframe when None). Needs an admin key."""
        params: dict[str, Any] = {
            "endpoint_id": list(endpoint_ids),
            "timeframe": timeframe,
            "start": start and iso_utc(start),
            "end": end and iso_utc(end),
        }
        params = {name: value for name, value in params.items() if value}
        pages = self._pages("/models/usage", "time_series", params)
        return [UsageBucket.model_validate(item) async for item in pages]
