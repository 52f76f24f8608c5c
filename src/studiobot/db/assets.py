"""Stored images after a job: favourites, sharing with a community, and deleting.

Transaction functions (synchronous, for ``Database.run``) and reads, kept apart from the job
lifecycle because they change what people see, not where a job is.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence

from sqlalchemy import delete, false, func, insert, select, update
from sqlalchemy.engine import Connection

from studiobot.db.engine import dialect_insert
from studiobot.db.models import Asset, Favorite, JobEvent, utcnow


def toggle_favorites(conn: Connection, user_id: int, asset_ids: Sequence[int]) -> bool:
    """Favourite ``asset_ids`` for ``user_id``, or unfavourite them if all already are.

    Returns:
        True when they are favourites now, False when they were removed.

    A double tap is harmless: a favourite inserted meanwhile by a concurrent transaction is
    skipped (``ON CONFLICT DO NOTHING``; PostgreSQL waits for it to commit) rather than raising
    a duplicate-key error.
    """
    existing = set(
        conn.execute(
            select(Favorite.asset_id).where(
                Favorite.user_id == user_id, Favorite.asset_id.in_(asset_ids)
            )
        ).scalars()
    )
    if existing == set(asset_ids):
        conn.execute(
            delete(Favorite).where(Favorite.user_id == user_id, Favorite.asset_id.in_(asset_ids))
        )
        return False
    now = utcnow()
    conn.execute(
        dialect_insert(conn, Favorite).on_conflict_do_nothing(index_elements=[Favorite.user_id, Favorite.asset_id]),
        [{"user_id": user_id, "asset_id": a, "created_at": now} for a in asset_ids if a not in existing],
    )
    return True


def share_job(conn: Connection, job_id: int, community_id: int) -> int:
    """Make a job's images visible in a community's gallery (moving them from another community's;
    images an admin hid stay hidden; public ones stay public).

    Returns:
        How many assets changed visibility.
    """
    result = conn.execute(
        update(Asset)
        .where(Asset.job_id == job_id, Asset.kind == "image", Asset.hidden == false(),
               Asset.visibility.in_(("private", "community")))
        .values(visibility="community", community_id=community_id)
    )
    conn.execute(
        insert(JobEvent).values(job_id=job_id, kind="shared", detail=f"community {community_id}", created_at=utcnow())
    )
    return result.rowcount


def delete_job_assets(conn: Connection, job_id: int, by: str) -> list[str]:
    """Delete a job's images (rows) and return the stored files they named.

    The files stay: after this transaction commits, pass the keys to :func:`release_files`,
    which removes those no asset names any more. The job row and its ledger entries stay: money
    history is never deleted. ``by`` (who deleted, for the job's event log) is a short
    description such as ``owner`` or ``admin discord:123``.
    """
    rows = conn.execute(
        select(Asset.storage_key, Asset.thumbnail_key).where(Asset.job_id == job_id)
    ).all()
    conn.execute(delete(Asset).where(Asset.job_id == job_id))
    conn.execute(
        insert(JobEvent).values(job_id=job_id, kind="deleted", detail=by[:200], created_at=utcnow())
    )
    return sorted({k for row in rows for k in row if k})


def lock_files(conn: Connection, keys: Iterable[str]) -> None:
    """Hold ``keys`` until the transaction ends, against a concurrent :func:`release_files`.

    Stored files are shared by content, so a job saving an image can name a file that another
    user's deletion is releasing. Both take this lock: on PostgreSQL an advisory transaction lock
    per key, in sorted order so two transactions never deadlock; on SQLite every write
    transaction already runs alone (``BEGIN IMMEDIATE``).
    """
    if conn.dialect.name == "postgresql":
        for key in sorted(set(keys)):
            conn.execute(select(func.pg_advisory_xact_lock(func.hashtextextended(key, 0))))


def release_files(conn: Connection, keys: Sequence[str], remove: Callable[[str], None]) -> list[str]:
    """Remove the stored files among ``keys`` that no asset names any more.

    Runs ``remove(key)`` inside this transaction while holding :func:`lock_files`, so a job being
    saved with the same bytes either committed first (its rows name the file, which is kept) or
    commits afterwards and then writes the file again from memory (the finisher does).

    Args:
        keys: Storage keys whose assets were deleted in an earlier, committed transaction.
        remove: Deletes one stored file (``LocalStore.delete``).

    Returns:
        The keys whose files were removed.
    """
    if not keys:
        return []
    lock_files(conn, keys)
    still_used = set(
        conn.execute(
            select(Asset.storage_key).where(Asset.storage_key.in_(keys))
            .union(select(Asset.thumbnail_key).where(Asset.thumbnail_key.in_(keys)))
        ).scalars()
    )
    unused = sorted(set(keys) - still_used)
    for key in unused:
        remove(key)
    return unused


__all__ = [
    "delete_job_assets", "lock_files", "release_files", "share_job", "toggle_favorites",
]
