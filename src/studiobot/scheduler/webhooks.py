"""Provider webhooks: a vendor reports that a task finished, and the job ends as if a poll had seen it.

The URL handed to the provider names the job and carries its unguessable per-job token
(``/webhooks/<provider>/<job id>/<token>``); vendors that sign their deliveries (Replicate) are
verified on top, by the adapter. A delivery is answered at once and the finishing (downloads,
storage, the reply) runs in the background under the job's lease, like a poll. Polling stays the
safety net: a delivery refused, lost, or arriving while a poll holds the job changes nothing that a
later poll would not.
"""

from __future__ import annotations

import asyncio
import hmac
import logging
from collections.abc import Mapping
from dataclasses import dataclass

from studiobot.db.engine import Database
from studiobot.db.models import ACTIVE_STATUSES, utcnow
from studiobot.errors import UserError
from studiobot.providers.base import Finished, Progress, WebhookProvider
from studiobot.providers.errors import AuthError, ProviderError, WebhookRejected
from studiobot.providers.router import Router
from studiobot.scheduler import lifecycle
from studiobot.scheduler.finisher import Finisher
from studiobot.scheduler.keys import Keyring
from studiobot.scheduler.notify import Notifier

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class Answer:
    """What to answer the provider: an HTTP status and a short plain-text reason."""

    status: int
    text: str


class WebhookReceiver:
    """Turns provider webhook deliveries into finished jobs.

    Args:
        db: Database.
        router: Providers.
        keys: Each job's key (signing vendors verify per account).
        finisher: Ends jobs.
        notifier: Receives progress.
        owner: Lease owner name for jobs finished from a delivery.
        lease_s: Lease while a delivery's result is stored, in seconds.
    """

    def __init__(
        self,
        db: Database,
        router: Router,
        keys: Keyring,
        finisher: Finisher,
        notifier: Notifier,
        *,
        owner: str,
        lease_s: float = 120.0,
    ) -> None:
        self._db = db
        self._router = router
        self._keys = keys
        self._finisher = finisher
        self._notifier = notifier
        self._owner = owner
        self._lease_s = lease_s
        self._tasks: set[asyncio.Task[None]] = set()

    async def receive(
        self, provider_name: str, job_id: int, token: str, body: bytes, headers: Mapping[str, str]
    ) -> Answer:
        """Handle one delivery.

        Returns:
            404 for an unknown job or a wrong token (the same answer, so ids cannot be probed);
            400 for a delivery the adapter rejects (bad signature, malformed, another task);
            503 when the job cannot take it yet (not submitted, or a poll holds it): vendors
            redeliver; 200 otherwise, including for a job already finished.
        """
        async with self._db.read() as conn:
            job = await lifecycle.get(conn, job_id)
        if (
            job is None or job.provider != provider_name or not job.webhook_token
            or not hmac.compare_digest(token.encode(), job.webhook_token.encode())
        ):
            return Answer(404, "unknown job")
        try:
            provider = self._router.provider(provider_name)
        except UserError:
            return Answer(404, "unknown job")
        if not isinstance(provider, WebhookProvider):
            return Answer(404, "unknown job")
        if job.status not in ACTIVE_STATUSES:
            return Answer(200, "already finished")
        if job.status != "running" or not job.provider_task_id:
            return Answer(503, "not submitted yet")
        try:
            key = await self._keys.for_job(job)
        except AuthError:
            return Answer(503, "key unavailable")  # the next poll fails the job properly
        try:
            outcome: Progress | Finished | ProviderError = await provider.read_webhook(
                body, headers, job.provider_task_id, key
            )
        except WebhookRejected as rejected:
            log.warning("job %s: %s webhook rejected: %s", job.id, provider_name, rejected)
            return Answer(400, "rejected")
        except ProviderError as error:
            outcome = error
        if isinstance(outcome, Progress):
            await self._notifier.progress(job, outcome)
            return Answer(200, "noted")
        claimed = await lifecycle.claim_for_webhook(self._db, job.id, self._owner, lease_s=self._lease_s)
        if claimed is None:
            return Answer(503, "busy")
        task = asyncio.create_task(self._finish(claimed, outcome), name=f"webhook-job-{job.id}")
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return Answer(200, "accepted")

    async def _finish(self, job: lifecycle.JobRow, outcome: Finished | ProviderError) -> None:
        try:
            if isinstance(outcome, Finished):
                await self._finisher.succeed_with(job, outcome, self._owner)
            elif outcome.retryable:
                # Nothing final was said: hand the job back to the poller at once.
                await lifecycle.record_poll(self._db, job.id, self._owner, utcnow(),
                                            note=f"webhook: {type(outcome).__name__}")
            else:
                if isinstance(outcome, AuthError):
                    await self._keys.refused(job)
                await self._finisher.fail_with(job, outcome)
        except Exception:
            log.exception("job %s: finishing from a webhook failed; polling will pick it up", job.id)
            await lifecycle.record_poll(self._db, job.id, self._owner, utcnow())

    async def drain(self) -> None:
        """Wait for deliveries being finished (at shutdown)."""
        if self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)
