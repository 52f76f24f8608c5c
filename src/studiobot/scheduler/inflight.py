"""A bounded set of background tasks, so one slow provider call never holds up the others."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Coroutine
from typing import Any

log = logging.getLogger(__name__)


class InFlight:
    """Runs at most ``limit`` tasks at once and says when a slot frees up.

    Args:
        limit: Most tasks running at once.
        name: For log messages.
    """

    def __init__(self, limit: int, name: str) -> None:
        self._limit = limit
        self._name = name
        self._tasks: set[asyncio.Task[None]] = set()
        #: Called whenever a task ends, so the owner can claim more work at once.
        self.on_free: Callable[[], None] | None = None

    @property
    def free(self) -> int:
        """Slots available now."""
        return self._limit - len(self._tasks)

    def spawn(self, work: Coroutine[Any, Any, None]) -> None:
        """Start ``work`` in the background (the caller checks :attr:`free` first)."""
        task = asyncio.create_task(work)
        self._tasks.add(task)
        task.add_done_callback(self._done)

    def _done(self, task: asyncio.Task[None]) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.error("%s task failed", self._name, exc_info=task.exception())
        if self.on_free is not None:
            self.on_free()

    async def idle(self) -> None:
        """Wait until no task is running."""
        while self._tasks:
            await asyncio.wait(set(self._tasks))

    async def cancel(self) -> None:
        """Cancel every running task (their leases expire and recovery picks the jobs up)."""
        tasks = list(self._tasks)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
