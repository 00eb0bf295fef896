"""Fetch product photos by URL without letting an event make the worker attack its own network.

Every hop (the first URL and each redirect, followed by hand) is checked: http(s) only, the
host's addresses after DNS resolution must be public unless the host or address is
allow-listed (``[images] allow_hosts``: host names, IP addresses or CIDR networks). The
check happens in the connector's resolver, so the address that was checked is the address
that is connected to (no DNS-rebinding window); IP literals, which aiohttp never resolves,
are checked before the request. Bodies are streamed and cut off at ``max_bytes``; the whole
fetch, redirects included, is bounded by ``fetch_timeout_s``; a semaphore bounds concurrent
fetches. Every refusal raises :class:`ImageFetchError` with a precise reason; the worker
turns it into a dead letter with stage ``image_fetch``.
"""

from __future__ import annotations

import asyncio
import ipaddress
import socket
from typing import Any
from urllib.parse import urljoin

import aiohttp
from aiohttp.abc import AbstractResolver, ResolveResult
from aiohttp.resolver import DefaultResolver
from yarl import URL

from prodcat.core.settings import ImageSettings

STAGE = "image_fetch"
REDIRECTS = frozenset({301, 302, 303, 307, 308})
CHUNK = 64 * 1024
IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network


class ImageFetchError(Exception):
    """The photo could not be fetched or was refused; ``reason`` says exactly why."""

    stage = STAGE

    def __init__(self, url: str, reason: str) -> None:
        super().__init__(f"{reason} ({_short(url)})")
        self.url = url
        self.reason = reason


class _Refused(OSError):
    """Raised inside the connector's resolver; unwrapped into ImageFetchError by fetch()."""


class AllowList:
    """Hosts, addresses and networks that may be fetched even when not public.

    An entry may name one port (``127.0.0.1:8080``, ``[::1]:8080``, ``images.local:80``):
    then only that port of the host is allowed, not every service listening on it.
    """

    def __init__(self, entries: list[str]) -> None:
        self.hosts: set[tuple[str, int | None]] = set()
        self.networks: list[tuple[IPNetwork, int | None]] = []
        for entry in entries:
            text, port = _split_port(entry.strip().lower())
            text = text.strip("[]")
            try:
                self.networks.append((ipaddress.ip_network(text, strict=False), port))
            except ValueError:
                self.hosts.add((text.rstrip("."), port))

    def allows_host(self, host: str, port: int | None) -> bool:
        name = host.lower().rstrip(".")
        return (name, None) in self.hosts or (port is not None and (name, port) in self.hosts)

    def allows_address(self, address: IPAddress, port: int | None) -> bool:
        return any(
            address in network and allowed in (None, port) for network, allowed in self.networks
        )


def _split_port(entry: str) -> tuple[str, int | None]:
    """``host:port`` / ``[v6]:port`` -> (host, port); anything else (a CIDR, a bare IPv6
    address) -> (entry, None)."""
    host, sep, port = entry.rpartition(":")
    if sep and port.isdigit() and host and (host.endswith("]") or ":" not in host):
        return host, int(port)
    return entry, None


def refusal(address: IPAddress) -> str | None:
    """Why ``address`` must not be fetched from, or None when it is a public address."""
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return refusal(address.ipv4_mapped)
    for kind in ("loopback", "link_local", "multicast", "unspecified", "reserved", "private"):
        if getattr(address, f"is_{kind}"):
            return f"{kind.replace('_', '-')} address {address} is not allowed"
    if not address.is_global:
        return f"non-public address {address} is not allowed"
    return None


class GuardedResolver(AbstractResolver):
    """Resolves like aiohttp's default resolver, then refuses non-public addresses."""

    def __init__(self, allow: AllowList) -> None:
        self._inner = DefaultResolver()
        self._allow = allow

    async def resolve(
        self, host: str, port: int = 0, family: socket.AddressFamily = socket.AF_INET
    ) -> list[ResolveResult]:
        try:
            results = await self._inner.resolve(host, port, family)
        except OSError as exc:
            raise _Refused(f"cannot resolve host {host!r}: {exc.strerror or exc}") from None
        if self._allow.allows_host(host, port):
            return results
        for result in results:
            address = ipaddress.ip_address(result["host"])
            reason = None if self._allow.allows_address(address, port) else refusal(address)
            if reason:
                raise _Refused(f"host {host!r} resolves to {reason}")
        return results

    async def close(self) -> None:
        await self._inner.close()


class ImageFetcher:
    """Bounded, SSRF-safe photo downloads; use as ``async with ImageFetcher(settings)``."""

    def __init__(self, settings: ImageSettings) -> None:
        self.settings = settings
        self._allow = AllowList(settings.allow_hosts)
        self._semaphore = asyncio.Semaphore(settings.max_concurrency)
        self._session: aiohttp.ClientSession | None = None

    async def __aenter__(self) -> ImageFetcher:
        connector = aiohttp.TCPConnector(
            resolver=GuardedResolver(self._allow),
            limit=self.settings.max_concurrency,
            use_dns_cache=False,  # re-check every hop: a cached answer could be stale
        )
        self._session = aiohttp.ClientSession(
            connector=connector,
            trust_env=False,  # never route photo fetches through an ambient proxy
            headers={"Accept": "image/*", "User-Agent": "prodcat-image-fetch"},
        )
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    async def fetch(self, url: str) -> bytes:
        """The photo's bytes, or ImageFetchError with the reason it was refused."""
        if self._session is None:
            raise RuntimeError("ImageFetcher used outside 'async with'")
        timeout = self.settings.fetch_timeout_s
        async with self._semaphore:
            try:
                async with asyncio.timeout(timeout):
                    return await self._follow(url)
            except TimeoutError:
                raise ImageFetchError(url, f"timed out after {timeout:g} s") from None

    async def _follow(self, url: str) -> bytes:
        seen: list[str] = []
        current = url
        while True:
            self._check_url(current)
            if current in seen:
                raise ImageFetchError(url, f"redirect loop back to {_short(current)}")
            seen.append(current)
            location = await self._get(current)
            if isinstance(location, bytes):
                return location
            if len(seen) > self.settings.max_redirects:
                raise ImageFetchError(
                    url, f"more than {self.settings.max_redirects} redirects (max_redirects)"
                )
            current = urljoin(current, location)

    def _check_url(self, url: str) -> None:
        try:
            parsed = URL(url)
        except ValueError as exc:
            raise ImageFetchError(url, f"not a valid URL: {exc}") from None
        if parsed.scheme not in ("http", "https"):
            raise ImageFetchError(url, f"scheme {parsed.scheme!r} is not http or https")
        host = parsed.host
        if not host:
            raise ImageFetchError(url, "URL has no host")
        try:
            address = ipaddress.ip_address(host.strip("[]"))
        except ValueError:
            return  # a name: checked after resolution, in the connector
        port = parsed.port
        if self._allow.allows_host(host, port) or self._allow.allows_address(address, port):
            return
        reason = refusal(address)
        if reason:
            raise ImageFetchError(url, reason)

    async def _get(self, url: str) -> bytes | str:
        """The body of a 200 image response, or the Location of a redirect."""
        assert self._session is not None
        try:
            async with self._session.get(url, allow_redirects=False) as response:
                if response.status in REDIRECTS:
                    location = response.headers.get("Location")
                    if not location:
                        raise ImageFetchError(url, f"HTTP {response.status} without Location")
                    return location
                if response.status != 200:
                    raise ImageFetchError(url, f"HTTP {response.status} {response.reason or ''}")
                self._check_content_type(url, response)
                return await self._read_bounded(url, response)
        except aiohttp.ClientConnectorError as exc:
            cause: Any = exc.os_error
            reason = str(cause) if isinstance(cause, _Refused) else f"cannot connect: {cause}"
            raise ImageFetchError(url, reason) from None
        except aiohttp.ClientError as exc:
            raise ImageFetchError(url, f"{type(exc).__name__}: {exc}") from None

    def _check_content_type(self, url: str, response: aiohttp.ClientResponse) -> None:
        content_type = response.headers.get("Content-Type", "")
        if not content_type.lower().startswith("image/"):
            shown = content_type or "none"
            raise ImageFetchError(url, f"content type {shown!r} is not image/*")
        declared = response.content_length
        if declared is not None and declared > self.settings.max_bytes:
            raise ImageFetchError(
                url, f"declared size {declared} bytes is over max_bytes {self.settings.max_bytes}"
            )

    async def _read_bounded(self, url: str, response: aiohttp.ClientResponse) -> bytes:
        limit = self.settings.max_bytes
        body = bytearray()
        async for chunk in response.content.iter_chunked(CHUNK):
            body.extend(chunk)
            if len(body) > limit:
                raise ImageFetchError(url, f"body is over max_bytes {limit}; download aborted")
        return bytes(body)


def _short(url: str, limit: int = 120) -> str:
    return url if len(url) <= limit else url[: limit - 3] + "..."
