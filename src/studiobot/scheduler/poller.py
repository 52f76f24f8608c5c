"""The poller: asks asynchronous providers about due jobs, with per-provider concurrency limits.

DESIGN.md section 3, step 5. Jobs are claimed with a short lease so several worker processes never
poll one job at once; each poll pushes ``due_at`` out with growing delays (few polls per job, yet a
finished task is noticed quickly). Finished tasks go to the finisher.
"""

from __future__ import annotations

import asyncio
import logging
from collections import defaultdict
from datetime import timedelta

from studiobot.db.engine import Database
from studiobot.db.models import utcnow
from studiobot.providers.base import Finished, Progress
from studiobot.providers.errors import AuthError, ProviderError, RateLimited
from studiobot.providers.router import Router
from studiobot.scheduler import lifecycle
from studiobot.scheduler.finisher import Finisher
from studiobot.scheduler.inflight import InFlight
from studiobot.scheduler.keys import Keyring
from studiobot.scheduler.lifecycle import JobRow
from studiobot.scheduler.notify import Notifier
from studiobot.scheduler.worker import INTERNAL_ERROR, poll_delay

log = logging.getLogger(__name__)


class Poller:
    """Polls due asynchronous jobs.

    Args:
        db: Database.
        router: Provider registry.
        finisher: Ends jobs.
        notifier: Receives progress.
        keys: Each job's key.
        worker_id: Lease owner name.
        in_flight: Polls in flight at once, all providers together.
        lease_s: Lease for one poll, in seconds.
        concurrency: Polls in flight per provider.
        poll_cap_s: Longest wait between two polls of a job, in seconds.
    """

    def __init__(
        self,
        db: Database,
        router: Router,
        finisher: Finisher,
        notifier: Notifier,
        keys: Keyring,
        *,
        worker_id: str,
        in_flight: int = 200,
        lease_s: float = 60.0,
        concurrency: int = 8,
        poll_cap_s: float = 10.0,
    ) -> None:
        self._db = db
        self._router = router
        self._finisher = finisher
        self._notifier = notifier
        self._keys = keys
        self.worker_id = worker_id
        self.inflight = InFlight(in_flight, "poll")
        self._lease_s = lease_s
        self._cap = poll_cap_s
        self._limits: defaultdict[str, asyncio.Semaphore] = defaultdict(
            lambda: asyncio.Semaphore(concurrency)
        )

    async def release_claims(self) -> int:
        """Hand back every job this process still holds (at shutdown, after cancelling runs)."""
        return await lifecycle.release_claims(self._db, self.worker_id)

    async def run_once(self) -> int:
        """Claim due jobs into free poll slots and start polling them. Returns how many started."""
        started = 0
        while self.inflight.free > 0:
            jobs = await lifecycle.claim_due_polls(
                self._db, self.worker_id, batch=self.inflight.free, lease_s=self._lease_s
            )
            for job in jobs:
                self.inflight.spawn(self._poll(job))
            started += len(jobs)
            if not jobs:
                break
        return started

    async def _poll(self, job: JobRow) -> None:
        async with self._limits[job.provider]:
            try:
                provider = self._router.provider(job.provider)
                outcome = await provider.poll(job.provider_task_id, await self._keys.for_job(job))
            except ProviderError as error:
                await self._after_error(job, error)
                return
            except Exception:
                log.exception("job %s: unexpected error while polling", job.id)
                await self._finisher.fail(job, "internal", INTERNAL_ERROR)
                return
        if isinstance(outcome, Finished):
            await self._finisher.succeed_with(job, outcome, self.worker_id)
            return
        assert isinstance(outcome, Progress)
        due = utcnow() + timedelta(seconds=poll_delay(job.polls, cap_s=self._cap))
        await lifecycle.record_poll(self._db, job.id, self.worker_id, due, progress=outcome.fraction)
        await self._notifier.progress(job, outcome)

    async def _after_error(self, job: JobRow, error: ProviderError) -> None:
        if isinstance(error, AuthError):
            await self._keys.refused(job)
        if not error.retryable:
            await self._finisher.fail_with(job, error)
            return
        # The deadline bounds how long a task can keep failing to answer.
        wait = poll_delay(job.polls, cap_s=self._cap)
        if isinstance(error, RateLimited) and error.retry_after:
            wait = max(wait, error.retry_after)
        note = f"{type(error).__name__}: {error.detail}"[:300]
        await lifecycle.record_poll(
            self._db, job.id, self.worker_id, utcnow() + timedelta(seconds=wait), note=note
        )
