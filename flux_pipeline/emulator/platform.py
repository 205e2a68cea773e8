"""fal's Platform APIs over an Emulator's history, served under /v1 (shared/fal-api/platform.md):
pricing and its estimate, billing events and usage (admin keys only: `EmulatorConfig.admin_keys`)
and an endpoint's request history. 401 without a key, 403 for a normal key on an admin API,
422 for a bad parameter.

Readings where fal's documentation is silent:
- Pricing lists only the endpoints the emulator serves; other ids are absent from `prices`.
- A billing event's timestamp is the time of billing; it is listed `billing_delay` seconds later.
  `output_units` are the billed megapixels (images for an endpoint billed per `image`); each
  endpoint has its own unit price and unit (`EmulatorConfig.price`).
- By-endpoint filters on `sent_at` and sorts ascending by `sort_by` with unfinished requests
  last, so an offset cursor stays valid over finished requests. A request still queued or
  running is listed with null `started_at`, `ended_at`, `status_code` and `duration`.
  Sync runs (/run) are billed but are not in this history.
- Usage costs are after the discount; the auto timeframe is minute up to 2 hours, hour up to 3
  days, day up to 90 days, else month; `time_series` is always sent and `summary` on request;
  auth methods are not tracked.
- The historical estimate prices a call at the endpoint's mean billed units (1 without history).
"""

from __future__ import annotations

import json
from collections import defaultdict
from collections.abc import Awaitable, Callable, Iterable
from datetime import UTC, datetime, timedelta, tzinfo
from typing import get_args
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from starlette.datastructures import QueryParams
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from ..fal.models import ENDPOINTS
from ..fal.platform import MAX_BILLING_PAGE, MAX_BILLING_RANGE, MAX_REQUESTS_PAGE, Timeframe
from ..fal.platform_models import BillingEvent, Price, RequestRecord, UsageBucket, UsageResult
from .engine import Billing, Emulator, QueuedRequest
from .errors import ApiError, require_key
from .platform_query import QueryError, choice, page, values, window

MAX_PRICING_PAGE = 50
MAX_USAGE_PAGE = 1000
DEFAULT_REQUESTS_PAGE = 50
AUTO_TIMEFRAMES = ((timedelta(hours=2), "minute"), (timedelta(days=3), "hour"), (timedelta(days=90), "day"))
STATUS_CLASSES = {"success": range(200, 300), "user_error": range(400, 500), "error": range(500, 600)}
ESTIMATE_QUANTITIES = {"unit_price": "unit_quantity", "historical_api_price": "call_quantity"}

Handler = Callable[[Request], Awaitable[dict]]


def _stamp(seconds: float | None) -> datetime | None:
    return None if seconds is None else datetime.fromtimestamp(seconds, UTC)


def request_record(request: QueuedRequest) -> RequestRecord:
    started, ended = request.started_at, request.ended_at
    return RequestRecord(
        request_id=request.id,
        endpoint_id=request.endpoint,
        status_code=request.status_code,
        sent_at=_stamp(request.sent_at),
        started_at=_stamp(request.started_at),
        ended_at=_stamp(request.ended_at),
        duration=round(ended - started, 6) if started is not None and ended is not None else None,
        json_input=request.payload,
        json_output=request.body,
    )


def _bucket_start(moment: datetime, timeframe: str) -> datetime:
    if timeframe == "minute":
        return moment.replace(second=0, microsecond=0)
    if timeframe == "hour":
        return moment.replace(minute=0, second=0, microsecond=0)
    day = moment.replace(hour=0, minute=0, second=0, microsecond=0)
    if timeframe == "week":
        return day - timedelta(days=day.weekday())
    return day.replace(day=1) if timeframe == "month" else day


def _zone(name: str) -> tzinfo:
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        raise QueryError(f"timezone: unknown time zone {name!r}") from None


class PlatformApi:
    def __init__(self, emulator: Emulator):
        self.emulator, self.config = emulator, emulator.config

    def routes(self) -> list[Route]:
        """The routes, relative to the /v1 mount."""
        return [
            self._route("/models/pricing", self.pricing),
            self._route("/models/pricing/estimate", self.estimate, method="POST"),
            self._route("/models/billing-events", self.billing, admin=True),
            self._route("/models/usage", self.usage, admin=True),
            self._route("/models/requests/by-endpoint", self.by_endpoint),
        ]

    def _route(self, path: str, handler: Handler, *, admin: bool = False, method: str = "GET") -> Route:
        """`handler`'s JSON body, after the 401 without a key and, on an admin API, the 403 for a
        key not in `admin_keys`."""

        async def endpoint(request: Request) -> JSONResponse:
            key = require_key(request, allow_empty=False)
            if admin and key not in self.config.admin_keys:
                raise ApiError(403, "This API requires an admin API key")
            return JSONResponse(await handler(request))

        return Route(path, endpoint, methods=[method])

    def _billing_event(self, billed: Billing) -> BillingEvent:
        price, discount = billed.unit_price, self.config.percent_discount
        return BillingEvent(
            request_id=billed.request_id,
            endpoint_id=billed.endpoint,
            timestamp=_stamp(billed.billed_at),
            output_units=billed.units,
            unit_price=price,
            percent_discount=discount,
            cost_estimate_nano_usd=round(billed.units * price * (1 - (discount or 0) / 100) * 1e9),
        )

    def _billing_events(self, params: QueryParams, start: datetime, end: datetime) -> list[BillingEvent]:
        """The events listed by now, billed in [start, end), filtered by `endpoint_id` and `request_id`."""
        endpoints, ids = set(values(params, "endpoint_id")), set(values(params, "request_id"))
        listed_until = datetime.now(UTC).timestamp() - self.config.billing_delay
        events = [self._billing_event(b) for b in self.emulator.billing if b.billed_at <= listed_until]
        return [
            e
            for e in events
            if start <= e.timestamp < end
            and (not endpoints or e.endpoint_id in endpoints)
            and (not ids or e.request_id in ids)
        ]

    def _totals(self, events: Iterable[BillingEvent]) -> list[dict]:
        by_endpoint: dict[str, list[BillingEvent]] = defaultdict(list)
        for event in events:
            by_endpoint[event.endpoint_id].append(event)
        return [
            UsageResult(
                endpoint_id=endpoint,
                unit=self.config.price(endpoint)[1],
                quantity=sum(e.output_units for e in group),
                unit_price=self.config.price(endpoint)[0],
                cost=round(sum(e.cost_usd for e in group), 9),
            ).model_dump(mode="json", exclude_none=True)
            for endpoint, group in sorted(by_endpoint.items())
        ]

    def _price_fields(self, endpoint: str) -> dict:
        unit_price, unit = self.config.price(endpoint)
        return {"unit_price": unit_price, "unit": unit}

    async def pricing(self, request: Request) -> dict:
        asked = values(request.query_params, "endpoint_id", required=True)
        prices = [Price(endpoint_id=e, **self._price_fields(e)) for e in asked if e in ENDPOINTS]
        dumped = [p.model_dump(mode="json") for p in prices]
        return page(request.query_params, dumped, "prices", max_limit=MAX_PRICING_PAGE)

    async def estimate(self, request: Request) -> dict:
        try:
            body = await request.json()
        except json.JSONDecodeError:
            raise QueryError("body: not JSON") from None
        kind = body.get("estimate_type") if isinstance(body, dict) else None
        if kind not in ESTIMATE_QUANTITIES or not isinstance(body.get("endpoints"), dict):
            raise QueryError(f"body: expected estimate_type ({', '.join(ESTIMATE_QUANTITIES)}) and endpoints")
        total = 0.0
        for endpoint, spec in body["endpoints"].items():
            quantity = spec.get(ESTIMATE_QUANTITIES[kind]) if isinstance(spec, dict) else None
            if endpoint not in ENDPOINTS or not isinstance(quantity, int | float) or quantity < 0:
                raise QueryError(f"endpoints.{endpoint}: unknown endpoint or bad {ESTIMATE_QUANTITIES[kind]}")
            history = [b.units for b in self.emulator.billing if b.endpoint == endpoint]
            per_call = sum(history) / len(history) if history else 1
            units_each = per_call if kind == "historical_api_price" else 1
            total += quantity * units_each * self.config.price(endpoint)[0]
        return {"estimate_type": kind, "total_cost": round(total, 9), "currency": "USD"}

    async def billing(self, request: Request) -> dict:
        start, end = window(request.query_params, MAX_BILLING_RANGE)
        events = self._billing_events(request.query_params, start, end)
        dumped = [e.model_dump(mode="json") for e in events]
        return page(request.query_params, dumped, "billing_events", max_limit=MAX_BILLING_PAGE)

    async def usage(self, request: Request) -> dict:
        params = request.query_params
        zone = _zone(params.get("timezone", "UTC"))
        start, end = window(params)
        timeframe = choice(params, "timeframe", get_args(Timeframe)) or next(
            (name for span, name in AUTO_TIMEFRAMES if end - start <= span), "month"
        )
        expand = values(params, "expand") or ["time_series"]
        events = self._billing_events(params, start, end)
        buckets: dict[datetime, list[BillingEvent]] = defaultdict(list)
        for event in events:
            buckets[_bucket_start(event.timestamp.astimezone(zone), timeframe)].append(event)
        series = [
            UsageBucket(bucket=bucket, results=self._totals(group)).model_dump(mode="json", exclude_none=True)
            for bucket, group in sorted(buckets.items())
        ]
        body = page(params, series, "time_series", max_limit=MAX_USAGE_PAGE)
        return {**body, "summary": self._totals(events)} if "summary" in expand else body

    async def by_endpoint(self, request: Request) -> dict:
        params = request.query_params
        endpoints = set(values(params, "endpoint_id", required=True))
        start, end = window(params)
        ids = set(values(params, "request_id"))
        status = choice(params, "status", tuple(STATUS_CLASSES))
        sort_by = choice(params, "sort_by", ("ended_at", "duration"), "ended_at")
        records = [
            request_record(r)
            for r in list(self.emulator.requests.values())
            if r.endpoint in endpoints
            and start.timestamp() <= r.sent_at < end.timestamp()
            and (not ids or r.id in ids)
        ]
        if status:
            records = [r for r in records if r.status_code in STATUS_CLASSES[status]]
        records.sort(key=lambda r: (getattr(r, sort_by) is None, getattr(r, sort_by) or 0, r.sent_at))
        exclude = None if "payloads" in values(params, "expand") else {"json_input", "json_output"}
        return page(
            params,
            [r.model_dump(mode="json", exclude=exclude) for r in records],
            "items",
            max_limit=MAX_REQUESTS_PAGE,
            default_limit=DEFAULT_REQUESTS_PAGE,
        )
