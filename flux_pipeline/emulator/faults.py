"""Injected faults: an ASGI middleware that, by seeded chance, answers a call the way a bad day
at fal would. Each kind applies to the calls it names; probabilities are per call, except
`lost_image`, which the engine rolls per request. Platform API calls (under /v1) meet the same
429, 5xx and dropped connections as queue calls."""

from __future__ import annotations

import asyncio
import json
import random
from dataclasses import dataclass, fields

from ..fal.models import ENDPOINTS

RESERVED = ("run", "storage", "files", "api", "requests", "_emulator")


class DroppedConnection(Exception):
    """Raised inside the server so the connection closes without a complete response."""


@dataclass
class FaultConfig:
    rate_limit: float = 0.0
    """Queue and platform calls answer 429 with Retry-After."""
    server_error: float = 0.0
    """Queue and platform calls answer 500 or 503 (a submit is not queued, not billed)."""
    connection_reset: float = 0.0
    """Queue calls, platform calls and downloads: the connection drops before any response."""
    slow_status: float = 0.0
    """Status calls answer only after `slow_status_seconds`."""
    result_error: float = 0.0
    """Result calls answer 500 (the result stays available)."""
    corrupt_download: float = 0.0
    """File downloads serve truncated bytes."""
    slow_download: float = 0.0
    """File downloads start only after `slow_download_seconds` (a slow CDN)."""
    lost_submit: float = 0.0
    """Submit queues (and will bill) the request, then the response is lost."""
    lost_image: float = 0.0
    """Per request: billed, but its image files are gone (their download answers 404)."""
    retry_after_seconds: float = 0.2
    slow_status_seconds: float = 3.0
    slow_download_seconds: float = 1.0
    seed: int = 0

    @classmethod
    def kinds(cls) -> list[str]:
        """Every kind of fault (the probability fields)."""
        settings = ("retry_after_seconds", "slow_status_seconds", "slow_download_seconds", "seed")
        return [f.name for f in fields(cls) if f.name not in settings]

    @classmethod
    def spread(cls, total: float, **extra) -> FaultConfig:
        """`total` chance of some fault on every kind of call, split evenly among the kinds.
        `lost_image` is left out: a billed image that can never be stored is a loss no client
        can recover from, while a spread run must still catalog every billed image. So is
        `slow_download`, which only slows a run down."""
        spread = [kind for kind in cls.kinds() if kind not in ("lost_image", "slow_download")]
        return cls(**{kind: total / 4 for kind in spread}, **extra)  # a call meets 4 kinds

    def injected_kinds(self) -> list[str]:
        """The kinds this configuration may inject (probability above 0)."""
        return [kind for kind in self.kinds() if getattr(self, kind) > 0]

    def any(self) -> bool:
        return bool(self.injected_kinds())


def call_kind(method: str, path: str) -> str | None:
    parts = path.strip("/").split("/")
    if method == "GET" and parts[0] == "files":
        return "download"
    if parts[0] == "v1":
        return "platform"
    if parts[0] in RESERVED:
        return None
    if method == "POST" and "/".join(parts) in ENDPOINTS:
        return "submit"
    if "requests" in parts:
        tail = parts[parts.index("requests") + 2 :]
        return {
            (): "result",
            ("status",): "status",
            ("status", "stream"): "status",
            ("cancel",): "cancel",
        }.get(tuple(tail))
    return None


class FaultInjector:
    def __init__(self, app, config: FaultConfig):
        self.app, self.config = app, config
        self.rng = random.Random(config.seed)
        self.injected: dict[str, int] = {}

    def _roll(self, kind: str) -> bool:
        hit = self.rng.random() < getattr(self.config, kind)
        if hit:
            self.injected[kind] = self.injected.get(kind, 0) + 1
        return hit

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        kind = call_kind(scope["method"], scope["path"])
        if kind is None:
            return await self.app(scope, receive, send)
        if kind != "download":
            if self._roll("rate_limit"):
                return await _json(
                    send,
                    429,
                    {"detail": "Too many requests"},
                    [(b"retry-after", str(self.config.retry_after_seconds).encode())],
                )
            if self._roll("server_error"):
                status = self.rng.choice((500, 503))
                return await _json(
                    send, status, {"detail": "Injected server error", "error_type": "runner_disconnected"}
                )
        if self._roll("connection_reset"):
            return await _drop(send, kind)
        if kind == "status" and self._roll("slow_status"):
            await asyncio.sleep(self.config.slow_status_seconds)
        if kind == "result" and self._roll("result_error"):
            return await _json(send, 500, {"detail": "Injected result error"})
        if kind == "submit" and self._roll("lost_submit"):

            async def swallow(message):
                pass

            await self.app(scope, receive, swallow)
            return await _drop(send, "submit response lost after queueing")
        if kind == "download" and self._roll("corrupt_download"):
            return await self.app(scope, receive, _truncating(send))
        if kind == "download" and self.config.slow_download and self._roll("slow_download"):
            # rolled only when configured: other seeded fault sequences stay as they were
            await asyncio.sleep(self.config.slow_download_seconds)
        return await self.app(scope, receive, send)


async def _drop(send, why: str) -> None:
    """Close the connection mid-response. (Raising before a response starts would make uvicorn
    answer 500, which a client rightly retries: not a dropped connection.)"""
    await send(
        {
            "type": "http.response.start",
            "status": 200,
            "headers": [(b"content-type", b"application/json"), (b"content-length", b"4096")],
        }
    )
    await send({"type": "http.response.body", "body": b'{"status": ', "more_body": True})
    raise DroppedConnection(why)


async def _json(send, status: int, body: dict, headers: list | None = None) -> None:
    data = json.dumps(body).encode()
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(data)).encode()),
                *(headers or []),
            ],
        }
    )
    await send({"type": "http.response.body", "body": data})


def _truncating(send):
    """Serve the first half of the body with a matching Content-Length: a well-formed response
    carrying a broken file, which only content checks catch."""
    start: dict = {}

    async def wrapped(message):
        if message["type"] == "http.response.start":
            start.update(message)
            return
        half = message.get("body", b"")[: len(message.get("body", b"")) // 2]
        headers = [(k, v) for k, v in start["headers"] if k.lower() != b"content-length"]
        await send({**start, "headers": [*headers, (b"content-length", str(len(half)).encode())]})
        await send({"type": "http.response.body", "body": half})

    return wrapped
