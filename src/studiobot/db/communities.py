"""Community rows (Discord guilds, Telegram groups): created on first sight, renamed as the
platform renames them, moved when a Telegram group is upgraded.

Transaction functions, synchronous, for ``Database.run``.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import delete, select, update
from sqlalchemy.engine import Connection

from studiobot.db.engine import dialect_insert
from studiobot.db.models import Base, Community, utcnow


def ensure_community(conn: Connection, platform: str, platform_community_id: str) -> int:
    """The id of the community (Discord guild, Telegram group), created on first use."""
    conn.execute(
        dialect_insert(conn, Community)
        .values(platform=platform, platform_community_id=platform_community_id, name="",
                settings={}, created_at=utcnow())
        .on_conflict_do_nothing(index_elements=["platform", "platform_community_id"])
    )
    return conn.execute(
        select(Community.id).where(
            Community.platform == platform, Community.platform_community_id == platform_community_id
        )
    ).scalar_one()


def rename_community(conn: Connection, community_id: int, name: str) -> None:
    """Keep the community's name as the platform shows it (``communities.name``, 100 characters)."""
    name = name[:100]
    conn.execute(update(Community).where(Community.id == community_id, Community.name != name).values(name=name))


def move_community(conn: Connection, platform: str, old_id: str, new_id: str) -> int | None:
    """A community now lives under another platform id (Telegram: a basic group upgraded to a
    supergroup gets a new chat id, ``migrate_to_chat_id``). Its settings, bans, blocked terms,
    audit log, jobs and gallery go with it.

    When the new id already has a row (someone used the supergroup before the move was seen),
    the old row is merged into it, the new row's own settings winning, and the old row deleted;
    otherwise the old row is renamed. A gallery channel that was the old chat becomes the new one.

    Returns:
        The community's id under ``new_id``, or None when the old id was never seen (nothing moved).
    """
    old = conn.execute(
        select(Community.id, Community.settings)
        .where(Community.platform == platform, Community.platform_community_id == old_id)
        .with_for_update()
    ).one_or_none()
    if old is None:
        return None
    new = conn.execute(
        select(Community.id, Community.settings)
        .where(Community.platform == platform, Community.platform_community_id == new_id)
        .with_for_update()
    ).one_or_none()
    settings = _moved_settings({**(old.settings or {}), **(new.settings or {} if new else {})}, old_id, new_id)
    if new is None:
        conn.execute(update(Community).where(Community.id == old.id)
                     .values(platform_community_id=new_id, settings=settings))
        return old.id
    for column in _naming_a_community():
        conn.execute(update(column.table).where(column == old.id).values({column.name: new.id}))
    conn.execute(update(Community).where(Community.id == new.id).values(settings=settings))
    conn.execute(delete(Community).where(Community.id == old.id))
    return new.id


def _moved_settings(settings: dict[str, Any], old_id: str, new_id: str) -> dict[str, Any]:
    channel = settings.get("gallery_channel")
    if isinstance(channel, dict) and str(channel.get("chat_id")) == old_id:
        settings = {**settings, "gallery_channel": {**channel, "chat_id": new_id, "community_id": new_id}}
    return settings


def _naming_a_community() -> list[Any]:
    """Every column with a foreign key to ``communities.id`` (jobs, assets, bans, blocked terms,
    the audit log, and any table added later): what a merge carries over."""
    return [fk.parent for table in Base.metadata.sorted_tables for fk in table.foreign_keys
            if fk.column.table.name == Community.__tablename__ and table.name != Community.__tablename__]
