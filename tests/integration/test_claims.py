"""A claim takes at most its batch, however many jobs wait and whatever the planner knows.

PostgreSQL planned ``UPDATE ... WHERE id IN (SELECT ... LIMIT n FOR UPDATE SKIP LOCKED)`` as a join
that re-ran the subquery per row, so one worker claimed every queued job (issue 15, item 3). Each
case runs on a table the planner has no statistics for, after ``ANALYZE``, and (PostgreSQL) with the
planner pushed to the nested-loop plan that re-runs a subquery per row.
"""

from __future__ import annotations

from datetime import timedelta

import pytest
from sqlalchemy import func, insert, select, text

from studiobot.db.engine import Database
from studiobot.db.models import Job, utcnow
from studiobot.db.users import create_user
from studiobot.scheduler import lifecycle

WAITING = 5000


async def _fill(db: Database, *, status: str) -> None:
    now = utcnow()

    def tx(conn):
        user = create_user(conn, "shell", "claims", "claims")
        conn.execute(
            insert(Job),
            [
                {
                    "user_id": user, "prompt": f"p{i}", "provider": "replicate", "model": "m",
                    "status": status, "due_at": now - timedelta(seconds=1),
                    "deadline_at": now + timedelta(hours=1), "origin_platform": "shell",
                    "origin_chat": {}, "idempotency_key": f"claims-{i}",
                    "provider_task_id": f"task-{i}" if status == "running" else None,
                }
                for i in range(WAITING)
            ],
        )

    await db.run(tx)


async def _plan(db: Database, plan: str) -> None:
    async with db.engine.connect() as conn:
        postgres = conn.dialect.name == "postgresql"
        if plan == "nested-loops" and not postgres:
            pytest.skip("SQLite has no row locks or plan settings; one writer claims at a time")
        if plan in ("analysed", "nested-loops"):
            await conn.execute(text("ANALYZE jobs" if postgres else "ANALYZE"))
        if plan == "nested-loops":
            # Every later connection to this test database plans without hashing, sorting or
            # materialising: the plan shape that re-ran the old IN (SELECT ... LIMIT) per row.
            await conn.execute(text(
                "DO $$ DECLARE g text; BEGIN FOREACH g IN ARRAY ARRAY['enable_hashjoin', "
                "'enable_hashagg', 'enable_material', 'enable_mergejoin', 'enable_sort'] LOOP "
                "EXECUTE format('ALTER DATABASE %I SET %s = off', current_database(), g); "
                "END LOOP; END $$"
            ))
        await conn.commit()
    await db.engine.dispose()  # pooled connections keep the old settings


async def _taken(db: Database, owner: str) -> int:
    async with db.engine.connect() as conn:
        return (await conn.execute(select(func.count()).where(Job.lease_owner == owner))).scalar_one()


PLANS = ["fresh", "analysed", "nested-loops"]


@pytest.mark.parametrize("plan", PLANS)
async def test_claim_queued_never_exceeds_its_batch(db, plan):
    await _fill(db, status="queued")
    await _plan(db, plan)

    first = await lifecycle.claim_queued(db, "w1", batch=8, lease_s=60)
    second = await lifecycle.claim_queued(db, "w2", batch=8, lease_s=60)

    assert len(first) == 8 and len(second) == 8
    assert await _taken(db, "w1") == 8 and await _taken(db, "w2") == 8
    assert {r.id for r in first}.isdisjoint(r.id for r in second)
    assert all(r.status == "running" and r.attempts == 1 for r in first)


@pytest.mark.parametrize("plan", PLANS)
async def test_claim_due_polls_never_exceeds_its_batch(db, plan):
    await _fill(db, status="running")
    await _plan(db, plan)

    claimed = await lifecycle.claim_due_polls(db, "p1", batch=200, lease_s=60)

    assert len(claimed) == 200
    assert await _taken(db, "p1") == 200
    assert all(r.polls == 1 for r in claimed)
