"""Small facts adapters keep across restarts and processes (``platform_state`` table)."""

from __future__ import annotations

from sqlalchemy import select, update
from sqlalchemy.engine import Connection
from sqlalchemy.exc import IntegrityError

from studiobot.db.engine import Database
from studiobot.db.models import PlatformState, utcnow


async def get(db: Database, key: str) -> str | None:
    """The value stored under ``key``, or None."""
    async with db.read() as conn:
        result = await conn.execute(select(PlatformState.value).where(PlatformState.key == key))
        return result.scalar_one_or_none()


async def put(db: Database, key: str, value: str) -> None:
    """Store ``value`` under ``key``, replacing any earlier value."""
    try:
        await db.run(_put, key, value)
    except IntegrityError:
        await db.run(_put, key, value)  # inserted concurrently by another process: now it updates


def _put(conn: Connection, key: str, value: str) -> None:
    now = utcnow()
    changed = conn.execute(
        update(PlatformState).where(PlatformState.key == key).values(value=value, updated_at=now)
    ).rowcount
    if not changed:
        conn.execute(PlatformState.__table__.insert().values(key=key, value=value, updated_at=now))


async def delete(db: Database, key: str) -> None:
    """Forget ``key`` (nothing happens when it is not there)."""

    def tx(conn: Connection) -> None:
        conn.execute(PlatformState.__table__.delete().where(PlatformState.key == key))

    await db.run(tx)
