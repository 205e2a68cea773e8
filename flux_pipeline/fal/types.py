"""What the batch runner takes and gives: a request to make for a prompt table row, its outcome,
and what it needs of a ledger and of fal's request history."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Protocol

from .models import FluxInput, FluxOutput

DEFAULT_MAX_FILE_BYTES = 50 * 1024 * 1024
"""The largest result file a batch accepts unless told otherwise."""


class FileToUpload(Protocol):
    """A file put in fal storage: a pathlib path, or a universal-pathlib one (object storage)."""

    @property
    def name(self) -> str: ...

    def read_bytes(self) -> bytes: ...


@dataclass(frozen=True)
class LostSubmit:
    """A submit attempt whose response never arrived: fal may have queued (and will bill) it."""

    token: str
    """Names the attempt in its webhook URL."""
    payload: dict
    """The exact input sent, to find it in fal's request history."""
    submitted_at: float
    """When it was sent (seconds since the epoch)."""


@dataclass(frozen=True)
class GenerationRequest:
    """One request to make for a prompt table row."""

    prompt_id: str
    endpoint: str
    input: FluxInput
    fingerprint: str = ""
    """The caller's identity of the input, recorded by the ledger (see dataset.money.ledger)."""
    request_id: str | None = None
    """Set to resume a request already submitted to fal instead of submitting it again."""
    lost: LostSubmit | None = None
    """A previous submit attempt whose response was lost: look for it before submitting again."""
    upload_path: str | FileToUpload | None = None
    """A file to put in fal storage and send as the input's image_url (Redux)."""
    origin: Any = None
    """The caller's own data about the request (e.g. its lineage), handed back with its outcome."""


@dataclass(frozen=True)
class GeneratedFile:
    data: bytes
    content_type: str
    url: str


@dataclass
class Generation:
    request: GenerationRequest
    request_id: str
    output: FluxOutput
    files: list[GeneratedFile]
    latency_s: float
    logs: list[dict] = field(default_factory=list)
    """fal's log lines for the request."""


@dataclass
class GenerationFailure:
    request: GenerationRequest
    request_id: str | None
    error: str
    status_code: int | None = None
    field_errors: list[tuple[str, str]] = field(default_factory=list)
    logs: list[dict] = field(default_factory=list)
    request_failed: bool = False
    """fal completed the request with an error of its own: final, and not billed."""
    output: FluxOutput | None = None
    """The result, when fal completed the request (and so billed it) but its files failed."""


Outcome = Generation | GenerationFailure


class WebhookConflict(Exception):
    """A webhook delivery whose request belongs to another submit attempt than the one it was
    posted for: it is refused, so that no request is ever attached to a second row."""


class Ledger(Protocol):
    """What the batch runner records of each submit, so that none is ever paid for twice."""

    def submitting(self, request: GenerationRequest, payload: dict) -> str:
        """Record the intent to submit `payload` (durably) and return the attempt's token."""

    def submitted(self, request: GenerationRequest, request_id: str) -> None:
        """Record the request id fal gave the submit."""

    async def find_lost(self, request: GenerationRequest, token: str) -> str | None:
        """The request id of a submit attempt whose response was lost, once known (else None)."""

    def webhook_received(self, token: str, body: dict) -> None:
        """fal's webhook for the submit attempt `token` (may repeat); WebhookConflict when its
        request is another attempt's."""

    def known_request_ids(self, endpoint: str) -> set[str]:
        """Request ids already attributed to some row (never a lost submit's)."""


class RequestHistory(Protocol):
    async def find(self, endpoint: str, payload: dict, submitted_at: float, exclude: set[str]) -> str | None:
        """The request fal queued for a lost submit of `payload`, or None once fal certainly has
        none; raises AmbiguousLostRequest when more than one matches."""
