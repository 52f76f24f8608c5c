"""APScheduler wiring: it only triggers the worker, poller and recovery; the database holds state."""

from __future__ import annotations

import logging
from datetime import UTC, datetime

from apscheduler.schedulers.asyncio import AsyncIOScheduler

from studiobot.scheduler.poller import Poller
from studiobot.scheduler.recovery import Recovery
from studiobot.scheduler.worker import Worker


class SchedulerRunner:
    """Runs ``worker``, ``poller`` and ``recovery`` on intervals, one instance of each at a time.

    Args:
        worker_interval_s: Seconds between queue checks (``nudge`` makes one happen now).
        poll_interval_s: Seconds between checks for due polls.
        recovery_interval_s: Seconds between recovery passes.
    """

    def __init__(
        self,
        worker: Worker,
        poller: Poller,
        recovery: Recovery,
        *,
        worker_interval_s: float,
        poll_interval_s: float,
        recovery_interval_s: float = 5.0,
    ) -> None:
        # APScheduler logs every run at INFO, and a nudge racing a starting run as a skipped run at
        # WARNING; at sub-second intervals both drown real messages. Job errors stay visible.
        logging.getLogger("apscheduler").setLevel(logging.WARNING)
        logging.getLogger("apscheduler.scheduler").setLevel(logging.ERROR)
        self._scheduler = AsyncIOScheduler(timezone=UTC)
        self._worker = worker
        self._poller = poller
        self._running_worker = False
        self._again = False
        worker.inflight.on_free = self.nudge  # a freed slot takes the next queued job at once
        now = datetime.now(UTC)
        common = {"trigger": "interval", "max_instances": 1, "coalesce": True, "next_run_time": now}
        self._scheduler.add_job(self._run_worker, id="worker", seconds=worker_interval_s, **common)
        self._scheduler.add_job(poller.run_once, id="poller", seconds=poll_interval_s, **common)
        self._scheduler.add_job(
            recovery.run_once, id="recovery", seconds=recovery_interval_s, **common
        )

    def start(self) -> None:
        """Start triggering (needs a running event loop)."""
        self._scheduler.start()

    async def shutdown(self) -> None:
        """Stop triggering and cancel work in flight (its leases expire and recovery resumes it)."""
        if self._scheduler.running:
            self._scheduler.shutdown(wait=False)
        await self._worker.inflight.cancel()
        await self._poller.inflight.cancel()

    def nudge(self) -> None:
        """A job was queued: look at the queue now rather than at the next interval."""
        if self._running_worker:
            self._again = True
        elif self._scheduler.running:
            self._scheduler.modify_job("worker", next_run_time=datetime.now(UTC))

    async def _run_worker(self) -> None:
        self._running_worker = True
        try:
            while True:
                self._again = False
                await self._worker.run_once()
                if not self._again:
                    return
        finally:
            self._running_worker = False
