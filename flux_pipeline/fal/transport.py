"""httpx's API over aiohttp's connection pool: the transport of FalClient's two httpx clients.

With 64 requests in flight, httpx's own pool (httpcore) spent more CPU than anything else in the
client: every request entering or leaving it re-scans all pooled connections and probes each
idle one's socket. aiohttp's pool and its C HTTP parser do the same work for a fraction
(benchmarks/throughput.py). The code above this module keeps using httpx: requests, responses,
streams, timeouts and errors.

Errors are mapped conservatively, because the Retrier sends a submit again only after an error
that proves the request never left this machine: only a failure to connect (refused, DNS, TLS
handshake) or a timeout while connecting or waiting for a pooled connection becomes
httpx.ConnectError or ConnectTimeout. A connection dropped or reset once the request may have
been written is a RemoteProtocolError or ReadError, so a submit is never sent twice. (The
`httpx-aiohttp` package maps a dropped connection to ConnectTimeout, hence this module.)
aiohttp itself re-sends only idempotent requests (GET, PUT), once, when a kept-alive connection
turns out to be closed (RFC 9112 9.3.1).
"""

from __future__ import annotations

import urllib.request
from collections.abc import AsyncIterator, Iterator
from contextlib import contextmanager

import aiohttp
import httpx
from yarl import URL

ERRORS: list[tuple[type[BaseException], type[httpx.TransportError]]] = [
    # most specific first: the first match wins
    (aiohttp.ClientConnectorError, httpx.ConnectError),
    (aiohttp.ConnectionTimeoutError, httpx.ConnectTimeout),
    (aiohttp.ServerDisconnectedError, httpx.RemoteProtocolError),
    (aiohttp.ClientResponseError, httpx.RemoteProtocolError),
    (aiohttp.ClientPayloadError, httpx.ReadError),
    (aiohttp.InvalidURL, httpx.UnsupportedProtocol),
    (aiohttp.NonHttpUrlClientError, httpx.UnsupportedProtocol),
    (TimeoutError, httpx.ReadTimeout),
    (aiohttp.ClientError, httpx.ReadError),
    (OSError, httpx.ReadError),  # a socket error aiohttp did not wrap: the request may have gone
]


@contextmanager
def httpx_errors() -> Iterator[None]:
    """Raise aiohttp's errors as the httpx errors of the same meaning (see the module's doc)."""
    try:
        yield
    except (aiohttp.ClientError, OSError) as exc:  # TimeoutError is an OSError
        mapped = next(target for source, target in ERRORS if isinstance(exc, source))
        raise mapped(f"{type(exc).__name__}: {exc}") from exc


class AiohttpResponseStream(httpx.AsyncByteStream):
    def __init__(self, response: aiohttp.ClientResponse):
        self._response = response

    async def __aiter__(self) -> AsyncIterator[bytes]:
        with httpx_errors():
            async for chunk in self._response.content.iter_any():  # as it arrives: SSE events too
                yield chunk

    async def aclose(self) -> None:
        """The connection goes back to the pool if the body was read to its end; otherwise it
        is closed, so the rest of the body is never read (a file past the size limit)."""
        if self._response.content.at_eof():
            self._response.release()
        else:
            self._response.close()


class AiohttpTransport(httpx.AsyncBaseTransport):
    """Sends httpx requests through one aiohttp session, made on first use (inside the event
    loop). `limits.max_connections` bounds the pool (None: unbounded) and idle connections are
    closed after `limits.keepalive_expiry`; aiohttp has no separate keep-alive count. TLS uses
    httpx's context, so `verify` and SSL_CERT_FILE mean what they mean to httpx. A proxy is taken
    from the environment (HTTP_PROXY, HTTPS_PROXY, ALL_PROXY, NO_PROXY) once per origin: aiohttp's
    own `trust_env` would look it up, and read ~/.netrc, in a worker thread on every request."""

    def __init__(self, limits: httpx.Limits, *, verify: bool | str = True):
        self._limits = limits
        self._ssl = httpx.create_ssl_context(verify=verify)
        self._session: aiohttp.ClientSession | None = None
        self._proxies: dict[tuple[str, str], str | None] = {}

    def _proxy(self, url: httpx.URL) -> str | None:
        origin = (url.scheme, url.host)
        if origin not in self._proxies:
            proxies = urllib.request.getproxies()
            bypass = urllib.request.proxy_bypass(url.host)
            self._proxies[origin] = None if bypass else proxies.get(url.scheme) or proxies.get("all")
        return self._proxies[origin]

    def _connected(self) -> aiohttp.ClientSession:
        if self._session is None:
            connector = aiohttp.TCPConnector(
                limit=self._limits.max_connections or 0,
                limit_per_host=0,
                keepalive_timeout=self._limits.keepalive_expiry,
                ssl=self._ssl,
            )
            # httpx keeps the cookies, decodes content encodings and follows redirects
            self._session = aiohttp.ClientSession(
                connector=connector, cookie_jar=aiohttp.DummyCookieJar(), auto_decompress=False
            )
        return self._session

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        timeout = request.extensions.get("timeout", {})
        pool, connect = timeout.get("pool"), timeout.get("connect")
        body = await request.aread()  # the fal client sends bytes: JSON bodies and uploads
        with httpx_errors():
            response = await self._connected().request(
                request.method,
                URL(str(request.url), encoded=True),
                headers=request.headers.multi_items(),
                data=body or None,
                allow_redirects=False,
                compress=None,
                proxy=self._proxy(request.url),
                timeout=aiohttp.ClientTimeout(
                    total=None,
                    connect=None if pool is None or connect is None else pool + connect,
                    sock_connect=connect,
                    sock_read=timeout.get("read"),
                ),
            )
        return httpx.Response(
            status_code=response.status,
            headers=response.raw_headers,
            stream=AiohttpResponseStream(response),
            extensions={"http_version": b"HTTP/1.1", "reason_phrase": (response.reason or "").encode()},
        )

    async def aclose(self) -> None:
        if self._session is not None:
            await self._session.close()
