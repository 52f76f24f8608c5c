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


class Undeliverable(Exception):
    """A reply can never be delivered (the bot was removed, blocked, or may not post there).

    Raised by a platform's outbox (``commands.contract.Outbox.deliver``, which re-exports it)
    instead of a platform error when trying again cannot help, so the notifier stops at once
    instead of after its bounded attempts. ``str(error)`` says why, for the log; it never holds
    a token.
    """


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
        max_delivery_attempts: Deliveries of one terminal state tried before giving up.
        delivery_backoff_s: Wait after the first failed delivery; doubled after each one.
    """

    def __init__(
        self,
        db: Database,
        listener: JobListener | None,
        platforms: Sequence[str],
        *,
        progress_interval_s: float = 3.0,
        max_delivery_attempts: int = 8,
        delivery_backoff_s: float = 15.0,
    ) -> None:
        self._db = db
        self._max_attempts = max_delivery_attempts
        self._backoff_s = delivery_backoff_s
        self._listener = listener
        self._platforms = tuple(platforms)
        self._interval = progress_interval_s
        self._last_progress: dict[int, tuple[float, float | None]] = {}
        self._only_user: int | None = None
        self._delivering: set[int] = set()

    def deliver_only_to(self, user_id: int) -> None:
        """Deliver (and sweep) only ``user_id``'s jobs: this process is one person's terminal.

        Any shell process's worker may finish any shell user's job; each terminal must print only
        its own user's results, and the other users' are left for their own processes. Since no
        other process delivers this user's jobs, the sweep needs no grace time.
        """
        self._only_user = user_id

    async def progress(self, job: JobRow, progress: Progress) -> None:
        """Forward progress if it changed and the job's last message is old enough."""
        if self._listener is None or not self._ours(job.origin_platform, job.user_id):
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

    def _ours(self, platform: str, user_id: int) -> bool:
        return platform in self._platforms and self._only_user in (None, user_id)

    async def finished(self, job_id: int, origin_platform: str, user_id: int) -> None:
        """Deliver a terminal job, then mark it notified.

        A failed delivery is left for the sweep, which tries again with growing waits, up to
        ``max_delivery_attempts`` times; :class:`Undeliverable` (the platform will never accept
        it: the bot was removed or blocked) ends it at once. Either way the job's ledger entries
        are already final; only the message is lost.
        """
        self._last_progress.pop(job_id, None)
        if self._listener is None or not self._ours(origin_platform, user_id):
            return
        if job_id in self._delivering:  # the finisher and the sweep met on one job
            return
        self._delivering.add(job_id)
        try:
            await self._deliver(self._listener, job_id)
        finally:
            self._delivering.discard(job_id)

    async def _deliver(self, listener: JobListener, job_id: int) -> None:
        try:
            await listener.job_finished(job_id)
        except Undeliverable as exc:
            log.warning("result of job %s cannot be delivered: %s", job_id, exc)
            await lifecycle.give_up_delivery(self._db, job_id, str(exc))
            return
        except Exception:
            gave_up = await lifecycle.delivery_failed(
                self._db, job_id, max_attempts=self._max_attempts, backoff_s=self._backoff_s
            )
            log.exception(
                "result delivery failed for job %s; %s", job_id,
                "giving up" if gave_up else "the sweep will retry",
            )
            return
        await lifecycle.mark_notified(self._db, job_id)

    async def sweep(self, *, grace_s: float = 10.0) -> int:
        """Deliver terminal jobs nobody was told about (e.g. finished just before a crash)."""
        if self._listener is None:
            return 0
        if self._only_user is not None:
            grace_s = 0.0
        forgotten = await lifecycle.unnotified(
            self._db, self._platforms, older_than=utcnow() - timedelta(seconds=grace_s), user_id=self._only_user
        )
        for job_id, platform, user_id in forgotten:
            # Delivered meanwhile (by the finisher, between our read and now)?
            if job_id not in self._delivering and not await lifecycle.is_notified(self._db, job_id):
                await self.finished(job_id, platform, user_id)
        return len(forgotten)
