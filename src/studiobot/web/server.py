"""studiobot's one HTTP server (aiohttp): webhooks, landing pages and health, on one host and port.

Routes are added by the composition root before :meth:`WebServer.start` (this module knows no
platform); ``GET /healthz`` is always there for load balancers.

Slow or stalled clients are bounded three ways, none of which aiohttp 3.14 offers under that name:

* Header timeout: aiohttp's keep-alive timer runs from the moment a connection opens (and again
  after each response) and closes the connection if no complete request line and headers have
  arrived by then; bytes trickling in do not extend it. So ``keepalive_timeout`` is set to the
  header timeout, which also makes it the idle keep-alive timeout.
* Body timeout: a middleware reads the whole body before the handler runs, within the body
  timeout, and answers 408 (closing the connection) past it. Handlers' ``request.read()`` then
  returns the bytes already read.
* Connection limit: connections beyond the limit are answered 503 and closed at once, before a
  byte of theirs is parsed.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from typing import cast

from aiohttp import web

log = logging.getLogger(__name__)

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]

# After an early answer (408, 413) aiohttp reads and discards the rest of the body for this long so
# the client sees the answer rather than a reset; short, since a slow sender is what it waits on.
_LINGER_S = 1.0
_BUSY = (
    b"HTTP/1.1 503 Service Unavailable\r\nConnection: close\r\nRetry-After: 1\r\n"
    b"Content-Type: text/plain; charset=utf-8\r\nContent-Length: 20\r\n\r\nToo many connections"
)


class WebServer:
    """An aiohttp application with a runner, started and stopped with studiobot.

    Args:
        host: Interface to listen on (``0.0.0.0`` for every one).
        port: TCP port; 0 picks a free one (see :attr:`port` after :meth:`start`).
        max_body_bytes: Largest request body accepted (webhook payloads are small).
        header_timeout_s: Time a client has to send a request line and headers, from the
            connection's opening or the end of the previous response; also the idle keep-alive
            timeout. Seconds.
        body_timeout_s: Time a client has to send a request's body once its headers are in,
            in seconds; later, it gets 408 and the connection is closed.
        max_connections: Open connections served at once; more are answered 503 and closed.
    """

    def __init__(
        self, host: str, port: int, *, max_body_bytes: int = 1 << 20, header_timeout_s: float = 10.0,
        body_timeout_s: float = 30.0, max_connections: int = 512,
    ) -> None:
        self.host = host
        self._port = port
        self._header_timeout = header_timeout_s
        self._max_connections = max_connections
        self.app = web.Application(client_max_size=max_body_bytes, middlewares=[_body_within(body_timeout_s)])
        self.app.router.add_get("/healthz", _health)
        self._runner: web.AppRunner | None = None
        self._listener: asyncio.Server | None = None
        self._closed = asyncio.Event()

    def add_route(self, method: str, path: str, handler: Handler) -> None:
        """Serve ``handler`` at ``method path`` (before :meth:`start`)."""
        self.app.router.add_route(method, path, handler)

    @property
    def port(self) -> int:
        """The port listened on (the chosen one when constructed with 0)."""
        return self._port

    async def start(self) -> None:
        """Listen.

        Raises:
            OSError: The address is in use or not available.
        """
        self._runner = web.AppRunner(
            self.app, access_log=None, keepalive_timeout=self._header_timeout, lingering_time=_LINGER_S
        )
        await self._runner.setup()
        # Our own listener instead of web.TCPSite, whose protocol factory cannot be wrapped.
        self._listener = await asyncio.get_running_loop().create_server(self._gate, self.host, self._port)
        if self._listener.sockets:
            self._port = self._listener.sockets[0].getsockname()[1]
        log.info("web server listening on http://%s:%d", self.host, self._port)

    async def serve(self) -> None:
        """Listen until :meth:`close` (a service for the composition root)."""
        await self.start()
        try:
            await self._closed.wait()
        finally:
            await self.stop()

    async def close(self) -> None:
        """Make :meth:`serve` return."""
        self._closed.set()

    async def stop(self) -> None:
        """Stop listening and finish requests in flight."""
        if self._listener is not None:
            self._listener.close()
            self._listener = None
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None


    def _gate(self) -> asyncio.Protocol:
        assert self._runner is not None and self._runner.server is not None
        return _Gate(self._runner.server, self._max_connections)


class _Gate(asyncio.Protocol):
    """The first protocol of every connection: hands it to aiohttp, or refuses it when full.

    The count is taken in ``connection_made``, not in the protocol factory: asyncio calls the
    factory for a whole burst of accepted connections before any of their ``connection_made``
    runs, whereas by the time this one runs every connection accepted earlier is counted.

    An accepted connection's events are passed on to aiohttp's handler rather than handing it the
    transport with ``set_protocol``, which not every event loop implements alike.
    """

    def __init__(self, server: web.Server, max_connections: int) -> None:
        self._server = server
        self._max = max_connections
        self._handler: asyncio.Protocol | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # No isinstance check: uvloop's TCP transports do not subclass asyncio.Transport.
        transport = cast(asyncio.Transport, transport)
        if len(self._server.connections) >= self._max:
            log.info("web server full (%d connections): one refused", self._max)
            transport.write(_BUSY)
            transport.close()
            return
        self._handler = self._server()
        self._handler.connection_made(transport)

    def data_received(self, data: bytes) -> None:
        if self._handler is not None:
            self._handler.data_received(data)

    def eof_received(self) -> bool | None:
        return self._handler.eof_received() if self._handler is not None else None

    def connection_lost(self, exc: Exception | None) -> None:
        if self._handler is not None:
            self._handler.connection_lost(exc)

    def pause_writing(self) -> None:
        if self._handler is not None:
            self._handler.pause_writing()

    def resume_writing(self) -> None:
        if self._handler is not None:
            self._handler.resume_writing()


def _body_within(timeout_s: float) -> Callable[..., Awaitable[web.StreamResponse]]:
    """Middleware reading each request's body within ``timeout_s`` seconds, before its handler."""

    @web.middleware
    async def body_within(request: web.Request, handler: Handler) -> web.StreamResponse:
        if request.body_exists:
            try:
                async with asyncio.timeout(timeout_s):
                    await request.read()  # kept by aiohttp: the handler's read() returns it
            except TimeoutError:
                log.info("request body for %s not received within %g s", request.path, timeout_s)
                response = web.Response(status=408, text="Request body not received in time.")
                response.force_close()
                return response
        return await handler(request)

    return body_within


async def _health(request: web.Request) -> web.Response:
    return web.json_response({"ok": True})
