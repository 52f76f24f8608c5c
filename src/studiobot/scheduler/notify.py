"""Telling users about their jobs: progress (throttled) and terminal states (exactly delivered).

The scheduler knows nothing of chat platforms; it calls a :class:`JobListener` that the composition
root wires to the commands layer, which renders a Reply and hands it to the platform's outbox.
A terminal job is marked ``notified_at`` only after the listener returned, so a crash in between
means the sweep delivers it again later (at least once, never lost).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from datetime import timedelta
from typing import Protocol

from studiobot.db.engine import Database
from studiobot.db.models import utcnow
from studiobot.providers.base import Progress
from studiobot.scheduler import lifecycle
from studiobot.scheduler.lifecycle import JobRow

log = logging.getLogger(__name__)


class JobListener(Protocol):
    """Receives job news; implemented in ``commands/`` (rendering) for each platform's outbox."""

    async def job_progress(self, job: JobRow, progress: Progress) -> None:
        """A running job reported progress (already throttled)."""
        ...

    async def job_finished(self, job_id: int) -> None:
        """A job reached a terminal state; read it from the database and tell its user."""
        ...


class Notifier:
    """Throttles progress and delivers terminal states through the listener.

    Args:
        db: Database, to mark jobs notified.
        listener: Renders and delivers; None in processes that cannot reach any platform.
        platforms: Origin platforms this process can deliver to (jobs from others are left for a
            process that can).
        progress_interval_s: Least time between two progress messages for one job (Discord and
            Telegram edits are rate limited; reference-platform-rules.md sections 3 and 4).
    """

    def __init__(
        self,
        db: Database,
        listener: JobListener | None,
        platforms: Sequence[str],
        *,
        progress_interval_s: float = 3.0,
    ) -> None:
        self._db = db
        self._listener = listener
        self._platforms = tuple(platforms)
        self._interval = progress_interval_s
        self._last_progress: dict[int, tuple[float, float | None]] = {}

    async def progress(self, job: JobRow, progress: Progress) -> None:
        """Forward progress if it changed and the job's last message is old enough."""
        if self._listener is None or job.origin_platform not in self._platforms:
            return
        now = time.monotonic()
        last = self._last_progress.get(job.id)
        if last is not None and (now - last[0] < self._interval or last[1] == progress.fraction):
            return
        self._last_progress[job.id] = (now, progress.fraction)
        try:
            await self._listener.job_progress(job, progress)
        except Exception:
            log.exception("progress delivery failed for job %s", job.id)

    async def finished(self, job_id: int, origin_platform: str) -> None:
        """Deliver a terminal job, then mark it notified (left for the sweep if delivery fails)."""
        self._last_progress.pop(job_id, None)
        if self._listener is None or origin_platform not in self._platforms:
            return
        try:
            await self._listener.job_finished(job_id)
        except Exception:
            log.exception("result delivery failed for job %s; the sweep will retry", job_id)
            return
        await lifecycle.mark_notified(self._db, job_id)

    async def sweep(self, *, grace_s: float = 10.0) -> int:
        """Deliver terminal jobs nobody was told about (e.g. finished just before a crash)."""
        if self._listener is None:
            return 0
        forgotten = await lifecycle.unnotified(
            self._db, self._platforms, older_than=utcnow() - timedelta(seconds=grace_s)
        )
        for job_id, platform in forgotten:
            await self.finished(job_id, platform)
        return len(forgotten)
