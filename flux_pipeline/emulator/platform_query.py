"""Query parameters of fal's Platform APIs as the emulator reads them (the "Common rules" of
shared/fal-api/platform.md) and their opaque cursor pagination. A bad parameter raises
QueryError, fal's 422."""

from __future__ import annotations

import base64
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from typing import overload

from starlette.datastructures import QueryParams

from ..fal.platform import MAX_FILTER_VALUES
from ..fal.platform_models import as_utc
from .errors import ApiError

DEFAULT_RANGE = timedelta(hours=24)


class QueryError(ApiError):
    """A parameter fal would reject with 422."""

    def __init__(self, detail: str):
        super().__init__(422, detail)


def values(params: QueryParams, name: str, *, required: bool = False) -> list[str]:
    """A multi-value parameter, repeated and/or comma-joined: 1–50 values when present or
    required, [] when optional and absent."""
    found = [value.strip() for raw in params.getlist(name) for value in raw.split(",") if value.strip()]
    if name not in params and not required:
        return []
    if not 1 <= len(found) <= MAX_FILTER_VALUES:
        raise QueryError(f"{name}: expected 1 to {MAX_FILTER_VALUES} values, got {len(found)}")
    return found


@overload
def choice(params: QueryParams, name: str, options: Sequence[str], default: str) -> str: ...
@overload
def choice(params: QueryParams, name: str, options: Sequence[str], default: None = None) -> str | None: ...
def choice(params: QueryParams, name: str, options: Sequence[str], default: str | None = None) -> str | None:
    value = params.get(name, default)
    if value is not None and value not in options:
        raise QueryError(f"{name}: expected one of {', '.join(options)}, got {value!r}")
    return value


def _moment(params: QueryParams, name: str, default: datetime) -> datetime:
    if name not in params:
        return default
    try:
        return as_utc(datetime.fromisoformat(params[name]))
    except ValueError:
        raise QueryError(f"{name}: not an ISO 8601 date or time: {params[name]!r}") from None


def window(params: QueryParams, max_span: timedelta | None = None) -> tuple[datetime, datetime]:
    """[start, end) from `start` (default 24 hours ago) and the exclusive `end` (default now)."""
    now = datetime.now(UTC)
    start, end = _moment(params, "start", now - DEFAULT_RANGE), _moment(params, "end", now)
    if start > end:
        raise QueryError("start: after end")
    if max_span is not None and end - start > max_span:
        raise QueryError(f"the range from start to end exceeds {max_span.days} days")
    return start, end


def page(
    params: QueryParams, items: list, key: str, *, max_limit: int, default_limit: int | None = None
) -> dict:
    """The page of `items` that `cursor` and `limit` select, with the cursor of the next one."""
    try:
        limit = int(params.get("limit", default_limit or max_limit))
    except ValueError:
        raise QueryError("limit: not an integer") from None
    if not 1 <= limit <= max_limit:
        raise QueryError(f"limit: expected 1 to {max_limit}")
    offset = _offset(params["cursor"]) if "cursor" in params else 0
    more = offset + limit < len(items)
    return {
        key: items[offset : offset + limit],
        "next_cursor": _cursor(offset + limit) if more else None,
        "has_more": more,
    }


def _cursor(offset: int) -> str:
    return base64.urlsafe_b64encode(f"offset:{offset}".encode()).decode()


def _offset(cursor: str) -> int:
    try:
        tag, _, number = base64.urlsafe_b64decode(cursor.encode()).decode().partition(":")
        if tag == "offset" and int(number) >= 0:
            return int(number)
    except ValueError:  # binascii.Error and UnicodeDecodeError are ValueErrors
        pass
    raise QueryError("cursor: not a cursor this API returned")
