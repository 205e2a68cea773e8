"""Refuses what a page from elsewhere could make a reviewer's browser do: every request must name
this server as its Host (a DNS-rebinding page names its own), and every state-changing request must
come from this server's own origin (Origin header) with a JSON body (which a cross-site form cannot
send). A refused request gets a 403 saying why and changes nothing."""

from __future__ import annotations

from starlette.middleware.base import BaseHTTPMiddleware
from starlette.requests import Request
from starlette.responses import JSONResponse

SAFE_METHODS = {"GET", "HEAD", "OPTIONS"}
LOOPBACK_NAMES = ("127.0.0.1", "localhost")


def own_hosts(request: Request) -> set[str]:
    """`host:port` values that mean this server: the address it listens on, and the loopback names."""
    host, port = request.scope["server"]
    return {f"{name}:{port}" for name in {host, *LOOPBACK_NAMES}}


def refusal(request: Request) -> str | None:
    hosts = own_hosts(request)
    if request.headers.get("host") not in hosts:
        return f"Host {request.headers.get('host')!r} is not this review server"
    if request.method in SAFE_METHODS:
        return None
    origin = request.headers.get("origin")
    if origin not in {f"http://{host}" for host in hosts}:
        return f"cross-origin request refused: Origin {origin!r} is not this review server"
    if request.headers.get("content-type", "").split(";")[0].strip() != "application/json":
        return "a decision must be sent as application/json"
    return None


class SameOriginGuard(BaseHTTPMiddleware):
    async def dispatch(self, request: Request, call_next):
        if reason := refusal(request):
            return JSONResponse({"error": reason}, status_code=403)
        return await call_next(request)
