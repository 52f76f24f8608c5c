"""The credits ledger: grant, reserve, capture, refund, clawback, adjust, balance and history.

Rules (reference-platform-rules.md section 2, after TigerBeetle's two-phase transfers):

* Entries are append-only and each has a unique idempotency key; a repeated operation with the same
  key fails with ``IntegrityError`` and its transaction rolls back, so nothing is ever applied twice.
* ``credit_accounts.balance`` caches the sum of the user's entries and is changed only here, in the
  same transaction as the entry that explains the change. It never goes below zero (a CHECK).
* A reservation is one conditional ``UPDATE ... WHERE balance >= cost``: under READ COMMITTED
  PostgreSQL re-checks the condition on the locked row, and SQLite runs one writer at a time, so two
  reservations can never both spend the same credit. A ``CHECK (balance >= 0)`` backs it up.
* A reservation draws from an active pass first (see :mod:`studiobot.billing.passes`), then from
  the balance. Accounts without a running pass take the one-statement path; ``pass_until`` on the
  account tells the two apart without another query.
* A reservation is resolved at most once: capture and refund share the key ``resolve:job:<id>``.
* A refund or dispute takes credits back (:func:`clawback`). What the balance cannot cover is either
  owed (``owed``, the ``debt`` policy: repaid from the next credits before any can be spent) or
  written off (the ``absorb`` policy); both are recorded on the entry. The balance itself stays
  >= 0, so "balance == sum of entries" and "balance >= 0" both still hold.

Every function takes an open connection and runs inside the caller's transaction (see
``Database.run``), so a reservation and the job it pays for commit together or not at all. They are
synchronous on purpose: a transaction runs whole in one hop to the database, and the hot ones use
statements built once at import, with bound parameters.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import BigInteger, bindparam, insert, or_, select, update
from sqlalchemy.engine import Connection
from sqlalchemy.ext.asyncio import AsyncConnection

from studiobot.billing import passes
from studiobot.db.models import CreditAccount, CreditEntry, utcnow
from studiobot.errors import InsufficientCredits

GRANT_KINDS = frozenset({"grant", "purchase", "adjustment"})
CLAWBACK_POLICIES = ("debt", "absorb")

_accounts = CreditAccount.__table__
_entries = CreditEntry.__table__

_COST = bindparam("cost", type_=BigInteger)
_TAKE = (
    update(_accounts)
    .where(_accounts.c.user_id == bindparam("uid"), _accounts.c.balance >= _COST)
    .values(balance=_accounts.c.balance - _COST, updated_at=bindparam("now"))
    .returning(_accounts.c.balance)
)
# The reservation of an account with no pass running: the pass check is part of the one UPDATE.
_RESERVE = _TAKE.where(
    or_(
        _COST == 0,
        _accounts.c.pass_until.is_(None),
        _accounts.c.pass_until <= bindparam("now"),
    )
)
_MOVE = (
    update(_accounts)
    .where(_accounts.c.user_id == bindparam("uid"))
    .values(balance=_accounts.c.balance + bindparam("delta"), updated_at=bindparam("now"))
    .returning(_accounts.c.balance, _accounts.c.owed)
)
_LOCK = (
    update(_accounts)
    .where(_accounts.c.user_id == bindparam("uid"))
    .values(updated_at=bindparam("now"))
    .returning(_accounts.c.balance, _accounts.c.owed, _accounts.c.pass_until)
)
_APPEND = insert(_entries)
_BALANCE = select(_accounts.c.balance).where(_accounts.c.user_id == bindparam("uid"))
_ACCOUNT = select(_accounts.c.balance, _accounts.c.owed).where(_accounts.c.user_id == bindparam("uid"))


@dataclass(frozen=True, slots=True)
class Entry:
    """One ledger entry as shown in ``/credits`` and ``admin ledger``."""

    id: int
    kind: str
    amount: int
    balance_after: int
    job_id: int | None
    order_id: int | None
    actor: str | None
    note: str
    created_at: datetime


@dataclass(frozen=True, slots=True)
class Reservation:
    """What a reservation took: ``balance`` after it, and the part a pass paid (if any)."""

    balance: int
    pass_id: int | None = None
    pass_credits: int = 0


@dataclass(frozen=True, slots=True)
class Clawback:
    """What a clawback did: ``taken`` from the balance; the rest ``owed`` or ``written_off``."""

    taken: int
    owed: int
    written_off: int
    balance: int


@dataclass(frozen=True, slots=True)
class Account:
    """A user's balance and what they owe (``net`` = balance - owed, negative when in debt)."""

    balance: int
    owed: int

    @property
    def net(self) -> int:
        return self.balance - self.owed


def resolve_key(job_id: int) -> str:
    """The one idempotency key both capture and refund of a job's reservation use."""
    return f"resolve:job:{job_id}"


def open_account(conn: Connection, user_id: int, *, welcome: int) -> None:
    """Create the user's account, granting ``welcome`` credits (if any) as its first entry."""
    conn.execute(insert(_accounts).values(user_id=user_id, balance=0, owed=0, updated_at=utcnow()))
    if welcome > 0:
        grant(conn, user_id, welcome, key=f"welcome:{user_id}", note="welcome credits")


def grant(
    conn: Connection,
    user_id: int,
    amount: int,
    *,
    key: str,
    kind: str = "grant",
    note: str = "",
    order_id: int | None = None,
    actor: str | None = None,
) -> int:
    """Add ``amount`` (> 0) credits, repaying any debt first. Returns the balance after.

    Raises:
        ValueError: For a non-positive amount or a kind that does not add credits.
        sqlalchemy.exc.IntegrityError: When ``key`` was used before (nothing applied).
    """
    if amount <= 0 or kind not in GRANT_KINDS:
        raise ValueError(f"grant needs a positive amount and a kind in {sorted(GRANT_KINDS)}")
    return _credit(conn, user_id, amount, kind, key=key, note=note, order_id=order_id, actor=actor)


def adjust(conn: Connection, user_id: int, delta: int, *, key: str, actor: str, note: str) -> int:
    """A manual change by an operator: ``delta`` credits (either sign), with who and why.

    Returns:
        The balance after.

    Raises:
        ValueError: For a zero ``delta`` or an empty ``note`` (every adjustment says why).
        InsufficientCredits: When a removal exceeds the balance (nothing applied).
        sqlalchemy.exc.IntegrityError: When ``key`` was used before.
    """
    if delta == 0 or not note.strip():
        raise ValueError("an adjustment needs a non-zero amount and a reason")
    if delta > 0:
        return _credit(conn, user_id, delta, "adjustment", key=key, note=note, actor=actor)
    now = utcnow()
    balance = conn.execute(_TAKE, {"uid": user_id, "cost": -delta, "now": now}).scalar_one_or_none()
    if balance is None:
        raise InsufficientCredits(needed=-delta, available=balance_of(conn, user_id))
    _append(conn, user_id, "adjustment", delta, balance, key=key, note=note, actor=actor, now=now)
    return balance


def reserve(
    conn: Connection, user_id: int, cost: int, *, job_id: int, key: str, now: datetime | None = None
) -> Reservation:
    """Hold ``cost`` credits for a job: from an active pass first, then from the balance.

    A zero cost (the user's own key pays) still locks the account row, which serialises one user's
    concurrent acceptances so their limits are checked consistently, but writes no entry.

    Raises:
        InsufficientCredits: When the pass and the balance together do not cover ``cost``; the
            caller's transaction must roll back, which leaves no trace of the attempt.
    """
    now = now or utcnow()
    balance = conn.execute(_RESERVE, {"uid": user_id, "cost": cost, "now": now}).scalar_one_or_none()
    if balance is not None:
        if cost > 0:
            _append(conn, user_id, "reserve", -cost, balance, key=key, job_id=job_id, now=now)
        return Reservation(balance)
    return _reserve_with_pass(conn, user_id, cost, job_id=job_id, key=key, now=now)


def _reserve_with_pass(
    conn: Connection, user_id: int, cost: int, *, job_id: int, key: str, now: datetime
) -> Reservation:
    balance, owed, pass_until = conn.execute(_LOCK, {"uid": user_id, "now": now}).one()
    drawn = passes.draw(conn, user_id, cost, now) if pass_until and pass_until > now else None
    pass_id, from_pass = drawn or (None, 0)
    rest = cost - from_pass
    if rest > 0:
        taken = conn.execute(_TAKE, {"uid": user_id, "cost": rest, "now": now}).scalar_one_or_none()
        if taken is None:
            raise InsufficientCredits(needed=cost, available=balance + from_pass, owed=owed)
        balance = taken
    note = f"{from_pass} from your pass" if from_pass else ""
    _append(conn, user_id, "reserve", -rest, balance, key=key, job_id=job_id, note=note, now=now)
    return Reservation(balance, pass_id, from_pass)


def capture(conn: Connection, user_id: int, cost: int, *, job_id: int) -> int:
    """Mark a job's reservation as spent (an entry of amount 0). Returns the balance.

    Raises:
        sqlalchemy.exc.IntegrityError: When the reservation was already captured or refunded.
    """
    balance, _ = _move(conn, user_id, 0)
    if cost > 0:
        _append(conn, user_id, "capture", 0, balance, key=resolve_key(job_id), job_id=job_id)
    return balance


def refund(
    conn: Connection,
    user_id: int,
    cost: int,
    *,
    job_id: int,
    note: str = "",
    pass_id: int | None = None,
    pass_credits: int = 0,
    drawn_at: datetime | None = None,
) -> int:
    """Give a job's reserved credits back: the pass's part to the pass, the rest to the balance.

    Args:
        pass_id, pass_credits, drawn_at: The pass part of the reservation and when it was made
            (credits go back to a pass only within the window they came from).

    Returns:
        The balance after.

    Raises:
        sqlalchemy.exc.IntegrityError: When the reservation was already captured or refunded.
    """
    if cost <= 0:
        return _move(conn, user_id, 0)[0]
    if pass_id is not None and pass_credits > 0:
        passes.give_back(conn, pass_id, pass_credits, drawn_at or utcnow())
        note = f"{note}; {pass_credits} back to your pass" if note else f"{pass_credits} back to your pass"
    # Written even when the pass paid it all: the entry's key is what resolves the reservation once.
    return _credit(conn, user_id, cost - pass_credits, "refund", key=resolve_key(job_id), note=note,
                   job_id=job_id)


def clawback(
    conn: Connection,
    user_id: int,
    credits: int,
    *,
    key: str,
    policy: str,
    note: str,
    order_id: int | None = None,
) -> Clawback:
    """Take back ``credits`` after a refund or dispute (reference-platform-rules.md section 2c).

    The balance gives what it has; the rest is owed (``policy="debt"``, repaid from the next
    credits) or written off (``policy="absorb"``). Either way the entry's note records it.

    Raises:
        ValueError: For a non-positive amount or an unknown policy.
        sqlalchemy.exc.IntegrityError: When ``key`` was used before (nothing applied).
    """
    if credits <= 0 or policy not in CLAWBACK_POLICIES:
        raise ValueError(f"clawback needs a positive amount and a policy in {CLAWBACK_POLICIES}")
    now = utcnow()
    balance, owed, _ = conn.execute(_LOCK, {"uid": user_id, "now": now}).one()
    taken = min(balance, credits)
    rest = credits - taken
    balance, _ = _move(conn, user_id, -taken)
    owed_now, written_off = (rest, 0) if policy == "debt" else (0, rest)
    if owed_now:
        conn.execute(update(_accounts).where(_accounts.c.user_id == user_id).values(owed=owed + owed_now))
    detail = f"{note}: {credits} taken back"
    if owed_now:
        detail += f", {owed_now} owed"
    if written_off:
        detail += f", {written_off} written off"
    _append(conn, user_id, "clawback", -taken, balance, key=key, note=detail[:200], order_id=order_id, now=now)
    return Clawback(taken, owed_now, written_off, balance)


def record(
    conn: Connection, user_id: int, kind: str, *, key: str, note: str, order_id: int | None = None
) -> int:
    """An entry that moves no credits but belongs in the history (a pass bought or ended).

    Returns:
        The balance (unchanged).

    Raises:
        sqlalchemy.exc.IntegrityError: When ``key`` was used before.
    """
    balance, _ = _move(conn, user_id, 0)
    _append(conn, user_id, kind, 0, balance, key=key, note=note[:200], order_id=order_id)
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
            _entries.c.order_id,
            _entries.c.actor,
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


async def account(conn: AsyncConnection, user_id: int) -> Account:
    """The user's balance and debt, for reads (zeros when they have no account yet)."""
    row = (await conn.execute(_ACCOUNT, {"uid": user_id})).one_or_none()
    return Account(*row) if row else Account(0, 0)


def _credit(
    conn: Connection,
    user_id: int,
    amount: int,
    kind: str,
    *,
    key: str,
    note: str = "",
    job_id: int | None = None,
    order_id: int | None = None,
    actor: str | None = None,
) -> int:
    """Add ``amount`` (>= 0) credits with one entry, then repay debt from them (its own entry,
    keyed after this one)."""
    now = utcnow()
    balance, owed = _move(conn, user_id, amount)
    _append(conn, user_id, kind, amount, balance, key=key, job_id=job_id, note=note,
            order_id=order_id, actor=actor, now=now)
    if owed and balance and amount:
        repaid = min(owed, balance)
        balance = conn.execute(
            update(_accounts)
            .where(_accounts.c.user_id == user_id)
            .values(balance=_accounts.c.balance - repaid, owed=_accounts.c.owed - repaid)
            .returning(_accounts.c.balance)
        ).scalar_one()
        _append(conn, user_id, "repay", -repaid, balance, key=f"{key}:repay",
                note=f"repaid {repaid} owed" + (f", {owed - repaid} still owed" if owed > repaid else ""),
                now=now)
    return balance


def _move(conn: Connection, user_id: int, delta: int) -> tuple[int, int]:
    balance, owed = conn.execute(_MOVE, {"uid": user_id, "delta": delta, "now": utcnow()}).one()
    return balance, owed


def _append(
    conn: Connection,
    user_id: int,
    kind: str,
    amount: int,
    balance_after: int,
    *,
    key: str,
    job_id: int | None = None,
    order_id: int | None = None,
    actor: str | None = None,
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
            "order_id": order_id,
            "actor": actor,
            "idempotency_key": key,
            "note": note,
            "created_at": now or utcnow(),
        },
    )
