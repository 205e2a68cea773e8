"""fal's webhook signatures (fal/WEBHOOKS.md): each delivery carries `X-Fal-Webhook-Request-Id`,
`-User-Id`, `-Timestamp` (Unix seconds) and `-Signature` (hex Ed25519) over
`{request_id}\\n{user_id}\\n{timestamp}\\n{sha256 hex of the raw body}`, verified against the
public keys fal publishes as a JWKS. The emulator signs with a `WebhookSigner`; receivers verify
with a `WebhookVerifier`."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import re
import time
from collections.abc import Callable, Mapping

import httpx
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

REQUEST_ID, USER_ID, TIMESTAMP, SIGNATURE = (
    f"x-fal-webhook-{name}" for name in ("request-id", "user-id", "timestamp", "signature")
)
SIGNATURE_FORM = re.compile(r"[0-9a-f]{128}")
"""An Ed25519 signature (64 bytes) as fal writes it; no other spelling of the same bytes is taken."""
TOLERANCE_SECONDS = 300.0
REFRESH_INTERVAL_SECONDS = 60.0
"""Least time between two JWKS fetches that a signature no cached key verifies may cause."""


class WebhookRejected(Exception):
    """A delivery that is not a fresh one signed by fal; its reason names what failed."""


def signed_message(request_id: str, user_id: str, timestamp: str, body: bytes) -> bytes:
    return f"{request_id}\n{user_id}\n{timestamp}\n{hashlib.sha256(body).hexdigest()}".encode()


def _b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _public_key(jwk: Mapping) -> Ed25519PublicKey | None:
    if jwk.get("kty") != "OKP" or jwk.get("crv") != "Ed25519" or not isinstance(jwk.get("x"), str):
        return None
    raw = base64.urlsafe_b64decode(jwk["x"] + "=" * (-len(jwk["x"]) % 4))
    return Ed25519PublicKey.from_public_bytes(raw) if len(raw) == 32 else None


class WebhookSigner:
    """Signs deliveries as fal does, with keys it publishes as a JWKS; `rotate` starts a new key
    (the JWKS then lists only it)."""

    def __init__(self, user_id: str):
        self.user_id = user_id
        self._generation = 0
        self.rotate()

    def rotate(self) -> None:
        self._generation += 1
        self._key = Ed25519PrivateKey.generate()
        self.key_id = f"emulator-{self._generation}"

    def jwks(self) -> dict:
        raw = self._key.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)
        return {"keys": [{"kty": "OKP", "crv": "Ed25519", "kid": self.key_id, "x": _b64url(raw)}]}

    def headers(self, request_id: str, body: bytes, timestamp: int | None = None) -> dict[str, str]:
        stamp = str(int(time.time()) if timestamp is None else timestamp)
        signature = self._key.sign(signed_message(request_id, self.user_id, stamp, body))
        return {REQUEST_ID: request_id, USER_ID: self.user_id, TIMESTAMP: stamp, SIGNATURE: signature.hex()}


class WebhookVerifier:
    """Verifies deliveries against fal's JWKS, fetched on first use and cached; a signature no
    cached key verifies refetches it (at most once per `refresh_interval`), which follows a key
    rotation. A delivery already accepted is refused as replayed while its timestamp is fresh
    (afterwards it is refused as stale)."""

    def __init__(
        self,
        jwks_url: str,
        *,
        tolerance: float = TOLERANCE_SECONDS,
        refresh_interval: float = REFRESH_INTERVAL_SECONDS,
        clock: Callable[[], float] = time.time,
    ):
        self.jwks_url, self.tolerance, self.refresh_interval, self._clock = (
            jwks_url,
            tolerance,
            refresh_interval,
            clock,
        )
        self._keys: list[Ed25519PublicKey] = []
        self._fetched_at: float | None = None
        self._fetching = asyncio.Lock()
        self._accepted: dict[bytes, float] = {}
        """Signature (its bytes: one delivery however its hex is written) → when it stops being fresh."""
        self.fetches = 0

    async def verify(self, headers: Mapping[str, str], body: bytes) -> None:
        """Returns when the delivery is fresh, signed by a key of fal's and not seen before;
        else raises WebhookRejected."""
        missing = [name for name in (REQUEST_ID, USER_ID, TIMESTAMP, SIGNATURE) if not headers.get(name)]
        if missing:
            raise WebhookRejected(f"unsigned: no {', '.join(missing)} header")
        stamp, signature_hex = headers[TIMESTAMP], headers[SIGNATURE]
        now = self._clock()
        if not stamp.isdigit() or abs(now - int(stamp)) > self.tolerance:
            raise WebhookRejected(f"stale: timestamp {stamp[:20]!r} is over {self.tolerance:.0f} s from now")
        if not SIGNATURE_FORM.fullmatch(signature_hex):
            raise WebhookRejected("mis-signed: the signature is not 128 lower-case hex digits as fal sends")
        signature = bytes.fromhex(signature_hex)
        message = signed_message(headers[REQUEST_ID], headers[USER_ID], stamp, body)
        if not await self._verified(signature, message):
            raise WebhookRejected("mis-signed: no key in fal's JWKS verifies the signature")
        self._accepted = {seen: until for seen, until in self._accepted.items() if until > now}
        if signature in self._accepted:
            raise WebhookRejected("replayed: this signed delivery was already accepted")
        self._accepted[signature] = int(stamp) + self.tolerance

    async def _verified(self, signature: bytes, message: bytes) -> bool:
        if self._matches(signature, message):
            return True
        async with self._fetching:  # deliveries arriving together wait for one fetch
            if self._matches(signature, message):
                return True  # the keys another delivery fetched meanwhile
            if self._fetched_at is not None and self._clock() - self._fetched_at < self.refresh_interval:
                return False
            await self._fetch()
        return self._matches(signature, message)

    def _matches(self, signature: bytes, message: bytes) -> bool:
        for key in self._keys:
            try:
                key.verify(signature, message)
                return True
            except InvalidSignature:
                continue
        return False

    async def _fetch(self) -> None:
        self._fetched_at = self._clock()
        self.fetches += 1
        try:
            async with httpx.AsyncClient(timeout=10) as client:
                response = await client.get(self.jwks_url)
                response.raise_for_status()
                self._keys = [key for key in map(_public_key, response.json()["keys"]) if key]
        except (httpx.HTTPError, ValueError, TypeError, KeyError, AttributeError) as exc:
            raise WebhookRejected(f"fal's JWKS could not be read ({type(exc).__name__})") from None
