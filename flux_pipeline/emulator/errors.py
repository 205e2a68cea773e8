"""The emulated APIs' error answers: a handler raises ApiError and the app answers
`{"detail": …}` with its status (`ERROR_HANDLERS`)."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response


class ApiError(Exception):
    """An error fal answers with `status` and the JSON body `{"detail": detail}`."""

    def __init__(self, status: int, detail: str):
        super().__init__(detail)
        self.status, self.detail = status, detail


async def _error_response(request: Request, exc: ApiError) -> Response:
    return JSONResponse({"detail": exc.detail}, status_code=exc.status)


ERROR_HANDLERS: dict[Any, Callable[..., Awaitable[Response]]] = {ApiError: _error_response}


def require_key(request: Request, *, allow_empty: bool = True) -> str:
    """The key of a `Key …` or `Bearer …` Authorization header; fal's 401 when the call carries
    no such header (or, unless `allow_empty`, one with an empty key)."""
    scheme, separator, key = request.headers.get("authorization", "").partition(" ")
    if scheme not in ("Key", "Bearer") or not separator or not (key or allow_empty):
        raise ApiError(401, "Missing or malformed Authorization header")
    return key
