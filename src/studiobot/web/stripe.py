"""Stripe's routes on the web server: the webhook endpoint and the Checkout landing pages.

* ``POST /stripe/webhook``: the raw body's signature is checked (400 when it is missing, wrong or
  older than 300 s, or the signed body is not an event), the event is stored, and the answer is 200
  at once; handling continues in the background (Stripe wants a quick 2xx and retries otherwise).
  Event types studiobot does not handle, and repeats, are acknowledged with 200 and ignored.
* ``GET /checkout/success?session_id=cs_...``: says what happens next. Stripe's recipe also
  fulfils from here (the webhook may be late); the page is a convenience, never proof of payment.
* ``GET /checkout/cancel``: nothing was charged; how to try again.
"""

from __future__ import annotations

import html
import logging

from aiohttp import web

from studiobot.billing import orders
from studiobot.billing.gateway import BadSignature, PaymentsUnavailable
from studiobot.billing.service import Billing
from studiobot.web.server import Handler, WebServer

log = logging.getLogger(__name__)

WEBHOOK_PATH = "/stripe/webhook"


def add_stripe_routes(server: WebServer, billing: Billing) -> None:
    """Add the webhook (when a signing secret is set) and the landing pages to ``server``."""
    if billing.receiving:
        server.add_route("POST", WEBHOOK_PATH, webhook_handler(billing))
    server.add_route("GET", "/checkout/success", success_handler(billing))
    server.add_route("GET", "/checkout/cancel", cancel_handler(billing))


def webhook_handler(billing: Billing) -> Handler:
    """The ``POST /stripe/webhook`` handler."""

    async def handle(request: web.Request) -> web.Response:
        payload = await request.read()
        try:
            received = await billing.receive(payload, request.headers.get("Stripe-Signature"))
        except BadSignature as error:
            log.warning("Stripe webhook refused: %s (from %s)", error, request.remote)
            return web.json_response({"error": "invalid signature"}, status=400)
        except ValueError:
            log.warning("Stripe webhook refused: signed body is not a Stripe event (from %s)", request.remote)
            return web.json_response({"error": "malformed event"}, status=400)
        status = "duplicate" if received.duplicate else "received"
        if received.type not in orders.HANDLED_EVENTS:
            status = "ignored"
        return web.json_response({"received": True, "status": status})

    return handle


def success_handler(billing: Billing) -> Handler:
    """The ``GET /checkout/success`` handler."""

    async def handle(request: web.Request) -> web.Response:
        session_id = request.query.get("session_id", "")
        if not session_id.startswith("cs_") or len(session_id) > 255:
            return _page("Checkout", "This page is shown after paying for studiobot credits. "
                         "If you paid, your credits arrive in chat shortly; check with /credits.", 400)
        try:
            await billing.fulfil_checkout(session_id)
        except PaymentsUnavailable:
            pass  # the webhook (or reconciliation) will do it; the page still answers
        async with billing.db.read() as conn:
            order = await orders.by_session(conn, session_id)
        if order is None:
            return _page("Checkout", "We could not find this payment. If you were charged, your credits "
                         "arrive in chat as soon as Stripe confirms it; check with /credits.", 404)
        if order.fulfilled_at is not None:
            what = f"{order.credits} credits are" if order.kind == "pack" else f"Your {order.label} is"
            return _page("Payment received",
                         f"Thank you! {what} in your account (order #{order.id}). "
                         "Go back to the chat and type /credits to see your balance.")
        return _page("Payment processing",
                     f"Thank you! Stripe is still confirming the payment for order #{order.id}. "
                     "You will get a message in chat when it clears; you can close this page.")

    return handle


def cancel_handler(billing: Billing) -> Handler:
    """The ``GET /checkout/cancel`` handler."""

    async def handle(request: web.Request) -> web.Response:
        return _page("Checkout cancelled",
                     "Nothing was charged. Your payment link keeps working until it expires, or type /buy in "
                     "the chat to start again.")

    return handle


def _page(title: str, message: str, status: int = 200) -> web.Response:
    body = (
        "<!doctype html><html lang=en><head><meta charset=utf-8>"
        '<meta name=viewport content="width=device-width,initial-scale=1">'
        f"<title>{html.escape(title)} · studiobot</title>"
        "<style>body{font:18px/1.5 system-ui,sans-serif;max-width:34em;margin:4em auto;padding:0 1em}"
        "h1{font-size:1.6em}</style></head>"
        f"<body><h1>{html.escape(title)}</h1><p>{html.escape(message)}</p></body></html>"
    )
    return web.Response(text=body, status=status, content_type="text/html")
