"""`data:` URIs: how fal returns files with sync_mode, and how a table may give a Redux image."""

from __future__ import annotations

import base64
import binascii

from .errors import FalError


def decode_data_uri(uri: str) -> tuple[bytes, str]:
    """Bytes and media type of a `data:` URI (sync_mode results)."""
    header, sep, payload = uri.partition(",")
    if not uri.startswith("data:") or not sep:
        raise FalError("not a data URI")
    media_type = header[5:].split(";")[0] or "text/plain"
    try:
        data = base64.b64decode(payload, validate=True) if header.endswith(";base64") else payload.encode()
    except binascii.Error as exc:
        raise FalError(f"malformed base64 in data URI: {exc}") from None
    return data, media_type
