"""fal's Platform APIs over an Emulator's history, served under /v1 (shared/fal-api/platform.md):
pricing and its estimate, billing events and usage (admin keys only: `EmulatorConfig.admin_keys`)
and an endpoint's request history. 401 without a key, 403 for a normal key on an admin API,
422 for a bad parameter.

Readings where fal's documentation is silent:
- Pricing lists only the endpoints the emulator serves; other ids are absent from `prices`.
- A billing event's timestamp is the time of billing; it is listed `billing_delay` seconds later.
  `output_units` are the billed megapixels (images when the unit is `image`).
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

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from ..fal.models import ENDPOINTS
from ..fal.platform import MAX_BILLING_PAGE, MAX_BILLING_RANGE, MAX_REQUESTS_PAGE, Timeframe
from ..fal.platform_models import BillingEvent, Price, RequestRecord, UsageBucket, UsageResult
from .engine import Billing, Emulator, QueuedRequest
from .platform_query import QueryError, choice, page, values, window

MAX_PRICING_PAGE = 50
MAX_USAGE_PAGE = 1000
DEFAULT_REQUESTS_PAGE = 50
AUTO_TIMEFRAMES = ((timedelta(hours=2), "minute"), (timedelta(days=3), "hour"), (timedelta(days=90), "day"))
STATUS_CLASSES = {"success": range(200, 300), "user_error": range(400, 500), "error": range(500, 600)}
ESTIMATE_QUANTITIES = {"unit_price": "unit_quantity", "historical_api_price": "call_quantity"}

Handler = Callable[[Request], Awaitable[dict]]


def _error(status: int, detail: str) -> JSONResponse:
    return JSONResponse({"detail": detail}, status_code=status)


def _stamp(seconds: float | None) -> datetime | None:
    return None if seconds is None else datetime.fromtimestamp(seconds, UTC)


def request_record(request: QueuedRequest) -> RequestRecord:
    ran = request.started_at is not None and request.ended_at is not None
    return RequestRecord(
        request_id=request.id,
        endpoint_id=request.endpoint,
        status_code=request.status_code,
        sent_at=_stamp(request.sent_at),
        started_at=_stamp(request.started_at),
        ended_at=_stamp(request.ended_at),
        duration=round(request.ended_at - request.started_at, 6) if ran else None,
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


def platform_routes(emulator: Emulator) -> list[Route]:
    """The routes, relative to the /v1 mount."""
    config = emulator.config

    def units(billed: Billing) -> int:
        return billed.images if config.unit == "image" else billed.megapixels

    def billing_event(billed: Billing) -> BillingEvent:
        price, discount = config.price_per_megapixel, config.percent_discount
        return BillingEvent(
            request_id=billed.request_id,
            endpoint_id=billed.endpoint,
            timestamp=_stamp(billed.billed_at),
            output_units=units(billed),
            unit_price=price,
            percent_discount=discount,
            cost_estimate_nano_usd=round(units(billed) * price * (1 - (discount or 0) / 100) * 1e9),
        )

    def billing_events(params, start: datetime, end: datetime) -> list[BillingEvent]:
        """The events listed by now, billed in [start, end), filtered by `endpoint_id` and `request_id`."""
        endpoints, ids = set(values(params, "endpoint_id")), set(values(params, "request_id"))
        listed_until = datetime.now(UTC).timestamp() - config.billing_delay
        events = [billing_event(b) for b in emulator.billing if b.billed_at <= listed_until]
        return [
            e
            for e in events
            if start <= e.timestamp < end
            and (not endpoints or e.endpoint_id in endpoints)
            and (not ids or e.request_id in ids)
        ]

    def totals(events: Iterable[BillingEvent]) -> list[dict]:
        by_endpoint: dict[str, list[BillingEvent]] = defaultdict(list)
        for event in events:
            by_endpoint[event.endpoint_id].append(event)
        return [
            UsageResult(
                endpoint_id=endpoint,
                unit=config.unit,
                quantity=sum(e.output_units for e in group),
                unit_price=config.price_per_megapixel,
                cost=round(sum(e.cost_usd for e in group), 9),
            ).model_dump(mode="json", exclude_none=True)
            for endpoint, group in sorted(by_endpoint.items())
        ]

    async def pricing(request: Request) -> dict:
        asked = values(request.query_params, "endpoint_id", required=True)
        prices = [
            Price(endpoint_id=endpoint, unit_price=config.price_per_megapixel, unit=config.unit)
            for endpoint in asked
            if endpoint in ENDPOINTS
        ]
        return page(
            request.query_params,
            [p.model_dump(mode="json") for p in prices],
            "prices",
            max_limit=MAX_PRICING_PAGE,
        )

    async def estimate(request: Request) -> dict:
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
            history = [units(b) for b in emulator.billing if b.endpoint == endpoint]
            per_call = sum(history) / len(history) if history else 1
            units_each = per_call if kind == "historical_api_price" else 1
            total += quantity * units_each * config.price_per_megapixel
        return {"estimate_type": kind, "total_cost": round(total, 9), "currency": "USD"}

    async def billing(request: Request) -> dict:
        start, end = window(request.query_params, MAX_BILLING_RANGE)
        events = [e.model_dump(mode="json") for e in billing_events(request.query_params, start, end)]
        return page(request.query_params, events, "billing_events", max_limit=MAX_BILLING_PAGE)

    async def usage(request: Request) -> dict:
        params = request.query_params
        zone = _zone(params.get("timezone", "UTC"))
        start, end = window(params)
        timeframe = choice(params, "timeframe", get_args(Timeframe)) or next(
            (name for span, name in AUTO_TIMEFRAMES if end - start <= span), "month"
        )
        expand = values(params, "expand") or ["time_series"]
        events = billing_events(params, start, end)
        buckets: dict[datetime, list[BillingEvent]] = defaultdict(list)
        for event in events:
            buckets[_bucket_start(event.timestamp.astimezone(zone), timeframe)].append(event)
        series = [
            UsageBucket(bucket=bucket, results=totals(group)).model_dump(mode="json", exclude_none=True)
            for bucket, group in sorted(buckets.items())
        ]
        body = page(params, series, "time_series", max_limit=MAX_USAGE_PAGE)
        return {**body, "summary": totals(events)} if "summary" in expand else body

    async def by_endpoint(request: Request) -> dict:
        params = request.query_params
        endpoints = set(values(params, "endpoint_id", required=True))
        start, end = window(params)
        ids = set(values(params, "request_id"))
        status = choice(params, "status", tuple(STATUS_CLASSES))
        sort_by = choice(params, "sort_by", ("ended_at", "duration"), "ended_at")
        records = [
            request_record(r)
            for r in list(emulator.requests.values())
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

    def route(path: str, handler: Handler, *, admin: bool = False, method: str = "GET") -> Route:
        async def endpoint(request: Request) -> Response:
            scheme, _, key = request.headers.get("authorization", "").partition(" ")
            if scheme not in ("Key", "Bearer") or not key:
                return _error(401, "Missing or malformed Authorization header")
            if admin and key not in config.admin_keys:
                return _error(403, "This API requires an admin API key")
            try:
                return JSONResponse(await handler(request))
            except QueryError as exc:
                return _error(422, str(exc))

        return Route(path, endpoint, methods=[method])

    return [
        route("/models/pricing", pricing),
        route("/models/pricing/estimate", estimate, method="POST"),
        route("/models/billing-events", billing, admin=True),
        route("/models/usage", usage, admin=True),
        route("/models/requests/by-endpoint", by_endpoint),
    ]
