"""Receiving fal's webhooks. Every submit carries `fal_webhook=<base>/<token>`, the token naming
that submit attempt in the caller's ledger; fal POSTs the outcome there when the request ends
(protocol.md 3.7). It is how a request whose submit response was lost is found again. A delivery
reaches the ledger only once its signature verifies (fal/WEBHOOKS.md), with its secrets redacted."""

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
from .webhook_signatures import WebhookRejected, WebhookVerifier

LOG = logging.getLogger("flux_pipeline.fal.webhooks")
WebhookSink = Callable[[str, dict], None]
"""Called with (token, webhook body); must be idempotent: fal may deliver more than once."""
PATH = "/fal-webhook"


def webhook_app(sink: WebhookSink, verifier: WebhookVerifier) -> Starlette:
    async def receive(request: Request) -> JSONResponse:
        raw = await request.body()
        try:
            await verifier.verify(request.headers, raw)
        except WebhookRejected as exc:
            sender = request.client.host if request.client else "?"
            LOG.warning(f"rejected a webhook delivery from {sender}: {exc}")
            return JSONResponse({"detail": f"webhook rejected: {exc}"}, status_code=401)
        try:
            body = SECRETS.redact(json.loads(raw))
        except json.JSONDecodeError:
            return JSONResponse({"detail": "body is not JSON"}, status_code=400)
        if not isinstance(body, dict) or not isinstance(body.get("request_id"), str):
            return JSONResponse({"detail": "no request_id"}, status_code=400)
        sink(request.path_params["token"], body)
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
