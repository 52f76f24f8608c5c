"""The ledger on real SQLite and PostgreSQL: invariants under concurrency and repetition."""

from __future__ import annotations

import asyncio
import random

import pytest
from sqlalchemy import func, select
from sqlalchemy.engine import Connection
from sqlalchemy.exc import IntegrityError

from studiobot.billing import ledger
from studiobot.db import users
from studiobot.db.engine import Database
from studiobot.db.models import CreditAccount, CreditEntry, Job
from studiobot.errors import InsufficientCredits, LimitReached
from studiobot.scheduler import lifecycle
from studiobot.scheduler.lifecycle import Limits, NewJob

NO_LIMITS = Limits(max_active=10_000, max_per_hour=10_000)


async def new_user(db: Database, name: str, welcome: int) -> int:
    def tx(conn: Connection) -> int:
        user_id = users.create_user(conn, "test", name, name)
        ledger.open_account(conn, user_id, welcome=welcome)
        return user_id

    return await db.run(tx)


def job_for(user_id: int, cost: int, key: str) -> NewJob:
    return NewJob(
        user_id=user_id, prompt="a fox", negative_prompt=None, params={"aspect": "1:1", "count": 1},
        provider="offline", model="offline-sketch", key_source="platform", cost=cost,
        origin_platform="test", origin_chat={"platform": "test", "chat_id": "c"},
        idempotency_key=key, deadline_s=60,
    )


async def assert_books_balance(db: Database) -> None:
    """balance == sum of entries and balance >= 0 for every account."""
    async with db.read() as conn:
        sums = dict(
            (await conn.execute(select(CreditEntry.user_id, func.sum(CreditEntry.amount)).group_by(CreditEntry.user_id))).all()
        )
        balances = dict((await conn.execute(select(CreditAccount.user_id, CreditAccount.balance))).all())
    for user_id, balance in balances.items():
        assert balance >= 0
        assert balance == sums.get(user_id, 0), f"user {user_id}: balance {balance} != entries {sums.get(user_id)}"


async def test_200_concurrent_reservations_by_20_users(db: Database) -> None:
    rng = random.Random(20261121)
    user_ids = [await new_user(db, f"u{i}", welcome=40) for i in range(20)]
    attempts = [(rng.choice(user_ids), rng.randint(1, 9)) for _ in range(200)]

    async def attempt(i: int, user_id: int, cost: int) -> int | None:
        try:
            job_id, balance = await db.run(lifecycle.enqueue, job_for(user_id, cost, f"k{i}"), NO_LIMITS)
            assert balance >= 0
            return job_id
        except InsufficientCredits as refused:
            assert refused.needed == cost and refused.available < cost
            return None

    results = await asyncio.gather(*(attempt(i, u, c) for i, (u, c) in enumerate(attempts)))
    accepted = [job_id for job_id in results if job_id is not None]
    refused = len(results) - len(accepted)
    assert accepted and refused, "the scenario must exercise both outcomes"
    await assert_books_balance(db)
    async with db.read() as conn:
        jobs = (await conn.execute(select(func.count()).select_from(Job))).scalar_one()
        reserves = (await conn.execute(
            select(func.count()).where(CreditEntry.kind == "reserve"))).scalar_one()
        spent = (await conn.execute(select(func.sum(Job.cost)))).scalar_one()
        total = (await conn.execute(select(func.sum(CreditAccount.balance)))).scalar_one()
    # Every refused reservation left no job and no entry behind.
    assert jobs == reserves == len(accepted)
    assert total == 20 * 40 - spent


async def test_reservation_never_overdraws_one_user_under_contention(db: Database) -> None:
    user_id = await new_user(db, "solo", welcome=10)

    async def attempt(i: int) -> bool:
        try:
            await db.run(lifecycle.enqueue, job_for(user_id, 3, f"solo{i}"), NO_LIMITS)
            return True
        except InsufficientCredits:
            return False

    outcomes = await asyncio.gather(*(attempt(i) for i in range(30)))
    assert sum(outcomes) == 3  # 10 credits cover exactly three 3-credit jobs
    async with db.read() as conn:
        assert await ledger.current_balance(conn, user_id) == 1
    await assert_books_balance(db)


async def test_a_reservation_is_resolved_at_most_once(db: Database) -> None:
    user_id = await new_user(db, "once", welcome=10)
    job_id, _ = await db.run(lifecycle.enqueue, job_for(user_id, 4, "once"), NO_LIMITS)
    assert await db.run(ledger.refund, user_id, 4, job_id=job_id) == 10
    for resolve in (ledger.refund, ledger.capture):
        with pytest.raises(IntegrityError):
            await db.run(resolve, user_id, 4, job_id=job_id)
    async with db.read() as conn:
        assert await ledger.current_balance(conn, user_id) == 10
    await assert_books_balance(db)


async def test_same_invocation_creates_one_job_and_one_charge(db: Database) -> None:
    user_id = await new_user(db, "twice", welcome=10)
    await db.run(lifecycle.enqueue, job_for(user_id, 2, "interaction-1"), NO_LIMITS)
    with pytest.raises(IntegrityError):
        await db.run(lifecycle.enqueue, job_for(user_id, 2, "interaction-1"), NO_LIMITS)
    async with db.read() as conn:
        assert await ledger.current_balance(conn, user_id) == 8
    await assert_books_balance(db)


async def test_limits_refuse_without_trace(db: Database) -> None:
    user_id = await new_user(db, "busy", welcome=100)
    limits = Limits(max_active=2, max_per_hour=100)
    for i in range(2):
        await db.run(lifecycle.enqueue, job_for(user_id, 1, f"busy{i}"), limits)
    with pytest.raises(LimitReached, match="limit is 2"):
        await db.run(lifecycle.enqueue, job_for(user_id, 1, "busy-extra"), limits)
    async with db.read() as conn:
        assert await ledger.current_balance(conn, user_id) == 98
        assert (await conn.execute(select(func.count()).select_from(Job))).scalar_one() == 2
    await assert_books_balance(db)


async def test_grant_validates_and_history_is_newest_first(db: Database) -> None:
    user_id = await new_user(db, "hist", welcome=5)
    with pytest.raises(ValueError):
        await db.run(ledger.grant, user_id, 0, key="zero")
    with pytest.raises(ValueError):
        await db.run(ledger.grant, user_id, 5, key="bad-kind", kind="reserve")
    assert await db.run(ledger.grant, user_id, 7, key="gift", kind="adjustment", note="gift") == 12
    async with db.read() as conn:
        entries = await ledger.history(conn, user_id)
    assert [e.kind for e in entries] == ["adjustment", "grant"]
    assert [e.balance_after for e in entries] == [12, 5]
    await assert_books_balance(db)
