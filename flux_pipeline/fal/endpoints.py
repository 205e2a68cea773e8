"""Where each call of fal's queue protocol goes (shared/fal-api/protocol.md, section 2)."""

from __future__ import annotations

from dataclasses import dataclass

NAMESPACES = ("workflows", "comfy")
JWKS_PATH = "/.well-known/jwks.json"
JWKS_URL = f"https://rest.alpha.fal.ai{JWKS_PATH}"
"""Where fal publishes the public keys that sign its webhooks (fal/WEBHOOKS.md)."""
EMULATED_HEADER = "x-flux-emulated"
"""Every response of the bundled emulator carries it (`1`), wherever it is served: what it bills is
its list prices, not money. fal never sends it. The client records it with each result, and the
ledger with each billed request, so that spend counts only what a paying backend billed."""


@dataclass(frozen=True)
class AppId:
    owner: str
    alias: str
    path: str | None = None
    namespace: str | None = None

    @classmethod
    def parse(cls, endpoint_id: str) -> AppId:
        parts = endpoint_id.strip("/").split("/")
        namespace = None
        if parts[0] in NAMESPACES:
            namespace, parts = parts[0], parts[1:]
        if len(parts) < 2 or not all(parts[:2]):
            raise ValueError(f"Invalid app id {endpoint_id!r}: expected owner/alias[/path]")
        return cls(parts[0], parts[1], "/".join(parts[2:]) or None, namespace)

    @property
    def full(self) -> str:
        """The submit / run path: the whole endpoint id."""
        return "/".join(p for p in (self.namespace, self.owner, self.alias, self.path) if p)

    @property
    def requests_prefix(self) -> str:
        """Status, result and cancel drop the endpoint's path: `owner/alias/requests`."""
        return "/".join(p for p in (self.namespace, self.owner, self.alias) if p) + "/requests"


@dataclass(frozen=True)
class FalUrls:
    """Base URLs of fal's three APIs. Defaults are the real hosts; the emulator serves all three
    from one base (queue at the root, sync runs under /run, storage under /storage)."""

    queue: str = "https://queue.fal.run"
    run: str = "https://fal.run"
    storage: str = "https://rest.fal.ai"

    @classmethod
    def single_base(cls, base: str) -> FalUrls:
        base = base.rstrip("/")
        return cls(queue=base, run=f"{base}/run", storage=base)

    def submit(self, endpoint: str) -> str:
        return f"{self.queue.rstrip('/')}/{AppId.parse(endpoint).full}"

    def run_sync(self, endpoint: str) -> str:
        return f"{self.run.rstrip('/')}/{AppId.parse(endpoint).full}"

    def request(self, endpoint: str, request_id: str, suffix: str = "") -> str:
        prefix = AppId.parse(endpoint).requests_prefix
        return f"{self.queue.rstrip('/')}/{prefix}/{request_id}{suffix}"

    def upload_initiate(self) -> str:
        return f"{self.storage.rstrip('/')}/storage/upload/initiate?storage_type=fal-cdn-v3"
