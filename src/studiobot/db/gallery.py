"""Gallery reads and writes: pages of images (a user's own, favourites, a collection, a
community's newest and top of the week), who may see an image, visibility, votes and collections.

Pages use keyset pagination on the asset id (``id < before`` going older, ``id > after`` going
newer), so a page costs an index range scan however deep it is (DESIGN.md section 9: a page in
under 20 ms p99 with a million assets; ``bench/gallery.py`` measures it).

Who may see an image is one rule, :func:`visible_to`, used by every command, button and page.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import and_, delete, false, func, insert, or_, select, update
from sqlalchemy.engine import Connection
from sqlalchemy.ext.asyncio import AsyncConnection
from sqlalchemy.sql import Select
from sqlalchemy.sql.elements import ColumnElement

from studiobot.db.engine import dialect_insert
from studiobot.db.models import Asset, Collection, CollectionItem, Favorite, Job, JobEvent, Vote, utcnow

VISIBILITIES = ("private", "community", "public")


@dataclass(frozen=True, slots=True)
class Item:
    """One image as galleries show it."""

    asset_id: int
    job_id: int
    position: int
    owner_id: int
    prompt: str
    storage_key: str
    thumbnail_key: str | None
    width: int
    height: int
    visibility: str
    community_id: int | None
    hidden: bool
    nsfw: bool | None
    created_at: datetime
    votes: int = 0


@dataclass(frozen=True, slots=True)
class Page:
    """A page of items, newest first, and whether there are older and newer ones."""

    items: list[Item]
    has_older: bool
    has_newer: bool


_COLUMNS = (Asset.id, Asset.job_id, Asset.position, Asset.owner_id, Job.prompt, Asset.storage_key,
            Asset.thumbnail_key, Asset.width, Asset.height, Asset.visibility, Asset.community_id,
            Asset.hidden, Asset.nsfw, Asset.created_at)


def visible_to(viewer_id: int, community_id: int | None) -> ColumnElement[bool]:
    """Which assets ``viewer_id`` may see where they are (``community_id``: the community of the
    chat, None in a private chat): their own; anyone's public ones; and the community's shared
    ones when they are in it. An image an admin hid is its owner's alone."""
    shared = Asset.visibility == "public"
    if community_id is not None:
        shared = or_(shared, and_(Asset.visibility == "community", Asset.community_id == community_id))
    return or_(Asset.owner_id == viewer_id, and_(Asset.hidden == false(), shared))


@dataclass(frozen=True, slots=True)
class Cursor:
    """Where a page starts: older than asset ``before``, newer than asset ``after``, or (neither)
    ``offset`` images from the newest (a page number typed by hand)."""

    before: int | None = None
    after: int | None = None
    offset: int = 0


async def own_page(conn: AsyncConnection, user_id: int, cursor: Cursor, limit: int) -> Page:
    """A page of the user's own images."""
    return await _keyset(conn, _images().where(Asset.owner_id == user_id), cursor, limit)


async def favorites_page(conn: AsyncConnection, user_id: int, community_id: int | None, cursor: Cursor,
                         limit: int) -> Page:
    """A page of the user's favourites that they may still see here (a favourite someone made
    private again drops out)."""
    members = select(Favorite.asset_id).where(Favorite.user_id == user_id)
    return await _members(conn, members, Favorite.asset_id, visible_to(user_id, community_id), cursor, limit)


async def collection_page(conn: AsyncConnection, collection_id: int, viewer_id: int, community_id: int | None,
                          cursor: Cursor, limit: int) -> Page:
    """A page of a collection's images that the viewer may see here."""
    members = select(CollectionItem.asset_id).where(CollectionItem.collection_id == collection_id)
    return await _members(conn, members, CollectionItem.asset_id, visible_to(viewer_id, community_id), cursor,
                          limit)


async def community_new(conn: AsyncConnection, community_id: int, cursor: Cursor, limit: int) -> Page:
    """A page of a community's shared images, newest first (uses ix_assets_community_id_visibility_id)."""
    query = _images().where(
        Asset.community_id == community_id, Asset.visibility.in_(("community", "public")),
        Asset.hidden == false(),
    )
    return await _keyset(conn, query, cursor, limit)


async def community_top(conn: AsyncConnection, community_id: int, since: datetime, *, offset: int,
                        limit: int) -> Page:
    """A community's most voted images of votes cast since ``since`` (a week), then newest first.

    Ranked pages move as votes arrive, so they page by position (a week's voted images are few).
    """
    votes = func.count(Vote.user_id).label("votes")
    query = (
        select(*_COLUMNS, votes)
        .join(Job, Job.id == Asset.job_id)
        .join(Vote, Vote.asset_id == Asset.id)
        .where(Asset.community_id == community_id, Asset.visibility.in_(("community", "public")),
               Asset.hidden == false(), Asset.kind == "image", Vote.created_at >= since)
        .group_by(*_COLUMNS)
        .order_by(votes.desc(), Asset.id.desc())
        .offset(offset)
        .limit(limit + 1)
    )
    rows = (await conn.execute(query)).all()
    return Page([Item(*row) for row in rows[:limit]], has_older=len(rows) > limit, has_newer=offset > 0)


async def job_images(conn: AsyncConnection, job_id: int, viewer_id: int, community_id: int | None) -> list[Item]:
    """The images of a job that ``viewer_id`` may see here, by position."""
    query = (_images().where(Asset.job_id == job_id, visible_to(viewer_id, community_id))
             .order_by(Asset.position))
    return [Item(*row) for row in (await conn.execute(query)).all()]


async def vote_counts(conn: AsyncConnection, asset_ids: Sequence[int], since: datetime) -> dict[int, int]:
    """Votes cast since ``since`` per asset."""
    rows = await conn.execute(
        select(Vote.asset_id, func.count()).where(Vote.asset_id.in_(asset_ids), Vote.created_at >= since)
        .group_by(Vote.asset_id)
    )
    return {asset_id: n for asset_id, n in rows.all()}


def set_visibility(conn: Connection, job_id: int, owner_id: int, positions: Sequence[int] | None,
                   visibility: str, community_id: int | None) -> int:
    """Set the visibility of the owner's images of a job (all, or those at ``positions``).

    ``community_id`` is the gallery a community or public image belongs to (kept for public ones,
    so they still show in their community). Images an admin hid are left alone. Returns how many
    images changed.
    """
    query = update(Asset).where(Asset.job_id == job_id, Asset.owner_id == owner_id, Asset.kind == "image",
                                Asset.hidden == false())
    if positions:
        query = query.where(Asset.position.in_(positions))
    values: dict[str, object] = {"visibility": visibility}
    if community_id is not None or visibility == "private":
        values["community_id"] = community_id
    changed = conn.execute(query.values(**values)).rowcount
    conn.execute(insert(JobEvent).values(job_id=job_id, kind="visibility", detail=visibility, created_at=utcnow()))
    return changed


def set_hidden(conn: Connection, job_id: int, community_id: int, hidden: bool) -> int:
    """Hide (or show again) a job's images in a community's gallery. Returns how many changed."""
    return conn.execute(
        update(Asset).where(Asset.job_id == job_id, Asset.community_id == community_id, Asset.hidden != hidden)
        .values(hidden=hidden)
    ).rowcount


def toggle_vote(conn: Connection, user_id: int, asset_ids: Sequence[int]) -> bool:
    """Vote for ``asset_ids``, or take the votes back when all were already cast. True = voted.

    A double tap is harmless: when two transactions both find no vote, the second one's insert
    meets the first's row (PostgreSQL waits for it to commit) and does nothing, so both answer
    "voted" and one row remains, instead of a duplicate-key error.
    """
    existing = set(conn.execute(
        select(Vote.asset_id).where(Vote.user_id == user_id, Vote.asset_id.in_(asset_ids))
    ).scalars())
    if existing == set(asset_ids):
        conn.execute(delete(Vote).where(Vote.user_id == user_id, Vote.asset_id.in_(asset_ids)))
        return False
    now = utcnow()
    conn.execute(dialect_insert(conn, Vote).on_conflict_do_nothing(index_elements=[Vote.asset_id, Vote.user_id]),
                 [{"asset_id": a, "user_id": user_id, "created_at": now} for a in asset_ids if a not in existing])
    return True


def create_collection(conn: Connection, owner_id: int, name: str) -> int:
    """Create a collection; raises IntegrityError when the owner already has one of that name."""
    return conn.execute(
        insert(Collection).values(owner_id=owner_id, name=name, created_at=utcnow()).returning(Collection.id)
    ).scalar_one()


def add_to_collection(conn: Connection, collection_id: int, asset_ids: Sequence[int]) -> int | None:
    """Add images to a collection (those already in it are skipped).

    Returns:
        How many were added, or None when the collection is gone (deleted meanwhile).

    A double tap is harmless: a row inserted meanwhile by a concurrent transaction is skipped
    (``ON CONFLICT DO NOTHING``; PostgreSQL waits for it to commit) rather than raising. The
    collection's row is locked first (``FOR SHARE``), so a concurrent delete waits for the add
    instead of failing its foreign key.
    """
    exists = conn.execute(
        select(Collection.id).where(Collection.id == collection_id).with_for_update(read=True)
    ).scalar_one_or_none()
    if exists is None:
        return None
    if not asset_ids:
        return 0
    now = utcnow()
    added = conn.execute(
        dialect_insert(conn, CollectionItem)
        .values([{"collection_id": collection_id, "asset_id": a, "created_at": now} for a in dict.fromkeys(asset_ids)])
        .on_conflict_do_nothing(index_elements=[CollectionItem.collection_id, CollectionItem.asset_id])
        .returning(CollectionItem.asset_id)  # rowcount of a many-row insert is -1 on some drivers
    )
    return len(added.all())


def remove_from_collection(conn: Connection, collection_id: int, asset_ids: Sequence[int]) -> int:
    """Take images out of a collection. Returns how many were removed."""
    return conn.execute(delete(CollectionItem).where(
        CollectionItem.collection_id == collection_id, CollectionItem.asset_id.in_(asset_ids))).rowcount


def delete_collection(conn: Connection, collection_id: int) -> None:
    """Delete a collection (its images stay)."""
    conn.execute(delete(Collection).where(Collection.id == collection_id))


async def collection_id(conn: AsyncConnection, owner_id: int, name: str) -> int | None:
    """The id of the owner's collection called ``name`` (any case), or None."""
    return (await conn.execute(
        select(Collection.id).where(Collection.owner_id == owner_id, func.lower(Collection.name) == name.lower())
    )).scalar_one_or_none()


async def collections_of(conn: AsyncConnection, owner_id: int) -> list[tuple[str, int]]:
    """The owner's collections as (name, number of images), by name."""
    rows = await conn.execute(
        select(Collection.name, func.count(CollectionItem.asset_id))
        .outerjoin(CollectionItem, CollectionItem.collection_id == Collection.id)
        .where(Collection.owner_id == owner_id).group_by(Collection.id, Collection.name).order_by(Collection.name)
    )
    return [(name, n) for name, n in rows.all()]


def _images() -> Select:  # type: ignore[type-arg]
    return select(*_COLUMNS).join(Job, Job.id == Asset.job_id).where(Asset.kind == "image")


async def _members(conn: AsyncConnection, members: Select, key: Any, visible: ColumnElement[bool],  # type: ignore[type-arg]
                   cursor: Cursor, limit: int) -> Page:
    """A page of a membership list (favourites, a collection): its asset ids are read in batches
    along their primary key, then those images kept that the viewer may see.

    Two steps rather than one join: a join ordered by asset id lets PostgreSQL's planner choose a
    merge join that walks the assets index from the newest image down to the member, which is most
    of a large table when members are sparse.
    """
    newer = cursor.after is not None
    bound = cursor.after if newer else cursor.before
    # A typed page number skips visible images (members the viewer may not see do not count).
    skip = cursor.offset if bound is None else 0
    batch_size = 4 * (skip + limit + 1)
    found: list[Item] = []
    while len(found) <= skip + limit:
        ids_query = members.order_by(key.asc() if newer else key.desc()).limit(batch_size)
        if bound is not None:
            ids_query = ids_query.where(key > bound if newer else key < bound)
        ids = list((await conn.execute(ids_query)).scalars())
        if ids:
            rows = (await conn.execute(_images().where(Asset.id.in_(ids), visible))).all()
            found += sorted((Item(*row) for row in rows), key=lambda i: i.asset_id, reverse=not newer)
            bound = ids[-1]
        if len(ids) < batch_size:
            break
    page, more = found[skip:skip + limit], len(found) > skip + limit
    if newer:
        return Page(page[::-1], has_older=True, has_newer=more)
    return Page(page, has_older=more, has_newer=cursor.before is not None or skip > 0)


async def _keyset(conn: AsyncConnection, query: Select, cursor: Cursor, limit: int) -> Page:  # type: ignore[type-arg]
    if cursor.after is not None:
        # Going newer: the nearest ids above the cursor, read upwards, shown newest first.
        rows = (await conn.execute(
            query.where(Asset.id > cursor.after).order_by(Asset.id.asc()).limit(limit + 1)
        )).all()
        return Page([Item(*row) for row in rows[:limit]][::-1], has_older=True, has_newer=len(rows) > limit)
    if cursor.before is not None:
        query = query.where(Asset.id < cursor.before)
    elif cursor.offset:
        query = query.offset(cursor.offset)
    rows = (await conn.execute(query.order_by(Asset.id.desc()).limit(limit + 1))).all()
    return Page([Item(*row) for row in rows[:limit]], has_older=len(rows) > limit,
                has_newer=cursor.before is not None or cursor.offset > 0)
