"""Serving the emulator on a real socket: in a background thread (tests, the embedded default)
or in the foreground (`flux-pipeline emulator`)."""

from __future__ import annotations

import uvicorn

from ..fal.http_server import BackgroundServer
from .app import create_app
from .engine import Emulator, EmulatorConfig


class EmulatorServer(BackgroundServer):
    """A running emulator. `with EmulatorServer() as server: server.url, server.emulator`.
    `options` are BackgroundServer's: host, port, ssl_certfile, ssl_keyfile."""

    def __init__(self, config: EmulatorConfig | None = None, **options):
        self.emulator = Emulator(config)
        # injected dropped connections would each log a traceback
        quiet = self.emulator.config.faults.any()
        super().__init__(create_app(self.emulator), log_level="critical" if quiet else "warning", **options)


def serve_forever(
    config: EmulatorConfig,
    host: str,
    port: int,
    *,
    ssl_certfile: str | None = None,
    ssl_keyfile: str | None = None,
    log_level: str = "info",
) -> None:
    """Serve until interrupted; TLS when given a certificate (fal's Python client speaks only https
    to a host set through its environment, protocol.md 1.1)."""
    uvicorn.run(
        create_app(Emulator(config)),
        host=host,
        port=port,
        ssl_certfile=ssl_certfile,
        ssl_keyfile=ssl_keyfile,
        log_level=log_level,
        access_log=log_level in ("debug", "trace", "info"),
        backlog=2048,
    )
