"""An ASGI app served by uvicorn on a real socket in a background thread."""

from __future__ import annotations

import socket
import threading
import time

import uvicorn


class BackgroundServer:
    """`with BackgroundServer(app) as server: server.url`. Binds at construction, so the port is
    known (and reserved) before the server starts."""

    def __init__(
        self,
        app,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        ssl_certfile: str | None = None,
        ssl_keyfile: str | None = None,
        log_level: str = "warning",
    ):
        self.host = host
        self._socket = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self._socket.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._socket.bind((host, port))
        self.port = self._socket.getsockname()[1]
        self.scheme = "https" if ssl_certfile else "http"
        self._server = uvicorn.Server(
            uvicorn.Config(
                app,
                log_level=log_level,
                ssl_certfile=ssl_certfile,
                ssl_keyfile=ssl_keyfile,
                timeout_graceful_shutdown=1,
                backlog=2048,
            )
        )
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        return f"{self.scheme}://{self.host}:{self.port}"

    def start(self, timeout: float = 10.0):
        self._thread = threading.Thread(
            target=self._server.run, kwargs={"sockets": [self._socket]}, name=f"http-{self.port}", daemon=True
        )
        self._thread.start()
        deadline = time.monotonic() + timeout
        while not self._server.started:
            if not self._thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError(f"the server on port {self.port} did not start")
            time.sleep(0.01)
        return self

    def stop(self) -> None:
        self._server.should_exit = True
        if self._thread:
            self._thread.join(timeout=10)
        self._socket.close()

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
