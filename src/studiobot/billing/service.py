"""Billing: selling through Stripe Checkout, receiving its webhooks, fulfilling exactly once.

Flow (reference-platform-rules.md section 1):

1. :meth:`Billing.start_checkout` finds or stores the order (one per user and product, even for
   concurrent taps), then creates its Checkout Session with the idempotency key
   ``studiobot-checkout:order:<id>:attempt:<n>``: a repeat of an attempt gets the same Session
   back, and a failed attempt moves the order to the next number, because Stripe replays a stored
   failure to its key for 24 hours.
2. :meth:`Billing.receive` verifies a webhook's signature over the raw body and stores the event
   in the ``stripe_events`` inbox (unique id) before anything else; the web handler answers 200 as
   soon as that committed. Handling happens right after, in the background, and again from the
   inbox sweep if the process died first.
3. :meth:`Billing.fulfil_checkout` is Stripe's recipe: retrieve the Session with ``line_items``,
   check ``payment_status``, fulfil once (the order row lock plus the ledger key
   ``checkout:<cs_id>``). Webhooks, the success page and :meth:`Billing.reconcile` all call it.
4. Refunds and disputes take credits back by the settings' policy; those that arrive before the
   payment wait in the inbox and are applied with it.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from studiobot.billing import orders
from studiobot.billing.catalogue import Catalogue, Product, money
from studiobot.billing.gateway import (
    CheckoutRequest,
    CheckoutSession,
    PaymentsGateway,
    PaymentsUnavailable,
    verify_event,
)
from studiobot.billing.orders import Notice
from studiobot.db.engine import Database
from studiobot.db.models import utcnow

log = logging.getLogger(__name__)

Notify = Callable[[Notice], Awaitable[None]]
PAID = ("paid", "no_payment_required")
#: An unpaid order's link is given again only if it stays valid this many more seconds.
REUSE_FOR_S = 600


@dataclass(frozen=True, slots=True)
class Checkout:
    """A checkout link for an order: ``reused`` when an open one for the same product was found."""

    order_id: int
    url: str
    expires_at: datetime
    product: Product
    reused: bool = False


@dataclass(frozen=True, slots=True)
class Received:
    """A verified webhook event: ``duplicate`` when its id was stored before."""

    event_id: str
    type: str
    duplicate: bool


class Billing:
    """Everything that moves money or credits for purchases.

    Args:
        db: Database.
        gateway: Stripe (or None when the operator has not configured it: nothing is for sale).
        catalogue: What is for sale.
        webhook_secret: The endpoint's signing secret (``whsec_...``).
        base_url: Public root of the web server (success and cancel pages).
        checkout_expires_s: Life of a Checkout Session (Stripe: 1800 to 86400 s).
        clawback_policy: ``debt`` or ``absorb`` (see :func:`studiobot.billing.ledger.clawback`).
        notify: Delivers a :class:`Notice` to its user privately (wired to the platforms' outboxes).
    """

    def __init__(
        self,
        db: Database,
        gateway: PaymentsGateway | None,
        catalogue: Catalogue,
        *,
        webhook_secret: str | None,
        base_url: str,
        checkout_expires_s: int = 3600,
        clawback_policy: str = "debt",
        notify: Notify | None = None,
    ) -> None:
        self.db = db
        self.gateway = gateway
        self.catalogue = catalogue
        self._webhook_secret = webhook_secret
        self._base_url = base_url.rstrip("/")
        self._expires_s = checkout_expires_s
        self._policy = clawback_policy
        self._notify = notify
        self._tasks: set[asyncio.Task[None]] = set()

    @property
    def selling(self) -> bool:
        """Whether purchases work (Stripe configured)."""
        return self.gateway is not None

    @property
    def receiving(self) -> bool:
        """Whether webhooks can be verified (signing secret configured)."""
        return bool(self._webhook_secret)

    # Selling ----------------------------------------------------------------------------------

    async def start_checkout(
        self, user_id: int, product: Product, *, origin_platform: str, origin_chat: dict[str, Any]
    ) -> Checkout:
        """A Checkout link for ``product``: the user's unpaid one if it stays valid 10 more minutes,
        else a new order and Session.

        Concurrent calls for one user and product share one order (:func:`orders.open_or_create`
        serialises them in the database) and one attempt number, hence one idempotency key:
        Stripe makes one Session and replays it to the others, so every caller gets the same
        link. An order whose Session was never recorded (a crash, Stripe unreachable) asks again
        under the same key. When Stripe answered the attempt with a failure, which it keeps
        replaying to that key for 24 hours, the order moves to the next attempt number, so the
        next call is a new request (docs.stripe.com/api/idempotent_requests).

        Raises:
            PaymentsUnavailable: Stripe refused or could not be reached (the order stays pending,
                with nothing charged; calling again makes a new attempt).
            RuntimeError: Stripe is not configured (check :attr:`selling` first).
        """
        if self.gateway is None:
            raise RuntimeError("Stripe is not configured")
        # Whole seconds: Stripe's expires_at is Unix seconds, and every request of one attempt
        # must send the same one (the order keeps it).
        expires_at = (utcnow() + timedelta(seconds=self._expires_s)).replace(microsecond=0)
        order = await self.db.run(
            orders.open_or_create, user_id, product, origin_platform=origin_platform,
            origin_chat=origin_chat, expires_at=expires_at, valid_for_s=REUSE_FOR_S,
        )
        if order.checkout_url:
            return Checkout(order.id, order.checkout_url, order.expires_at, product, reused=True)
        try:
            session = await self.gateway.create_checkout(
                CheckoutRequest(
                    order_id=order.id, user_id=user_id, product_id=product.id, name=product.label,
                    description=product.describe, amount=product.price, currency=product.currency,
                    success_url=f"{self._base_url}/checkout/success?session_id={{CHECKOUT_SESSION_ID}}",
                    cancel_url=f"{self._base_url}/checkout/cancel?order={order.id}",
                    expires_at=order.expires_at, attempt=order.checkout_attempt,
                )
            )
        except PaymentsUnavailable as error:
            if error.key_spent:
                await self.db.run(orders.next_attempt, order.id, order.checkout_attempt)
                log.info("order #%s: Checkout attempt %s failed; the next one gets a new idempotency key",
                         order.id, order.checkout_attempt)
            raise
        if not session.url:
            raise RuntimeError(f"Stripe returned Checkout Session {session.id} without a URL")
        url = await self.db.run(orders.attach_session, order.id, session.id, session.url, order.expires_at)
        return Checkout(order.id, url or session.url, order.expires_at, product)

    # Receiving --------------------------------------------------------------------------------

    async def receive(self, payload: bytes, signature: str | None) -> Received:
        """Verify and store a webhook event, then handle it in the background.

        Raises:
            BadSignature: Missing, wrong or stale ``Stripe-Signature`` (answer 400).
            ValueError: Signed, but not a JSON event (answer 400).
            RuntimeError: No webhook secret configured.
        """
        if not self._webhook_secret:
            raise RuntimeError("STRIPE_WEBHOOK_SECRET is not configured")
        event = verify_event(payload, signature, self._webhook_secret)
        received = Received(event["id"], event["type"], duplicate=False)
        if event["type"] not in orders.HANDLED_EVENTS:
            log.info("Stripe event %s of type %s is not one studiobot handles; ignored", event["id"], event["type"])
            return received
        stored = await self.db.run(orders.record_event, event)
        if not stored:
            log.info("Stripe event %s (%s) was received before; ignored", event["id"], event["type"])
            return Received(event["id"], event["type"], duplicate=True)
        self._spawn(self.process(event["id"]))
        return received

    async def process(self, event_id: str) -> None:
        """Act on one stored event (safe to call again: everything it does is conditional)."""
        async with self.db.read() as conn:
            row = await orders.event(conn, event_id)
        if row is None or row.processed_at is not None:
            return
        obj = dict(row.object)
        try:
            if row.type in orders.CLAWBACK_EVENTS:
                notices = await self.db.run(orders.clawback, event_id, row.type, obj, policy=self._policy)
            else:
                notices = await self._session_event(event_id, row.type, obj)
        except Exception:
            log.exception("handling Stripe event %s (%s) failed; the inbox sweep retries it", event_id, row.type)
            await self.db.run(orders.finish_event, event_id, "failed; will retry", done=False)
            return
        await self._tell(notices)

    async def process_pending(self, *, older_than_s: float = 30.0) -> int:
        """Handle stored events nothing finished (a crash, Stripe unreachable). Returns how many."""
        async with self.db.read() as conn:
            ids = await orders.unprocessed(conn, older_than_s=older_than_s)
        for event_id in ids:
            await self.process(event_id)
        return len(ids)

    async def _session_event(self, event_id: str, event_type: str, obj: dict[str, Any]) -> list[Notice]:
        session = CheckoutSession.from_stripe(obj)
        order_id = await self._order_of(session)
        if order_id is None:
            log.warning("Stripe event %s is for Checkout Session %s, which is not one of our orders; "
                        "nothing credited", event_id, session.id)
            await self.db.run(orders.finish_event, event_id, "unknown order")
            return []
        if event_type in ("checkout.session.completed", "checkout.session.async_payment_succeeded"):
            await self.fulfil_checkout(session.id, order_id=order_id)  # tells the user itself
            await self.db.run(orders.finish_event, event_id, f"order #{order_id} checked")
            return []
        if event_type == "checkout.session.async_payment_failed":
            status, text = "failed", "Your payment for order #{id} did not go through; nothing was charged. " \
                "You can try again with /buy."
            moved = await self.db.run(orders.mark, order_id, status, from_statuses=("open", "awaiting_payment"))
        else:
            status, text = "expired", ""
            moved = await self.db.run(orders.mark, order_id, status, from_statuses=("pending", "open"))
        await self.db.run(orders.finish_event, event_id, f"order #{order_id} {status}")
        if moved is None or not text:
            return []
        return [Notice(moved.user_id, moved.origin_platform, moved.origin_chat, text.format(id=order_id),
                       {"order_id": order_id, "event": status})]

    async def _order_of(self, session: CheckoutSession) -> int | None:
        async with self.db.read() as conn:
            by_session = await orders.by_session(conn, session.id)
            if by_session is not None:
                return by_session.id
            claimed = session.order_id
            if claimed is None:
                return None
            order = await orders.get(conn, claimed)
        # An order's own Session id is recorded when it is made; a Session naming an order that
        # has a different one is not that order's.
        if order is None or (order.checkout_session_id not in (None, session.id)):
            return None
        return order.id

    # Fulfilment -------------------------------------------------------------------------------

    async def fulfil_checkout(self, session_id: str, *, order_id: int | None = None) -> list[Notice]:
        """Stripe's ``fulfill_checkout``: may run many times, concurrently, for one Session.

        Retrieves the Session (with ``line_items``) from Stripe rather than trusting the event, and
        fulfils only when it is paid and matches its order's amount and currency.

        Returns:
            The notices delivered to the user (empty when nothing was fulfilled now).

        Raises:
            PaymentsUnavailable: Stripe could not be asked (the caller retries later).
        """
        if self.gateway is None:
            return []
        session = await self.gateway.retrieve_checkout(session_id)
        if order_id is None:
            order_id = await self._order_of(session)
            if order_id is None:
                return []
        async with self.db.read() as conn:
            order = await orders.get(conn, order_id)
        if order is None or order.fulfilled_at is not None:
            return []
        if session.payment_status not in PAID:
            if session.status == "complete":
                await self.db.run(orders.mark, order_id, "awaiting_payment", from_statuses=("pending", "open"))
            return []
        if session.amount_total != order.amount or (session.currency or "").lower() != order.currency:
            log.error("Checkout Session %s was paid %s %s but order #%s costs %s; not fulfilled, check it "
                      "in the Stripe dashboard", session.id, session.amount_total, session.currency,
                      order_id, money(order.amount, order.currency))
            return []
        notices = await self.db.run(
            orders.fulfil, order_id, session.id, session.payment_intent, policy=self._policy
        )
        if notices:
            log.info("order #%s fulfilled (Checkout Session %s)", order_id, session.id)
        await self._tell(notices)
        return notices

    async def reconcile(self, *, window_s: float) -> int:
        """Fulfil paid Sessions of the last ``window_s`` seconds a lost webhook missed, and retry
        stored events nothing finished. Returns how many orders it fulfilled."""
        if self.gateway is None:
            return 0
        fulfilled = 0
        for session in await self.gateway.completed_since(utcnow() - timedelta(seconds=window_s)):
            if session.payment_status not in PAID or session.order_id is None:
                continue
            async with self.db.read() as conn:
                order = await orders.get(conn, session.order_id)
            if order is None or order.fulfilled_at is not None:
                continue
            if await self.fulfil_checkout(session.id):
                log.warning("reconciliation fulfilled order #%s: its webhook never arrived", order.id)
                fulfilled += 1
        await self.process_pending()
        return fulfilled

    async def drain(self) -> None:
        """Wait for event handling started in the background (tests, shutdown)."""
        while self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)

    async def aclose(self) -> None:
        """Finish background handling and close the gateway."""
        await self.drain()
        if self.gateway is not None:
            await self.gateway.aclose()

    def _spawn(self, work: Awaitable[None]) -> None:
        task = asyncio.ensure_future(work)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _tell(self, notices: list[Notice]) -> None:
        for notice in notices:
            if self._notify is None:
                continue
            try:
                await self._notify(notice)
            except Exception:
                log.exception("could not tell user %s about order %s", notice.user_id, notice.data.get("order_id"))
