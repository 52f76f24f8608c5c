"""Communities (Discord guilds, Telegram groups) and what their admins chose for them.

A community's settings live in ``communities.settings`` (JSON) and are read on every command run
there, so they are cached in memory for a few seconds: another process's change (an admin on
another shard) is seen within :attr:`Communities.ttl_s`; this process's own changes at once.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any, Literal

from sqlalchemy import select, update
from sqlalchemy.engine import Connection

from studiobot.commands.contract import ChatRef
from studiobot.config import Settings
from studiobot.db.communities import ensure_community, rename_community
from studiobot.db.engine import Database
from studiobot.db.models import Community
from studiobot.errors import BadInput

NsfwPolicy = Literal["block", "spoiler", "age_restricted"]
NSFW_POLICIES: tuple[str, ...] = ("block", "spoiler", "age_restricted")
#: Limits admins may set (the operator's settings are the ceiling), by the name admins type.
LIMITS = {
    "per-hour": "max_jobs_per_hour",
    "per-user": "max_active_per_user",
    "community": "max_active",
}


@dataclass(frozen=True, slots=True)
class CommunityPolicy:
    """A community's effective settings: its admins' choices over the operator's defaults.

    Attributes:
        id: ``communities.id``.
        platform: ``discord`` or ``telegram`` (or ``shell`` in tests).
        platform_id: The guild or group id.
        share_by_default: New images go to the community gallery (else they stay private).
        nsfw: What happens to images a provider flags as NSFW here.
        gallery_channel: Where shared images are posted (a :class:`ChatRef` as a dict), if anywhere.
        max_jobs_per_hour: Jobs one user may start here per hour.
        max_active_per_user: Queued plus running jobs per user.
        max_active: Queued plus running jobs of the whole community.
    """

    id: int
    platform: str
    platform_id: str
    share_by_default: bool
    nsfw: NsfwPolicy
    gallery_channel: dict[str, Any] | None
    max_jobs_per_hour: int
    max_active_per_user: int
    max_active: int

    @property
    def channel(self) -> ChatRef | None:
        """The gallery channel as a chat, or None."""
        return ChatRef.from_dict(self.gallery_channel) if self.gallery_channel else None


class Communities:
    """Community settings, created on first sight and cached briefly.

    Args:
        db: Database.
        settings: The operator's defaults and ceilings.
        ttl_s: How long a cached policy is trusted (another process's change shows after this).
    """

    def __init__(self, db: Database, settings: Settings, *, ttl_s: float = 5.0) -> None:
        self._db = db
        self._settings = settings
        self.ttl_s = ttl_s
        self._ids: dict[tuple[str, str], int] = {}
        self._cache: dict[int, tuple[float, CommunityPolicy]] = {}
        self._names: dict[int, str] = {}

    async def of_chat(self, chat: ChatRef) -> CommunityPolicy | None:
        """The policy of the community ``chat`` belongs to; None in a private chat."""
        if chat.community_id is None:
            return None
        key = (chat.platform, chat.community_id)
        community_id = self._ids.get(key)
        if community_id is None:
            community_id = await self._db.run(ensure_community, *key)
            if len(self._ids) > 100_000:
                self._ids.clear()
            self._ids[key] = community_id
        name = (chat.community_name or "").strip()
        if name and self._names.get(community_id) != name:
            # Once per process, and again when the platform's name changes: not a write per command.
            await self._db.run(rename_community, community_id, name)
            if len(self._names) > 100_000:
                self._names.clear()
            self._names[community_id] = name
        return await self.get(community_id)

    def forget(self) -> None:
        """Read every community afresh (after this process moved one to a new platform id)."""
        self._ids.clear()
        self._cache.clear()
        self._names.clear()

    async def get(self, community_id: int) -> CommunityPolicy:
        """The policy of community ``community_id`` (which must exist)."""
        cached = self._cache.get(community_id)
        if cached is not None and time.monotonic() - cached[0] < self.ttl_s:
            return cached[1]
        async with self._db.read() as conn:
            row = (await conn.execute(
                select(Community.platform, Community.platform_community_id, Community.settings)
                .where(Community.id == community_id)
            )).one()
        return self._remember(community_id, row.platform, row.platform_community_id, row.settings or {})

    async def change(self, community_id: int, **changes: Any) -> CommunityPolicy:
        """Store admins' choices (``None`` restores the operator's default) and return the result.

        Keys are :class:`CommunityPolicy` field names. Limits above the operator's are refused
        here as well as in ``/mod`` (a ceiling the operator pays for).

        Raises:
            BadInput: A limit above the operator's, below 1, or an unknown NSFW policy.
        """
        for name in LIMITS.values():
            value = changes.get(name)
            if value is not None and not 1 <= value <= self._ceiling(name):
                raise BadInput(f"That limit must be between 1 and {self._ceiling(name)} (the operator's).")
        if changes.get("nsfw") is not None and changes["nsfw"] not in NSFW_POLICIES:
            raise BadInput(f"The NSFW policy is one of {', '.join(NSFW_POLICIES)}.")
        platform, platform_id, stored = await self._db.run(_merge_settings, community_id, changes)
        return self._remember(community_id, platform, platform_id, stored)

    def _ceiling(self, name: str) -> int:
        return {
            "max_jobs_per_hour": self._settings.max_jobs_per_hour,
            "max_active_per_user": self._settings.max_active_jobs_per_user,
            "max_active": self._settings.max_active_jobs_per_community,
        }[name]

    def _remember(self, community_id: int, platform: str, platform_id: str, stored: dict[str, Any]) -> CommunityPolicy:
        s = self._settings
        policy = CommunityPolicy(
            id=community_id,
            platform=platform,
            platform_id=platform_id,
            share_by_default=bool(stored.get("share_by_default", s.share_by_default)),
            nsfw=stored.get("nsfw") or s.nsfw_policy,
            gallery_channel=stored.get("gallery_channel"),
            # A ceiling lowered by the operator later wins over an admin's older, higher choice.
            max_jobs_per_hour=min(stored.get("max_jobs_per_hour") or s.max_jobs_per_hour, s.max_jobs_per_hour),
            max_active_per_user=min(stored.get("max_active_per_user") or s.max_active_jobs_per_user,
                                    s.max_active_jobs_per_user),
            max_active=min(stored.get("max_active") or s.max_active_jobs_per_community,
                           s.max_active_jobs_per_community),
        )
        if len(self._cache) > 100_000:
            self._cache.clear()
        self._cache[community_id] = (time.monotonic(), policy)
        return policy


def _merge_settings(conn: Connection, community_id: int, changes: dict[str, Any]) -> tuple[str, str, dict[str, Any]]:
    """Merge ``changes`` into a community's stored settings (``None`` removes a key)."""
    row = conn.execute(
        select(Community.platform, Community.platform_community_id, Community.settings)
        .where(Community.id == community_id)
        .with_for_update()
    ).one()
    stored = dict(row.settings or {})
    for key, value in changes.items():
        if value is None:
            stored.pop(key, None)
        else:
            stored[key] = value
    conn.execute(update(Community).where(Community.id == community_id).values(settings=stored))
    return row.platform, row.platform_community_id, stored
