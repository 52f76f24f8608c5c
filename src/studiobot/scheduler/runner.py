"""APScheduler wiring: it only triggers the worker, poller and recovery; the database holds state."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta

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
        self._stopping = False
        self._active: set[asyncio.Task[None]] = set()
        worker.inflight.on_free = self.nudge  # a freed slot takes the next queued job at once
        now = datetime.now(UTC)
        common = {"trigger": "interval", "max_instances": 1, "coalesce": True, "next_run_time": now}
        self._scheduler.add_job(self._tracked(self._run_worker), id="worker",
                                seconds=worker_interval_s, **common)
        self._scheduler.add_job(self._tracked(poller.run_once), id="poller",
                                seconds=poll_interval_s, **common)
        self._scheduler.add_job(self._tracked(recovery.run_once), id="recovery",
                                seconds=recovery_interval_s, **common)

    def add_interval(self, job_id: str, run: Callable[[], Awaitable[object]], *, seconds: float,
                     first_after_s: float = 0.0) -> None:
        """Also run ``run`` every ``seconds`` (one at a time), first after ``first_after_s``."""
        self._scheduler.add_job(
            self._tracked(run), id=job_id, trigger="interval", seconds=seconds, max_instances=1,
            coalesce=True, next_run_time=datetime.now(UTC) + timedelta(seconds=first_after_s),
        )

    def start(self) -> None:
        """Start triggering (needs a running event loop)."""
        self._scheduler.start()

    async def shutdown(self, *, grace_s: float = 2.0) -> None:
        """Stop triggering, let runs in progress finish for up to ``grace_s`` seconds, then cancel
        what is left and hand its jobs back (``release_claims``).

        A run is one short batch (claim, poll, sweep), so it usually ends within the grace time.
        Cancelling it in the middle of a read makes SQLAlchemy terminate that connection with a
        close task of its own, which can outlive the database and hang the event loop's shutdown.
        """
        self._stopping = True
        if self._scheduler.running:
            self._scheduler.shutdown(wait=False)
        # Runs in progress would otherwise outlive the database they use.
        if self._active:
            _, late = await asyncio.wait(set(self._active), timeout=grace_s)
            for task in late:
                task.cancel()
            await asyncio.gather(*late, return_exceptions=True)
        await self._worker.inflight.cancel()
        await self._poller.inflight.cancel()
        # Jobs cut short here are handed back now rather than when their leases expire.
        await self._worker.release_claims()
        await self._poller.release_claims()

    def nudge(self) -> None:
        """A job was queued: look at the queue now rather than at the next interval."""
        if self._running_worker:
            self._again = True
        elif self._scheduler.running:
            self._scheduler.modify_job("worker", next_run_time=datetime.now(UTC))

    def _tracked(self, run: Callable[[], Awaitable[object]]) -> Callable[[], Awaitable[None]]:
        """``run`` as a scheduled job that shutdown can cancel quietly (APScheduler would log the
        cancellation as a failed run)."""

        async def job() -> None:
            if self._stopping:
                # Fired just before shutdown but started after it: the database may be closing.
                return
            task = asyncio.current_task()
            assert task is not None
            self._active.add(task)
            try:
                await run()
            except asyncio.CancelledError:
                if not self._stopping:
                    raise
            finally:
                self._active.discard(task)

        job.__name__ = job.__qualname__ = getattr(run, "__qualname__", "job")
        return job

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
