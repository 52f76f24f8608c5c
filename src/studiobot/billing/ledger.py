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

Every function takes an open connection and runs inside the caller's transaction (see
``Database.run``), so a reservation and the job it pays for commit together or not at all. They are
synchronous on purpose: a transaction runs whole in one hop to the database, and the hot ones use
statements built once at import, with bound parameters.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import bindparam, insert, select, update
from sqlalchemy.engine import Connection
from sqlalchemy.ext.asyncio import AsyncConnection

from studiobot.db.models import CreditAccount, CreditEntry, utcnow
from studiobot.errors import InsufficientCredits

GRANT_KINDS = frozenset({"grant", "purchase", "adjustment", "pass"})

_accounts = CreditAccount.__table__
_entries = CreditEntry.__table__

_RESERVE = (
    update(_accounts)
    .where(_accounts.c.user_id == bindparam("uid"), _accounts.c.balance >= bindparam("cost"))
    .values(balance=_accounts.c.balance - bindparam("cost"), updated_at=bindparam("now"))
    .returning(_accounts.c.balance)
)
_MOVE = (
    update(_accounts)
    .where(_accounts.c.user_id == bindparam("uid"))
    .values(balance=_accounts.c.balance + bindparam("delta"), updated_at=bindparam("now"))
    .returning(_accounts.c.balance)
)
_APPEND = insert(_entries)
_BALANCE = select(_accounts.c.balance).where(_accounts.c.user_id == bindparam("uid"))


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


def open_account(conn: Connection, user_id: int, *, welcome: int) -> None:
    """Create the user's account, granting ``welcome`` credits (if any) as its first entry."""
    conn.execute(insert(_accounts).values(user_id=user_id, balance=0, updated_at=utcnow()))
    if welcome > 0:
        grant(conn, user_id, welcome, key=f"welcome:{user_id}", note="welcome credits")


def grant(
    conn: Connection, user_id: int, amount: int, *, key: str, kind: str = "grant", note: str = ""
) -> int:
    """Add ``amount`` (> 0) credits. Returns the balance after.

    Raises:
        ValueError: For a non-positive amount or a kind that does not add credits.
        sqlalchemy.exc.IntegrityError: When ``key`` was used before (nothing applied).
    """
    if amount <= 0 or kind not in GRANT_KINDS:
        raise ValueError(f"grant needs a positive amount and a kind in {sorted(GRANT_KINDS)}")
    balance = _move(conn, user_id, amount)
    _append(conn, user_id, kind, amount, balance, key=key, note=note)
    return balance


def reserve(conn: Connection, user_id: int, cost: int, *, job_id: int, key: str) -> int:
    """Hold ``cost`` credits for a job. Returns the balance after.

    A zero cost (the user's own key pays) still locks the account row, which serialises one user's
    concurrent acceptances so their limits are checked consistently, but writes no entry.

    Raises:
        InsufficientCredits: When the balance is below ``cost``; the caller's transaction must roll
            back, which leaves no trace of the attempt.
    """
    now = utcnow()
    balance = conn.execute(_RESERVE, {"uid": user_id, "cost": cost, "now": now}).scalar_one_or_none()
    if balance is None:
        raise InsufficientCredits(needed=cost, available=balance_of(conn, user_id))
    if cost > 0:
        _append(conn, user_id, "reserve", -cost, balance, key=key, job_id=job_id, now=now)
    return balance


def capture(conn: Connection, user_id: int, cost: int, *, job_id: int) -> int:
    """Mark a job's reservation as spent (an entry of amount 0). Returns the balance.

    Raises:
        sqlalchemy.exc.IntegrityError: When the reservation was already captured or refunded.
    """
    balance = _move(conn, user_id, 0)
    if cost > 0:
        _append(conn, user_id, "capture", 0, balance, key=resolve_key(job_id), job_id=job_id)
    return balance


def refund(conn: Connection, user_id: int, cost: int, *, job_id: int, note: str = "") -> int:
    """Give a job's reserved credits back. Returns the balance after.

    Raises:
        sqlalchemy.exc.IntegrityError: When the reservation was already captured or refunded.
    """
    balance = _move(conn, user_id, cost)
    if cost > 0:
        _append(conn, user_id, "refund", cost, balance, key=resolve_key(job_id), job_id=job_id, note=note)
    return balance


def balance_of(conn: Connection, user_id: int) -> int:
    """The user's current balance (0 when they have no account yet)."""
    return conn.execute(_BALANCE, {"uid": user_id}).scalar_one_or_none() or 0


async def history(conn: AsyncConnection, user_id: int, *, limit: int = 10) -> list[Entry]:
    """The user's newest ``limit`` entries, newest first (a read: takes an async connection)."""
    result = await conn.execute(
        select(
            _entries.c.id,
            _entries.c.kind,
            _entries.c.amount,
            _entries.c.balance_after,
            _entries.c.job_id,
            _entries.c.note,
            _entries.c.created_at,
        )
        .where(_entries.c.user_id == user_id)
        .order_by(_entries.c.id.desc())
        .limit(limit)
    )
    return [Entry(*row) for row in result]


async def current_balance(conn: AsyncConnection, user_id: int) -> int:
    """The user's current balance, for reads (0 when they have no account yet)."""
    return (await conn.execute(_BALANCE, {"uid": user_id})).scalar_one_or_none() or 0


def _move(conn: Connection, user_id: int, delta: int) -> int:
    return conn.execute(_MOVE, {"uid": user_id, "delta": delta, "now": utcnow()}).scalar_one()


def _append(
    conn: Connection,
    user_id: int,
    kind: str,
    amount: int,
    balance_after: int,
    *,
    key: str,
    job_id: int | None = None,
    note: str = "",
    now: datetime | None = None,
) -> None:
    conn.execute(
        _APPEND,
        {
            "user_id": user_id,
            "kind": kind,
            "amount": amount,
            "balance_after": balance_after,
            "job_id": job_id,
            "idempotency_key": key,
            "note": note,
            "created_at": now or utcnow(),
        },
    )
