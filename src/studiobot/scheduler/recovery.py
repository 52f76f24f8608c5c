"""Recovery and expiry: what keeps every job moving after crashes and outages.

Runs periodically in every process. Jobs whose worker died mid-submission go back to the queue (or
fail once out of attempts); jobs past their deadline fail with a refund, and the provider is asked
to cancel their task; terminal jobs nobody was told about are delivered.
"""

from __future__ import annotations

import logging

from studiobot.db.engine import Database
from studiobot.providers.errors import ProviderError
from studiobot.providers.router import Router
from studiobot.scheduler.keys import Keyring
from studiobot.scheduler import lifecycle
from studiobot.scheduler.finisher import Finisher
from studiobot.scheduler.lifecycle import JobRow
from studiobot.scheduler.notify import Notifier

log = logging.getLogger(__name__)


class Recovery:
    """Periodic repair of orphaned and overdue jobs.

    Args:
        db: Database.
        router: To cancel tasks of overdue jobs at their provider.
        finisher: Fails jobs with refunds.
        notifier: Delivers forgotten terminal jobs.
        keys: Each job's key, to cancel with.
        max_attempts: Submissions tried before an orphaned job fails.
        deadline_message: What the user reads when a job ran out of time.
    """

    def __init__(
        self,
        db: Database,
        router: Router,
        finisher: Finisher,
        notifier: Notifier,
        keys: Keyring,
        *,
        max_attempts: int,
        deadline_message: str,
    ) -> None:
        self._db = db
        self._router = router
        self._finisher = finisher
        self._notifier = notifier
        self._keys = keys
        self._max_attempts = max_attempts
        self._deadline_message = deadline_message

    async def run_once(self) -> None:
        """One pass: expire overdue jobs, requeue orphaned ones, deliver forgotten results."""
        for job in await lifecycle.overdue(self._db):
            await self._expire(job)
        for job in await lifecycle.stale_submissions(self._db):
            if job.attempts >= self._max_attempts:
                await self._finisher.fail(
                    job, "orphaned", "The image could not be started after several tries; "
                    "your credits were refunded."
                )
            else:
                await lifecycle.requeue_stale(self._db, job.id)
        await self._notifier.sweep()

    async def _expire(self, job: JobRow) -> None:
        await self._finisher.fail(job, "deadline", self._deadline_message)
        if job.provider_task_id:
            try:
                provider = self._router.provider(job.provider)
                await provider.cancel(job.provider_task_id, await self._keys.for_job(job))
            except ProviderError as error:
                log.info("job %s: provider cancel after deadline failed: %s", job.id, error.detail)
