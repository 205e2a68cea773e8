"""Response shapes of fal's Platform APIs (shared/fal-api/platform.md), read by FalPlatform and
written by the emulator. Unknown fields are kept; every datetime is timezone-aware UTC (a
timestamp without an offset is read as UTC) and is written as ISO 8601 with `Z`."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated, Any

from pydantic import AfterValidator, BaseModel, ConfigDict


def as_utc(value: datetime) -> datetime:
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


UtcDatetime = Annotated[datetime, AfterValidator(as_utc)]


class PlatformModel(BaseModel):
    model_config = ConfigDict(extra="allow", frozen=True)


class Price(PlatformModel):
    """Unit price of one endpoint; `unit` names the billing unit (`image`, `megapixels`, …)."""

    endpoint_id: str
    unit_price: float
    unit: str
    currency: str = "USD"


class BillingEvent(PlatformModel):
    """One billed request. `cost_estimate_nano_usd` is in billionths of a dollar, after discount."""

    request_id: str
    endpoint_id: str
    timestamp: UtcDatetime
    output_units: int | float
    unit_price: float
    percent_discount: float | None = None
    cost_estimate_nano_usd: int

    @property
    def cost_usd(self) -> float:
        return self.cost_estimate_nano_usd / 1e9


class RequestRecord(PlatformModel):
    """One request of an endpoint's history. A request that has not finished may carry null
    `started_at`, `ended_at`, `status_code` and `duration`; the payloads come only when asked."""

    request_id: str
    endpoint_id: str
    sent_at: UtcDatetime | None = None
    started_at: UtcDatetime | None = None
    ended_at: UtcDatetime | None = None
    status_code: int | None = None
    duration: float | None = None
    json_input: dict[str, Any] | None = None
    json_output: Any = None


class UsageResult(PlatformModel):
    endpoint_id: str
    unit: str
    quantity: int | float
    unit_price: float
    cost: float
    currency: str = "USD"
    auth_method: str | None = None


class UsageBucket(PlatformModel):
    """Usage of one time bucket (its start), one result per endpoint."""

    bucket: UtcDatetime
    results: list[UsageResult]
