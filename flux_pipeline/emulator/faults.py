"""Injected faults: an ASGI middleware that, by seeded chance, answers a call the way a bad day
at fal would. Each kind applies to the calls it names; probabilities are per call, except
`lost_image`, which the engine rolls per request. Platform API calls (under /v1) meet the same
429, 5xx and dropped connections as queue calls."""

from __future__ import annotations

import asyncio
import dataclasses
import json
import random
from dataclasses import dataclass, fields
from typing import Any

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
        rates: dict[str, Any] = {kind: total / 4 for kind in spread}  # a call meets 4 kinds
        return dataclasses.replace(cls(**extra), **rates)

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


class FaultDice:
    """Seeded rolls for the faults of a FaultConfig, each hit counted by kind in `injected`."""

    def __init__(self, config: FaultConfig, injected: dict[str, int]):
        self.config, self.injected = config, injected
        self.rng = random.Random(config.seed)

    def roll(self, kind: str) -> bool:
        hit = self.rng.random() < getattr(self.config, kind)
        if hit:
            self.injected[kind] = self.injected.get(kind, 0) + 1
        return hit

    def roll_if_configured(self, kind: str) -> bool:
        """Roll only a kind whose probability is above 0, so that configuring it leaves the
        seeded sequences of the other kinds as they were."""
        return getattr(self.config, kind) > 0 and self.roll(kind)


class FaultInjector:
    """Rolls, in a fixed order, the faults that apply to each call (see `call_kind`)."""

    def __init__(self, app, config: FaultConfig, injected: dict[str, int]):
        self.app, self.config = app, config
        self.dice = FaultDice(config, injected)

    async def __call__(self, scope, receive, send):
        kind = call_kind(scope["method"], scope["path"]) if scope["type"] == "http" else None
        if kind is None:
            return await self.app(scope, receive, send)
        roll = self.dice.roll
        if kind != "download":
            if roll("rate_limit"):
                retry_after = (b"retry-after", str(self.config.retry_after_seconds).encode())
                return await _json(send, 429, {"detail": "Too many requests"}, retry_after)
            if roll("server_error"):
                status = self.dice.rng.choice((500, 503))
                body = {"detail": "Injected server error", "error_type": "runner_disconnected"}
                return await _json(send, status, body)
        if roll("connection_reset"):
            return await _drop(send, kind)
        if kind == "status" and roll("slow_status"):
            await asyncio.sleep(self.config.slow_status_seconds)
        if kind == "result" and roll("result_error"):
            return await _json(send, 500, {"detail": "Injected result error"})
        if kind == "submit" and roll("lost_submit"):

            async def swallow(message):
                pass

            await self.app(scope, receive, swallow)
            return await _drop(send, "submit response lost after queueing")
        if kind == "download" and roll("corrupt_download"):
            return await self.app(scope, receive, _truncating(send))
        if kind == "download" and self.dice.roll_if_configured("slow_download"):
            await asyncio.sleep(self.config.slow_download_seconds)
        return await self.app(scope, receive, send)


async def _drop(send, why: str) -> None:
    """Close the connection mid-response. (Raising before a response starts would make uvicorn
    answer 500, which a client rightly retries: not a dropped connection.)"""
    headers = [(b"content-type", b"application/json"), (b"content-length", b"4096")]
    await send({"type": "http.response.start", "status": 200, "headers": headers})
    await send({"type": "http.response.body", "body": b'{"status": ', "more_body": True})
    raise DroppedConnection(why)


async def _json(send, status: int, body: dict, *extra_headers: tuple[bytes, bytes]) -> None:
    data = json.dumps(body).encode()
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(data)).encode())]
    await send({"type": "http.response.start", "status": status, "headers": [*headers, *extra_headers]})
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
