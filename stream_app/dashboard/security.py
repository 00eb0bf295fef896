"""Safe by default: loopback only, read-only without a token, no cross-site writes.

- The server binds ``[dashboard] host`` (127.0.0.1). Requests must name an allowed Host
  (loopback names, or ``[dashboard] allowed_hosts``), so a web page that rebinds its own
  DNS name to 127.0.0.1 cannot read the dashboard.
- Reviewing needs a token from ``[dashboard] review_tokens`` (``name:token`` entries), sent
  as ``Authorization: Bearer``; without configured tokens the page is read-only.
- CSRF: there are no cookies; the token travels in a header a cross-site form or
  image cannot set, writes must be ``application/json`` (a cross-site request with that
  type needs a CORS preflight, which is never granted) and must come from the page's own
  origin when the browser says where they come from.
- Every response forbids framing and inline scripts (Content-Security-Policy), and the page
  writes product text with ``textContent`` only, never as HTML.
"""

from __future__ import annotations

import hmac
import ipaddress
import logging
from collections.abc import Awaitable, Callable

from aiohttp import web

log = logging.getLogger(__name__)
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
LOOPBACK_NAMES = frozenset({"localhost", "127.0.0.1", "::1"})
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
HEADERS = {
    "Content-Security-Policy": (
        "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; "
        "connect-src 'self'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'"
    ),
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-store",
}


def parse_tokens(entries: list[str]) -> dict[str, str]:
    """``name:token`` entries -> {token: name}; a bare token reviews as ``reviewer``."""
    tokens = {}
    for entry in entries:
        name, sep, token = entry.partition(":")
        if not sep:
            name, token = "reviewer", entry
        if token.strip():
            tokens[token.strip()] = name.strip() or "reviewer"
    return tokens


class Guard:
    """The Host, origin and token checks, and the security headers."""

    def __init__(self, bind_host: str, allowed_hosts: list[str], tokens: dict[str, str]) -> None:
        self.tokens = tokens
        self.allowed = {h.lower().strip("[]") for h in allowed_hosts}
        if not self.allowed and _is_loopback(bind_host):
            self.allowed = set(LOOPBACK_NAMES)
        if not self.allowed:
            log.warning(
                "dashboard bound to %s with no [dashboard] allowed_hosts: any Host is accepted",
                bind_host,
            )

    @property
    def can_review(self) -> bool:
        return bool(self.tokens)

    def reviewer(self, request: web.Request) -> str | None:
        """The reviewer named by the request's bearer token, or None."""
        scheme, _, token = request.headers.get("Authorization", "").partition(" ")
        if scheme.lower() != "bearer" or not token:
            return None
        found = None
        for known, name in self.tokens.items():  # compare with every one: constant time
            if hmac.compare_digest(known.encode(), token.strip().encode()):
                found = name
        return found

    @web.middleware
    async def middleware(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        if self.allowed and _hostname(request.host) not in self.allowed:
            raise web.HTTPMisdirectedRequest(text="unknown Host\n")
        if request.method not in SAFE_METHODS:
            origin = request.headers.get("Origin")
            if origin is not None and origin != f"{request.scheme}://{request.host}":
                raise web.HTTPForbidden(text="cross-origin write refused\n")
            if request.content_type != "application/json":
                raise web.HTTPUnsupportedMediaType(text="send application/json\n")
        return await handler(request)


async def add_headers(_request: web.Request, response: web.StreamResponse) -> None:
    """``on_response_prepare``: the security headers on every response, streams included."""
    for name, value in HEADERS.items():
        response.headers.setdefault(name, value)


def _hostname(host: str | None) -> str:
    host = (host or "").lower()
    if host.startswith("["):
        return host[1:].partition("]")[0]
    return host.rpartition(":")[0] if host.count(":") == 1 else host


def _is_loopback(host: str) -> bool:
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False
