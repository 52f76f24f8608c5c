"""Reads for the public web gallery: only images anyone on the internet may see.

Every query here goes through :data:`PUBLIC`, the one rule for "on the web": an ``image`` asset
(never a grid) whose owner made it ``public``, that no admin hid, and that the provider did not flag
as NSFW (``nsfw`` None means the provider gives no flag, which is allowed). Anything else is
invisible here, whoever asks, so the web layer cannot leak a private image by forgetting a check.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import Select, and_, select
from sqlalchemy.ext.asyncio import AsyncConnection

from studiobot.db.models import Asset, Community, Job, User

PUBLIC = and_(
    Asset.visibility == "public",
    Asset.hidden.is_(False),
    Asset.nsfw.is_not(True),
    Asset.kind == "image",
)
"""The WHERE clause every public read applies (see the module docstring)."""


@dataclass(frozen=True, slots=True)
class PublicItem:
    """One image of the public gallery, with what its page shows.

    Attributes:
        asset_id: The asset's id (the gallery's keyset cursor and the id in its URLs).
        job_id: The job that made it.
        prompt: The prompt, as the user typed it (user text: escape it when rendering).
        author: The owner's display name.
        provider: The provider that made it (``openai``...).
        model: The provider's model.
        width: Width of the full image in pixels.
        height: Height of the full image in pixels.
        storage_key: The full image's key in the store.
        thumbnail_key: The WEBP thumbnail's key in the store, None when there is none.
        mime: The full image's media type (``image/png``, ``image/jpeg`` or ``image/webp``).
        created_at: When the image was stored (timezone-aware UTC).
        community_id: The community it was shared in, None when made in a private chat.
    """

    asset_id: int
    job_id: int
    prompt: str
    author: str
    provider: str
    model: str
    width: int
    height: int
    storage_key: str
    thumbnail_key: str | None
    mime: str
    created_at: datetime
    community_id: int | None


@dataclass(frozen=True, slots=True)
class CommunityInfo:
    """A community as the web gallery names it.

    Attributes:
        community_id: Its id in ``communities``.
        platform: ``discord`` or ``telegram``.
        name: Its name; empty when studiobot never learnt it.
    """

    community_id: int
    platform: str
    name: str


def _public_items() -> Select[Any]:
    return (
        select(
            Asset.id, Asset.job_id, Job.prompt, User.display_name, Job.provider, Job.model, Asset.width,
            Asset.height, Asset.storage_key, Asset.thumbnail_key, Asset.mime, Asset.created_at,
            Asset.community_id,
        )
        .join(Job, Job.id == Asset.job_id)
        .join(User, User.id == Asset.owner_id)
        .where(PUBLIC)
    )


async def page(
    conn: AsyncConnection, *, community_id: int | None, before: int | None, limit: int
) -> list[PublicItem]:
    """A page of public images, newest first.

    Keyset pagination on the asset id, so a deep page costs what the first one does (a backward
    range scan of ``ix_assets_visibility_id``, or of ``ix_assets_community_id_visibility_id`` for one
    community), and images added meanwhile never shift a page.

    Args:
        conn: A read connection.
        community_id: Only images shared in this community; None for every image, including those
            made in private chats.
        before: Only images whose asset id is below this (the last id of the previous page); None
            for the newest.
        limit: At most this many items (ask one more than a page to learn whether another follows).

    Returns:
        Up to ``limit`` items, highest asset id first.
    """
    query = _public_items().order_by(Asset.id.desc()).limit(limit)
    if community_id is not None:
        query = query.where(Asset.community_id == community_id)
    if before is not None:
        query = query.where(Asset.id < before)
    rows = (await conn.execute(query)).all()
    return [PublicItem(*row) for row in rows]


async def item(conn: AsyncConnection, asset_id: int) -> PublicItem | None:
    """One public image, or None when there is no such asset or it is not public (private,
    community-only, hidden, flagged NSFW or a grid): callers cannot tell these apart."""
    row = (await conn.execute(_public_items().where(Asset.id == asset_id))).one_or_none()
    return None if row is None else PublicItem(*row)


async def community(conn: AsyncConnection, community_id: int) -> CommunityInfo | None:
    """The community with this id, or None when there is none."""
    row = (
        await conn.execute(
            select(Community.id, Community.platform, Community.name).where(Community.id == community_id)
        )
    ).one_or_none()
    return None if row is None else CommunityInfo(*row)


__all__ = ["PUBLIC", "CommunityInfo", "PublicItem", "community", "item", "page"]
