"""Tests for studiobot.media.download against real aiohttp servers on loopback.

The client is the one the app uses (:func:`safe_client`); most tests open 127.0.0.0/8 with the
operator setting, since their server lives there, and the address tests show it refused without.
"""

from __future__ import annotations

import asyncio
import ipaddress
import logging
import socket
import time
from collections.abc import AsyncIterator

import httpx
import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer

from studiobot.media.download import DownloadError, fetch_bytes, is_permitted, safe_client

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

    async def redirect_to(request: web.Request) -> web.Response:
        raise web.HTTPFound(request.query["to"])

    async def loop(request: web.Request) -> web.Response:
        raise web.HTTPFound("/loop")

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
    app.router.add_get("/redirect-to", redirect_to)
    app.router.add_get("/loop", loop)
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


LOOPBACK = ("127.0.0.0/8",)


@pytest.fixture
async def client() -> AsyncIterator[httpx.AsyncClient]:
    async with safe_client(allow=LOOPBACK, timeout=10) as http_client:
        yield http_client


@pytest.fixture
async def strict() -> AsyncIterator[httpx.AsyncClient]:
    """The client with the default setting: public addresses only."""
    async with safe_client(timeout=10) as http_client:
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
    assert str(failed.value) == "the server holding it did not send it."  # no status, no host


async def test_the_status_and_host_go_to_the_log_without_the_query_string(
    server: _Server, client: httpx.AsyncClient, caplog: pytest.LogCaptureFixture
) -> None:
    url = server.url("/status/404") + "?X-Amz-Signature=TOPSECRET&token=TOPSECRET#frag"
    url = url.replace("http://", "http://user:TOPSECRET@")

    with caplog.at_level(logging.INFO, "studiobot.media.download"), pytest.raises(DownloadError) as failed:
        await _fetch(client, url)

    assert "TOPSECRET" not in str(failed.value) and "127.0.0.1" not in str(failed.value)
    logged = caplog.text
    assert "TOPSECRET" not in logged and "frag" not in logged
    assert "http://127.0.0.1:" in logged and "/status/404" in logged and "HTTP 404" in logged


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

    with pytest.raises(DownloadError, match="longer than 0.3 s") as failed:
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
    with pytest.raises(DownloadError) as failed:
        await _fetch(client, url)

    assert str(failed.value) == "its address is not allowed."
    assert failed.value.retryable is False


# Addresses. Refusals happen before any connection: the resolved addresses are checked first.

REFUSED = "its address is not allowed."


async def test_loopback_is_refused_by_default(server: _Server, strict: httpx.AsyncClient) -> None:
    with pytest.raises(DownloadError) as failed:
        await _fetch(strict, server.url("/ok"))

    assert str(failed.value) == REFUSED and failed.value.retryable is False


async def test_loopback_is_fetched_when_the_operator_allows_it(server: _Server) -> None:
    async with safe_client(allow=("127.0.0.0/8",), timeout=10) as allowed:
        assert await _fetch(allowed, server.url("/ok")) == BODY


async def test_a_name_resolving_to_loopback_is_refused(server: _Server, strict: httpx.AsyncClient) -> None:
    url = server.url("/ok").replace("127.0.0.1", "localhost")

    with pytest.raises(DownloadError) as failed:
        await _fetch(strict, url)

    assert str(failed.value) == REFUSED


@pytest.mark.parametrize("host", ["[::ffff:127.0.0.1]", "[::1]", "0.0.0.0", "169.254.169.254", "[::]"])
async def test_literal_internal_addresses_are_refused(strict: httpx.AsyncClient, host: str) -> None:
    with pytest.raises(DownloadError) as failed:
        await _fetch(strict, f"http://{host}:9/latest/meta-data/")

    assert str(failed.value) == REFUSED and failed.value.retryable is False


async def test_the_message_names_no_address_and_the_log_does(
    server: _Server, strict: httpx.AsyncClient, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.INFO, "studiobot.media.download"), pytest.raises(DownloadError) as failed:
        await _fetch(strict, server.url("/ok?token=TOPSECRET"))

    message = str(failed.value)
    assert "127.0.0.1" not in message and "localhost" not in message and not any(c.isdigit() for c in message)
    assert "resolves to 127.0.0.1" in caplog.text and "TOPSECRET" not in caplog.text


@pytest.fixture
async def other_loopback() -> AsyncIterator[tuple[str, list[str]]]:
    """A server on 127.0.0.2 redirecting wherever ``?to=`` says; yields its base URL and the paths it served."""
    served: list[str] = []

    async def handle(request: web.Request) -> web.Response:
        served.append(request.path)
        if "to" in request.query:
            raise web.HTTPFound(request.query["to"])
        return web.Response(body=BODY)

    app = web.Application()
    app.router.add_get("/{tail:.*}", handle)
    test_server = TestServer(app, host="127.0.0.2", port=0)
    await test_server.start_server()
    try:
        yield str(test_server.make_url("")).rstrip("/"), served
    finally:
        await test_server.close()


# pytest-socket lets these tests reach 127.0.0.2 too, so only the download guard stands in the way.
@pytest.mark.allow_hosts(["127.0.0.1", "127.0.0.2"])
async def test_a_redirect_to_a_refused_address_is_not_followed(
    server: _Server, other_loopback: tuple[str, list[str]]
) -> None:
    base, served = other_loopback
    async with safe_client(allow=("127.0.0.2/32",), timeout=10) as allowed:
        assert await _fetch(allowed, f"{base}/ok") == BODY  # 127.0.0.2 itself is allowed
        for target in (server.url("/ok"), "http://169.254.169.254/latest/meta-data/"):
            with pytest.raises(DownloadError) as failed:
                await _fetch(allowed, f"{base}/hop?to={target}")
            assert str(failed.value) == REFUSED and failed.value.retryable is False


@pytest.mark.allow_hosts(["127.0.0.1", "127.0.0.2"])
async def test_a_redirect_from_a_refused_address_is_never_requested(
    server: _Server, other_loopback: tuple[str, list[str]]
) -> None:
    base, served = other_loopback
    async with safe_client(allow=("127.0.0.1/32",), timeout=10) as allowed:
        with pytest.raises(DownloadError) as failed:
            await _fetch(allowed, server.url(f"/redirect-to?to={base}/secret"))

    assert str(failed.value) == REFUSED
    assert served == []  # no connection reached the refused host


async def test_more_than_three_redirects_are_refused(server: _Server, client: httpx.AsyncClient) -> None:
    with pytest.raises(DownloadError, match="redirected too many times") as failed:
        await _fetch(client, server.url("/loop"))

    assert failed.value.retryable is False


@pytest.mark.parametrize(
    ("address", "permitted"),
    [("8.8.8.8", True), ("2001:4860:4860::8888", True), ("127.0.0.1", False), ("10.1.2.3", False),
     ("172.16.0.1", False), ("192.168.1.1", False), ("169.254.169.254", False), ("100.64.0.1", False),
     ("0.0.0.0", False), ("224.0.0.1", False), ("239.255.255.250", False), ("240.0.0.1", False),
     ("255.255.255.255", False), ("::1", False), ("::", False), ("fe80::1", False), ("fc00::1", False),
     ("ff02::1", False), ("::ffff:127.0.0.1", False), ("::ffff:8.8.8.8", True),
     ("2002:7f00:1::", False), ("64:ff9b::a00:1", False), ("64:ff9b::808:808", True)],
)
def test_which_addresses_are_public(address: str, permitted: bool) -> None:
    assert is_permitted(ipaddress.ip_address(address)) is permitted


def test_allowed_networks_open_exactly_those_addresses() -> None:
    allow = (ipaddress.ip_network("10.0.0.0/8"),)

    assert is_permitted(ipaddress.ip_address("10.9.8.7"), allow)
    assert is_permitted(ipaddress.ip_address("::ffff:10.9.8.7"), allow)
    assert not is_permitted(ipaddress.ip_address("127.0.0.1"), allow)
    assert not is_permitted(ipaddress.ip_address("192.168.0.1"), allow)
