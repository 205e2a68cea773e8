"""Receiving fal's webhooks. Every submit carries `fal_webhook=<base>/<token>`, the token naming
that submit attempt in the caller's ledger; fal POSTs the outcome there when the request ends
(protocol.md 3.7). It is how a request whose submit response was lost is found again. A delivery
reaches the ledger only once it is within MAX_BODY_BYTES, its signature verifies (fal/WEBHOOKS.md)
and its body names the request its signature does, with its secrets redacted; the ledger refuses
one whose request belongs to another submit attempt (409)."""

from __future__ import annotations

import json
import logging
from collections.abc import Callable

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from .http_server import BackgroundServer
from .redaction import SECRETS
from .types import WebhookConflict
from .webhook_signatures import REQUEST_ID, WebhookRejected, WebhookVerifier

LOG = logging.getLogger("flux_pipeline.fal.webhooks")
WebhookSink = Callable[[str, dict], None]
"""Called with (token, webhook body); must be idempotent (fal may deliver more than once), and
raises WebhookConflict for a request that belongs to another submit attempt."""
PATH = "/fal-webhook"
MAX_BODY_BYTES = 1024 * 1024
"""The largest delivery read (fal/WEBHOOKS.md): fal's deliveries carry the model's output, whose
files are URLs, not data; a FLUX result of 4 images is about 1.5 KB."""


class _Refused(Exception):
    def __init__(self, status: int, detail: str):
        super().__init__(detail)
        self.status, self.detail = status, detail


async def bounded_body(request: Request, limit: int = MAX_BODY_BYTES) -> bytes:
    """The body, read only while it stays within `limit` bytes: a larger `Content-Length`, or a
    stream (with or without one) that passes the limit, is refused with 413 before the rest is read."""
    declared = request.headers.get("content-length")
    if declared is not None and not declared.isdigit():
        raise _Refused(400, "Content-Length is not a number")
    if declared is not None and int(declared) > limit:
        raise _Refused(413, f"body of {declared} bytes is over the {limit}-byte limit")
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise _Refused(413, f"body is over the {limit}-byte limit")
        chunks.append(chunk)
    return b"".join(chunks)


async def _delivery(request: Request, verifier: WebhookVerifier) -> dict:
    """The delivery's body, once it is within the limit, signed by fal, fresh, and about the
    request its signature names."""
    raw = await bounded_body(request)
    try:
        await verifier.verify(request.headers, raw)
    except WebhookRejected as exc:
        raise _Refused(401, f"webhook rejected: {exc}") from None
    try:
        body = SECRETS.redact(json.loads(raw))
    except json.JSONDecodeError:
        raise _Refused(400, "body is not JSON") from None
    if not isinstance(body, dict) or not isinstance(body.get("request_id"), str):
        raise _Refused(400, "no request_id")
    if body["request_id"] != request.headers[REQUEST_ID]:
        raise _Refused(400, "the body's request_id is not the one its signature names")
    return body


def webhook_app(sink: WebhookSink, verifier: WebhookVerifier) -> Starlette:
    async def receive(request: Request) -> JSONResponse:
        sender = request.client.host if request.client else "?"
        try:
            body = await _delivery(request, verifier)
            sink(request.path_params["token"], body)
        except _Refused as refused:
            LOG.warning(f"rejected a webhook delivery from {sender}: {refused.detail}")
            return JSONResponse({"detail": refused.detail}, status_code=refused.status)
        except WebhookConflict as exc:
            LOG.warning(f"rejected a webhook delivery from {sender}: {exc}")
            return JSONResponse({"detail": str(exc)}, status_code=409)
        return JSONResponse({"ok": True})

    return Starlette(routes=[Route(PATH + "/{token}", receive, methods=["POST"])])


class WebhookReceiver(BackgroundServer):
    def __init__(
        self,
        sink: WebhookSink,
        verifier: WebhookVerifier,
        *,
        host: str,
        port: int,
        public_url: str | None = None,
    ):
        super().__init__(webhook_app(sink, verifier), host=host, port=port)
        self._public = public_url

    @property
    def base_url(self) -> str:
        """What fal is told to call: the public URL when this host is behind one."""
        return (self._public or self.url).rstrip("/") + PATH
