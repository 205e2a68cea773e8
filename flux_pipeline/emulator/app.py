"""fal's HTTP surface over an Emulator (layout of protocol.md section 10): the queue API at the
root, the sync API under /run, storage under /storage and /files (emulator/storage.py), the
Platform APIs under /v1 (emulator/platform.py), accounting at /_emulator."""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from collections.abc import Callable
from typing import Any

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Mount, Route
from starlette.types import ASGIApp

from ..fal.endpoints import EMULATED_HEADER, JWKS_PATH, AppId
from ..fal.models import ENDPOINTS
from .engine import Emulator, QueuedRequest
from .errors import ERROR_HANDLERS, ApiError, require_key
from .faults import FaultInjector, call_kind
from .platform import PlatformApi
from .storage import StorageApi, base_url

SSE_KEEPALIVE_SECONDS = 15.0
ERROR_TYPES = {400: "request_cancelled", 422: "validation_error", 500: "internal_error"}
"""The status's `error_type` of a request that completed with this result status (400: cancelled)."""
REQUEST_PREFIXES = ("/{owner}/{alias}/requests/{rid}", "/{owner}/{alias}/{endpoint_path:path}/requests/{rid}")


def _wants_logs(request: Request) -> bool:
    return (request.query_params.get("logs") or "").lower() in ("1", "true", "yes")


class CallCounter:
    """Counts HTTP calls by kind (submit, status, result, cancel, download) for the stats."""

    def __init__(self, app, calls: dict[str, int]):
        self.app, self.calls = app, calls

    async def __call__(self, scope, receive, send):
        if scope["type"] == "http" and (kind := call_kind(scope["method"], scope["path"])):
            self.calls[kind] = self.calls.get(kind, 0) + 1
        await self.app(scope, receive, send)


class ResponseHeader:
    """Adds a header to every HTTP response: `value(scope)` of the call it answers."""

    def __init__(self, app, name: str, value: Callable[[dict], bytes]):
        self.app, self.name, self.value = app, name.encode(), value

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        added = (self.name, self.value(scope))

        async def adding(message):
            if message["type"] == "http.response.start":
                message = {**message, "headers": [*message.get("headers", []), added]}
            await send(message)

        await self.app(scope, receive, adding)


def _authorization(scope: dict) -> bytes:
    return dict(scope.get("headers") or []).get(b"authorization", b"")


class QueueApi:
    """The queue API (submit; a request's status, status stream, result and cancel) and the
    sync API under /run."""

    def __init__(self, emulator: Emulator):
        self.emulator = emulator

    def routes(self) -> list[Route]:
        per_request = [
            ("/status/stream", self.status_stream, "GET"),
            ("/status", self.status, "GET"),
            ("/cancel", self.cancel, "PUT"),
            ("", self.result, "GET"),
        ]
        return [
            Route("/run/{app:path}", self.run_sync, methods=["POST"]),
            *(
                Route(prefix + suffix, handler, methods=[method])
                for prefix in REQUEST_PREFIXES
                for suffix, handler, method in per_request
            ),
            Route("/{app:path}", self.submit, methods=["POST"]),
        ]

    async def _model_call(self, request: Request) -> tuple[str, dict]:
        """(app id, input) of a submit or sync run; ApiError as fal would answer."""
        app_id = request.path_params["app"]
        if app_id not in ENDPOINTS:
            raise ApiError(404, f"Application {app_id!r} not found")
        require_key(request)
        try:
            payload = await request.json()
        except json.JSONDecodeError:
            raise ApiError(400, "Body is not valid JSON") from None
        return app_id, payload if isinstance(payload, dict) else {}

    def _lookup(self, request: Request) -> QueuedRequest:
        """The request a `…/requests/{rid}` path names, if it was submitted to that app."""
        require_key(request)
        found = self.emulator.requests.get(request.path_params["rid"])
        owner, alias = request.path_params["owner"], request.path_params["alias"]
        if found is None or AppId.parse(found.endpoint).requests_prefix != f"{owner}/{alias}/requests":
            raise ApiError(404, "Request not found")
        return found

    def _status_body(self, found: QueuedRequest, *, logs: list[dict] | None) -> dict:
        now = time.monotonic()
        state = found.state(now)
        root = f"{found.base_url}/{AppId.parse(found.endpoint).requests_prefix}/{found.id}"
        body: dict[str, Any] = {
            "status": state,
            "request_id": found.id,
            "response_url": root,
            "status_url": f"{root}/status",
            "cancel_url": f"{root}/cancel",
            "logs": logs,
        }
        if state == "IN_QUEUE":
            body["queue_position"] = self.emulator.queue_position(found, now)
        if state == "COMPLETED":
            body["metrics"] = {"inference_time": None if found.cancelled else self.emulator.config.latency}
            if (code := found.status_code) is not None and code != 200:
                body["error"] = f"Invalid status code: {code}"
                body["error_type"] = ERROR_TYPES[code]
        return body

    async def submit(self, request: Request) -> Response:
        app_id, payload = await self._model_call(request)
        webhook_url = request.query_params.get("fal_webhook")
        found = self.emulator.submit(
            app_id, payload, base_url(request), webhook_url=webhook_url, key=require_key(request)
        )
        return JSONResponse(self._status_body(found, logs=None), headers={"x-fal-request-id": found.id})

    async def status(self, request: Request) -> Response:
        found = self._lookup(request)
        logs = found.logs(time.monotonic()) if _wants_logs(request) else None
        body = self._status_body(found, logs=logs)
        return JSONResponse(body, status_code=200 if body["status"] == "COMPLETED" else 202)

    async def status_stream(self, request: Request) -> Response:
        found = self._lookup(request)
        events = self._status_events(found, want_logs=_wants_logs(request))
        return StreamingResponse(events, media_type="text/event-stream")

    async def _status_events(self, found: QueuedRequest, *, want_logs: bool):
        """A status body on each change of state or new progress step, until COMPLETED (then fal
        closes the stream); a keep-alive comment while a run streamed without logs is quiet."""
        sent_logs = 0
        last_state = None
        while True:
            now = time.monotonic()
            steps = found.steps_done(now)
            state = found.state(now)
            if state != last_state or steps > sent_logs:
                body = self._status_body(found, logs=found.logs(now, since=sent_logs) if want_logs else None)
                yield f"data: {json.dumps(body)}\n\n"
                sent_logs, last_state = steps, state
            if state == "COMPLETED":
                return
            wake = found.start_at if state == "IN_QUEUE" else now + found.run_time / found.steps
            timeout = min(max(wake - now, 0.005), SSE_KEEPALIVE_SECONDS)
            try:
                await asyncio.wait_for(found.done.wait(), timeout=timeout)
            except TimeoutError:
                if not want_logs and state == "IN_PROGRESS":
                    yield ": keep-alive\n\n"

    async def result(self, request: Request) -> Response:
        found = self._lookup(request)
        body, code = found.body, found.status_code
        if not found.done.is_set() or body is None or code is None:
            raise ApiError(400, "Request is still in progress")
        body = {**body, "echo": found.echo} if found.echo else body
        return JSONResponse(body, status_code=code, headers={"x-fal-request-id": found.id})

    async def cancel(self, request: Request) -> Response:
        code = self.emulator.cancel(self._lookup(request))
        body = {"status": "CANCELLATION_REQUESTED" if code == 202 else "ALREADY_COMPLETED"}
        return JSONResponse(body, status_code=code)

    async def run_sync(self, request: Request) -> Response:
        app_id, payload = await self._model_call(request)
        request_id = str(uuid.uuid4())
        config = self.emulator.config
        await asyncio.sleep(config.queue_delay + config.latency)
        code, body = await self.emulator.generate(
            app_id, payload, base_url(request), store=False, request_id=request_id
        )
        return JSONResponse(body, status_code=code, headers={"x-fal-request-id": request_id})


def create_app(emulator: Emulator):
    """The ASGI app serving `emulator`: routes, then injected faults and the key echo (when
    configured), the emulator's mark (unless it stands in for fal), the call counter outermost."""

    async def stats(request: Request) -> Response:
        return JSONResponse(emulator.stats())

    async def webhook_keys(request: Request) -> Response:
        emulator.jwks_served += 1
        return JSONResponse(emulator.webhook_signer.jwks())

    routes = [
        Mount("/v1", routes=PlatformApi(emulator).routes()),
        Route("/_emulator/stats", stats, methods=["GET"]),
        Route(JWKS_PATH, webhook_keys, methods=["GET"]),
        *StorageApi(emulator).routes(),
        *QueueApi(emulator).routes(),  # last: its submit route takes any other POST path
    ]
    app: ASGIApp = Starlette(routes=routes, exception_handlers=ERROR_HANDLERS)
    if emulator.config.faults.any():
        app = FaultInjector(app, emulator.config.faults, emulator.faults_injected)
    if emulator.config.echo_key:  # a hostile fal echoes the caller's key
        app = ResponseHeader(app, "x-echo", _authorization)
    if not emulator.config.stands_in_for_fal:  # its bills are list prices, not money
        app = ResponseHeader(app, EMULATED_HEADER, lambda scope: b"1")
    return CallCounter(app, emulator.calls)
