"""The worker: claims queued jobs and submits them to their provider, outside any transaction.

DESIGN.md section 3, step 4. A synchronous provider's result goes straight to the finisher; an
asynchronous one's task id is stored and the poller (or the provider's webhook) takes over.
Retryable failures (rate limits, outages) go back to the queue with backoff until ``max_attempts``,
then to the operator's fallback provider when there is one and the platform pays (DESIGN.md
section 6); the rest fail with a refund.
"""

from __future__ import annotations

import logging
import random
from dataclasses import replace
from datetime import timedelta

from studiobot.db.engine import Database
from studiobot.db.models import utcnow
from studiobot.providers.base import Finished, ImageRequest, Provider, SourceImage
from studiobot.providers.errors import AuthError, ProviderError, RateLimited
from studiobot.providers.router import Router
from studiobot.scheduler import lifecycle
from studiobot.scheduler.finisher import Finisher
from studiobot.scheduler.inflight import InFlight
from studiobot.scheduler.keys import Keyring
from studiobot.scheduler.lifecycle import JobRow

log = logging.getLogger(__name__)

INTERNAL_ERROR = "Something went wrong on our side while making this image; your credits were refunded."


def request_of(job: JobRow) -> ImageRequest:
    """Rebuild the provider request a job stands for (params as stored by ``commands.queueing``)."""
    params = job.params or {}
    source = params.get("source")
    return ImageRequest(
        prompt=job.prompt,
        aspect=params.get("aspect", "1:1"),
        count=int(params.get("count", 1)),
        model=job.model,
        negative_prompt=job.negative_prompt,
        seed=params.get("seed"),
        operation=params.get("operation", "generate"),
        source=SourceImage(
            task_id=source.get("task_id"), index=int(source["index"]), seed=source.get("seed"),
            storage_key=source.get("storage_key"),
        ) if source else None,
    )


def webhook_url(base: str | None, job: JobRow, provider: Provider) -> str | None:
    """Where ``provider`` may report ``job``'s completion, or None to rely on polls.

    The path names the job and carries its unguessable token, which is how deliveries are
    authenticated for vendors that sign nothing (KIE); signing vendors are checked on top.
    """
    if base is None or not provider.capabilities.webhooks or not job.webhook_token:
        return None
    return f"{base.rstrip('/')}/webhooks/{job.provider}/{job.id}/{job.webhook_token}"


def retry_delay(attempt: int, *, cap_s: float = 60.0) -> float:
    """Exponential backoff with jitter for submission retries: up to 2**attempt s, capped."""
    ceiling = min(cap_s, 2.0**attempt)
    return random.uniform(ceiling / 4, ceiling)


def poll_delay(polls: int, *, cap_s: float) -> float:
    """Wait before the next poll: 0.5 s growing 1.6x per poll, capped (few polls, quick notice)."""
    return min(cap_s, 0.5 * 1.6**polls)


class Worker:
    """Claims and submits queued jobs.

    Args:
        db: Database.
        router: Provider registry and fallbacks.
        finisher: Ends jobs.
        keys: Each job's key (the platform's or the user's own).
        worker_id: Unique name of this worker (host:pid:random), written as the lease owner.
        concurrency: Submissions in flight at once (a slow provider occupies only its own slots).
        lease_s: Lease length in seconds; a job held longer is presumed orphaned.
        max_attempts: Submissions tried before a retryable failure becomes final.
        poll_cap_s: Longest wait between polls of an asynchronous job.
        retry_cap_s: Longest wait before a submission is retried.
        webhook_base: The public URL providers can call back on (``STUDIOBOT_PUBLIC_URL``), or
            None to rely on polls alone.
    """

    def __init__(
        self,
        db: Database,
        router: Router,
        finisher: Finisher,
        keys: Keyring,
        *,
        worker_id: str,
        concurrency: int,
        lease_s: float,
        max_attempts: int,
        poll_cap_s: float,
        retry_cap_s: float = 60.0,
        webhook_base: str | None = None,
    ) -> None:
        self._db = db
        self._router = router
        self._finisher = finisher
        self._keys = keys
        self._webhook_base = webhook_base
        self.worker_id = worker_id
        self.inflight = InFlight(concurrency, "submission")
        self._lease_s = lease_s
        self._max_attempts = max_attempts
        self._poll_cap = poll_cap_s
        self._retry_cap = retry_cap_s

    async def release_claims(self) -> int:
        """Hand back every job this process still holds (at shutdown, after cancelling runs)."""
        return await lifecycle.release_claims(self._db, self.worker_id)

    async def run_once(self) -> int:
        """Claim due jobs into free submission slots and start them. Returns how many started.

        Submissions run in the background (:attr:`inflight`); each freed slot calls
        ``inflight.on_free`` so the owner can claim the next job at once.
        """
        started = 0
        while self.inflight.free > 0:
            jobs = await lifecycle.claim_queued(
                self._db, self.worker_id, batch=self.inflight.free, lease_s=self._lease_s
            )
            for job in jobs:
                self.inflight.spawn(self._submit(job))
            started += len(jobs)
            if not jobs:
                break
        return started

    async def _submit(self, job: JobRow) -> None:
        try:
            provider = self._router.provider(job.provider)
            key = await self._keys.for_job(job, using=True)
            request = replace(request_of(job), webhook_url=webhook_url(self._webhook_base, job, provider))
            outcome = await provider.submit(request, key)
        except ProviderError as error:
            await self._after_error(job, error)
            return
        except Exception:
            log.exception("job %s: unexpected error during submission", job.id)
            await self._finisher.fail(job, "internal", INTERNAL_ERROR)
            return
        if isinstance(outcome, Finished):
            await self._finisher.succeed_with(job, outcome, self.worker_id)
            return
        due = utcnow() + timedelta(seconds=poll_delay(0, cap_s=self._poll_cap))
        if not await lifecycle.mark_submitted(self._db, job.id, self.worker_id, outcome.task_id, due):
            # Our lease lapsed and the job moved on without us: do not leave a task running for it.
            log.warning("job %s: lease lost after submission; cancelling task", job.id)
            try:
                await provider.cancel(outcome.task_id, key)
            except ProviderError:
                log.warning("job %s: could not cancel orphaned task", job.id)

    async def _after_error(self, job: JobRow, error: ProviderError) -> None:
        if isinstance(error, AuthError):
            await self._keys.refused(job)
        if error.retryable and job.attempts < self._max_attempts:
            wait = retry_delay(job.attempts, cap_s=self._retry_cap)
            if isinstance(error, RateLimited) and error.retry_after:
                wait = max(wait, error.retry_after)
            due = utcnow() + timedelta(seconds=wait)
            reason = f"{type(error).__name__}: {error.detail}"[:300]
            if await lifecycle.retry_later(self._db, job.id, self.worker_id, due, reason):
                return
        elif error.retryable and job.key_source == "platform" and await self._fail_over(job, error):
            return
        await self._finisher.fail_with(job, error)

    async def _fail_over(self, job: JobRow, error: ProviderError) -> bool:
        """Move ``job`` to the next fallback provider, if the operator configured one that fits."""
        params = dict(job.params or {})
        tried = [*params.get("tried", []), job.provider]
        route = self._router.fallback(job.provider, request_of(job), tried)
        if route is None:
            return False
        params["tried"] = tried
        reason = f"{type(error).__name__} from {job.provider}"
        log.info("job %s: failing over from %s to %s (%s)", job.id, job.provider, route.provider.name, reason)
        return await lifecycle.fail_over(
            self._db, job.id, self.worker_id, provider=route.provider.name, model=route.model,
            params=params, reason=reason,
        )
