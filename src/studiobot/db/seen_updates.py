"""Updates already handled, per platform: the dedupe window for redelivered updates.

Telegram redelivers an update when a webhook answer was lost or a poller crashed before
confirming its offset (reference-platform-rules.md section 4), and after a week of silence its
next ``update_id`` is random, so only a window of recent ids is kept.
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import delete
from sqlalchemy.engine import Connection

from studiobot.db.engine import dialect_insert
from studiobot.db.models import SeenUpdate, utcnow


def first_delivery(conn: Connection, platform: str, update_id: int) -> bool:
    """Record ``update_id`` as handled; False when it already was (a redelivery to drop)."""
    result = conn.execute(
        dialect_insert(conn, SeenUpdate)
        .values(platform=platform, update_id=update_id, seen_at=utcnow())
        .on_conflict_do_nothing(index_elements=["platform", "update_id"])
    )
    return result.rowcount == 1


def forget_before(conn: Connection, cutoff: datetime) -> int:
    """Drop ids seen before ``cutoff``; returns how many."""
    return conn.execute(delete(SeenUpdate).where(SeenUpdate.seen_at < cutoff)).rowcount
