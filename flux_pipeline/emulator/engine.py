"""The emulated model service behind the HTTP routes: queueing, runners, generation, billing.

Timing model: a request waits `queue_delay` seconds, then for a free runner (`runners`, None
meaning unlimited), then runs for `latency` seconds. NSFW rule: every image of a request whose
prompt contains the word "nsfw" (any case) is flagged. Failed and cancelled requests are not
billed; a request cancelled while in progress still runs to the end and is billed (the model
ignores the cancel signal, the conservative reading of protocol.md 3.6).

History: every queued request keeps its wall-clock sent, start and end times, status code and
input as received, and every billed request its billing time, for the Platform APIs
(emulator/platform.py). Under the `lost_image` fault a request is billed but its files are never
kept, so their download answers 404.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import heapq
import io
import json
import random
import re
import time
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime

import httpx
from PIL import Image
from pydantic import ValidationError

from ..fal.data_uri import decode_data_uri
from ..fal.models import (
    CONTENT_TYPES,
    IMAGE_UNIT,
    LIST_PRICES,
    REDUX,
    TEXT_TO_IMAGE,
    FluxInput,
    billed_megapixels,
    input_model,
    takes,
)
from ..fal.webhook_signatures import WebhookSigner
from .faults import FaultConfig, FaultDice
from .fetch import AddressRule, fetch_public, is_public
from .images import IMAGE_DETAILS, image_digest, render_image

NSFW_PATTERN = re.compile(r"\bnsfw\b", re.IGNORECASE)
ENHANCED_SUFFIX = ", highly detailed, dramatic lighting"
TEXT_TO_IMAGE_STEPS = 28


@dataclass
class EmulatorConfig:
    latency: float = 0.5
    queue_delay: float = 0.0
    runners: int | None = None
    random_seed: int = 0
    price_per_megapixel: float = 0.04
    """The unit price, per `unit`, of the two FLUX1.1 [pro] endpoints."""
    unit: str = "megapixels"
    """Their billing unit: `megapixels` (rounded up per image) or `image`."""
    prices: dict[str, tuple[float, str]] = field(default_factory=dict)
    """(unit price, unit) of other endpoints, over fal's list prices (fal.models.LIST_PRICES)."""
    percent_discount: float | None = None
    """The account's discount, applied to billing events."""
    billing_delay: float = 0.0
    """Seconds after billing before a billing event is listed."""
    admin_keys: tuple[str, ...] = ()
    """Keys that may call the admin-only Platform APIs (billing events, usage)."""
    megapixel_size: int = 1024 * 1024
    faults: FaultConfig = field(default_factory=FaultConfig)
    webhook_retry_seconds: float = 0.5
    webhook_attempts: int = 240
    webhook_user_id: str = "emulator-user"
    """The user id fal signs each webhook delivery with."""
    image_detail: str = "flat"
    """`flat` or `photo` (images.IMAGE_DETAILS): real-sized, photo-like files for benchmarks."""
    stands_in_for_fal: bool = False
    """Answer without the emulator's header (fal.endpoints.EMULATED_HEADER), so that what it bills
    counts as paid: a stand-in for fal in the tests of the money path."""
    echo_key: bool = False
    """A hostile fal: echo the caller's key in every response header, status log line, result
    and webhook body."""

    def __post_init__(self) -> None:
        if self.image_detail not in IMAGE_DETAILS:
            raise ValueError(
                f"image_detail must be one of {', '.join(IMAGE_DETAILS)}, not {self.image_detail!r}"
            )

    def price(self, endpoint: str) -> tuple[float, str]:
        """(unit price, billing unit) the account pays for `endpoint`."""
        if endpoint in (TEXT_TO_IMAGE, REDUX):
            return self.price_per_megapixel, self.unit
        return self.prices.get(endpoint, LIST_PRICES[endpoint])


@dataclass
class StoredFile:
    data: bytes
    content_type: str


@dataclass
class QueuedRequest:
    id: str
    endpoint: str
    payload: dict
    base_url: str
    submitted_at: float
    start_at: float
    finish_at: float
    steps: int
    webhook_url: str | None = None
    echo: str = ""
    """What the request echoes of its caller's key (EmulatorConfig.echo_key), else nothing."""
    done: asyncio.Event = field(default_factory=asyncio.Event)
    cancelled: bool = False
    status_code: int | None = None
    body: dict | None = None
    sent_at: float = field(default_factory=time.time)
    """Wall-clock seconds since the epoch, as are `started_at` and `ended_at`, both set when the
    request completes (`started_at` stays None for a request cancelled in the queue)."""
    started_at: float | None = None
    ended_at: float | None = None

    def state(self, now: float) -> str:
        if self.done.is_set():
            return "COMPLETED"
        return "IN_QUEUE" if now < self.start_at else "IN_PROGRESS"

    def steps_done(self, now: float) -> int:
        """Progress lines written by `now`: none while queued or once cancelled there."""
        if self.cancelled or now < self.start_at:
            return 0
        if self.done.is_set():
            return self.steps
        return min(self.steps, int((now - self.start_at) / self.run_time * self.steps))

    def logs(self, now: float, since: int = 0) -> list[dict]:
        """Cumulative progress lines up to `now`, or only those after the first `since` (what
        a status stream has not sent yet)."""
        return [
            {
                "message": f"step {k}/{self.steps}{self.echo}",
                "level": "INFO",
                "source": "USER",
                "timestamp": datetime.fromtimestamp(
                    self.start_at_wall + k * self.run_time / self.steps, UTC
                ).isoformat(),
            }
            for k in range(since + 1, self.steps_done(now) + 1)
        ]

    @property
    def run_time(self) -> float:
        return max(self.finish_at - self.start_at, 1e-9)

    @property
    def start_at_wall(self) -> float:
        return time.time() - (time.monotonic() - self.start_at)


@dataclass
class Billing:
    request_id: str
    endpoint: str
    images: int
    megapixels: int
    cost_usd: float
    unit: str
    unit_price: float
    billed_at: float = field(default_factory=time.time)

    @property
    def units(self) -> int:
        return self.images if self.unit == IMAGE_UNIT else self.megapixels


def _unprocessable(*errors: tuple[tuple, str, str]) -> tuple[int, dict]:
    """fal's 422 for invalid input: each error is (location in the body, message, type)."""
    return 422, {"detail": [{"loc": ["body", *loc], "msg": msg, "type": kind} for loc, msg, kind in errors]}


class Emulator:
    """State of one emulated fal account. Lives on the server's event loop.
    `source_address_allowed` judges the addresses a Redux `image_url` resolves to: public ones
    only (tests alone loosen it)."""

    def __init__(
        self, config: EmulatorConfig | None = None, *, source_address_allowed: AddressRule = is_public
    ):
        self.config = config or EmulatorConfig()
        self._source_address_allowed = source_address_allowed
        self.requests: dict[str, QueuedRequest] = {}
        self.files: dict[str, StoredFile] = {}
        self.billing: list[Billing] = []
        self.submitted = 0
        self.in_flight = 0
        self.webhooks_delivered = 0
        self.webhook_signer = WebhookSigner(self.config.webhook_user_id)
        self.jwks_served = 0
        self.faults_injected: dict[str, int] = {}
        self.calls: dict[str, int] = {}
        self.peak_in_flight = 0
        self._runner_free_at: list[float] = []
        self._rng = random.Random(self.config.random_seed)
        self._faults = FaultDice(self.config.faults, self.faults_injected)
        self._tasks: set[asyncio.Task] = set()

    # -- queue ---------------------------------------------------------------------------------

    def submit(
        self, endpoint: str, payload: dict, base_url: str, webhook_url: str | None = None, key: str = ""
    ) -> QueuedRequest:
        now = time.monotonic()
        start = now + self.config.queue_delay
        if self.config.runners and len(self._runner_free_at) >= self.config.runners:
            start = max(start, heapq.heappop(self._runner_free_at))
        finish = start + self.config.latency
        if self.config.runners:
            heapq.heappush(self._runner_free_at, finish)
        steps = payload.get("num_inference_steps") if takes(endpoint, "num_inference_steps") else None
        request = QueuedRequest(
            id=str(uuid.uuid4()),
            endpoint=endpoint,
            payload=payload,
            base_url=base_url.rstrip("/"),
            submitted_at=now,
            start_at=start,
            finish_at=finish,
            webhook_url=webhook_url,
            echo=f" (key {key})" if self.config.echo_key else "",
            steps=steps if isinstance(steps, int) and 0 < steps <= 50 else TEXT_TO_IMAGE_STEPS,
        )
        self.requests[request.id] = request
        self.submitted += 1
        self.in_flight += 1
        self.peak_in_flight = max(self.peak_in_flight, self.in_flight)
        self._spawn(self._execute(request))
        return request

    def _spawn(self, coroutine) -> None:
        task = asyncio.get_running_loop().create_task(coroutine)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def queue_position(self, request: QueuedRequest, now: float) -> int:
        return sum(
            1
            for other in self.requests.values()
            if other.start_at < request.start_at and other.state(now) == "IN_QUEUE" and not other.cancelled
        )

    def cancel(self, request: QueuedRequest) -> int:
        """HTTP status of a cancel: 202 requested, 400 already completed."""
        if request.done.is_set():
            return 400
        if request.state(time.monotonic()) == "IN_QUEUE":
            request.cancelled = True
            self._finish(request, 400, {"detail": "Request was cancelled"})
        return 202

    async def _execute(self, request: QueuedRequest) -> None:
        await asyncio.sleep(max(0.0, request.finish_at - time.monotonic()))
        if request.done.is_set():
            return  # cancelled while queued
        status_code, body = await self.generate(
            request.endpoint, request.payload, request.base_url, store=True, request_id=request.id
        )
        self._finish(request, status_code, body)

    def _finish(self, request: QueuedRequest, status_code: int, body: dict) -> None:
        request.status_code, request.body = status_code, body
        request.ended_at = time.time()
        if not request.cancelled:
            request.started_at = request.sent_at + (request.start_at - request.submitted_at)
        request.done.set()
        self.in_flight -= 1
        if request.webhook_url:
            self._spawn(self._deliver_webhook(request, request.webhook_url))

    async def _deliver_webhook(self, request: QueuedRequest, url: str) -> None:
        """POST the outcome to the submit's `fal_webhook` URL, retrying until it is taken
        (protocol.md 3.7: receivers must be idempotent)."""
        ok = request.status_code == 200
        body = {
            "request_id": request.id,
            "gateway_request_id": request.id,
            "status": "OK" if ok else "ERROR",
            "payload": request.body,
            "error": None if ok else f"Invalid status code: {request.status_code}",
        }
        if request.echo:
            body["echo"] = request.echo
        raw = json.dumps(body).encode()
        async with httpx.AsyncClient(timeout=15) as client:
            for _ in range(self.config.webhook_attempts):
                headers = {**self.webhook_signer.headers(request.id, raw), "content-type": "application/json"}
                try:
                    if (await client.post(url, content=raw, headers=headers)).is_success:
                        self.webhooks_delivered += 1
                        return
                except httpx.HTTPError:
                    pass
                await asyncio.sleep(self.config.webhook_retry_seconds)

    # -- the model -----------------------------------------------------------------------------

    async def generate(
        self, endpoint: str, payload: dict, base_url: str, *, store: bool, request_id: str
    ) -> tuple[int, dict]:
        """Run the model on one input: (HTTP status, body) as fal's result endpoint answers. A
        crash of the model is a 500, unbilled (billing is the model's last step)."""
        try:
            return await self._run_model(endpoint, payload, base_url, store=store, request_id=request_id)
        except Exception as exc:
            return 500, {"detail": f"Internal error: {type(exc).__name__}"}

    async def _run_model(
        self, endpoint: str, payload: dict, base_url: str, *, store: bool, request_id: str
    ) -> tuple[int, dict]:
        try:
            data = input_model(endpoint).model_validate(payload)
        except ValidationError as exc:
            return _unprocessable(*((err["loc"], err["msg"], err["type"]) for err in exc.errors()))
        source_sha = None
        if (image_url := getattr(data, "image_url", None)) is not None:
            try:
                source_sha = hashlib.sha256(await self._load_source(image_url)).hexdigest()
            except Exception as exc:  # any unreadable source is the caller's input error
                return _unprocessable((("image_url",), f"Could not load image: {exc}", "image_load_error"))
        seed = data.seed if data.seed is not None else self._rng.randrange(2**32)
        params = data.model_copy(update={"seed": seed, "sync_mode": False}).wire()
        sync = data.sync_mode or not store
        lost = not sync and self._faults.roll_if_configured("lost_image")
        width, height = data.size()
        blobs = await asyncio.to_thread(
            lambda: [
                render_image(
                    image_digest(params, i, source_sha),
                    width,
                    height,
                    data.output_format,
                    self.config.image_detail,
                )
                for i in range(data.num_images)
            ]
        )
        outputs = self._outputs(blobs, data, base_url, request_id, sync, lost)
        self._bill(request_id, endpoint, data.num_images, width, height)
        return 200, {
            "images": outputs,
            "timings": {"inference": self.config.latency},
            "seed": seed,
            "has_nsfw_concepts": [bool(NSFW_PATTERN.search(data.prompt))] * data.num_images,
            "prompt": data.prompt + ENHANCED_SUFFIX
            if getattr(data, "enhance_prompt", False)
            else data.prompt,
        }

    def _outputs(
        self, blobs: list[bytes], data: FluxInput, base_url: str, request_id: str, sync: bool, lost: bool
    ) -> list[dict]:
        """The result's `images`: data URIs when `sync`, else the URLs of files this emulator
        serves (whose bytes it does not keep when `lost`)."""
        content_type = CONTENT_TYPES[data.output_format]
        width, height = data.size()
        outputs = []
        for index, blob in enumerate(blobs):
            if sync:
                url = f"data:{content_type};base64,{base64.b64encode(blob).decode()}"
            else:
                file_id = f"{request_id}-{index}"
                if not lost:
                    self.store_file(file_id, blob, content_type)
                url = f"{base_url}/files/{file_id}/image.{data.output_format}"
            outputs.append({"url": url, "content_type": content_type, "width": width, "height": height})
        return outputs

    def _bill(self, request_id: str, endpoint: str, images: int, width: int, height: int) -> None:
        megapixels = billed_megapixels(width, height, self.config.megapixel_size) * images
        unit_price, unit = self.config.price(endpoint)
        cost = round((images if unit == IMAGE_UNIT else megapixels) * unit_price, 6)
        self.billing.append(Billing(request_id, endpoint, images, megapixels, cost, unit, unit_price))

    async def _load_source(self, image_url: str) -> bytes:
        """A Redux source: a data URI, a file this emulator serves, or a URL on a public address."""
        if image_url.startswith("data:"):
            blob, _ = decode_data_uri(image_url)
        elif (own := self.own_file(image_url)) is not None:
            blob = own.data
        else:
            blob = await fetch_public(image_url, allowed=self._source_address_allowed)
        with Image.open(io.BytesIO(blob)) as image:
            image.verify()
        return blob

    # -- storage -------------------------------------------------------------------------------

    def own_file(self, url: str) -> StoredFile | None:
        match = re.search(r"/files/([^/]+)/[^/]*$", url)
        return self.files.get(match.group(1)) if match else None

    def store_file(self, file_id: str, data: bytes, content_type: str) -> None:
        self.files[file_id] = StoredFile(data, content_type)

    # -- accounting ----------------------------------------------------------------------------

    def stats(self) -> dict:
        return {
            "requests_submitted": self.submitted,
            "peak_in_flight": self.peak_in_flight,
            "requests_billed": len(self.billing),
            "images_billed": sum(b.images for b in self.billing),
            "megapixels_billed": sum(b.megapixels for b in self.billing),
            "cost_usd": round(sum(b.cost_usd for b in self.billing), 6),
            "faults_injected": dict(self.faults_injected),
            "http_calls": dict(self.calls),
        }
