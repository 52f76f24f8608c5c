"""The credits ledger: grant, reserve, capture, refund, balance and history.

Rules (reference-platform-rules.md section 2, after TigerBeetle's two-phase transfers):

* Entries are append-only and each has a unique idempotency key; a repeated operation with the same
  key fails with ``IntegrityError`` and its transaction rolls back, so nothing is ever applied twice.
* ``credit_accounts.balance`` caches the sum of the user's entries and is changed only here, in the
  same transaction as the entry that explains the change.
* A reservation is one conditional ``UPDATE ... WHERE balance >= cost``: under READ COMMITTED
  PostgreSQL re-checks the condition on the locked row, and SQLite runs one writer at a time, so two
  reservations can never both spend the same credit. A ``CHECK (balance >= 0)`` backs it up.
* A reservation is resolved at most once: capture and refund share the key ``resolve:job:<id>``.

Every function takes an open connection and runs inside the caller's transaction, so a reservation
and the job it pays for commit together or not at all.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import insert, select, update
from sqlalchemy.ext.asyncio import AsyncConnection

from studiobot.db.models import CreditAccount, CreditEntry, utcnow
from studiobot.errors import InsufficientCredits

GRANT_KINDS = frozenset({"grant", "purchase", "adjustment", "pass"})


@dataclass(frozen=True, slots=True)
class Entry:
    """One ledger entry as shown in ``/credits``."""

    id: int
    kind: str
    amount: int
    balance_after: int
    job_id: int | None
    note: str
    created_at: datetime


def resolve_key(job_id: int) -> str:
    """The one idempotency key both capture and refund of a job's reservation use."""
    return f"resolve:job:{job_id}"


async def open_account(conn: AsyncConnection, user_id: int, *, welcome: int) -> None:
    """Create the user's account, granting ``welcome`` credits (if any) as its first entry."""
    await conn.execute(insert(CreditAccount).values(user_id=user_id, balance=0, updated_at=utcnow()))
    if welcome > 0:
        await grant(conn, user_id, welcome, key=f"welcome:{user_id}", note="welcome credits")


async def grant(
    conn: AsyncConnection, user_id: int, amount: int, *, key: str, kind: str = "grant", note: str = ""
) -> int:
    """Add ``amount`` (> 0) credits. Returns the balance after.

    Raises:
        ValueError: For a non-positive amount or a kind that does not add credits.
        sqlalchemy.exc.IntegrityError: When ``key`` was used before (nothing applied).
    """
    if amount <= 0 or kind not in GRANT_KINDS:
        raise ValueError(f"grant needs a positive amount and a kind in {sorted(GRANT_KINDS)}")
    balance = await _move(conn, user_id, amount)
    await _append(conn, user_id, kind, amount, balance, key=key, note=note)
    return balance


async def reserve(conn: AsyncConnection, user_id: int, cost: int, *, job_id: int, key: str) -> int:
    """Hold ``cost`` credits for a job. Returns the balance after.

    A zero cost (the user's own key pays) still locks the account row, which serialises one user's
    concurrent acceptances so their limits are checked consistently, but writes no entry.

    Raises:
        InsufficientCredits: When the balance is below ``cost``; the caller's transaction must roll
            back, which leaves no trace of the attempt.
    """
    result = await conn.execute(
        update(CreditAccount)
        .where(CreditAccount.user_id == user_id, CreditAccount.balance >= cost)
        .values(balance=CreditAccount.balance - cost, updated_at=utcnow())
        .returning(CreditAccount.balance)
    )
    balance = result.scalar_one_or_none()
    if balance is None:
        raise InsufficientCredits(needed=cost, available=await balance_of(conn, user_id))
    if cost > 0:
        await _append(conn, user_id, "reserve", -cost, balance, key=key, job_id=job_id)
    return balance


async def capture(conn: AsyncConnection, user_id: int, cost: int, *, job_id: int) -> int:
    """Mark a job's reservation as spent (an entry of amount 0). Returns the balance.

    Raises:
        sqlalchemy.exc.IntegrityError: When the reservation was already captured or refunded.
    """
    balance = await _move(conn, user_id, 0)
    if cost > 0:
        await _append(conn, user_id, "capture", 0, balance, key=resolve_key(job_id), job_id=job_id)
    return balance


async def refund(conn: AsyncConnection, user_id: int, cost: int, *, job_id: int, note: str = "") -> int:
    """Give a job's reserved credits back. Returns the balance after.

    Raises:
        sqlalchemy.exc.IntegrityError: When the reservation was already captured or refunded.
    """
    balance = await _move(conn, user_id, cost)
    if cost > 0:
        await _append(
            conn, user_id, "refund", cost, balance, key=resolve_key(job_id), job_id=job_id, note=note
        )
    return balance


async def balance_of(conn: AsyncConnection, user_id: int) -> int:
    """The user's current balance (0 when they have no account yet)."""
    result = await conn.execute(select(CreditAccount.balance).where(CreditAccount.user_id == user_id))
    return result.scalar_one_or_none() or 0


async def history(conn: AsyncConnection, user_id: int, *, limit: int = 10) -> list[Entry]:
    """The user's newest ``limit`` entries, newest first."""
    result = await conn.execute(
        select(
            CreditEntry.id,
            CreditEntry.kind,
            CreditEntry.amount,
            CreditEntry.balance_after,
            CreditEntry.job_id,
            CreditEntry.note,
            CreditEntry.created_at,
        )
        .where(CreditEntry.user_id == user_id)
        .order_by(CreditEntry.id.desc())
        .limit(limit)
    )
    return [Entry(*row) for row in result]


async def _move(conn: AsyncConnection, user_id: int, amount: int) -> int:
    result = await conn.execute(
        update(CreditAccount)
        .where(CreditAccount.user_id == user_id)
        .values(balance=CreditAccount.balance + amount, updated_at=utcnow())
        .returning(CreditAccount.balance)
    )
    return result.scalar_one()


async def _append(
    conn: AsyncConnection,
    user_id: int,
    kind: str,
    amount: int,
    balance_after: int,
    *,
    key: str,
    job_id: int | None = None,
    note: str = "",
) -> None:
    await conn.execute(
        insert(CreditEntry).values(
            user_id=user_id,
            kind=kind,
            amount=amount,
            balance_after=balance_after,
            job_id=job_id,
            idempotency_key=key,
            note=note,
            created_at=utcnow(),
        )
    )
