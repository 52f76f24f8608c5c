"""``/job`` and ``/cancel``: a job's status and result, and stopping a job."""

from __future__ import annotations

from studiobot.commands.contract import Invocation, Param, Reply
from studiobot.commands.deps import Deps
from studiobot.commands.presenter import credits, job_reply
from studiobot.db import users
from studiobot.db.models import TERMINAL_STATUSES
from studiobot.errors import NotFound, UserError
from studiobot.providers.errors import ProviderError
from studiobot.scheduler import lifecycle
from studiobot.scheduler.lifecycle import JobRow

JOB_ID = Param("job_id", int, "The job's number", required=True, positional=True, min_value=1)


async def own_job(inv: Invocation, deps: Deps) -> JobRow:
    """The caller's job ``inv.args["job_id"]``.

    Raises:
        NotFound: No such job, or it belongs to someone else (one answer for both).
    """
    user_id = await deps.users.user_id(inv.user)
    async with deps.db.read() as conn:
        job = await lifecycle.get(conn, inv.args["job_id"])
    if job is None or job.user_id != user_id:
        # Same answer for "missing" and "someone else's": job ids must not reveal anything.
        raise NotFound(f"Job #{inv.args['job_id']} is not one of yours.")
    return job


async def show_job(inv: Invocation, deps: Deps) -> Reply:
    """Reply with a job's status, and its images when it succeeded."""
    job = await own_job(inv, deps)
    async with deps.db.read() as conn:
        assets = await lifecycle.assets_of(conn, job.id)
        position = await lifecycle.queue_position(conn, job.id) if job.status == "queued" else None
        prefs = await users.preferences(conn, job.user_id)
    return job_reply(job, assets, deps.store, originals=bool(prefs.get("originals")), position=position)


async def cancel_job(inv: Invocation, deps: Deps) -> Reply:
    """Cancel a job that has not finished, refunding it.

    A queued job is cancelled at once. A submitted asynchronous job is cancelled at its provider
    first; a synchronous one being generated right now cannot be stopped.
    """
    job = await own_job(inv, deps)
    if job.status in TERMINAL_STATUSES:
        raise UserError(f"Job #{job.id} has already {job.status}; there is nothing to cancel.")
    if not await stop(job, deps):
        raise UserError(
            f"Job #{job.id} is being generated right now and cannot be stopped at this point; "
            "it will finish shortly."
        )
    refund = f" {credits(job.cost)} refunded." if job.cost else ""
    return Reply(
        text=f"Cancelled job #{job.id}.{refund}",
        ephemeral=True,
        replaces_source=True,
        data={"job_id": job.id, "status": "cancelled", "refunded": job.cost},
    )


async def stop(job: JobRow, deps: Deps) -> bool:
    """Cancel an unfinished job with a refund; the caller's reply is its notification.

    A queued job stops at once; a submitted asynchronous job is cancelled at its provider first.
    A result arriving later is dropped (the job is no longer running).

    Returns:
        False when it cannot be stopped: a synchronous generation in progress, a provider that
        cannot cancel or refused to, or the job ended meanwhile.
    """
    cancelled = await lifecycle.cancel(deps.db, job.id, from_statuses=("queued",))
    if not cancelled:
        cancelled = await _cancel_running(job, deps)
    if cancelled:
        await lifecycle.mark_notified(deps.db, job.id)
    return cancelled


async def _cancel_running(job: JobRow, deps: Deps) -> bool:
    async with deps.db.read() as conn:
        current = await lifecycle.get(conn, job.id)
    if current is None or current.status != "running" or not current.provider_task_id:
        return False
    provider = deps.router.provider(current.provider)
    if not provider.capabilities.can_cancel:
        return False
    try:
        accepted = await provider.cancel(current.provider_task_id, await deps.keys.for_job(current))
    except ProviderError:
        return False
    return accepted and await lifecycle.cancel(deps.db, job.id, from_statuses=("running",))
