"""Image fetching against a real local aiohttp server on 127.0.0.1 (allow-listed by the tests)."""

from __future__ import annotations

import asyncio
import io
import ipaddress
from collections.abc import Awaitable, Callable
from dataclasses import replace
from typing import Any

import pytest
from aiohttp import web
from PIL import Image

from prodcat.core.settings import ImageSettings
from prodcat.worker.image_fetch import ImageFetcher, ImageFetchError, refusal


def png_bytes() -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (8, 8), (200, 30, 30)).save(buffer, format="PNG")
    return buffer.getvalue()


PNG = png_bytes()


class Server:
    """A photo server with well-behaved and hostile routes; counts concurrent requests."""

    def __init__(self) -> None:
        self.active = 0
        self.max_active = 0
        self.port = 0
        app = web.Application()
        app.router.add_get("/img.png", self.image)
        app.router.add_get("/slow.png", self.slow)
        app.router.add_get("/redirect", self.redirect_to("/img.png"))
        app.router.add_get("/loop-a", self.redirect_to("/loop-b"))
        app.router.add_get("/loop-b", self.redirect_to("/loop-a"))
        app.router.add_get("/chain/{n}", self.chain)
        app.router.add_get("/metadata", self.redirect_to("http://169.254.169.254/latest/"))
        app.router.add_get("/ten", self.redirect_to("http://10.0.0.1/img.png"))
        app.router.add_get("/big-declared", self.big_declared)
        app.router.add_get("/big-streamed", self.big_streamed)
        app.router.add_get("/page", self.page)
        app.router.add_get("/trickle", self.trickle)
        self.runner = web.AppRunner(app)

    def url(self, path: str, host: str = "127.0.0.1") -> str:
        return f"http://{host}:{self.port}{path}"

    async def start(self) -> None:
        await self.runner.setup()
        site = web.TCPSite(self.runner, "127.0.0.1", 0)
        await site.start()
        self.port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]

    async def image(self, request: web.Request) -> web.Response:
        return web.Response(body=PNG, content_type="image/png")

    async def slow(self, request: web.Request) -> web.Response:
        self.active += 1
        self.max_active = max(self.max_active, self.active)
        await asyncio.sleep(0.05)
        self.active -= 1
        return web.Response(body=PNG, content_type="image/png")

    def redirect_to(self, target: str) -> Callable[[web.Request], Awaitable[web.Response]]:
        async def handler(request: web.Request) -> web.Response:
            raise web.HTTPFound(target)

        return handler

    async def chain(self, request: web.Request) -> web.Response:
        n = int(request.match_info["n"])
        if n == 0:
            return await self.image(request)
        raise web.HTTPFound(f"/chain/{n - 1}")

    async def big_declared(self, request: web.Request) -> web.Response:
        return web.Response(body=b"\0" * 5000, content_type="image/png")

    async def big_streamed(self, request: web.Request) -> web.StreamResponse:
        response = web.StreamResponse(headers={"Content-Type": "image/png"})
        response.enable_chunked_encoding()
        await response.prepare(request)
        for _ in range(50):
            await response.write(b"\0" * 500)
        await response.write_eof()
        return response

    async def page(self, request: web.Request) -> web.Response:
        return web.Response(text="<html></html>", content_type="text/html")

    async def trickle(self, request: web.Request) -> web.StreamResponse:
        response = web.StreamResponse(headers={"Content-Type": "image/png"})
        response.enable_chunked_encoding()
        await response.prepare(request)
        for _ in range(600):
            await response.write(b"\x89")
            await asyncio.sleep(0.05)
        return response


SETTINGS = ImageSettings(
    fetch_timeout_s=5.0, max_bytes=4000, max_redirects=3, allow_hosts=["127.0.0.1"]
)


def scenario(
    body: Callable[[Server, ImageFetcher], Awaitable[Any]], settings: ImageSettings = SETTINGS
) -> Any:
    async def main() -> Any:
        server = Server()
        await server.start()
        try:
            async with ImageFetcher(settings) as fetcher:
                return await body(server, fetcher)
        finally:
            await server.runner.cleanup()

    return asyncio.run(asyncio.wait_for(main(), 60))


async def refused(fetcher: ImageFetcher, url: str) -> str:
    with pytest.raises(ImageFetchError) as info:
        await fetcher.fetch(url)
    assert info.value.stage == "image_fetch"
    return info.value.reason


def test_fetches_an_image_and_follows_redirects() -> None:
    async def body(server: Server, fetcher: ImageFetcher) -> None:
        assert await fetcher.fetch(server.url("/img.png")) == PNG
        assert await fetcher.fetch(server.url("/redirect")) == PNG
        assert await fetcher.fetch(server.url("/chain/3")) == PNG

    scenario(body)


def test_too_many_redirects_and_loops() -> None:
    async def body(server: Server, fetcher: ImageFetcher) -> None:
        assert "more than 3 redirects" in await refused(fetcher, server.url("/chain/4"))
        assert "redirect loop" in await refused(fetcher, server.url("/loop-a"))

    scenario(body)


def test_redirect_to_private_or_metadata_address_is_refused() -> None:
    async def body(server: Server, fetcher: ImageFetcher) -> None:
        reason = await refused(fetcher, server.url("/metadata"))
        assert reason == "link-local address 169.254.169.254 is not allowed"
        assert await refused(fetcher, server.url("/ten")) == (
            "private address 10.0.0.1 is not allowed"
        )

    scenario(body)


def test_oversize_bodies_are_cut_off() -> None:
    async def body(server: Server, fetcher: ImageFetcher) -> None:
        assert "declared size 5000" in await refused(fetcher, server.url("/big-declared"))
        assert "over max_bytes 4000" in await refused(fetcher, server.url("/big-streamed"))

    scenario(body)


def test_wrong_content_type_and_http_errors() -> None:
    async def body(server: Server, fetcher: ImageFetcher) -> None:
        assert "'text/html" in await refused(fetcher, server.url("/page"))
        assert (await refused(fetcher, server.url("/missing"))).startswith("HTTP 404")
        assert "scheme 'ftp'" in await refused(fetcher, "ftp://127.0.0.1/x.png")

    scenario(body)


def test_trickling_server_times_out() -> None:
    async def body(server: Server, fetcher: ImageFetcher) -> None:
        assert await refused(fetcher, server.url("/trickle")) == "timed out after 0.5 s"

    scenario(body, replace(SETTINGS, fetch_timeout_s=0.5))


def test_loopback_is_refused_unless_allow_listed() -> None:
    async def body(server: Server, fetcher: ImageFetcher) -> None:
        assert "loopback address 127.0.0.1" in await refused(fetcher, server.url("/img.png"))
        reason = await refused(fetcher, server.url("/img.png", host="localhost"))
        assert reason.startswith("host 'localhost' resolves to loopback address")
        assert "loopback address ::1" in await refused(fetcher, server.url("/x", host="[::1]"))

    scenario(body, replace(SETTINGS, allow_hosts=[]))


def test_allow_list_accepts_names_and_networks() -> None:
    async def body(server: Server, fetcher: ImageFetcher) -> bytes:
        return await fetcher.fetch(server.url("/img.png", host="localhost"))

    assert scenario(body, replace(SETTINGS, allow_hosts=["localhost"])) == PNG
    assert scenario(body, replace(SETTINGS, allow_hosts=["127.0.0.0/8", "::1"])) == PNG


def test_concurrency_is_bounded() -> None:
    async def body(server: Server, fetcher: ImageFetcher) -> int:
        results = await asyncio.gather(*[fetcher.fetch(server.url("/slow.png")) for _ in range(8)])
        assert results == [PNG] * 8
        return server.max_active

    assert scenario(body, replace(SETTINGS, max_concurrency=2)) <= 2


@pytest.mark.parametrize(
    ("address", "kind"),
    [
        ("169.254.169.254", "link-local"),
        ("10.1.2.3", "private"),
        ("192.168.1.1", "private"),
        ("127.0.0.1", "loopback"),
        ("::1", "loopback"),
        ("fe80::1", "link-local"),
        ("224.0.0.1", "multicast"),
        ("0.0.0.0", "unspecified"),
        ("240.0.0.1", "reserved"),
        ("::ffff:127.0.0.1", "loopback"),
        ("100.64.0.1", "non-public"),
    ],
)
def test_refused_address_kinds(address: str, kind: str) -> None:
    reason = refusal(ipaddress.ip_address(address))
    assert reason is not None and reason.startswith(kind)


@pytest.mark.parametrize("address", ["8.8.8.8", "2001:4860:4860::8888"])
def test_public_addresses_pass(address: str) -> None:
    assert refusal(ipaddress.ip_address(address)) is None
