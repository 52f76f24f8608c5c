"""studiobot's one HTTP server (aiohttp): webhooks, landing pages and health, on one host and port.

Routes are added by the composition root before :meth:`WebServer.start` (this module knows no
platform); ``GET /healthz`` is always there for load balancers.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable

from aiohttp import web

log = logging.getLogger(__name__)

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


class WebServer:
    """An aiohttp application with a runner, started and stopped with studiobot.

    Args:
        host: Interface to listen on (``0.0.0.0`` for every one).
        port: TCP port; 0 picks a free one (see :attr:`port` after :meth:`start`).
        max_body_bytes: Largest request body accepted (webhook payloads are small).
    """

    def __init__(self, host: str, port: int, *, max_body_bytes: int = 1 << 20) -> None:
        self.host = host
        self._port = port
        self.app = web.Application(client_max_size=max_body_bytes)
        self.app.router.add_get("/healthz", _health)
        self._runner: web.AppRunner | None = None
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
        self._runner = web.AppRunner(self.app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, self.host, self._port)
        await site.start()
        if self._runner.addresses:
            self._port = self._runner.addresses[0][1]
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
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None


async def _health(request: web.Request) -> web.Response:
    return web.json_response({"ok": True})
