"""Database.run: each transaction function commits or rolls back alone, however they are batched."""

from __future__ import annotations

import asyncio

import pytest
from sqlalchemy import func, insert, select
from sqlalchemy.engine import Connection

from studiobot.db.engine import Database
from studiobot.db.models import User, utcnow


class Refused(Exception):
    """Raised by the odd transactions after they wrote."""


def add_user(conn: Connection, n: int) -> int:
    user_id = conn.execute(
        insert(User).values(display_name=f"u{n}", created_at=utcnow()).returning(User.id)
    ).scalar_one()
    if n % 2:
        raise Refused(n)
    return user_id


async def test_concurrent_transactions_commit_or_roll_back_alone(db: Database) -> None:
    outcomes = await asyncio.gather(*(db.run(add_user, n) for n in range(100)), return_exceptions=True)
    for n, outcome in enumerate(outcomes):
        if n % 2:
            assert isinstance(outcome, Refused) and outcome.args == (n,)
        else:
            assert isinstance(outcome, int)
    async with db.read() as conn:
        names = set((await conn.execute(select(User.display_name))).scalars())
        count = (await conn.execute(select(func.count()).select_from(User))).scalar_one()
    assert count == 50 and names == {f"u{n}" for n in range(0, 100, 2)}


async def test_a_broken_statement_fails_only_its_caller(db: Database) -> None:
    def broken(conn: Connection) -> None:
        conn.exec_driver_sql("INSERT INTO no_such_table VALUES (1)")

    with pytest.raises(Exception, match="no_such_table"):
        await db.run(broken)
    assert isinstance(await db.run(add_user, 0), int)  # the writer keeps working afterwards
