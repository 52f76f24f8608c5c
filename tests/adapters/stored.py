"""Reading back what an adapter made the core store, from the bot's own database."""

from __future__ import annotations

from sqlalchemy import select

from studiobot.db.engine import Database
from studiobot.db.models import Community


async def community_names(database_url: str) -> dict[str, str]:
    """Every community's platform id and stored name."""
    db = Database(database_url)
    try:
        async with db.read() as conn:
            rows = await conn.execute(select(Community.platform_community_id, Community.name))
            return {platform_id: name for platform_id, name in rows.all()}
    finally:
        await db.dispose()
