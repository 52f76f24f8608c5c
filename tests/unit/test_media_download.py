"""Tests for studiobot.media.download against a real aiohttp server on 127.0.0.1."""

from __future__ import annotations

import asyncio
import socket
import time
from collections.abc import AsyncIterator

import httpx
import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer

from studiobot.media.download import DownloadError, fetch_bytes

BODY = bytes(range(256)) * 40  # 10 KiB
MiB = 2**20


class _Server:
    """The test server's URL and what its handlers observed."""

    def __init__(self, server: TestServer, endless_done: asyncio.Event) -> None:
        self._server = server
        self.endless_done = endless_done

    def url(self, path: str) -> str:
        return str(self._server.make_url(path))


@pytest.fixture
async def server() -> AsyncIterator[_Server]:
    endless_done = asyncio.Event()

    async def ok(request: web.Request) -> web.Response:
        return web.Response(body=BODY, content_type="image/png")

    async def status(request: web.Request) -> web.Response:
        return web.Response(status=int(request.match_info["code"]), text="vendor says no")

    async def redirect(request: web.Request) -> web.Response:
        raise web.HTTPFound("/ok")

    async def huge_declared(request: web.Request) -> web.StreamResponse:
        response = web.StreamResponse(headers={"Content-Length": str(5 * MiB)})
        await response.prepare(request)
        await response.write(b"\0" * 1024)
        return response

    async def endless(request: web.Request) -> web.StreamResponse:
        response = web.StreamResponse()
        response.enable_chunked_encoding()  # no Content-Length to check up front
        await response.prepare(request)
        chunk = b"\0" * 65_536
        try:
            while True:
                await response.write(chunk)
        except ConnectionError:
            pass  # the client hung up, as it should
        finally:
            endless_done.set()
        return response

    async def slow(request: web.Request) -> web.StreamResponse:
        response = web.StreamResponse(headers={"Content-Length": "100"})
        await response.prepare(request)
        await response.write(b"x")
        await asyncio.sleep(30)
        return response

    async def slow_headers(request: web.Request) -> web.Response:
        await asyncio.sleep(30)
        return web.Response(body=BODY)

    async def lying(request: web.Request) -> web.StreamResponse:
        response = web.StreamResponse(headers={"Content-Length": "1000"})
        await response.prepare(request)
        await response.write(b"x" * 10)
        assert request.transport is not None
        request.transport.close()  # hang up 990 bytes short of the promise
        return response

    app = web.Application()
    app.router.add_get("/ok", ok)
    app.router.add_get("/status/{code}", status)
    app.router.add_get("/redirect", redirect)
    app.router.add_get("/huge", huge_declared)
    app.router.add_get("/endless", endless)
    app.router.add_get("/slow", slow)
    app.router.add_get("/slow-headers", slow_headers)
    app.router.add_get("/lying", lying)
    test_server = TestServer(app, host="127.0.0.1", port=0)
    await test_server.start_server()
    try:
        yield _Server(test_server, endless_done)
    finally:
        await test_server.close()


@pytest.fixture
async def client() -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(timeout=10) as http_client:
        yield http_client


async def _fetch(client: httpx.AsyncClient, url: str, **options) -> bytes:
    options.setdefault("max_bytes", MiB)
    options.setdefault("timeout", 5.0)
    return await fetch_bytes(client, url, **options)


async def test_ok_returns_the_body(server: _Server, client: httpx.AsyncClient) -> None:
    assert await _fetch(client, server.url("/ok")) == BODY


async def test_redirects_are_followed(server: _Server, client: httpx.AsyncClient) -> None:
    assert await _fetch(client, server.url("/redirect")) == BODY


async def test_body_exactly_at_limit_is_accepted(
    server: _Server, client: httpx.AsyncClient
) -> None:
    assert await _fetch(client, server.url("/ok"), max_bytes=len(BODY)) == BODY


@pytest.mark.parametrize(
    ("code", "retryable"), [(404, False), (410, False), (403, False), (500, True), (503, True),
                            (429, True)]
)
async def test_non_2xx_is_refused(
    server: _Server, client: httpx.AsyncClient, code: int, retryable: bool
) -> None:
    with pytest.raises(DownloadError) as failed:
        await _fetch(client, server.url(f"/status/{code}"))

    assert failed.value.retryable is retryable
    assert f"HTTP {code}" in str(failed.value)
    assert "vendor says no" not in str(failed.value)


async def test_messages_never_show_query_strings(
    server: _Server, client: httpx.AsyncClient
) -> None:
    url = server.url("/status/404") + "?X-Amz-Signature=TOPSECRET&token=TOPSECRET#frag"
    url = url.replace("http://", "http://user:TOPSECRET@")

    with pytest.raises(DownloadError) as failed:
        await _fetch(client, url)

    message = str(failed.value)
    assert "TOPSECRET" not in message and "frag" not in message
    assert "http://127.0.0.1:" in message and "/status/404" in message


async def test_long_paths_are_truncated_in_messages(client: httpx.AsyncClient) -> None:
    with pytest.raises(DownloadError) as failed:
        await _fetch(client, "ftp://example.invalid/" + "a" * 500)

    assert len(str(failed.value)) < 160


async def test_declared_oversize_is_refused_from_headers(
    server: _Server, client: httpx.AsyncClient
) -> None:
    with pytest.raises(DownloadError, match="larger than") as failed:
        await _fetch(client, server.url("/huge"), max_bytes=MiB)

    assert failed.value.retryable is False


async def test_endless_body_is_cut_off_early(server: _Server, client: httpx.AsyncClient) -> None:
    started = time.monotonic()

    with pytest.raises(DownloadError, match="larger than") as failed:
        await _fetch(client, server.url("/endless"), max_bytes=256 * 1024)

    assert failed.value.retryable is False
    assert time.monotonic() - started < 2
    # The connection was dropped, so the server stopped writing.
    await asyncio.wait_for(server.endless_done.wait(), timeout=2)


@pytest.mark.parametrize("path", ["/slow", "/slow-headers"])
async def test_whole_download_is_bounded_by_timeout(
    server: _Server, client: httpx.AsyncClient, path: str
) -> None:
    started = time.monotonic()

    with pytest.raises(DownloadError, match="longer than") as failed:
        await _fetch(client, server.url(path), timeout=0.3)

    assert failed.value.retryable is True
    assert time.monotonic() - started < 2


async def test_lying_content_length_is_a_retryable_failure(
    server: _Server, client: httpx.AsyncClient
) -> None:
    with pytest.raises(DownloadError) as failed:
        await _fetch(client, server.url("/lying"))

    assert failed.value.retryable is True


async def test_connection_refused_is_retryable(client: httpx.AsyncClient) -> None:
    with socket.socket() as probe:  # find a port nobody listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]

    with pytest.raises(DownloadError) as failed:
        await _fetch(client, f"http://127.0.0.1:{port}/image.png")

    assert failed.value.retryable is True


@pytest.mark.parametrize(
    "url", ["file:///etc/passwd", "ftp://127.0.0.1/x.png", "data:image/png;base64,AAAA",
            "javascript:alert(1)", "//127.0.0.1/x.png", ""]
)
async def test_non_http_urls_are_refused(client: httpx.AsyncClient, url: str) -> None:
    with pytest.raises(DownloadError, match="not an http") as failed:
        await _fetch(client, url)

    assert failed.value.retryable is False
