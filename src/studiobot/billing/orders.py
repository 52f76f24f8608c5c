"""Orders and the Stripe event inbox: transaction functions for ``Database.run``, and reads.

Every change to an order starts by locking its row (a no-op ``UPDATE ... RETURNING``), so the
effects of concurrent webhook deliveries, the success page and reconciliation on one order run one
after the other (PostgreSQL row lock; SQLite's single writer) and each sees what the previous one
did. A new order is made under a lock on its buyer's row, so concurrent ``/buy`` taps share one
order. Credits move only through the ledger, under keys unique per Checkout Session
(``checkout:<cs_id>``) and per clawback target, so nothing is credited or taken twice
(reference-platform-rules.md sections 1c and 1d).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import and_, case, insert, or_, select, update
from sqlalchemy.engine import Connection, Row
from sqlalchemy.ext.asyncio import AsyncConnection

from studiobot.billing import ledger, passes
from studiobot.billing.catalogue import Product
from studiobot.db.engine import dialect_insert
from studiobot.db.models import Order, StripeEvent, User, utcnow

OrderRow = Row[Any]
_orders = Order.__table__
_events = StripeEvent.__table__
_users = User.__table__
_ALL = tuple(_orders.c)

SESSION_EVENTS = frozenset({
    "checkout.session.completed",
    "checkout.session.async_payment_succeeded",
    "checkout.session.async_payment_failed",
    "checkout.session.expired",
})
CLAWBACK_EVENTS = frozenset({"charge.refunded", "charge.dispute.created"})
#: The event types studiobot acts on (subscribe the Stripe endpoint to exactly these).
HANDLED_EVENTS = SESSION_EVENTS | CLAWBACK_EVENTS
#: Outcome of a refund or dispute whose order is not paid yet: applied when the payment is.
WAITING = "waiting for the order's payment"


@dataclass(frozen=True, slots=True)
class Notice:
    """Something to tell the order's owner privately, once its transaction committed."""

    user_id: int
    origin_platform: str
    origin_chat: dict[str, Any]
    text: str
    data: dict[str, Any]


def open_or_create(
    conn: Connection,
    user_id: int,
    product: Product,
    *,
    origin_platform: str,
    origin_chat: dict[str, Any],
    expires_at: datetime,
    valid_for_s: float,
) -> OrderRow:
    """The user's unpaid order for ``product`` whose link stays valid ``valid_for_s`` more
    seconds, or a new one (copying what the product sells) expiring at ``expires_at``.

    A pending order whose last attempt failed (no expiry, see :func:`next_attempt`) is taken up
    again with ``expires_at``: Stripe wants a Session's ``expires_at`` at least 30 minutes after
    the request that creates it, so each new attempt picks its own.

    The buyer's ``users`` row is locked first (PostgreSQL ``FOR NO KEY UPDATE``, which leaves
    inserts referencing the user alone; SQLite has one writer), so concurrent calls for one user
    run one after the other and the later ones find the order the first made, whichever process
    they run in.

    Returns:
        The order: ``pending`` (no Session recorded yet) or ``open`` (with ``checkout_url``).
    """
    conn.execute(select(_users.c.id).where(_users.c.id == user_id).with_for_update(key_share=True))
    found = conn.execute(
        select(*_ALL)
        .where(
            _orders.c.user_id == user_id, _orders.c.product_id == product.id,
            _orders.c.status.in_(("pending", "open")),
            or_(_orders.c.expires_at > utcnow() + timedelta(seconds=valid_for_s),
                and_(_orders.c.status == "pending", _orders.c.expires_at.is_(None))),
        )
        .order_by(_orders.c.id.desc())
        .limit(1)
    ).one_or_none()
    if found is not None and found.expires_at is None:
        found = conn.execute(
            update(_orders).where(_orders.c.id == found.id).values(expires_at=expires_at, updated_at=utcnow())
            .returning(*_ALL)
        ).one()
    if found is not None:
        return found
    now = utcnow()
    return conn.execute(
        insert(_orders)
        .values(
            user_id=user_id, kind=product.kind, product_id=product.id, label=product.label,
            credits=product.credits, pass_window_s=product.window_s, pass_duration_s=product.duration_s,
            amount=product.price, currency=product.currency, status="pending", amount_refunded=0,
            credits_clawed=0, note="", origin_platform=origin_platform, origin_chat=origin_chat,
            expires_at=expires_at, checkout_attempt=1, created_at=now, updated_at=now,
        )
        .returning(*_ALL)
    ).one()


def next_attempt(conn: Connection, order_id: int, failed: int) -> None:
    """Give a pending order a new Checkout attempt number after attempt ``failed`` failed.

    The expiry is cleared: the next attempt sets its own (:func:`open_or_create`). Only the first
    caller for a given failed attempt moves it (concurrent taps that shared the attempt all saw
    it fail), so one failure never skips a number.
    """
    conn.execute(
        update(_orders)
        .where(_orders.c.id == order_id, _orders.c.checkout_attempt == failed,
               _orders.c.checkout_session_id.is_(None))
        .values(checkout_attempt=failed + 1, expires_at=None, updated_at=utcnow())
    )


def attach_session(conn: Connection, order_id: int, session_id: str, url: str | None, expires_at: datetime) -> str | None:
    """Record the Checkout Session made for a pending order; the order becomes ``open``.

    The first Session recorded stays: concurrent callers get the same one back from Stripe, and
    a different one (an older attempt answering late) is never shown to the user.

    Returns:
        The checkout URL the order now has.
    """
    conn.execute(
        update(_orders)
        .where(_orders.c.id == order_id, _orders.c.checkout_session_id.is_(None))
        .values(
            checkout_session_id=session_id, checkout_url=url, expires_at=expires_at,
            status=case((_orders.c.status == "pending", "open"), else_=_orders.c.status),
            updated_at=utcnow(),
        )
    )
    return conn.execute(select(_orders.c.checkout_url).where(_orders.c.id == order_id)).scalar()


async def get(conn: AsyncConnection, order_id: int) -> OrderRow | None:
    """One order by id, or None."""
    return (await conn.execute(select(*_ALL).where(_orders.c.id == order_id))).one_or_none()


async def by_session(conn: AsyncConnection, session_id: str) -> OrderRow | None:
    """The order a Checkout Session was made for, or None."""
    result = await conn.execute(select(*_ALL).where(_orders.c.checkout_session_id == session_id))
    return result.one_or_none()


async def of_user(conn: AsyncConnection, user_id: int, *, limit: int = 5) -> list[OrderRow]:
    """The user's newest orders."""
    result = await conn.execute(
        select(*_ALL).where(_orders.c.user_id == user_id).order_by(_orders.c.id.desc()).limit(limit)
    )
    return list(result)


# The inbox ------------------------------------------------------------------------------------


def record_event(conn: Connection, event: dict[str, Any]) -> bool:
    """Store a verified event before acting on it. Returns False when its id was stored before.

    Only the fields fulfilment reads are kept (no customer name, email or address).
    """
    obj = event["data"]["object"]
    kept = _trim(obj)
    stored = conn.execute(
        dialect_insert(conn, _events)
        .values(
            id=event["id"], type=event["type"], order_id=_order_id_of(obj),
            payment_intent=kept.get("payment_intent"), object=kept, attempts=0, outcome="",
            received_at=utcnow(), processed_at=None,
        )
        .on_conflict_do_nothing(index_elements=[_events.c.id])
        .returning(_events.c.id)
    ).scalar()
    return stored is not None


async def unprocessed(conn: AsyncConnection, *, older_than_s: float, limit: int = 100) -> list[str]:
    """Ids of stored events not yet acted on (not counting those waiting for their order)."""
    result = await conn.execute(
        select(_events.c.id)
        .where(
            _events.c.processed_at.is_(None), _events.c.outcome != WAITING,
            _events.c.received_at <= utcnow() - timedelta(seconds=older_than_s),
        )
        .order_by(_events.c.received_at)
        .limit(limit)
    )
    return list(result.scalars())


async def event(conn: AsyncConnection, event_id: str) -> Row[Any] | None:
    """A stored event, or None."""
    return (await conn.execute(select(_events).where(_events.c.id == event_id))).one_or_none()


def finish_event(conn: Connection, event_id: str, outcome: str, *, done: bool = True) -> None:
    """Record what handling an event did; ``done=False`` leaves it for a later attempt."""
    conn.execute(
        update(_events)
        .where(_events.c.id == event_id, _events.c.processed_at.is_(None))
        .values(outcome=outcome[:200], attempts=_events.c.attempts + 1,
                processed_at=utcnow() if done else None)
    )


# Order transitions ----------------------------------------------------------------------------


def lock(conn: Connection, order_id: int) -> OrderRow | None:
    """Lock an order's row for this transaction and return it (None if there is no such order)."""
    return conn.execute(
        update(_orders).where(_orders.c.id == order_id).values(updated_at=utcnow()).returning(*_ALL)
    ).one_or_none()


def fulfil(
    conn: Connection, order_id: int, session_id: str, payment_intent: str | None, *, policy: str
) -> list[Notice]:
    """Grant what a paid order bought, once: credits for a pack, a running pass for a pass.

    Then applies any refund or dispute that arrived before the payment (events in ``WAITING``).

    Returns:
        What to tell the owner (nothing when the order was fulfilled before).
    """
    order = lock(conn, order_id)
    if order is None or order.fulfilled_at is not None:
        return []
    now = utcnow()
    conn.execute(
        update(_orders)
        .where(_orders.c.id == order_id)
        .values(status="paid", fulfilled_at=now, payment_intent_id=payment_intent,
                checkout_session_id=session_id)
    )
    key = f"checkout:{session_id}"
    if order.kind == "pack":
        balance = ledger.grant(conn, order.user_id, order.credits, key=key, kind="purchase",
                               note=order.label, order_id=order_id)
        text = (f"Payment received: {order.credits} credits are yours (order #{order_id}). "
                f"Balance: {balance} credits.")
    else:
        passes.create(
            conn, order.user_id, plan=order.product_id, label=order.label,
            credits_per_window=order.credits, window_s=order.pass_window_s or 3600,
            duration_s=order.pass_duration_s or 86400, order_id=order_id, now=now,
        )
        balance = ledger.record(conn, order.user_id, "pass", key=key, note=order.label, order_id=order_id)
        text = f"Payment received: your {order.label} has started (order #{order_id}). See /credits."
    notices = [_notice(order, text, {"order_id": order_id, "event": "fulfilled", "balance": balance})]
    waiting = conn.execute(
        select(_events.c.id, _events.c.type, _events.c.object)
        .where(
            _events.c.processed_at.is_(None), _events.c.outcome == WAITING,
            or_(_events.c.order_id == order_id,
                and_(_events.c.payment_intent.is_not(None), _events.c.payment_intent == payment_intent)),
        )
        .order_by(_events.c.received_at)
    ).all()
    for event_id, event_type, obj in waiting:
        outcome, notice = _clawback(conn, lock(conn, order_id), event_type, obj, policy=policy)
        finish_event(conn, event_id, outcome)
        notices += [notice] if notice else []
    return notices


def mark(conn: Connection, order_id: int, status: str, *, from_statuses: tuple[str, ...]) -> OrderRow | None:
    """Move an unfulfilled order to ``status`` (failed, expired, awaiting_payment) if it is in
    ``from_statuses``. Returns the order when it moved."""
    return conn.execute(
        update(_orders)
        .where(_orders.c.id == order_id, _orders.c.status.in_(from_statuses), _orders.c.fulfilled_at.is_(None))
        .values(status=status, updated_at=utcnow())
        .returning(*_ALL)
    ).one_or_none()


def clawback(conn: Connection, event_id: str, event_type: str, obj: dict[str, Any], *, policy: str) -> list[Notice]:
    """Apply a stored ``charge.refunded`` or ``charge.dispute.created`` event.

    The order is found by the event's PaymentIntent (stored at fulfilment) or its metadata. When the
    order is not paid yet, the event waits (``WAITING``) and :func:`fulfil` applies it.
    """
    order_id = _order_id_of(obj)
    intent = obj.get("payment_intent")
    if intent:
        found = conn.execute(select(_orders.c.id).where(_orders.c.payment_intent_id == intent)).scalar()
        order_id = found or order_id
    order = lock(conn, order_id) if order_id else None
    if order is None or order.fulfilled_at is None:
        finish_event(conn, event_id, WAITING, done=False)
        return []
    outcome, notice = _clawback(conn, order, event_type, obj, policy=policy)
    finish_event(conn, event_id, outcome)
    return [notice] if notice else []


def _clawback(
    conn: Connection, order: OrderRow | None, event_type: str, obj: dict[str, Any], *, policy: str
) -> tuple[str, Notice | None]:
    """Take back what ``obj`` (a Charge or Dispute) says, from a paid order locked by the caller."""
    assert order is not None and order.fulfilled_at is not None
    order_id = order.id
    if event_type == "charge.refunded":
        refunded = min(int(obj.get("amount_refunded") or 0), order.amount)
        target = order.credits * refunded // order.amount if order.amount else order.credits
        if order.kind == "pass":
            target = order.credits if refunded > 0 else 0
        status = "refunded" if refunded >= order.amount else order.status
        why = f"refund of order #{order_id}"
        values: dict[str, Any] = {"amount_refunded": max(refunded, order.amount_refunded)}
    else:
        target = order.credits
        status = "disputed"
        why = f"dispute of order #{order_id} ({obj.get('reason') or 'no reason given'})"
        values = {}
    delta = target - order.credits_clawed
    conn.execute(
        update(_orders)
        .where(_orders.c.id == order_id)
        .values(status=status, credits_clawed=max(target, order.credits_clawed), note=why[:200], **values)
    )
    if delta <= 0:
        return f"nothing more to take back ({why})", None
    if order.kind == "pass":
        ended = passes.end_for_order(conn, order_id)
        ledger.record(conn, order.user_id, "clawback", key=f"clawback:order:{order_id}:pass",
                      note=f"{why}: pass ended", order_id=order_id)
        text = (f"Your {order.label} (order #{order_id}) was ended after a "
                f"{'refund' if event_type == 'charge.refunded' else 'dispute'}."
                if ended else "")
        return f"{why}: pass ended", (_notice(order, text, {"order_id": order_id, "event": "clawback"})
                                      if text else None)
    taken = ledger.clawback(conn, order.user_id, delta, key=f"clawback:order:{order_id}:to:{target}",
                            policy=policy, note=why, order_id=order_id)
    text = f"{delta} credits from order #{order_id} were taken back after a " + (
        "refund." if event_type == "charge.refunded" else "payment dispute.")
    if taken.owed:
        text += f" You owe {taken.owed} credits; they are repaid from the next credits you get."
    return (f"{why}: {delta} credits ({taken.taken} taken, {taken.owed} owed, {taken.written_off} written off)",
            _notice(order, text, {"order_id": order_id, "event": "clawback", "credits": delta}))


def _notice(order: OrderRow, text: str, data: dict[str, Any]) -> Notice:
    return Notice(order.user_id, order.origin_platform, order.origin_chat, text, data)


def _order_id_of(obj: dict[str, Any]) -> int | None:
    for value in (obj.get("client_reference_id"), (obj.get("metadata") or {}).get("order_id")):
        if isinstance(value, str) and value.isdigit():
            return int(value)
    return None


def _trim(obj: dict[str, Any]) -> dict[str, Any]:
    keep = ("id", "object", "status", "payment_status", "client_reference_id", "metadata",
            "payment_intent", "amount", "amount_total", "amount_refunded", "currency", "reason", "charge")
    kept = {k: obj[k] for k in keep if k in obj}
    if isinstance(kept.get("payment_intent"), dict):
        kept["payment_intent"] = kept["payment_intent"].get("id")
    return kept
