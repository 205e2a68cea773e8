"""One redaction for everything that leaves the process. A configured fal key (and the secret
half of an `id:secret` key) is registered in `SECRETS` when a resource first uses it; from then
on every log record of every logger, at every level (httpx's and httpcore's DEBUG traces of
headers included), is redacted as it is made, and the fal client redacts what servers send back
(error bodies, status errors and logs, results, webhook bodies) before anything reads it."""

from __future__ import annotations

import json
import logging
import threading
from collections.abc import Iterable
from typing import Any

REDACTED = "[REDACTED]"


def secret_texts(key: str) -> tuple[str, ...]:
    """What of a key a server may echo: the key, and the secret half of an `id:secret` fal key."""
    _, _, secret = key.partition(":")
    return tuple(text for text in (key, secret) if text)


def redact(value: Any, secrets: Iterable[str]) -> Any:
    """`value` (text, or JSON made of lists and dicts) with every secret in it replaced."""
    if isinstance(value, str):
        for secret in secrets:
            value = value.replace(secret, REDACTED)
        return value
    if isinstance(value, list):
        return [redact(item, secrets) for item in value]
    if isinstance(value, dict):
        return {redact(name, secrets): redact(item, secrets) for name, item in value.items()}
    return value


def redact_json(raw: str | bytes, secrets: tuple[str, ...]) -> str | bytes:
    """A JSON text as it came, or re-encoded with its secrets redacted when it holds any (a
    substring test first, so the common case costs no parse)."""
    text = raw.decode("utf-8", "replace") if isinstance(raw, bytes) else raw
    if not any(secret in text for secret in secrets):
        return raw
    return json.dumps(redact(json.loads(text), secrets))


class Secrets:
    """The process's registered secrets (longest first, so a key is replaced before its half)."""

    def __init__(self):
        self._texts: tuple[str, ...] = ()
        self._lock = threading.Lock()

    def add(self, *keys: str | None) -> None:
        with self._lock:
            found = {*self._texts, *(text for key in keys if key for text in secret_texts(key))}
            self._texts = tuple(sorted(found, key=len, reverse=True))
        _install_log_redaction()

    @property
    def texts(self) -> tuple[str, ...]:
        return self._texts

    def redact(self, value: Any) -> Any:
        return redact(value, self._texts) if self._texts else value


SECRETS = Secrets()
_make_record = logging.getLogRecordFactory()
_exception_text = logging.Formatter().formatException


def _redacted_record(*args, **kwargs) -> logging.LogRecord:
    record = _make_record(*args, **kwargs)
    if not SECRETS.texts:
        return record
    try:
        message = record.getMessage()
    except (TypeError, ValueError):
        message = f"{record.msg} {record.args}"
    record.msg, record.args = SECRETS.redact(message), ()
    if record.exc_info and not record.exc_text:
        record.exc_text = SECRETS.redact(_exception_text(record.exc_info))
    return record


def _install_log_redaction() -> None:
    if logging.getLogRecordFactory() is not _redacted_record:
        logging.setLogRecordFactory(_redacted_record)
