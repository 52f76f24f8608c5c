"""Passes: time-boxed plans granting N credits per window (e.g. 15 images an hour for 24 hours).

A pass's windows are counted from its ``starts_at``: window number ``w`` covers
``[starts_at + w * window_s, starts_at + (w + 1) * window_s)``. The row keeps the number of the
window it last drew in and what was used there, so a draw in a later window starts from zero
without any timer resetting it.

These functions run inside a ledger transaction that already holds the user's account row lock
(see :mod:`studiobot.billing.ledger`), which is what serialises two reservations of one user; the
pass rows themselves need no lock of their own.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import insert, or_, select, update
from sqlalchemy.engine import Connection
from sqlalchemy.ext.asyncio import AsyncConnection

from studiobot.db.models import CreditAccount, CreditPass, utcnow

_passes = CreditPass.__table__
_accounts = CreditAccount.__table__


@dataclass(frozen=True, slots=True)
class PassStatus:
    """An active pass as ``/credits`` shows it.

    Attributes:
        left: Credits still available in the current window.
        window_ends_at: When the current window ends (and ``left`` is back to the full amount).
    """

    id: int
    label: str
    credits_per_window: int
    window_s: int
    left: int
    window_ends_at: datetime
    expires_at: datetime


def window_of(starts_at: datetime, window_s: int, at: datetime) -> int:
    """The number of the window ``at`` falls in (0 for the first)."""
    return int((at - starts_at).total_seconds() // window_s)


def create(
    conn: Connection,
    user_id: int,
    *,
    plan: str,
    label: str,
    credits_per_window: int,
    window_s: int,
    duration_s: int,
    order_id: int | None = None,
    now: datetime | None = None,
) -> int:
    """Start a pass now and note its end on the account. Returns the pass id.

    Raises:
        sqlalchemy.exc.IntegrityError: When ``order_id`` already has a pass.
    """
    now = now or utcnow()
    expires_at = now + timedelta(seconds=duration_s)
    pass_id = conn.execute(
        insert(_passes)
        .values(
            user_id=user_id, order_id=order_id, plan=plan, label=label,
            credits_per_window=credits_per_window, window_s=window_s, starts_at=now,
            expires_at=expires_at, window_no=0, used=0, created_at=now,
        )
        .returning(_passes.c.id)
    ).scalar_one()
    conn.execute(
        update(_accounts)
        .where(
            _accounts.c.user_id == user_id,
            or_(_accounts.c.pass_until.is_(None), _accounts.c.pass_until < expires_at),
        )
        .values(pass_until=expires_at)
    )
    return pass_id


def draw(conn: Connection, user_id: int, cost: int, now: datetime) -> tuple[int, int] | None:
    """Take up to ``cost`` credits from the user's active pass that ends first and has some left.

    Returns:
        (pass id, credits taken), or None when no active pass has credits left in this window.
    """
    rows = conn.execute(
        select(_passes.c.id, _passes.c.credits_per_window, _passes.c.window_s, _passes.c.starts_at,
               _passes.c.window_no, _passes.c.used)
        .where(_passes.c.user_id == user_id, _passes.c.starts_at <= now, _passes.c.expires_at > now)
        .order_by(_passes.c.expires_at, _passes.c.id)
    ).all()
    for pass_id, per_window, window_s, starts_at, window_no, used in rows:
        current = window_of(starts_at, window_s, now)
        used_now = used if window_no == current else 0
        take = min(cost, per_window - used_now)
        if take > 0:
            conn.execute(
                update(_passes).where(_passes.c.id == pass_id).values(window_no=current, used=used_now + take)
            )
            return pass_id, take
    return None


def give_back(conn: Connection, pass_id: int, credits: int, drawn_at: datetime) -> bool:
    """Return credits a failed job drew, if the window they came from is still the pass's current one.

    A later window starts from zero anyway, so credits from a past window are not carried over.
    Returns whether anything was returned.
    """
    row = conn.execute(
        select(_passes.c.starts_at, _passes.c.window_s).where(_passes.c.id == pass_id)
    ).one_or_none()
    if row is None:
        return False
    window = window_of(row.starts_at, row.window_s, drawn_at)
    result = conn.execute(
        update(_passes)
        .where(_passes.c.id == pass_id, _passes.c.window_no == window, _passes.c.used >= credits)
        .values(used=_passes.c.used - credits)
    )
    return result.rowcount == 1


def end_for_order(conn: Connection, order_id: int, now: datetime | None = None) -> bool:
    """End the pass an order bought (refunded or disputed). Returns whether an active pass ended."""
    now = now or utcnow()
    result = conn.execute(
        update(_passes)
        .where(_passes.c.order_id == order_id, _passes.c.expires_at > now)
        .values(expires_at=now)
    )
    return result.rowcount == 1


async def active(conn: AsyncConnection, user_id: int, now: datetime | None = None) -> list[PassStatus]:
    """The user's passes running now, ending soonest first."""
    now = now or utcnow()
    rows = await conn.execute(
        select(_passes.c.id, _passes.c.label, _passes.c.credits_per_window, _passes.c.window_s,
               _passes.c.starts_at, _passes.c.expires_at, _passes.c.window_no, _passes.c.used)
        .where(_passes.c.user_id == user_id, _passes.c.starts_at <= now, _passes.c.expires_at > now)
        .order_by(_passes.c.expires_at, _passes.c.id)
    )
    found = []
    for pid, label, per_window, window_s, starts_at, expires_at, window_no, used in rows:
        current = window_of(starts_at, window_s, now)
        left = per_window - (used if window_no == current else 0)
        window_ends_at = min(starts_at + timedelta(seconds=window_s * (current + 1)), expires_at)
        found.append(PassStatus(pid, label, per_window, window_s, left, window_ends_at, expires_at))
    return found
