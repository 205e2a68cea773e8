"""fal's HTTP surface over an Emulator (layout of protocol.md section 10): the queue API at the
root, the sync API under /run, storage under /storage and /files, the Platform APIs under /v1
(emulator/platform.py), accounting at /_emulator."""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from datetime import UTC, datetime, timedelta

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Mount, Route

from ..fal.endpoints import AppId
from ..fal.models import ENDPOINTS
from .engine import Emulator, QueuedRequest
from .faults import FaultInjector, call_kind
from .platform import platform_routes

SSE_KEEPALIVE_SECONDS = 15.0


def _truthy(value: str | None) -> bool:
    return (value or "").lower() in ("1", "true", "yes")


def _error(status: int, detail: str, **extra) -> JSONResponse:
    return JSONResponse({"detail": detail, **extra}, status_code=status)


class CallCounter:
    """Counts HTTP calls by kind (submit, status, result, cancel, download) for the stats."""

    def __init__(self, app, calls: dict[str, int]):
        self.app, self.calls = app, calls

    async def __call__(self, scope, receive, send):
        if scope["type"] == "http" and (kind := call_kind(scope["method"], scope["path"])):
            self.calls[kind] = self.calls.get(kind, 0) + 1
        await self.app(scope, receive, send)


def create_app(emulator: Emulator):
    pending_uploads: dict[str, str] = {}

    def base_url(request: Request) -> str:
        return str(request.base_url).rstrip("/")

    def unauthorised(request: Request) -> Response | None:
        """fal's 401 when the call carries no `Key …` / `Bearer …` credentials."""
        if request.headers.get("authorization", "").startswith(("Key ", "Bearer ")):
            return None
        return _error(401, "Missing or malformed Authorization header")

    def lookup(request: Request) -> QueuedRequest | JSONResponse:
        if denied := unauthorised(request):
            return denied
        found = emulator.requests.get(request.path_params["rid"])
        owner, alias = request.path_params["owner"], request.path_params["alias"]
        if found is None or AppId.parse(found.endpoint).requests_prefix != f"{owner}/{alias}/requests":
            return _error(404, "Request not found")
        return found

    def status_body(found: QueuedRequest, *, logs: list[dict] | None) -> dict:
        now = time.monotonic()
        state = found.state(now)
        root = f"{found.base_url}/{AppId.parse(found.endpoint).requests_prefix}/{found.id}"
        body = {
            "status": state,
            "request_id": found.id,
            "response_url": root,
            "status_url": f"{root}/status",
            "cancel_url": f"{root}/cancel",
            "logs": logs,
        }
        if state == "IN_QUEUE":
            body["queue_position"] = emulator.queue_position(found, now)
        if state == "COMPLETED":
            body["metrics"] = {"inference_time": None if found.cancelled else emulator.config.latency}
            if found.status_code != 200:
                body["error"] = f"Invalid status code: {found.status_code}"
                body["error_type"] = "request_cancelled" if found.cancelled else "validation_error"
        return body

    async def model_call(request: Request) -> tuple[str, dict] | Response:
        """(app id, input) of a submit or sync run, or the error response fal would give."""
        app_id = request.path_params["app"]
        if app_id not in ENDPOINTS:
            return _error(404, f"Application {app_id!r} not found")
        if denied := unauthorised(request):
            return denied
        try:
            payload = await request.json()
        except json.JSONDecodeError:
            return _error(400, "Body is not valid JSON")
        return app_id, payload if isinstance(payload, dict) else {}

    async def submit(request: Request) -> Response:
        call = await model_call(request)
        if isinstance(call, Response):
            return call
        app_id, payload = call
        found = emulator.submit(
            app_id, payload, base_url(request), webhook_url=request.query_params.get("fal_webhook")
        )
        body = status_body(found, logs=None)
        return JSONResponse(body, headers={"x-fal-request-id": found.id})

    async def status(request: Request) -> Response:
        found = lookup(request)
        if isinstance(found, Response):
            return found
        want_logs = _truthy(request.query_params.get("logs"))
        body = status_body(found, logs=found.logs(time.monotonic()) if want_logs else None)
        return JSONResponse(body, status_code=200 if body["status"] == "COMPLETED" else 202)

    async def status_stream(request: Request) -> Response:
        found = lookup(request)
        if isinstance(found, Response):
            return found
        want_logs = _truthy(request.query_params.get("logs"))

        async def events():
            sent_logs = 0
            last_state = None
            while True:
                now = time.monotonic()
                steps = found.steps_done(now)
                state = found.state(now)
                if state != last_state or steps > sent_logs:
                    body = status_body(found, logs=found.logs(now, since=sent_logs) if want_logs else None)
                    yield f"data: {json.dumps(body)}\n\n"
                    sent_logs, last_state = steps, state
                if state == "COMPLETED":
                    return  # fal closes the stream after COMPLETED
                wake = (
                    found.start_at
                    if state == "IN_QUEUE"
                    else now + (found.finish_at - found.start_at) / found.steps
                )
                try:
                    await asyncio.wait_for(
                        found.done.wait(), timeout=min(max(wake - now, 0.005), SSE_KEEPALIVE_SECONDS)
                    )
                except TimeoutError:
                    if not want_logs and state == "IN_PROGRESS":
                        yield ": keep-alive\n\n"

        return StreamingResponse(events(), media_type="text/event-stream")

    async def result(request: Request) -> Response:
        found = lookup(request)
        if isinstance(found, Response):
            return found
        if not found.done.is_set():
            return _error(400, "Request is still in progress")
        return JSONResponse(found.body, status_code=found.status_code, headers={"x-fal-request-id": found.id})

    async def cancel(request: Request) -> Response:
        found = lookup(request)
        if isinstance(found, Response):
            return found
        code = emulator.cancel(found)
        body = {"status": "CANCELLATION_REQUESTED" if code == 202 else "ALREADY_COMPLETED"}
        return JSONResponse(body, status_code=code)

    async def run_sync(request: Request) -> Response:
        call = await model_call(request)
        if isinstance(call, Response):
            return call
        app_id, payload = call
        request_id = str(uuid.uuid4())
        await asyncio.sleep(emulator.config.queue_delay + emulator.config.latency)
        code, body = await emulator.generate(
            app_id, payload, base_url(request), store=False, request_id=request_id
        )
        return JSONResponse(body, status_code=code, headers={"x-fal-request-id": request_id})

    async def upload_initiate(request: Request) -> Response:
        if denied := unauthorised(request):
            return denied
        body = await request.json()
        file_id = f"upload-{uuid.uuid4()}"
        pending_uploads[file_id] = body.get("content_type") or "application/octet-stream"
        base = base_url(request)
        return JSONResponse(
            {
                "upload_url": f"{base}/storage/upload/put/{file_id}",
                "file_url": f"{base}/files/{file_id}/upload",
            }
        )

    async def upload_put(request: Request) -> Response:
        file_id = request.path_params["file_id"]
        if file_id not in pending_uploads:
            return _error(404, "Unknown upload")
        declared = pending_uploads.pop(file_id)
        content_type = request.headers.get("content-type") or declared
        emulator.store_file(file_id, await request.body(), content_type)
        return Response(status_code=200)

    async def storage_token(request: Request) -> Response:
        if denied := unauthorised(request):
            return denied
        expires = datetime.now(UTC) + timedelta(hours=1)
        return JSONResponse(
            {
                "token": uuid.uuid4().hex,
                "token_type": "Bearer",
                "base_url": base_url(request),
                "expires_at": expires.isoformat(),
            }
        )

    async def cdn_upload(request: Request) -> Response:
        if denied := unauthorised(request):
            return denied
        file_id = f"upload-{uuid.uuid4()}"
        emulator.store_file(
            file_id, await request.body(), request.headers.get("content-type", "application/octet-stream")
        )
        return JSONResponse({"access_url": f"{base_url(request)}/files/{file_id}/upload"})

    async def serve_file(request: Request) -> Response:
        stored = emulator.files.get(request.path_params["file_id"])
        if stored is None:
            return _error(404, "File not found")
        return Response(stored.data, media_type=stored.content_type)

    async def stats(request: Request) -> Response:
        return JSONResponse(emulator.stats())

    request_routes = [
        ("/status/stream", status_stream, ["GET"]),
        ("/status", status, ["GET"]),
        ("/cancel", cancel, ["PUT"]),
        ("", result, ["GET"]),
    ]
    routes = [
        Mount("/v1", routes=platform_routes(emulator)),
        Route("/_emulator/stats", stats, methods=["GET"]),
        Route("/storage/upload/initiate", upload_initiate, methods=["POST"]),
        Route("/storage/upload/put/{file_id}", upload_put, methods=["PUT"]),
        Route("/storage/auth/token", storage_token, methods=["POST"]),
        Route("/files/upload", cdn_upload, methods=["POST"]),
        Route("/files/{file_id}/{name}", serve_file, methods=["GET"]),
        Route("/run/{app:path}", run_sync, methods=["POST"]),
    ]
    for prefix in ("/{owner}/{alias}/requests/{rid}", "/{owner}/{alias}/{endpoint_path:path}/requests/{rid}"):
        routes += [
            Route(prefix + suffix, handler, methods=methods) for suffix, handler, methods in request_routes
        ]
    routes.append(Route("/{app:path}", submit, methods=["POST"]))
    app = Starlette(routes=routes)
    if emulator.config.faults.any():
        app = FaultInjector(app, emulator.config.faults)
        emulator.faults_injected = app.injected
    return CallCounter(app, emulator.calls)
