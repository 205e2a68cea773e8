"""Fetching a Redux source URL for the emulator without letting a prompt table reach this
machine's or its network's private services (SSRF): the emulator runs on the pipeline's machine,
with no key by default, and fetches whatever `image_url` a table names.

Every hop is resolved first and refused unless every address it resolves to is public (IPv6
forms that embed an IPv4 address are judged by that address); the request then goes to the
address that was checked, so a second DNS answer cannot swap in another. Redirects are followed
here, a bounded number of times, and each new hop is checked the same way."""

from __future__ import annotations

import asyncio
import ipaddress
import socket
from collections.abc import Callable

import httpx

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
AddressRule = Callable[[IPAddress], bool]
MAX_REDIRECTS = 5
DEFAULT_PORTS = {"http": 80, "https": 443}


class RefusedSource(Exception):
    """The URL is not fetched: not http(s), not public, or too many redirects."""


def _embedded(address: IPAddress) -> list[IPAddress]:
    """The address and any IPv4 address an IPv6 one carries (mapped, 6to4, Teredo)."""
    if not isinstance(address, ipaddress.IPv6Address):
        return [address]
    carried = [address.ipv4_mapped, address.sixtofour, *(address.teredo or ())]
    return [address, *(inner for inner in carried if inner is not None)]


def is_public(address: IPAddress) -> bool:
    """Neither loopback, private, link-local, multicast, reserved, unspecified nor otherwise
    non-global (shared address space, documentation ranges), nor carrying such an address."""
    return all(
        one.is_global
        and not (
            one.is_loopback
            or one.is_private
            or one.is_link_local
            or one.is_multicast
            or one.is_reserved
            or one.is_unspecified
        )
        for one in _embedded(address)
    )


async def _checked_address(url: httpx.URL, allowed: AddressRule) -> IPAddress:
    if url.scheme not in DEFAULT_PORTS:
        raise RefusedSource(f"only http(s) URLs are fetched, not {url.scheme!r}")
    port = url.port or DEFAULT_PORTS[url.scheme]
    try:
        found = await asyncio.get_running_loop().getaddrinfo(url.host, port, type=socket.SOCK_STREAM)
    except OSError as exc:
        raise RefusedSource(f"cannot resolve {url.host!r} ({exc})") from None
    addresses = [ipaddress.ip_address(str(info[4][0]).split("%")[0]) for info in found]
    if refused := [str(address) for address in addresses if not allowed(address)]:
        raise RefusedSource(f"{url.host} resolves to non-public address(es) {', '.join(refused)}")
    return addresses[0]


async def fetch_public(
    url: str, *, allowed: AddressRule = is_public, timeout: float = 30.0, max_redirects: int = MAX_REDIRECTS
) -> bytes:
    """The body at `url`, following at most `max_redirects` redirects; RefusedSource when a hop
    is refused, httpx errors when the fetch fails. `allowed` judges each resolved address (only
    tests loosen it)."""
    target = httpx.URL(url)
    async with httpx.AsyncClient(timeout=timeout, follow_redirects=False) as client:
        for _ in range(max_redirects + 1):
            address = await _checked_address(target, allowed)
            response = await client.get(
                target.copy_with(host=str(address)),
                headers={"Host": target.netloc.decode()},
                extensions={"sni_hostname": target.host},
            )
            if not response.is_redirect:
                response.raise_for_status()
                return response.content
            target = target.join(response.headers["location"])
    raise RefusedSource(f"more than {max_redirects} redirects from {url}")
