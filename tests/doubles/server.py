"""Run a test double (an aiohttp app) on loopback, plus the scripting both doubles share.

Doubles record every request in ``state.requests`` and, before answering normally, take the next
entry of ``state.fail_next`` if there is one. Entries are tuples:

* ``("status", status, body, headers)``: answer with this instead. ``body`` may be a dict or list
  (sent as JSON), ``str`` or ``bytes`` (sent raw, e.g. malformed JSON) or None.
* ``("sleep", seconds)``: wait, then answer normally (to trip a client timeout).

:func:`reply` and :func:`stall` build them.
"""

from __future__ import annotations

import asyncio
import contextlib
import io
import json
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from aiohttp import web
from PIL import Image

Scripted = tuple[Any, ...]
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


@dataclass(frozen=True)
class RecordedRequest:
    """One request a double received: ``json`` is the decoded body, or None if it had none."""

    method: str
    path: str
    headers: dict[str, str]
    body: bytes
    json: Any


class Watched:
    """State a test waits on: :attr:`changed` is set on every change the double sees, and
    :meth:`wait_until` re-checks a condition each time. Subclasses (dataclasses) declare
    ``_changed: asyncio.Event | None = None`` and call :meth:`_notify` when anything happens."""

    _changed: asyncio.Event | None

    @property
    def changed(self) -> asyncio.Event:
        """Set whenever the double records something (waiters clear it)."""
        if self._changed is None:
            self._changed = asyncio.Event()
        return self._changed

    def _notify(self) -> None:
        self.changed.set()

    async def wait_until(self, check: Callable[[], Any], timeout: float = 5.0,
                         what: str = "condition not met") -> Any:
        """Wait until ``check()`` is truthy and return its value.

        ``check`` is re-evaluated on every change the double sees, so it should depend on its state.

        Raises:
            TimeoutError: ``check`` stayed falsy for ``timeout`` seconds.
        """
        try:
            async with asyncio.timeout(timeout):
                while True:
                    if result := check():
                        return result
                    # No await between check and clear, so no set() can be lost.
                    self.changed.clear()
                    await self.changed.wait()
        except TimeoutError:
            raise TimeoutError(f"{what} within {timeout}s") from None


def reply(status: int, body: Any = None, headers: dict[str, str] | None = None) -> Scripted:
    """A scripted answer for ``state.fail_next``."""
    return ("status", status, body, headers or {})


def stall(seconds: float) -> Scripted:
    """A scripted delay for ``state.fail_next`` (the normal answer follows it)."""
    return ("sleep", seconds)


def respond(status: int, body: Any = None, headers: dict[str, str] | None = None) -> web.Response:
    """Build a response: dict/list bodies as JSON, str/bytes raw."""
    if isinstance(body, (dict, list)):
        return web.json_response(body, status=status, headers=headers)
    if isinstance(body, str):
        body = body.encode()
    return web.Response(status=status, body=body, headers=headers)


def scripting_middleware(state: Any) -> Callable[[web.Request, Handler], Awaitable[Any]]:
    """Middleware that records requests into ``state.requests`` and plays ``state.fail_next``."""

    @web.middleware
    async def middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
        raw = await request.read()  # aiohttp caches it, so handlers can read it again
        try:
            decoded = json.loads(raw) if raw else None
        except ValueError:
            decoded = None
        state.requests.append(
            RecordedRequest(request.method, request.path, dict(request.headers), raw, decoded)
        )
        if state.fail_next:
            script = state.fail_next.pop(0)
            if script[0] == "status":
                _, status, body, headers = script
                return respond(status, body, headers)
            if script[0] == "sleep":
                await asyncio.sleep(script[1])
            else:
                raise ValueError(f"unknown scripted entry {script!r}")
        return await handler(request)

    return middleware


@contextlib.asynccontextmanager
async def serve(app: web.Application) -> AsyncIterator[str]:
    """Serve ``app`` on 127.0.0.1 with a free port for the duration of the ``async with``.

    Yields:
        The base URL, ``http://127.0.0.1:<port>``.
    """
    # handler_cancellation: a handler stalled past the client's timeout stops when the client
    # hangs up, so shutdown does not wait for it.
    runner = web.AppRunner(app, handler_cancellation=True, shutdown_timeout=0.5)
    await runner.setup()
    try:
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        port = runner.addresses[0][1]
        yield f"http://127.0.0.1:{port}"
    finally:
        await runner.cleanup()


def png(size: str, longest_side: int) -> bytes:
    """Real PNG bytes for a ``WxH`` size, scaled so the longer side is ``longest_side`` pixels.

    Doubles scale down (e.g. 1536x1024 -> 64x43) to keep tests fast; the orientation survives.
    """
    width, height = (int(side) for side in size.split("x"))
    scale = longest_side / max(width, height)
    image = Image.new("RGB", (max(1, round(width * scale)), max(1, round(height * scale))), "teal")
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()
