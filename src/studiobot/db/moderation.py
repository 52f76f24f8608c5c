"""Bans, blocked terms and the audit log: transaction functions and reads.

Every write that changes what people may do also appends an :class:`AuditEntry` in the same
transaction, so the log cannot miss an action that happened nor record one that did not.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import delete, insert, or_, select
from sqlalchemy.engine import Connection
from sqlalchemy.ext.asyncio import AsyncConnection

from studiobot.db.models import AuditEntry, Ban, BlockedTerm, utcnow


@dataclass(frozen=True, slots=True)
class Actor:
    """Who acts, where: ``name`` is ``platform:user id`` (or ``cli:<login>``); ``community_id``
    None for an operator's global action."""

    name: str
    community_id: int | None


def audit(conn: Connection, actor: Actor, action: str, target: str = "", reason: str = "") -> None:
    """Append one audit entry (who, what, target, why; when is now)."""
    conn.execute(insert(AuditEntry).values(
        community_id=actor.community_id, actor=actor.name[:100], action=action[:32],
        target=target[:200], reason=reason[:200], created_at=utcnow(),
    ))


def ban(conn: Connection, actor: Actor, user_id: int, target: str, until: datetime | None, reason: str) -> None:
    """Ban ``user_id`` in the actor's community (everywhere for a global actor), replacing an
    earlier ban there (a new duration or reason wins)."""
    conn.execute(delete(Ban).where(Ban.user_id == user_id, _same_scope(Ban.community_id, actor.community_id)))
    conn.execute(insert(Ban).values(
        user_id=user_id, community_id=actor.community_id, until=until, reason=reason[:200],
        actor=actor.name[:100], created_at=utcnow(),
    ))
    detail = f"until {until:%Y-%m-%d %H:%M} UTC" if until else "until lifted"
    audit(conn, actor, "ban", target, f"{reason} ({detail})" if reason else detail)


def unban(conn: Connection, actor: Actor, user_id: int, target: str, reason: str) -> bool:
    """Lift ``user_id``'s ban in the actor's scope. Returns False when there was none."""
    gone = conn.execute(
        delete(Ban).where(Ban.user_id == user_id, _same_scope(Ban.community_id, actor.community_id))
    ).rowcount
    if gone:
        audit(conn, actor, "unban", target, reason)
    return bool(gone)


def add_term(conn: Connection, actor: Actor, pattern: str, is_regex: bool) -> bool:
    """Block ``pattern`` in the actor's scope. Returns False when it was already blocked there."""
    exists = conn.execute(select(BlockedTerm.id).where(
        _same_scope(BlockedTerm.community_id, actor.community_id),
        BlockedTerm.pattern == pattern, BlockedTerm.is_regex == is_regex,
    )).first()
    if exists:
        return False
    conn.execute(insert(BlockedTerm).values(
        community_id=actor.community_id, pattern=pattern, is_regex=is_regex, actor=actor.name[:100],
        created_at=utcnow(),
    ))
    audit(conn, actor, "blocklist add", _shown(pattern, is_regex))
    return True


def remove_term(conn: Connection, actor: Actor, pattern: str, is_regex: bool) -> bool:
    """Unblock ``pattern`` in the actor's scope. Returns False when it was not blocked there."""
    gone = conn.execute(delete(BlockedTerm).where(
        _same_scope(BlockedTerm.community_id, actor.community_id),
        BlockedTerm.pattern == pattern, BlockedTerm.is_regex == is_regex,
    )).rowcount
    if gone:
        audit(conn, actor, "blocklist remove", _shown(pattern, is_regex))
    return bool(gone)


@dataclass(frozen=True, slots=True)
class BanRow:
    """An active ban."""

    user_id: int
    community_id: int | None
    until: datetime | None
    reason: str


@dataclass(frozen=True, slots=True)
class TermRow:
    """A blocked term or regular expression; ``community_id`` None for the global list."""

    community_id: int | None
    pattern: str
    is_regex: bool


async def active_bans(conn: AsyncConnection, now: datetime) -> list[BanRow]:
    """Every ban in force at ``now``, in every scope (a small table: bans are rare)."""
    return [BanRow(*row) for row in (await conn.execute(_BANS.where(_in_force(now)))).all()]


async def bans_in(conn: AsyncConnection, community_id: int | None, now: datetime) -> list[BanRow]:
    """The bans in force in one scope (``community_id`` None: the global ones), newest first."""
    query = _BANS.where(_in_force(now), _same_scope(Ban.community_id, community_id)).order_by(Ban.id.desc())
    return [BanRow(*row) for row in (await conn.execute(query)).all()]


async def all_terms(conn: AsyncConnection) -> list[TermRow]:
    """Every blocked term, in every scope."""
    return [TermRow(*row) for row in (await conn.execute(_TERMS)).all()]


async def terms_in(conn: AsyncConnection, community_id: int | None) -> list[TermRow]:
    """One scope's blocked terms (``community_id`` None: the global list), oldest first."""
    query = _TERMS.where(_same_scope(BlockedTerm.community_id, community_id))
    return [TermRow(*row) for row in (await conn.execute(query)).all()]


_BANS = select(Ban.user_id, Ban.community_id, Ban.until, Ban.reason)
_TERMS = select(BlockedTerm.community_id, BlockedTerm.pattern, BlockedTerm.is_regex).order_by(BlockedTerm.id)


def _in_force(now: datetime):  # type: ignore[no-untyped-def]
    return or_(Ban.until.is_(None), Ban.until > now)


async def audit_page(conn: AsyncConnection, community_id: int | None, *, before: int | None,
                     limit: int) -> Sequence[AuditEntry]:
    """Newest audit entries of one scope (None = global actions), older than entry ``before``."""
    query = (select(AuditEntry.id, AuditEntry.actor, AuditEntry.action, AuditEntry.target,
                    AuditEntry.reason, AuditEntry.created_at)
             .where(_same_scope(AuditEntry.community_id, community_id))
             .order_by(AuditEntry.id.desc()).limit(limit))
    if before is not None:
        query = query.where(AuditEntry.id < before)
    return (await conn.execute(query)).all()  # type: ignore[return-value]


def _same_scope(column, community_id: int | None):  # type: ignore[no-untyped-def]
    return column.is_(None) if community_id is None else column == community_id


def _shown(pattern: str, is_regex: bool) -> str:
    return f"re:{pattern}" if is_regex else pattern
