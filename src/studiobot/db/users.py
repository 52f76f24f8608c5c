"""Users and their platform identities."""

from __future__ import annotations

from typing import Any

from sqlalchemy import insert, select, update
from sqlalchemy.engine import Connection
from sqlalchemy.ext.asyncio import AsyncConnection

from studiobot.db.models import Identity, User, utcnow


async def find_user_id(conn: AsyncConnection, platform: str, platform_user_id: str) -> int | None:
    """The user behind a platform identity, or None if this identity is new."""
    result = await conn.execute(
        select(Identity.user_id).where(
            Identity.platform == platform, Identity.platform_user_id == platform_user_id
        )
    )
    return result.scalar_one_or_none()


async def platform_user_id(conn: AsyncConnection, user_id: int, platform: str) -> str | None:
    """The user's account id on ``platform`` (to address them there), or None if they have none."""
    result = await conn.execute(
        select(Identity.platform_user_id).where(Identity.user_id == user_id, Identity.platform == platform)
    )
    return result.scalars().first()


def create_user(conn: Connection, platform: str, platform_user_id: str, display_name: str) -> int:
    """Create a user with this identity and return its id.

    Raises:
        sqlalchemy.exc.IntegrityError: When another transaction created the identity first.
    """
    now = utcnow()
    result = conn.execute(
        insert(User).values(display_name=display_name[:100], created_at=now).returning(User.id)
    )
    user_id = result.scalar_one()
    conn.execute(
        insert(Identity).values(
            user_id=user_id, platform=platform, platform_user_id=platform_user_id, created_at=now
        )
    )
    return user_id



async def preferences(conn: AsyncConnection, user_id: int) -> dict[str, Any]:
    """The user's preferences (``/settings``), ``{}`` when none were chosen."""
    result = await conn.execute(select(User.preferences).where(User.id == user_id))
    return dict(result.scalar_one_or_none() or {})


def set_preference(conn: Connection, user_id: int, name: str, value: Any) -> dict[str, Any]:
    """Set one preference and return them all."""
    current = conn.execute(select(User.preferences).where(User.id == user_id)).scalar_one()
    chosen = {**(current or {}), name: value}
    conn.execute(update(User).where(User.id == user_id).values(preferences=chosen))
    return chosen


async def display_name(conn: AsyncConnection, user_id: int) -> str | None:
    """A user's display name, or None when there is no such user."""
    return (await conn.execute(select(User.display_name).where(User.id == user_id))).scalar_one_or_none()
