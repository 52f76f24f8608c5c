"""Billing on real SQLite and PostgreSQL, stripe-python against the loopback Stripe double.

Webhooks are signed here exactly as Stripe signs them. Whatever the number, order or concurrency
of deliveries, a paid Checkout Session credits its pack exactly once; refunds and disputes take it
back once; forged, stale and malformed deliveries move nothing.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import func, select
from sqlalchemy.engine import Connection

from studiobot.billing import ledger, orders
from studiobot.billing.catalogue import Catalogue
from studiobot.billing.gateway import BadSignature, PaymentsUnavailable, StripeGateway
from studiobot.billing.orders import Notice
from studiobot.billing.service import Billing
from studiobot.config import CreditPack, PassPlan
from studiobot.db import users
from studiobot.db.engine import Database
from studiobot.db.models import CreditAccount, CreditEntry, Order, StripeEvent
from studiobot.scheduler import lifecycle
from studiobot.scheduler.lifecycle import Limits
from tests.doubles.server import reply
from tests.integration.test_ledger import job_for
from tests.doubles.stripe import (
    VALID_KEY,
    StripeDouble,
    charge_refunded_event,
    dispute_created_event,
    event_bytes,
    make_event,
    running_stripe,
    session_event,
    sign,
)

SECRET = "whsec_test_studiobot_billing"
FIXTURE = Path(__file__).parents[1] / "fixtures" / "stripe_checkout_session_completed.json"
CATALOGUE = Catalogue.from_settings(
    [CreditPack(id="small", credits=100, price=500, label="100 credits")],
    [PassPlan(id="day", credits_per_window=3, window_s=3600, duration_s=86400, price=300, label="Day pass")],
)
COMPLETED = "checkout.session.completed"


@dataclass
class World:
    db: Database
    stripe: StripeDouble
    billing: Billing
    notices: list[Notice] = field(default_factory=list)

    async def deliver(self, event: dict[str, Any], *, header: str | None = None) -> Any:
        payload = event_bytes(event)
        received = await self.billing.receive(payload, header or sign(payload, SECRET))
        await self.billing.drain()
        return received

    async def buy(self, user_id: int, product: str = "small") -> tuple[int, str]:
        found = CATALOGUE.find(product)
        assert found is not None
        checkout = await self.billing.start_checkout(
            user_id, found, origin_platform="shell", origin_chat={"platform": "shell", "chat_id": "t"}
        )
        async with self.db.read() as conn:
            order = await orders.get(conn, checkout.order_id)
        assert order is not None and order.checkout_session_id
        return checkout.order_id, order.checkout_session_id

    async def account(self, user_id: int) -> ledger.Account:
        async with self.db.read() as conn:
            return await ledger.account(conn, user_id)

    async def order(self, order_id: int) -> Any:
        async with self.db.read() as conn:
            return await orders.get(conn, order_id)


@pytest.fixture
async def world(db: Database, request: pytest.FixtureRequest) -> AsyncIterator[World]:
    """Billing against the Stripe double; the clawback policy is ``debt`` unless parametrized."""
    notices: list[Notice] = []

    async def remember(notice: Notice) -> None:
        notices.append(notice)

    async with running_stripe() as stripe_double:
        billing = Billing(
            db, StripeGateway(VALID_KEY, api_base=stripe_double.url, max_network_retries=0), CATALOGUE,
            webhook_secret=SECRET, base_url="https://studio.example.com", checkout_expires_s=3600,
            clawback_policy=getattr(request, "param", "debt"), notify=remember,
        )
        try:
            yield World(db, stripe_double, billing, notices)
        finally:
            await billing.aclose()


async def new_user(db: Database, name: str, welcome: int = 0) -> int:
    def tx(conn: Connection) -> int:
        user_id = users.create_user(conn, "shell", name, name)
        ledger.open_account(conn, user_id, welcome=welcome)
        return user_id

    return await db.run(tx)


async def assert_books(db: Database) -> None:
    """balance == sum of entries, balance >= 0, owed >= 0 for every account."""
    async with db.read() as conn:
        sums = dict((await conn.execute(
            select(CreditEntry.user_id, func.sum(CreditEntry.amount)).group_by(CreditEntry.user_id))).all())
        rows = (await conn.execute(select(CreditAccount.user_id, CreditAccount.balance, CreditAccount.owed))).all()
    for user_id, balance, owed in rows:
        assert balance >= 0 and owed >= 0
        assert balance == (sums.get(user_id) or 0)


async def purchases(db: Database, user_id: int) -> int:
    async with db.read() as conn:
        return (await conn.execute(select(func.count()).select_from(CreditEntry).where(
            CreditEntry.user_id == user_id, CreditEntry.kind == "purchase"))).scalar_one()


async def test_checkout_session_is_created_with_the_documented_parameters(world: World) -> None:
    user_id = await new_user(world.db, "ada")
    order_id, session_id = await world.buy(user_id)
    (create,) = world.stripe.state.creates()
    params = create.params
    assert params["mode"] == "payment"
    item = params["line_items"][0]
    assert item["quantity"] == "1"
    assert item["price_data"]["currency"] == "usd" and item["price_data"]["unit_amount"] == "500"
    assert item["price_data"]["product_data"]["name"] == "100 credits"
    assert params["client_reference_id"] == str(order_id)
    assert params["metadata"]["order_id"] == str(order_id) and params["metadata"]["user_id"] == str(user_id)
    assert params["payment_intent_data"]["metadata"]["order_id"] == str(order_id)
    assert params["success_url"] == "https://studio.example.com/checkout/success?session_id={CHECKOUT_SESSION_ID}"
    assert params["cancel_url"] == f"https://studio.example.com/checkout/cancel?order={order_id}"
    assert 3500 <= int(params["expires_at"]) - time.time() <= 3600
    assert create.idempotency_key == f"studiobot-checkout:order:{order_id}:attempt:1"
    order = await world.order(order_id)
    assert order.status == "open" and order.amount == 500 and order.credits == 100

    # Asking again while the link is valid gives the same link, not a second session.
    again = await world.billing.start_checkout(
        user_id, CATALOGUE.find("small"), origin_platform="shell", origin_chat={"platform": "shell", "chat_id": "t"})
    assert again.reused and again.order_id == order_id and len(world.stripe.state.creates()) == 1


async def test_a_completed_session_replayed_five_times_credits_once(world: World) -> None:
    user_id = await new_user(world.db, "ada")
    order_id, session_id = await world.buy(user_id)
    world.stripe.state.pay(session_id)
    event = session_event(world.stripe.state, session_id, COMPLETED)
    results = [await world.deliver(event) for _ in range(5)]
    assert [r.duplicate for r in results] == [False, True, True, True, True]
    assert (await world.account(user_id)).balance == 100
    assert await purchases(world.db, user_id) == 1
    order = await world.order(order_id)
    assert order.status == "paid" and order.payment_intent_id == world.stripe.state.session(session_id)["payment_intent"]
    # Stripe's recipe: the session was retrieved with its line items before fulfilling.
    retrieves = [c for c in world.stripe.state.calls if c.method == "GET" and c.path.endswith(session_id)]
    assert retrieves and retrieves[0].params.get("expand") == ["line_items"]
    assert [n.data["event"] for n in world.notices] == ["fulfilled"]
    assert "100 credits" in world.notices[0].text
    await assert_books(world.db)


async def test_both_completion_events_and_concurrent_duplicates_credit_once(world: World) -> None:
    user_id = await new_user(world.db, "ada")
    _, session_id = await world.buy(user_id)
    world.stripe.state.pay(session_id)
    completed = session_event(world.stripe.state, session_id, COMPLETED)
    succeeded = session_event(world.stripe.state, session_id, "checkout.session.async_payment_succeeded")
    payloads = [event_bytes(completed)] * 6 + [event_bytes(succeeded)] * 6
    await asyncio.gather(*(world.billing.receive(p, sign(p, SECRET)) for p in payloads))
    # The success page may fulfil at the same moment too.
    await asyncio.gather(world.billing.fulfil_checkout(session_id), world.billing.fulfil_checkout(session_id))
    await world.billing.drain()
    assert (await world.account(user_id)).balance == 100
    assert await purchases(world.db, user_id) == 1
    async with world.db.read() as conn:
        stored = (await conn.execute(select(func.count()).select_from(StripeEvent))).scalar_one()
    assert stored == 2
    await assert_books(world.db)


async def test_forged_stale_and_malformed_deliveries_move_nothing(world: World) -> None:
    user_id = await new_user(world.db, "ada")
    _, session_id = await world.buy(user_id)
    world.stripe.state.pay(session_id)
    payload = event_bytes(session_event(world.stripe.state, session_id, COMPLETED))
    with pytest.raises(BadSignature):
        await world.billing.receive(payload, sign(payload, "whsec_someone_else"))
    with pytest.raises(BadSignature):
        await world.billing.receive(payload, sign(payload, SECRET, timestamp=int(time.time()) - 301))
    with pytest.raises(BadSignature):
        await world.billing.receive(payload, None)
    with pytest.raises(BadSignature):
        await world.billing.receive(payload + b" ", sign(payload, SECRET))  # body changed after signing
    with pytest.raises(BadSignature):
        await world.billing.receive(payload, "t=abc,v1=zz")
    for body in (b"{not json", b"[1, 2]", b'{"id": "evt_1", "type": "checkout.session.completed"}'):
        with pytest.raises(ValueError):
            await world.billing.receive(body, sign(body, SECRET))
    await world.billing.drain()
    assert (await world.account(user_id)).balance == 0
    async with world.db.read() as conn:
        assert (await conn.execute(select(func.count()).select_from(StripeEvent))).scalar_one() == 0


async def test_unknown_event_types_and_unknown_orders_are_acknowledged_without_credits(world: World) -> None:
    user_id = await new_user(world.db, "ada")
    other = make_event(world.stripe.state, "customer.created", {"id": "cus_1", "object": "customer"})
    received = await world.deliver(other)
    assert received.type == "customer.created" and not received.duplicate
    # Stripe's own sample event: a real paid session, but not one of our orders.
    raw = FIXTURE.read_bytes()
    received = await world.billing.receive(raw, sign(raw, SECRET))
    await world.billing.drain()
    async with world.db.read() as conn:
        row = await orders.event(conn, json.loads(raw)["id"])
    assert row is not None and row.outcome == "unknown order" and row.processed_at is not None
    assert "customer_details" not in row.object  # no personal data kept
    # A session that names an order id that does not exist.
    _, session_id = await world.buy(user_id)
    world.stripe.state.pay(session_id)
    forged = session_event(world.stripe.state, session_id, COMPLETED)
    forged["data"]["object"]["id"] = "cs_test_not_ours"
    forged["data"]["object"]["client_reference_id"] = "999999"
    forged["data"]["object"]["metadata"] = {"order_id": "999999"}
    await world.deliver(forged)
    assert (await world.account(user_id)).balance == 0
    await assert_books(world.db)


async def test_refund_before_completion_is_applied_with_the_payment(world: World) -> None:
    user_id = await new_user(world.db, "ada")
    order_id, session_id = await world.buy(user_id)
    world.stripe.state.pay(session_id)
    refund = charge_refunded_event(world.stripe.state, session_id, 500)
    dispute = dispute_created_event(world.stripe.state, session_id)
    await world.deliver(refund)
    await world.deliver(dispute)
    assert (await world.account(user_id)).balance == 0
    await world.deliver(session_event(world.stripe.state, session_id, COMPLETED))
    account = await world.account(user_id)
    assert (account.balance, account.owed) == (0, 0)
    order = await world.order(order_id)
    assert order.credits_clawed == 100 and order.status in ("refunded", "disputed")
    async with world.db.read() as conn:
        kinds = [e.kind for e in await ledger.history(conn, user_id)]
    assert kinds.count("purchase") == 1 and kinds.count("clawback") == 1
    await assert_books(world.db)


async def test_partial_then_full_refund_takes_back_each_part_once(world: World) -> None:
    user_id = await new_user(world.db, "ada")
    order_id, session_id = await world.buy(user_id)
    world.stripe.state.pay(session_id)
    await world.deliver(session_event(world.stripe.state, session_id, COMPLETED))
    half = charge_refunded_event(world.stripe.state, session_id, 250)
    for _ in range(3):
        await world.deliver(half)
    assert (await world.account(user_id)).balance == 50
    full = charge_refunded_event(world.stripe.state, session_id, 500)
    await asyncio.gather(*(world.deliver(full) for _ in range(3)))
    assert (await world.account(user_id)).balance == 0
    await world.deliver(half)  # a late redelivery of the older event takes nothing more
    order = await world.order(order_id)
    assert (order.status, order.credits_clawed, order.amount_refunded) == ("refunded", 100, 500)
    await assert_books(world.db)


@pytest.mark.parametrize("world", ["debt", "absorb"], indirect=True)
async def test_a_dispute_after_spending_follows_the_policy(world: World, request: pytest.FixtureRequest) -> None:
    policy = request.node.callspec.params["world"]
    user_id = await new_user(world.db, "ada")
    order_id, session_id = await world.buy(user_id)
    world.stripe.state.pay(session_id)
    await world.deliver(session_event(world.stripe.state, session_id, COMPLETED))
    await world.db.run(ledger.adjust, user_id, -70, key="spent", actor="test", note="spent on images")
    await world.deliver(dispute_created_event(world.stripe.state, session_id, reason="fraudulent"))
    account = await world.account(user_id)
    assert account.balance == 0
    assert account.owed == (70 if policy == "debt" else 0)
    async with world.db.read() as conn:
        (last, *_) = await ledger.history(conn, user_id)
    assert last.kind == "clawback" and last.amount == -30
    assert ("70 owed" if policy == "debt" else "70 written off") in last.note and "fraudulent" in last.note
    assert (await world.order(order_id)).status == "disputed"
    assert world.notices[-1].data["event"] == "clawback"
    # New credits repay the debt first.
    await world.db.run(ledger.grant, user_id, 100, key="gift", note="gift")
    account = await world.account(user_id)
    assert (account.balance, account.owed) == ((30, 0) if policy == "debt" else (100, 0))
    await assert_books(world.db)


async def test_delayed_payment_waits_then_succeeds_or_fails(world: World) -> None:
    user_id = await new_user(world.db, "ada")
    order_id, session_id = await world.buy(user_id)
    world.stripe.state.pay(session_id, payment_status="unpaid")
    await world.deliver(session_event(world.stripe.state, session_id, COMPLETED))
    assert (await world.order(order_id)).status == "awaiting_payment"
    assert (await world.account(user_id)).balance == 0
    world.stripe.state.settle(session_id)
    await world.deliver(session_event(world.stripe.state, session_id, "checkout.session.async_payment_succeeded"))
    assert (await world.account(user_id)).balance == 100

    second, second_session = await world.buy(user_id, "day")
    world.stripe.state.pay(second_session, payment_status="unpaid")
    await world.deliver(session_event(world.stripe.state, second_session, COMPLETED))
    await world.deliver(session_event(world.stripe.state, second_session, "checkout.session.async_payment_failed"))
    assert (await world.order(second)).status == "failed"
    assert world.notices[-1].data["event"] == "failed" and "/buy" in world.notices[-1].text


async def test_an_expired_session_expires_its_order(world: World) -> None:
    user_id = await new_user(world.db, "ada")
    order_id, session_id = await world.buy(user_id)
    world.stripe.state.expire(session_id)
    await world.deliver(session_event(world.stripe.state, session_id, "checkout.session.expired"))
    assert (await world.order(order_id)).status == "expired"
    assert (await world.account(user_id)).balance == 0


async def test_reconciliation_fulfils_a_paid_session_whose_webhook_was_lost(world: World) -> None:
    user_id = await new_user(world.db, "ada")
    order_id, session_id = await world.buy(user_id)
    _, unpaid_session = await world.buy(user_id, "day")
    world.stripe.state.pay(session_id)
    assert await world.billing.reconcile(window_s=3600) == 1
    assert await world.billing.reconcile(window_s=3600) == 0
    assert (await world.account(user_id)).balance == 100
    assert (await world.order(order_id)).status == "paid"
    # The webhook arriving late changes nothing.
    await world.deliver(session_event(world.stripe.state, session_id, COMPLETED))
    assert await purchases(world.db, user_id) == 1
    lists = [c for c in world.stripe.state.calls if c.method == "GET" and c.path == "/v1/checkout/sessions"]
    assert lists and lists[0].params["status"] == "complete" and "gte" in lists[0].params["created"]


async def test_stripe_unreachable_or_mismatched_sessions_credit_nothing(world: World) -> None:
    user_id = await new_user(world.db, "ada")
    world.stripe.state.fail_next.append(reply(500, {"error": {"type": "api_error", "message": "boom"}}))
    with pytest.raises(PaymentsUnavailable) as caught:
        await world.buy(user_id)
    assert VALID_KEY not in caught.value.reason
    async with world.db.read() as conn:
        (pending,) = (await conn.execute(select(Order.status))).scalars().all()
    assert pending == "pending"

    # Trying again reuses the order under its next attempt's key (Stripe may have stored the
    # 500 under the first): one order, one Session.
    order_id, session_id = await world.buy(user_id)
    async with world.db.read() as conn:
        assert (await conn.execute(select(func.count()).select_from(Order))).scalar_one() == 1
    keys = {r.headers["Idempotency-Key"] for r in world.stripe.state.requests if r.method == "POST"}
    assert keys == {f"studiobot-checkout:order:{order_id}:attempt:{n}" for n in (1, 2)}
    assert len(world.stripe.state.sessions) == 1
    world.stripe.state.pay(session_id)
    world.stripe.state.sessions[session_id]["amount_total"] = 1  # paid a different amount
    await world.deliver(session_event(world.stripe.state, session_id, COMPLETED))
    assert (await world.account(user_id)).balance == 0
    assert (await world.order(order_id)).fulfilled_at is None


async def test_a_webhook_whose_handling_failed_is_retried_from_the_inbox(world: World) -> None:
    user_id = await new_user(world.db, "ada")
    _, session_id = await world.buy(user_id)
    world.stripe.state.pay(session_id)
    world.stripe.state.fail_next.append(reply(503, {"error": {"type": "api_error", "message": "down"}}))
    await world.deliver(session_event(world.stripe.state, session_id, COMPLETED))
    assert (await world.account(user_id)).balance == 0  # stored, acknowledged, not yet handled
    assert await world.billing.process_pending(older_than_s=0) == 1
    assert (await world.account(user_id)).balance == 100


async def test_a_pass_is_drawn_before_credits_and_ends_on_refund(world: World) -> None:
    limits = Limits(max_active=100, max_per_hour=100)
    user_id = await new_user(world.db, "ada", welcome=10)
    order_id, session_id = await world.buy(user_id, "day")
    world.stripe.state.pay(session_id)
    await world.deliver(session_event(world.stripe.state, session_id, COMPLETED))
    assert world.notices[-1].data["event"] == "fulfilled"

    first, balance = await world.db.run(lifecycle.enqueue, job_for(user_id, 2, "j1"), limits)
    assert balance == 10  # the pass paid (3 per hour)
    second, balance = await world.db.run(lifecycle.enqueue, job_for(user_id, 2, "j2"), limits)
    assert balance == 9  # 1 left on the pass, 1 from the balance
    assert await lifecycle.fail(world.db, first, "boom", "failed")  # 2 go back to the pass
    third, balance = await world.db.run(lifecycle.enqueue, job_for(user_id, 2, "j3"), limits)
    assert balance == 9
    async with world.db.read() as conn:
        job = await lifecycle.get(conn, third)
    assert (job.pass_credits, job.cost) == (2, 2)

    await world.deliver(charge_refunded_event(world.stripe.state, session_id, 300))
    assert (await world.order(order_id)).status == "refunded"
    _, balance = await world.db.run(lifecycle.enqueue, job_for(user_id, 2, "j4"), limits)
    assert balance == 7  # the pass has ended: credits pay
    await assert_books(world.db)
