"""The web server bounds slow and stalled clients (the app's own server, on SQLite and PostgreSQL).

Header timeout: a request line and headers not complete in time close the connection, however
slowly bytes trickle in. Body timeout: a body not complete in time gets 408 and the connection is
closed. Connection limit: connections beyond it are answered 503 at once. Meanwhile everyone
else is served.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable
from typing import Any

import httpx
import pytest

from studiobot.app import App, build_app, web_server
from studiobot.config import Settings
from studiobot.web.server import WebServer
from tests.ports import free_port

MARGIN_S = 3.0  # scheduling slack on a busy CI machine



@pytest.fixture
async def started(make_settings: Callable[..., Settings], database_url: str) -> AsyncIterator[Callable]:
    """Start the app's web server with these settings; return it."""
    opened: list[tuple[App, WebServer]] = []

    async def start(**overrides: Any) -> WebServer:
        port = free_port()
        settings = make_settings(database_url=database_url, web_port=port, public_url=f"http://127.0.0.1:{port}",
                                 **overrides)
        app = await build_app(settings, {})
        web = web_server(settings, app)
        await web.start()
        opened.append((app, web))
        return web

    yield start
    for app, web in opened:
        await web.stop()
        await app.aclose()


async def until_closed(reader: asyncio.StreamReader) -> bytes:
    """Everything the server sends until it closes the connection (a reset counts as closed)."""
    received = b""
    try:
        while chunk := await reader.read(65_536):
            received += chunk
    except ConnectionResetError:
        pass
    return received


async def healthy(web: WebServer) -> bool:
    async with httpx.AsyncClient(trust_env=False, timeout=5) as client:
        response = await client.get(f"http://127.0.0.1:{web.port}/healthz")
    return response.status_code == 200


async def test_150_stalled_requests_are_closed_after_the_header_timeout(started) -> None:
    web = await started(web_header_timeout_s=1.0)
    partials = [b"GET /heal", b"GET /healthz HTTP/1.1\r\nHost: studio\r\n", b"POST /webhooks/kie/1/x HTTP/1.1\r\nCont"]
    began = time.monotonic()
    clients = [await asyncio.open_connection("127.0.0.1", web.port) for _ in range(150)]
    for n, (_, writer) in enumerate(clients[5:]):
        writer.write(partials[n % len(partials)])

    async def trickle(writer: asyncio.StreamWriter) -> None:
        """One header byte every 0.1 s: data arriving must not extend the deadline."""
        try:
            writer.write(b"GET /healthz HTTP/1.1\r\n")
            while True:
                await asyncio.sleep(0.1)
                writer.write(b"X")
                await writer.drain()
        except ConnectionError:
            pass

    trickling = [asyncio.create_task(trickle(writer)) for _, writer in clients[:5]]

    assert await healthy(web)  # a new client is served while 150 connections stall
    assert time.monotonic() - began < 1.0  # ...and they were all still open then
    received = await asyncio.wait_for(
        asyncio.gather(*(until_closed(reader) for reader, _ in clients)), timeout=1.0 + MARGIN_S
    )
    assert set(received) == {b""}  # closed without an answer
    await asyncio.gather(*trickling)
    assert await healthy(web)
    for _, writer in clients:
        writer.close()


async def test_a_body_slower_than_the_body_timeout_is_cut_off(started) -> None:
    web = await started(web_header_timeout_s=10.0, web_body_timeout_s=0.5)
    reader, writer = await asyncio.open_connection("127.0.0.1", web.port)
    began = time.monotonic()
    writer.write(b"POST /webhooks/kie/1/token HTTP/1.1\r\nHost: studio\r\nContent-Type: application/json\r\n"
                 b"Content-Length: 1000\r\n\r\n")

    async def dribble() -> None:
        try:
            for _ in range(100):  # 10 bytes every 0.1 s: the whole body would take 10 s
                writer.write(b" " * 10)
                await writer.drain()
                await asyncio.sleep(0.1)
        except ConnectionError:
            pass

    sender = asyncio.create_task(dribble())
    answer = await asyncio.wait_for(until_closed(reader), timeout=0.5 + 1.0 + MARGIN_S)
    elapsed = time.monotonic() - began

    assert answer.startswith(b"HTTP/1.1 408 "), answer[:80]
    assert 0.4 < elapsed < 0.5 + 1.0 + MARGIN_S
    sender.cancel()
    writer.close()


async def test_a_body_in_time_still_reaches_its_handler(started) -> None:
    web = await started(web_body_timeout_s=0.5)
    async with httpx.AsyncClient(trust_env=False, timeout=5) as client:
        # An unknown job's callback: the KIE handler read the body and answered for it.
        response = await client.post(f"http://127.0.0.1:{web.port}/webhooks/kie/1/token", json={"code": 200})
    assert response.status_code == 404


async def test_connections_beyond_the_limit_are_answered_503_until_some_close(started) -> None:
    web = await started(web_header_timeout_s=1.0, web_max_connections=10)
    idle = [await asyncio.open_connection("127.0.0.1", web.port) for _ in range(10)]
    await asyncio.sleep(0.1)  # let the server register them

    reader, writer = await asyncio.open_connection("127.0.0.1", web.port)
    refused = await asyncio.wait_for(until_closed(reader), timeout=MARGIN_S)
    writer.close()
    assert refused.startswith(b"HTTP/1.1 503 ")

    await asyncio.wait_for(asyncio.gather(*(until_closed(r) for r, _ in idle)), timeout=1.0 + MARGIN_S)
    await asyncio.sleep(0.1)
    assert await healthy(web)  # room again once the stalled ones were closed
    for _, w in idle:
        w.close()
