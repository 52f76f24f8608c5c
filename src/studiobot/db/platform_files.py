"""Platform file ids of stored images (Telegram ``file_id``): upload once, send again by id."""

from __future__ import annotations

from collections.abc import Iterable

from sqlalchemy import select
from sqlalchemy.engine import Connection
from sqlalchemy.ext.asyncio import AsyncConnection

from studiobot.db.engine import dialect_insert
from studiobot.db.models import PlatformFile, utcnow


def remember(conn: Connection, platform: str, files: dict[str, str]) -> None:
    """Record ``files`` (storage key -> platform file id); a later id replaces an earlier one."""
    if not files:
        return
    now = utcnow()
    statement = dialect_insert(conn, PlatformFile).values(
        [{"platform": platform, "storage_key": k, "file_id": v, "created_at": now} for k, v in files.items()]
    )
    conn.execute(
        statement.on_conflict_do_update(
            index_elements=["platform", "storage_key"],
            set_={"file_id": statement.excluded.file_id, "created_at": now},
        )
    )


async def file_ids(conn: AsyncConnection, platform: str, storage_keys: Iterable[str]) -> dict[str, str]:
    """The platform file ids known for ``storage_keys`` (keys never sent there are absent)."""
    keys = list(storage_keys)
    if not keys:
        return {}
    rows = await conn.execute(
        select(PlatformFile.storage_key, PlatformFile.file_id).where(
            PlatformFile.platform == platform, PlatformFile.storage_key.in_(keys)
        )
    )
    return {key: file_id for key, file_id in rows}
