"""Errors raised by the fal client. None of them ever carries request headers (the key), nor a
secret echoed back in a server's error body: those are redacted as the error is made."""

from __future__ import annotations

from typing import Any

from .redaction import redact


class FalError(Exception):
    """Base of every error the fal client raises."""


class FalInputError(FalError, ValueError):
    """Input rejected before sending: names each offending field."""

    def __init__(self, endpoint: str, errors: list[tuple[str, str]]):
        self.endpoint = endpoint
        self.errors = errors
        fields = "; ".join(f"{field}: {msg}" for field, msg in errors)
        super().__init__(f"invalid input for {endpoint}: {fields}")

    @classmethod
    def from_pydantic(cls, endpoint: str, exc: Any) -> FalInputError:
        return cls(
            endpoint, [(".".join(str(p) for p in e["loc"]) or "input", e["msg"]) for e in exc.errors()]
        )


class FalApiError(FalError):
    """fal answered with an error status (after any retries)."""

    def __init__(
        self,
        status_code: int,
        message: str,
        *,
        endpoint: str | None = None,
        request_id: str | None = None,
        error_type: str | None = None,
        detail: Any = None,
    ):
        self.status_code = status_code
        self.message = message
        self.endpoint = endpoint
        self.request_id = request_id
        self.error_type = error_type
        self.detail = detail
        self.request_failed = False
        """Set when fal completed the request itself with an error (its status said so): a final
        answer, and not billed (platform.md: fal bills only successful outputs)."""
        where = f" for {endpoint}" if endpoint else ""
        rid = f" (request {request_id})" if request_id else ""
        super().__init__(f"fal answered {status_code}{where}{rid}: {message}")

    @property
    def field_errors(self) -> list[tuple[str, str]]:
        """(field, message) pairs of a 422 validation body; the `body` prefix is dropped."""
        if not isinstance(self.detail, list):
            return []
        return [(_field(item), str(item.get("msg", ""))) for item in self.detail]

    @classmethod
    def from_response(
        cls,
        response: Any,
        *,
        endpoint: str | None = None,
        request_id: str | None = None,
        secrets: tuple[str, ...] = (),
    ) -> FalApiError:
        """The error a response's status and body describe, every text from the server with
        `secrets` redacted (a server may echo the key it was sent)."""
        detail: Any = None
        error_type = response.headers.get("x-fal-error-type")
        try:
            body = redact(response.json(), secrets)
        except ValueError:
            body = None
        if isinstance(body, dict):
            detail = body.get("detail", body)
            error_type = body.get("error_type") or error_type
        text = redact(response.text, secrets)[:500] or response.reason_phrase
        return cls(
            response.status_code,
            _describe(detail) if detail is not None else text,
            endpoint=endpoint,
            request_id=request_id or redact(response.headers.get("x-fal-request-id"), secrets),
            error_type=redact(error_type, secrets),
            detail=detail,
        )


class FalSubmitUncertain(FalError):
    """A submit may have reached fal (and be billed) but its response was lost, so its request
    id is unknown. Submitting again could pay twice; the request must be found another way."""

    def __init__(self, endpoint: str, cause: Exception):
        self.endpoint = endpoint
        super().__init__(
            f"submit to {endpoint} may have been queued but its response was lost ({type(cause).__name__})"
        )


class AmbiguousLostRequest(FalError):
    """More than one request in fal's history matches a submit whose response was lost, so
    which one is ours cannot be told."""

    def __init__(self, endpoint: str, matches: int):
        self.endpoint = endpoint
        self.matches = matches
        super().__init__(
            f"{matches} requests to {endpoint} match the lost submit's input: cannot tell which one is ours"
        )


class FileTooLarge(FalError):
    """A result file is larger than the caller accepts; reading it stopped at the limit."""

    def __init__(self, url: str, size: int, max_bytes: int):
        self.size = size
        self.max_bytes = max_bytes
        where = "a data URI" if url.startswith("data:") else url
        super().__init__(f"{where}: {size} bytes or more exceeds the {max_bytes}-byte limit")


class FalTimeoutError(FalError):
    """A request did not complete within the configured deadline (it was cancelled)."""


def _field(item: dict) -> str:
    """The field a validation error names, without the `body` prefix."""
    return ".".join(str(p) for p in item.get("loc", []) if p != "body") or "input"


def _describe(detail: Any) -> str:
    if not isinstance(detail, list):
        return str(detail)
    return "; ".join(f"{_field(i)}: {i.get('msg', '')}" if isinstance(i, dict) else str(i) for i in detail)
