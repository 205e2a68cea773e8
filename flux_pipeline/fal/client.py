"""Async client for fal's queue protocol: submit, status (stream or poll), result, cancel, the
sync endpoint, storage upload and file download.

Only calls to fal's own API carry the `Authorization: Key …` header; media downloads and the
storage PUT go through a second client without it, so the key never reaches another host.
"""

from __future__ import annotations

import asyncio
import logging
import mimetypes
from collections.abc import Callable
from pathlib import Path
from typing import Any, Literal

import httpx
from httpx_sse import SSEError, aconnect_sse
from pydantic import BaseModel, ConfigDict

from .data_uri import decode_data_uri
from .endpoints import FalUrls
from .errors import FalApiError, FalError, FileTooLarge
from .models import FluxInput, FluxOutput, validate_input
from .redaction import redact_json
from .retries import LOG, RETRYABLE_STATUS, CallCounts, Retrier, RetryPolicy
from .transport import AiohttpTransport
from .types import FileToUpload

DEFAULT_URLS = FalUrls()
LogSink = Callable[[str, dict], None]
"""Called with (request_id, log entry) for every new queue log line."""


class QueueStatus(BaseModel):
    model_config = ConfigDict(extra="allow")
    status: Literal["IN_QUEUE", "IN_PROGRESS", "COMPLETED"]
    request_id: str | None = None
    queue_position: int | None = None
    logs: list[dict] | None = None
    error: str | None = None
    error_type: str | None = None
    metrics: dict[str, Any] | None = None


class FalClient:
    """One connection pool to fal. Use as `async with FalClient(...) as fal:`."""

    def __init__(
        self,
        key: str,
        urls: FalUrls = DEFAULT_URLS,
        *,
        poll_interval: float = 0.25,
        max_poll_interval: float = 2.0,
        status_updates: Literal["stream", "poll"] = "stream",
        http_timeout: float = 60.0,
        max_connections: int = 64,
        retry: RetryPolicy | None = None,
        call_counts: CallCounts | None = None,
        log: logging.Logger | logging.LoggerAdapter = LOG,
    ):
        self.urls = urls
        self.poll_interval = poll_interval
        self.max_poll_interval = max_poll_interval
        self.status_updates = status_updates
        limits = httpx.Limits(max_connections=max_connections, max_keepalive_connections=max_connections)
        timeout = httpx.Timeout(http_timeout)
        # no connection is made before the first call (AiohttpTransport opens its pool lazily)
        self._api = httpx.AsyncClient(
            headers={"Authorization": f"Key {key}", "User-Agent": "flux-pipeline"},
            timeout=timeout,
            transport=AiohttpTransport(limits),
        )
        self._public = httpx.AsyncClient(
            timeout=timeout, transport=AiohttpTransport(limits), follow_redirects=True
        )
        self._retrier = Retrier(retry, call_counts, log, keys=(key,))
        self.call_counts = self._retrier.call_counts

    def __repr__(self) -> str:
        return f"FalClient(urls={self.urls!r})"

    @property
    def max_attempts(self) -> int:
        """Tries per call; a submit left without a response (and certainly not queued) is sent
        again up to as many times."""
        return self._retrier.policy.max_attempts

    def _server_json(self, raw: str | bytes) -> str | bytes:
        """A JSON body from fal with any echo of the key redacted before it is parsed."""
        return redact_json(raw, self._retrier.secrets)

    def _output(self, response: httpx.Response) -> FluxOutput:
        """A result body, knowing whether an emulator answered it (its headers say)."""
        output = FluxOutput.model_validate_json(self._server_json(response.content))
        return output.answered_by(response.headers)

    async def __aenter__(self) -> FalClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self._api.aclose()
        await self._public.aclose()

    # -- plumbing ------------------------------------------------------------------------------

    async def _send(
        self, kind: str, method: str, url: str, *, api: bool = True, **kwargs: Any
    ) -> httpx.Response:
        return await self._retrier.send(self._api if api else self._public, kind, method, url, **kwargs)

    # -- queue protocol ------------------------------------------------------------------------

    async def submit(self, endpoint: str, data: FluxInput | dict, *, webhook_url: str | None = None) -> str:
        """Queue one request; returns fal's request id. Validates before sending. With
        `webhook_url`, fal also POSTs the outcome there, which finds a request whose submit
        response was lost (FalSubmitUncertain)."""
        payload = validate_input(endpoint, data).wire()
        params = {"fal_webhook": webhook_url} if webhook_url else None
        response = await self._send(
            "submit",
            "POST",
            self.urls.submit(endpoint),
            json=payload,
            params=params,
            endpoint=endpoint,
            idempotent=False,
        )
        return response.json()["request_id"]

    async def status(self, endpoint: str, request_id: str, *, logs: bool = False) -> QueueStatus:
        response = await self._send(
            "status",
            "GET",
            self.urls.request(endpoint, request_id, "/status"),
            params={"logs": int(logs)},
            endpoint=endpoint,
            request_id=request_id,
        )
        return QueueStatus.model_validate_json(self._server_json(response.content))

    async def wait(self, endpoint: str, request_id: str, on_log: LogSink | None = None) -> QueueStatus:
        """Block until the request is COMPLETED, forwarding new log lines to `on_log`."""
        attempt = 0
        while self.status_updates == "stream":
            attempt += 1
            try:
                return await self._wait_stream(endpoint, request_id, on_log)
            except SSEError:
                break  # the server does not stream status: poll instead
            except (httpx.TransportError, FalApiError) as exc:
                retryable = isinstance(exc, httpx.TransportError) or exc.status_code in RETRYABLE_STATUS
                reason = (
                    type(exc).__name__ if isinstance(exc, httpx.TransportError) else f"HTTP {exc.status_code}"
                )
                if not (retryable and await self._retrier.backoff("status", attempt, reason)):
                    raise
        return await self._wait_poll(endpoint, request_id, on_log)

    async def _wait_stream(self, endpoint: str, request_id: str, on_log: LogSink | None) -> QueueStatus:
        # Stream events carry only new log lines (protocol.md 3.4).
        self.call_counts.calls["status"] += 1
        url = self.urls.request(endpoint, request_id, "/status/stream")
        last: QueueStatus | None = None
        async with aconnect_sse(self._api, "GET", url, params={"logs": int(on_log is not None)}) as events:
            if events.response.is_error:
                await events.response.aread()
                raise self._retrier.error(events.response, endpoint=endpoint, request_id=request_id)
            async for event in events.aiter_sse():
                last = QueueStatus.model_validate_json(self._server_json(event.data))
                if on_log is not None:
                    for line in last.logs or []:
                        on_log(request_id, line)
                if last.status == "COMPLETED":
                    return last
        raise FalError(f"status stream of request {request_id} ended before COMPLETED")

    async def _wait_poll(self, endpoint: str, request_id: str, on_log: LogSink | None) -> QueueStatus:
        # Polled logs are cumulative: forward only the lines past those already seen.
        seen = 0
        delay = self.poll_interval
        while True:
            state = await self.status(endpoint, request_id, logs=on_log is not None)
            if on_log and state.logs:
                for line in state.logs[seen:]:
                    on_log(request_id, line)
                seen = max(seen, len(state.logs))
            if state.status == "COMPLETED":
                return state
            await asyncio.sleep(delay)
            delay = min(delay * 1.5, self.max_poll_interval)

    async def result(self, endpoint: str, request_id: str, *, failed: bool = False) -> FluxOutput:
        """The request's output. `failed`: its status said it ended in an error, so the result's
        error status is the request's own (FalApiError with `request_failed`), not retried."""
        try:
            response = await self._send(
                "result",
                "GET",
                self.urls.request(endpoint, request_id),
                endpoint=endpoint,
                request_id=request_id,
                retry_status=not failed,
            )
        except FalApiError as exc:
            exc.request_failed = failed
            raise
        return self._output(response)

    async def cancel(self, endpoint: str, request_id: str) -> bool:
        """Ask fal to cancel; False when the request had already completed."""
        try:
            await self._send(
                "cancel",
                "PUT",
                self.urls.request(endpoint, request_id, "/cancel"),
                endpoint=endpoint,
                request_id=request_id,
            )
        except FalApiError as exc:
            if exc.status_code == 400:
                return False
            raise
        return True

    async def subscribe(
        self, endpoint: str, data: FluxInput | dict, on_log: LogSink | None = None
    ) -> tuple[str, FluxOutput]:
        """Submit, wait and fetch the result: (request id, output)."""
        request_id = await self.submit(endpoint, data)
        await self.wait(endpoint, request_id, on_log)
        return request_id, await self.result(endpoint, request_id)

    async def run(self, endpoint: str, data: FluxInput | dict) -> FluxOutput:
        """The sync endpoint: one blocking call, no queue."""
        payload = validate_input(endpoint, data).wire()
        response = await self._send(
            "run",
            "POST",
            self.urls.run_sync(endpoint),
            json=payload,
            endpoint=endpoint,
            timeout=None,
            idempotent=False,
        )
        return self._output(response)

    # -- files ---------------------------------------------------------------------------------

    async def upload(self, data: bytes, content_type: str, file_name: str) -> str:
        """Put bytes in fal storage; returns the public URL a request can reference."""
        response = await self._send(
            "upload",
            "POST",
            self.urls.upload_initiate(),
            json={"content_type": content_type, "file_name": file_name},
        )
        target = response.json()
        await self._send(
            "upload",
            "PUT",
            target["upload_url"],
            api=False,
            content=data,
            headers={"Content-Type": content_type},
        )
        return target["file_url"]

    async def upload_file(self, path: str | FileToUpload) -> str:
        """Upload a file, its content type guessed from its name."""
        path = Path(path) if isinstance(path, str) else path
        content_type = mimetypes.guess_type(path.name)[0] or "application/octet-stream"
        return await self.upload(await asyncio.to_thread(path.read_bytes), content_type, path.name)

    async def download(self, url: str, *, max_bytes: int | None = None) -> tuple[bytes, str]:
        """Bytes and content type of a result file (https URL or sync_mode data URI). The body is
        streamed: past `max_bytes` (declared or received), reading stops with FileTooLarge."""
        if url.startswith("data:"):
            data, content_type = decode_data_uri(url)
            if max_bytes is not None and len(data) > max_bytes:
                raise FileTooLarge(url, len(data), max_bytes)
            return data, content_type
        body = BoundedBody(url, max_bytes)
        response = await self._send("download", "GET", url, api=False, read_body=body.read)
        content_type = response.headers.get("content-type", "application/octet-stream")
        return body.data, content_type.split(";")[0]


class BoundedBody:
    """Reads a response body into `data`, raising FileTooLarge as soon as it is known to exceed
    `max_bytes` (no limit when None): from Content-Length before reading, or while reading."""

    def __init__(self, url: str, max_bytes: int | None):
        self.url = url
        self.max_bytes = max_bytes
        self.data = b""

    async def read(self, response: httpx.Response) -> None:
        limit = self.max_bytes
        declared = response.headers.get("content-length", "")
        if limit is not None and declared.isdigit() and int(declared) > limit:
            raise FileTooLarge(self.url, int(declared), limit)
        chunks, size = [], 0
        async for chunk in response.aiter_bytes():
            size += len(chunk)
            if limit is not None and size > limit:
                raise FileTooLarge(self.url, size, limit)
            chunks.append(chunk)
        self.data = b"".join(chunks)
