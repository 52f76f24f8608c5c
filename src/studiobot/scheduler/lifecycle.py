"""Job state transitions, each one transaction: a conditional UPDATE, its ledger effect and an event.

States (DESIGN.md section 3)::

    queued --claim--> running --submitted/polled--> running --succeed--> succeeded (capture)
       ^                 |                                   \\--fail----> failed    (refund)
       \\---retry later---/                                    \\-cancel--> cancelled (refund)

Every transition names the states it may start from in its WHERE clause, so two processes racing
on one job (a poll and a deadline, a result and a cancel) cannot both win: the loser updates no row
and does nothing else. That, plus the ledger's unique ``resolve:job:<id>`` key, is why a reservation
is resolved exactly once.

Claims use ``FOR UPDATE SKIP LOCKED`` on PostgreSQL (several workers take disjoint rows); on SQLite
the same single UPDATE is atomic because SQLite has one writer.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import (
    CTE,
    JSON,
    BigInteger,
    Integer,
    Text,
    bindparam,
    func,
    insert,
    or_,
    select,
    text,
    update,
)
from sqlalchemy.engine import Connection, Row
from sqlalchemy.ext.asyncio import AsyncConnection
from sqlalchemy.sql import Select

from studiobot.billing import ledger
from studiobot.db.assets import lock_files
from studiobot.db.engine import Database
from studiobot.db.models import ACTIVE_STATUSES, Asset, Job, JobEvent, UTCDateTime, utcnow
from studiobot.errors import LimitReached

JobRow = Row[Any]
_jobs = Job.__table__
_ALL = tuple(_jobs.c)

# The accept path's statements, built once (building them per call costs more than running them).
_INSERT_JOB = insert(_jobs).returning(_jobs.c.id)
_INSERT_EVENT = insert(JobEvent.__table__)
RESERVE_PREFIX = "reserve:job:"  # + job id: the idempotency key of a job's reservation entry
_ACCEPT_TEXT_PARAMS = (
    "prompt", "negative_prompt", "provider", "model", "key_source", "origin_platform",
    "idempotency_key", "detail", "reserve_prefix", "webhook_token",
)
# PostgreSQL accepts in one statement what takes four elsewhere: data-modifying CTEs reserve the
# credits (locking the account row), insert the job, its reserve entry and its event. Nothing is
# inserted when the balance is short or a pass is running (no row comes back); those take the
# general path. Round trips, not SQL, are the cost here.
_ACCEPT_PG = text(
    """
    WITH r AS (
        UPDATE credit_accounts SET balance = balance - :cost, updated_at = :now
        WHERE user_id = :user_id AND balance >= :cost
          AND (:cost = 0 OR pass_until IS NULL OR pass_until <= :now)
        RETURNING balance
    ), j AS (
        INSERT INTO jobs (user_id, kind, prompt, negative_prompt, params, provider, model,
                          key_source, api_key_id, webhook_token, cost, status, attempts, polls,
                          due_at, deadline_at, origin_platform, origin_chat, community_id,
                          idempotency_key, created_at)
        SELECT :user_id, 'image', :prompt, :negative_prompt, :params, :provider, :model,
               :key_source, :api_key_id, :webhook_token, :cost, 'queued', 0, 0,
               :now, :deadline_at, :origin_platform, :origin_chat, :community_id,
               :idempotency_key, :now
        FROM r
        RETURNING id
    ), e AS (
        INSERT INTO credit_entries (user_id, kind, amount, balance_after, job_id, idempotency_key,
                                    note, created_at)
        SELECT :user_id, 'reserve', -:cost, r.balance, j.id, :reserve_prefix || j.id, '', :now
        FROM r, j WHERE :cost > 0
    ), ev AS (
        INSERT INTO job_events (job_id, kind, detail, created_at)
        SELECT j.id, 'queued', :detail, :now FROM j
    )
    SELECT j.id, r.balance FROM j, r
    """
).bindparams(
    bindparam("user_id", type_=BigInteger),
    bindparam("api_key_id", type_=BigInteger),
    bindparam("community_id", type_=BigInteger),
    bindparam("cost", type_=Integer),
    *(bindparam(name, type_=Text) for name in _ACCEPT_TEXT_PARAMS),
    bindparam("params", type_=JSON),
    bindparam("origin_chat", type_=JSON),
    bindparam("now", type_=UTCDateTime),
    bindparam("deadline_at", type_=UTCDateTime),
)

# OR of equalities, not IN: an IN list is re-expanded on every execution.
_ACTIVE = or_(*(_jobs.c.status == st for st in ACTIVE_STATUSES))
_LIMITS = select(
    select(func.count()).where(_jobs.c.user_id == bindparam("uid"), _ACTIVE).scalar_subquery(),
    select(func.count())
    .where(_jobs.c.user_id == bindparam("uid"), _jobs.c.created_at >= bindparam("since"))
    .scalar_subquery(),
)
_COMMUNITY_ACTIVE = select(func.count()).where(_jobs.c.community_id == bindparam("cid"), _ACTIVE)


@dataclass(frozen=True, slots=True)
class NewJob:
    """What the ``/imagine`` handler decided; :func:`enqueue` stores it and reserves its cost."""

    user_id: int
    prompt: str
    negative_prompt: str | None
    params: dict[str, Any]
    provider: str
    model: str
    key_source: str
    cost: int
    origin_platform: str
    origin_chat: dict[str, Any]
    idempotency_key: str
    deadline_s: float
    api_key_id: int | None = None
    webhook_token: str | None = None
    #: The community it is made in (``communities.id``), None in a private chat.
    community_id: int | None = None


@dataclass(frozen=True, slots=True)
class Limits:
    """Limits checked while the account row is locked: per user, and per community when the job
    is made in one (``max_community_active``; None elsewhere)."""

    max_active: int
    max_per_hour: int
    max_community_active: int | None = None


@dataclass(frozen=True, slots=True)
class NewAsset:
    """A stored image to attach to a job when it succeeds."""

    kind: str
    position: int
    sha256: str
    storage_key: str
    thumbnail_key: str | None
    mime: str
    width: int
    height: int
    size: int
    seed: int | None
    nsfw: bool | None


def enqueue(conn: Connection, job: NewJob, limits: Limits) -> tuple[int, int]:
    """Insert a queued job and reserve its cost: a transaction function for ``Database.run``.

    The reservation's conditional UPDATE locks the user's account row, so the limit check after it
    sees every concurrent acceptance of the same user (PostgreSQL) or runs alone (SQLite). This is
    the hot path of every ``/imagine``, so its statements are built once at import; on PostgreSQL
    everything but the limit check is one statement (:data:`_ACCEPT_PG`).

    Returns:
        (job id, balance after the reservation).

    Raises:
        InsufficientCredits: Not enough credits (the transaction rolls back: nothing stays behind).
        LimitReached: Too many active jobs or too many jobs this hour.
        sqlalchemy.exc.IntegrityError: The idempotency key was used (the same invocation again).
    """
    now = utcnow()
    values = {
        "user_id": job.user_id, "prompt": job.prompt, "negative_prompt": job.negative_prompt,
        "params": job.params, "provider": job.provider, "model": job.model,
        "key_source": job.key_source, "api_key_id": job.api_key_id, "webhook_token": job.webhook_token,
        "cost": job.cost, "now": now,
        "deadline_at": now + timedelta(seconds=job.deadline_s),
        "origin_platform": job.origin_platform, "origin_chat": job.origin_chat,
        "community_id": job.community_id, "idempotency_key": job.idempotency_key,
    }
    detail = f"{job.provider}/{job.model} cost={job.cost}"
    row = None
    if conn.dialect.name == "postgresql":
        row = conn.execute(
            _ACCEPT_PG, {**values, "detail": detail, "reserve_prefix": RESERVE_PREFIX}
        ).one_or_none()
    if row is not None:
        job_id, balance = row
    else:
        job_id = conn.execute(
            _INSERT_JOB,
            {
                **{k: v for k, v in values.items() if k != "now"},
                "kind": "image", "status": "queued", "attempts": 0, "polls": 0,
                "due_at": now, "created_at": now,
            },
        ).scalar_one()
        held = ledger.reserve(conn, job.user_id, job.cost, job_id=job_id, key=f"{RESERVE_PREFIX}{job_id}", now=now)
        if held.pass_credits:
            conn.execute(
                update(_jobs).where(_jobs.c.id == job_id)
                .values(pass_id=held.pass_id, pass_credits=held.pass_credits)
            )
        balance = held.balance
        _event(conn, job_id, "queued", detail, now=now)
    active, last_hour = conn.execute(
        _LIMITS, {"uid": job.user_id, "since": now - timedelta(hours=1)}
    ).one()
    if active > limits.max_active:
        raise LimitReached(
            f"You already have {active - 1} images in progress (the limit is {limits.max_active}). "
            "Wait for one to finish, or /cancel one."
        )
    if last_hour > limits.max_per_hour:
        raise LimitReached(
            f"You have started {limits.max_per_hour} images in the last hour, the hourly limit. "
            "Please try again a little later."
        )
    if job.community_id is not None and limits.max_community_active is not None:
        # Not serialised across users (no shared lock): two last-moment acceptances may both pass,
        # which a soft per-community cap tolerates.
        busy = conn.execute(_COMMUNITY_ACTIVE, {"cid": job.community_id}).scalar_one()
        if busy > limits.max_community_active:
            raise LimitReached(
                f"This community already has {busy - 1} images in progress (its limit is "
                f"{limits.max_community_active}). Please try again in a minute."
            )
    return job_id, balance


async def get(conn: AsyncConnection, job_id: int) -> JobRow | None:
    """One job row by id, or None."""
    return (await conn.execute(select(*_ALL).where(Job.id == job_id))).one_or_none()


async def get_by_key(conn: AsyncConnection, idempotency_key: str) -> JobRow | None:
    """The job a given invocation created, or None."""
    result = await conn.execute(select(*_ALL).where(Job.idempotency_key == idempotency_key))
    return result.one_or_none()


async def queue_position(conn: AsyncConnection, job_id: int) -> int:
    """1-based place of a queued job among queued jobs (0 when it is not queued)."""
    result = await conn.execute(
        select(func.count()).where(Job.status == "queued", Job.id <= job_id)
    )
    return int(result.scalar_one())


def _picked(due: Select[tuple[int]], batch: int) -> CTE:
    """The first ``batch`` rows of ``due`` (by due time), locked, as a materialised CTE.

    ``UPDATE ... WHERE id IN (SELECT ... LIMIT n FOR UPDATE SKIP LOCKED)`` is not bounded on
    PostgreSQL: the planner may turn the ``IN`` into a join that re-runs the subquery per row, and
    each run skips the rows the previous ones locked, so one claim took every queued job. A
    ``MATERIALIZED`` CTE is evaluated exactly once (PostgreSQL docs, "WITH Queries": a
    materialised query is computed once), and ``UPDATE ... FROM`` joins to its ``n`` ids.
    SQLite has no row locks (one writer at a time), so there the lock clause is simply dropped.
    """
    return (
        due.order_by(Job.due_at, Job.id)
        .limit(batch)
        .with_for_update(skip_locked=True)
        .cte("picked")
        .prefix_with("MATERIALIZED", dialect="postgresql")
    )


async def claim_queued(
    db: Database, worker_id: str, *, batch: int, lease_s: float, now: datetime | None = None
) -> list[JobRow]:
    """Take up to ``batch`` due queued jobs: they become ``running`` under our lease."""
    now = now or utcnow()
    picked = _picked(
        select(Job.id).where(Job.status == "queued", Job.due_at <= now), batch
    )

    def tx(conn: Connection) -> list[JobRow]:
        rows = (
            conn.execute(
                update(Job)
                .where(Job.id == picked.c.id, Job.status == "queued")
                .values(
                    status="running",
                    attempts=Job.attempts + 1,
                    lease_owner=worker_id,
                    lease_expires_at=now + timedelta(seconds=lease_s),
                )
                .returning(*_ALL)
            )
        ).all()
        if rows:
            conn.execute(
                _INSERT_EVENT,
                [
                    {"job_id": row.id, "kind": "claimed", "created_at": now,
                     "detail": f"worker={worker_id} attempt={row.attempts}"}
                    for row in rows
                ],
            )
        return rows

    return await db.run(tx)


async def claim_due_polls(
    db: Database, worker_id: str, *, batch: int, lease_s: float, now: datetime | None = None
) -> list[JobRow]:
    """Take up to ``batch`` submitted jobs whose next poll is due and whom no live lease holds."""
    now = now or utcnow()
    picked = _picked(
        select(Job.id).where(
            Job.status == "running",
            Job.provider_task_id.is_not(None),
            Job.due_at <= now,
            or_(Job.lease_expires_at.is_(None), Job.lease_expires_at < now),
        ),
        batch,
    )

    def tx(conn: Connection) -> list[JobRow]:
        return (
            conn.execute(
                update(Job)
                .where(Job.id == picked.c.id, Job.status == "running")
                .values(
                    polls=Job.polls + 1,
                    lease_owner=worker_id,
                    lease_expires_at=now + timedelta(seconds=lease_s),
                )
                .returning(*_ALL)
            )
        ).all()

    return await db.run(tx)


async def mark_submitted(db: Database, job_id: int, worker_id: str, task_id: str, due_at: datetime) -> bool:
    """Record an asynchronous task id and release our lease; False if the job is no longer ours."""

    def tx(conn: Connection) -> bool:
        result = conn.execute(
            update(Job)
            .where(Job.id == job_id, Job.status == "running", Job.lease_owner == worker_id)
            .values(provider_task_id=task_id, due_at=due_at, lease_owner=None, lease_expires_at=None)
        )
        if result.rowcount:
            _event(conn, job_id, "submitted", f"task={task_id[:80]}")
        return bool(result.rowcount)

    return await db.run(tx)


async def record_poll(
    db: Database, job_id: int, worker_id: str, due_at: datetime, *, progress: float | None = None,
    note: str | None = None,
) -> bool:
    """Store the latest progress and when to poll next, releasing our lease."""
    values: dict[str, Any] = {"due_at": due_at, "lease_owner": None, "lease_expires_at": None}
    if progress is not None:
        values["progress"] = progress

    def tx(conn: Connection) -> bool:
        result = conn.execute(
            update(Job)
            .where(Job.id == job_id, Job.status == "running", Job.lease_owner == worker_id)
            .values(**values)
        )
        if result.rowcount and note:
            _event(conn, job_id, "poll-retry", note)
        return bool(result.rowcount)

    return await db.run(tx)


async def retry_later(db: Database, job_id: int, worker_id: str, due_at: datetime, reason: str) -> bool:
    """Put a job whose submission failed retryably back in the queue until ``due_at``."""

    def tx(conn: Connection) -> bool:
        result = conn.execute(
            update(Job)
            .where(
                Job.id == job_id,
                Job.status == "running",
                Job.lease_owner == worker_id,
                Job.provider_task_id.is_(None),
            )
            .values(status="queued", due_at=due_at, lease_owner=None, lease_expires_at=None)
        )
        if result.rowcount:
            _event(conn, job_id, "retry", reason)
        return bool(result.rowcount)

    return await db.run(tx)


async def fail_over(
    db: Database, job_id: int, worker_id: str, *, provider: str, model: str, params: dict[str, Any],
    reason: str,
) -> bool:
    """Move a job whose submissions kept failing retryably to a fallback provider, queued now.

    The job keeps its reservation (its price was agreed when it was queued) and gets a fresh set
    of attempts on the new provider. False if the job is no longer ours to move.
    """
    now = utcnow()

    def tx(conn: Connection) -> bool:
        result = conn.execute(
            update(Job)
            .where(
                Job.id == job_id, Job.status == "running", Job.lease_owner == worker_id,
                Job.provider_task_id.is_(None), Job.key_source == "platform",
            )
            .values(provider=provider, model=model, params=params, status="queued", attempts=0,
                    due_at=now, lease_owner=None, lease_expires_at=None)
        )
        if result.rowcount:
            _event(conn, job_id, "failover", f"to {provider}/{model}: {reason}"[:300], now=now)
        return bool(result.rowcount)

    return await db.run(tx)


async def claim_for_webhook(db: Database, job_id: int, owner: str, *, lease_s: float) -> JobRow | None:
    """Lease a submitted, running job for a provider's webhook delivery.

    Returns:
        The job, or None when it is not running with a task, or a poll holds it right now (the
        provider redelivers, and polling is the safety net either way).
    """
    now = utcnow()

    def tx(conn: Connection) -> JobRow | None:
        return conn.execute(
            update(Job)
            .where(
                Job.id == job_id, Job.status == "running", Job.provider_task_id.is_not(None),
                or_(Job.lease_expires_at.is_(None), Job.lease_expires_at < now),
            )
            .values(lease_owner=owner, lease_expires_at=now + timedelta(seconds=lease_s))
            .returning(*_ALL)
        ).one_or_none()

    return await db.run(tx)


async def succeed(db: Database, job_id: int, assets: Sequence[NewAsset]) -> bool:
    """Mark a running job succeeded, attach its assets and capture its reservation.

    The assets' stored files are locked first (:func:`studiobot.db.assets.lock_files`): a
    deletion releasing a file with the same bytes either sees these rows or has finished, and
    then the caller writes its files again.

    Returns:
        False when the job had already left ``running`` (cancelled, expired, finished elsewhere);
        then nothing is written and the result is dropped.
    """
    now = utcnow()

    def tx(conn: Connection) -> bool:
        lock_files(conn, [k for a in assets for k in (a.storage_key, a.thumbnail_key) if k])
        row = (
            conn.execute(
                update(Job)
                .where(Job.id == job_id, Job.status == "running")
                .values(
                    status="succeeded", progress=1.0, finished_at=now, lease_owner=None,
                    lease_expires_at=None,
                )
                .returning(Job.user_id, Job.cost, Job.community_id, Job.params)
            )
        ).one_or_none()
        if row is None:
            return False
        # Made in a community that shares by default: its gallery (decided when it was queued).
        shared = row.community_id is not None and (row.params or {}).get("visibility") == "community"
        if assets:
            conn.execute(
                insert(Asset),
                [
                    dict(
                        job_id=job_id, owner_id=row.user_id, kind=a.kind, position=a.position,
                        sha256=a.sha256, storage_key=a.storage_key, thumbnail_key=a.thumbnail_key,
                        mime=a.mime, width=a.width, height=a.height, bytes=a.size, seed=a.seed,
                        visibility="community" if shared else "private",
                        community_id=row.community_id if shared else None, nsfw=a.nsfw, created_at=now,
                    )
                    for a in assets
                ],
            )
        ledger.capture(conn, row.user_id, row.cost, job_id=job_id)
        _event(conn, job_id, "succeeded", f"{sum(a.kind == 'image' for a in assets)} images")
        return True

    return await db.run(tx)


async def fail(db: Database, job_id: int, code: str, message: str) -> bool:
    """Mark an active job failed and refund its reservation; False if it was already terminal."""
    return await _end(db, job_id, "failed", code, message, ACTIVE_STATUSES)


async def cancel(db: Database, job_id: int, *, from_statuses: Sequence[str]) -> bool:
    """Mark a job cancelled (from the given states only) and refund; False if it was not in them."""
    return await _end(db, job_id, "cancelled", "cancelled", "Cancelled at your request.", from_statuses)


async def _end(
    db: Database, job_id: int, status: str, code: str, message: str, from_statuses: Sequence[str]
) -> bool:

    def tx(conn: Connection) -> bool:
        row = (
            conn.execute(
                update(Job)
                .where(Job.id == job_id, Job.status.in_(from_statuses))
                .values(
                    status=status, error_code=code, error_message=message[:1000],
                    finished_at=utcnow(), lease_owner=None, lease_expires_at=None,
                )
                .returning(Job.user_id, Job.cost, Job.pass_id, Job.pass_credits, Job.created_at)
            )
        ).one_or_none()
        if row is None:
            return False
        ledger.refund(
            conn, row.user_id, row.cost, job_id=job_id, note=f"{status}: {code}",
            pass_id=row.pass_id, pass_credits=row.pass_credits, drawn_at=row.created_at,
        )
        _event(conn, job_id, status, f"{code}: {message[:200]}")
        return True

    return await db.run(tx)


async def overdue(db: Database, *, now: datetime | None = None, limit: int = 100) -> list[JobRow]:
    """Active jobs past their deadline."""
    now = now or utcnow()
    async with db.read() as conn:
        result = await conn.execute(
            select(*_ALL)
            .where(Job.status.in_(ACTIVE_STATUSES), Job.deadline_at < now)
            .order_by(Job.deadline_at)
            .limit(limit)
        )
        return result.all()


async def stale_submissions(db: Database, *, now: datetime | None = None, limit: int = 100) -> list[JobRow]:
    """Running jobs without a task id whose worker's lease expired (it died mid-submit)."""
    now = now or utcnow()
    async with db.read() as conn:
        result = await conn.execute(
            select(*_ALL)
            .where(
                Job.status == "running",
                Job.provider_task_id.is_(None),
                Job.lease_expires_at < now,
            )
            .limit(limit)
        )
        return result.all()


async def requeue_stale(db: Database, job_id: int, *, now: datetime | None = None) -> bool:
    """Give a dead worker's unsubmitted job back to the queue (conditional on it still being stale)."""
    now = now or utcnow()

    def tx(conn: Connection) -> bool:
        result = conn.execute(
            update(Job)
            .where(
                Job.id == job_id,
                Job.status == "running",
                Job.provider_task_id.is_(None),
                Job.lease_expires_at < now,
            )
            .values(status="queued", due_at=now, lease_owner=None, lease_expires_at=None)
        )
        if result.rowcount:
            _event(conn, job_id, "recovered", "lease expired before submission finished")
        return bool(result.rowcount)

    return await db.run(tx)


async def release_claims(db: Database, owner: str) -> int:
    """Give back the jobs ``owner`` holds when its process stops, so others resume them at once.

    A job whose submission was cut short goes back to the queue (the claim is not counted as an
    attempt); a submitted job whose poll was cut short keeps its task id and is due for a poll.
    Without this they would wait for their leases to expire (``lease_s``, two minutes).

    Returns:
        How many jobs were released.
    """
    now = utcnow()

    def tx(conn: Connection) -> int:
        requeued = conn.execute(
            update(Job)
            .where(Job.lease_owner == owner, Job.status == "running", Job.provider_task_id.is_(None))
            .values(status="queued", due_at=now, attempts=Job.attempts - 1, lease_owner=None,
                    lease_expires_at=None)
            .returning(Job.id)
        ).scalars().all()
        polled = conn.execute(
            update(Job)
            .where(Job.lease_owner == owner, Job.status == "running")
            .values(due_at=now, lease_owner=None, lease_expires_at=None)
        ).rowcount
        for job_id in requeued:
            _event(conn, job_id, "released", f"worker {owner} stopped before submitting", now=now)
        return len(requeued) + polled

    return await db.run(tx)


async def unnotified(
    db: Database, platforms: Sequence[str], *, older_than: datetime, user_id: int | None = None,
    limit: int = 50,
) -> list[tuple[int, str, int]]:
    """(id, origin platform, user id) of terminal jobs from ``platforms`` (of ``user_id`` only,
    when given) whose user was never told, finished before ``older_than`` and not waiting after a
    failed delivery."""
    mine = [Job.user_id == user_id] if user_id is not None else []
    async with db.read() as conn:
        result = await conn.execute(
            select(Job.id, Job.origin_platform, Job.user_id)
            .where(
                *mine,
                Job.status.not_in(ACTIVE_STATUSES),
                Job.notified_at.is_(None),
                Job.origin_platform.in_(platforms),
                Job.finished_at < older_than,
                or_(Job.delivery_due_at.is_(None), Job.delivery_due_at <= utcnow()),
            )
            .order_by(Job.id)
            .limit(limit)
        )
        return [(row.id, row.origin_platform, row.user_id) for row in result]


async def mark_notified(db: Database, job_id: int) -> None:
    """Record that the user was told of the job's terminal state."""

    def tx(conn: Connection) -> None:
        conn.execute(
            update(Job).where(Job.id == job_id, Job.notified_at.is_(None)).values(notified_at=utcnow())
        )

    return await db.run(tx)


async def delivery_failed(db: Database, job_id: int, *, max_attempts: int, backoff_s: float) -> bool:
    """Count a failed delivery of a terminal job; give up after ``max_attempts``.

    The sweep tries again after ``backoff_s * 2**(attempts - 1)`` seconds (capped at an hour).

    Returns:
        True when this was the last attempt: the job is marked notified, so nothing resends it.
    """
    now = utcnow()

    def tx(conn: Connection) -> bool:
        attempts = conn.execute(
            update(Job)
            .where(Job.id == job_id, Job.notified_at.is_(None))
            .values(delivery_attempts=Job.delivery_attempts + 1)
            .returning(Job.delivery_attempts)
        ).scalar_one_or_none()
        if attempts is None:
            return False  # delivered meanwhile
        if attempts >= max_attempts:
            conn.execute(update(Job).where(Job.id == job_id).values(notified_at=now))
            _event(conn, job_id, "undelivered", f"gave up after {attempts} attempts", now=now)
            return True
        wait = min(backoff_s * 2 ** (attempts - 1), 3600.0)
        conn.execute(update(Job).where(Job.id == job_id).values(delivery_due_at=now + timedelta(seconds=wait)))
        return False

    return await db.run(tx)


async def give_up_delivery(db: Database, job_id: int, reason: str) -> None:
    """Stop trying to deliver a terminal job that can never be delivered (``reason`` is logged)."""

    def tx(conn: Connection) -> None:
        done = conn.execute(
            update(Job).where(Job.id == job_id, Job.notified_at.is_(None)).values(notified_at=utcnow())
        ).rowcount
        if done:
            _event(conn, job_id, "undelivered", reason[:200])

    await db.run(tx)


async def is_notified(db: Database, job_id: int) -> bool:
    """Whether the job's user has been told its outcome (False for unknown ids too)."""
    async with db.read() as conn:
        result = await conn.execute(select(Job.notified_at).where(Job.id == job_id))
        return result.scalar_one_or_none() is not None


async def claim_origin_message(db: Database, job_id: int, value: str) -> str | None:
    """Set the job's ``origin_message`` to ``value`` unless one is set; return what is set now.

    Adapters keep there the platform message that shows a job (a status message to edit, then
    the result's messages). The adapter that posted the status message and the outbox delivering
    the result may race (a fast job finishes before its "queued" message is out); whoever comes
    second sees the first one's value and tidies up. None when the job does not exist.
    """

    def tx(conn: Connection) -> str | None:
        conn.execute(
            update(Job).where(Job.id == job_id, Job.origin_message.is_(None)).values(origin_message=value)
        )
        return conn.execute(select(Job.origin_message).where(Job.id == job_id)).scalar_one_or_none()

    return await db.run(tx)


async def set_origin_message(db: Database, job_id: int, value: str) -> None:
    """Replace the job's ``origin_message`` (see :func:`claim_origin_message`)."""

    def tx(conn: Connection) -> None:
        conn.execute(update(Job).where(Job.id == job_id).values(origin_message=value[:200]))

    await db.run(tx)


async def origin_message(db: Database, job_id: int) -> str | None:
    """The job's ``origin_message``, or None."""
    async with db.read() as conn:
        result = await conn.execute(select(Job.origin_message).where(Job.id == job_id))
        return result.scalar_one_or_none()


async def open_jobs_count(db: Database, platform: str, user_id: int) -> int:
    """One user's jobs from one origin platform whose outcome they have not yet been told.

    That is every active job plus terminal ones not yet delivered (``notified_at`` is set only
    after the terminal state is delivered).
    """
    async with db.read() as conn:
        result = await conn.execute(
            select(func.count()).where(
                Job.user_id == user_id, Job.origin_platform == platform, Job.notified_at.is_(None)
            )
        )
        return int(result.scalar_one())


async def assets_of(conn: AsyncConnection, job_id: int) -> list[Row[Any]]:
    """A job's assets, images first by position, then the grid."""
    result = await conn.execute(
        select(Asset.id, Asset.kind, Asset.position, Asset.storage_key, Asset.thumbnail_key,
               Asset.width, Asset.height, Asset.seed, Asset.owner_id, Asset.nsfw, Asset.visibility,
               Asset.community_id, Asset.hidden)
        .where(Asset.job_id == job_id)
        .order_by(Asset.kind != "image", Asset.position)
    )
    return result.all()


def _event(conn: Connection, job_id: int, kind: str, detail: str = "", *, now: datetime | None = None) -> None:
    conn.execute(
        _INSERT_EVENT,
        {"job_id": job_id, "kind": kind, "detail": detail[:2000], "created_at": now or utcnow()},
    )
