"""The payments gateway: Stripe Checkout behind a small interface, and webhook verification.

Only this module imports ``stripe``. :class:`StripeGateway` uses stripe-python's ``StripeClient``
with its async (httpx) methods; the library retries connection errors, 409 and 5xx itself
(``max_network_retries``) under one idempotency key. Stripe stores the first answer to a key,
500s included, and replays it for 24 hours (docs.stripe.com/api/idempotent_requests), so each
checkout *attempt* has its own key (:func:`checkout_key`): a repeat of the same attempt (a crash,
a double tap) gets the same Checkout Session back, and an attempt after a failed one is a new
request (reference-platform-rules.md section 1e).
"""

from __future__ import annotations

import json
import logging
from abc import ABC, abstractmethod
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import stripe

log = logging.getLogger(__name__)

#: Stripe: "Webhook.DEFAULT_TOLERANCE = 300" seconds between the signature's timestamp and now.
SIGNATURE_TOLERANCE_S = 300


class PaymentsUnavailable(Exception):
    """Stripe could not be reached or refused the call; ``reason`` is safe to log (no secrets).

    Attributes:
        reason: What failed, for logs.
        http_status: Stripe's HTTP status, or None when no answer came (connection error, timeout).
    """

    def __init__(self, reason: str, http_status: int | None = None) -> None:
        super().__init__(reason)
        self.reason = reason
        self.http_status = http_status

    @property
    def key_spent(self) -> bool:
        """Whether Stripe may have stored this failure under the request's idempotency key.

        Stripe saves the first answer once the endpoint starts executing, 500s included, and
        replays it to every request with the same key for 24 hours; it saves nothing for a request
        that conflicted with a concurrent one using the same key (409) or that never arrived
        (docs.stripe.com/api/idempotent_requests). When True, retrying needs a fresh key.
        """
        return self.http_status is not None and self.http_status != 409


def checkout_key(order_id: int, attempt: int) -> str:
    """The ``Idempotency-Key`` of one attempt at an order's Checkout Session.

    Stripe allows up to 255 characters; this is well under.
    """
    return f"studiobot-checkout:order:{order_id}:attempt:{attempt}"


class BadSignature(Exception):
    """A webhook's ``Stripe-Signature`` is missing, malformed, wrong or too old."""


@dataclass(frozen=True, slots=True)
class CheckoutRequest:
    """What to sell in one Checkout Session (mode=payment, one line item).

    Attributes:
        order_id: Our order id: ``client_reference_id`` and metadata on the Session and its
            PaymentIntent, so every later event maps back to the order.
        amount: Minor units (Stripe ``unit_amount``).
        expires_at: When the Session expires (Stripe: 30 minutes to 24 hours after creation).
        attempt: Which attempt at this order's Session (1, 2, ...): part of the idempotency key.
    """

    order_id: int
    user_id: int
    product_id: str
    name: str
    description: str
    amount: int
    currency: str
    success_url: str
    cancel_url: str
    expires_at: datetime
    attempt: int = 1


@dataclass(frozen=True, slots=True)
class LineItem:
    """One line of a completed Session (``line_items`` expanded)."""

    description: str
    quantity: int
    amount_total: int
    currency: str


@dataclass(frozen=True, slots=True)
class CheckoutSession:
    """The parts of a Stripe Checkout Session studiobot reads.

    ``status`` is open | complete | expired; ``payment_status`` is paid | unpaid |
    no_payment_required. ``url`` is only present while the Session is open.
    """

    id: str
    status: str
    payment_status: str
    url: str | None
    client_reference_id: str | None
    metadata: dict[str, str]
    payment_intent: str | None
    amount_total: int | None
    currency: str | None
    expires_at: int | None
    line_items: list[LineItem] | None = None

    @property
    def order_id(self) -> int | None:
        """Our order id, from ``client_reference_id`` or the metadata (None if neither is ours)."""
        for value in (self.client_reference_id, self.metadata.get("order_id")):
            if value and value.isdigit():
                return int(value)
        return None

    @classmethod
    def from_stripe(cls, obj: Any) -> CheckoutSession:
        """Read a Session from stripe-python's object or a webhook event's plain dict."""
        if not isinstance(obj, dict):
            obj = obj.to_dict()  # StripeObject is not a dict in stripe-python >= 13
        get = obj.get
        items = get("line_items")
        return cls(
            id=get("id"),
            status=get("status") or "",
            payment_status=get("payment_status") or "",
            url=get("url"),
            client_reference_id=get("client_reference_id"),
            metadata={str(k): str(v) for k, v in (get("metadata") or {}).items()},
            payment_intent=_id_of(get("payment_intent")),
            amount_total=get("amount_total"),
            currency=get("currency"),
            expires_at=get("expires_at"),
            line_items=None if not items else [
                LineItem(i.get("description") or "", i.get("quantity") or 0, i.get("amount_total") or 0,
                         i.get("currency") or "")
                for i in items.get("data", [])
            ],
        )


class PaymentsGateway(ABC):
    """Stripe's Checkout, as studiobot uses it. Tests run the real client against a loopback double."""

    @abstractmethod
    async def create_checkout(self, request: CheckoutRequest) -> CheckoutSession:
        """Create a Checkout Session, idempotent per order and attempt (:func:`checkout_key`).

        Raises:
            PaymentsUnavailable: Stripe refused the call or could not be reached.
        """

    @abstractmethod
    async def retrieve_checkout(self, session_id: str) -> CheckoutSession:
        """The Session as Stripe has it now, with ``line_items``.

        Raises:
            PaymentsUnavailable: Stripe refused the call or could not be reached.
        """

    @abstractmethod
    async def completed_since(self, since: datetime) -> list[CheckoutSession]:
        """Completed Sessions created since ``since`` (newest first, all pages).

        Raises:
            PaymentsUnavailable: Stripe refused the call or could not be reached.
        """

    async def aclose(self) -> None:
        """Release connections."""


class StripeGateway(PaymentsGateway):
    """:class:`PaymentsGateway` on stripe-python.

    Args:
        secret_key: The operator's Stripe secret key.
        api_base: API root (a loopback double in tests).
        max_network_retries: stripe-python's own retries (connection errors, 409, 5xx).
    """

    def __init__(self, secret_key: str, *, api_base: str = "https://api.stripe.com",
                 max_network_retries: int = 2) -> None:
        self._http = stripe.HTTPXClient()
        self._client = stripe.StripeClient(
            secret_key,
            base_addresses={"api": api_base},
            http_client=self._http,
            max_network_retries=max_network_retries,
        )

    async def create_checkout(self, request: CheckoutRequest) -> CheckoutSession:
        metadata = {"order_id": str(request.order_id), "user_id": str(request.user_id),
                    "product": request.product_id}
        params: dict[str, Any] = {
            "mode": "payment",
            "line_items": [{
                "quantity": 1,
                "price_data": {
                    "currency": request.currency,
                    "unit_amount": request.amount,
                    "product_data": {"name": request.name, "description": request.description},
                },
            }],
            "client_reference_id": str(request.order_id),
            "metadata": metadata,
            "payment_intent_data": {"metadata": metadata},
            "success_url": request.success_url,
            "cancel_url": request.cancel_url,
            "expires_at": int(request.expires_at.timestamp()),
        }
        session = await self._call(
            "create Checkout Session",
            self._client.v1.checkout.sessions.create_async(
                params=params,  # type: ignore[arg-type]
                options={"idempotency_key": checkout_key(request.order_id, request.attempt)},
            ),
        )
        return CheckoutSession.from_stripe(session)

    async def retrieve_checkout(self, session_id: str) -> CheckoutSession:
        session = await self._call(
            "retrieve Checkout Session",
            self._client.v1.checkout.sessions.retrieve_async(session_id, params={"expand": ["line_items"]}),
        )
        return CheckoutSession.from_stripe(session)

    async def completed_since(self, since: datetime) -> list[CheckoutSession]:
        found: list[CheckoutSession] = []
        params: dict[str, Any] = {"status": "complete", "created": {"gte": int(since.timestamp())}, "limit": 100}
        while True:
            page = await self._call("list Checkout Sessions", self._client.v1.checkout.sessions.list_async(params=params))
            found += [CheckoutSession.from_stripe(s) for s in page.data]
            if not page.has_more or not page.data:
                return found
            params["starting_after"] = page.data[-1].id

    async def aclose(self) -> None:
        await self._http.close_async()

    @staticmethod
    async def _call(what: str, call: Any) -> Any:
        try:
            return await call
        except stripe.StripeError as error:
            # user_message/code never carry the key; str(error) may quote a masked one.
            reason = f"{what}: {type(error).__name__} {error.http_status or ''} {error.code or ''}".strip()
            log.warning("Stripe call failed: %s", reason)
            raise PaymentsUnavailable(reason, error.http_status) from None


def verify_event(payload: bytes, header: str | None, secret: str) -> dict[str, Any]:
    """Check a webhook's ``Stripe-Signature`` over the raw body and parse the event.

    stripe-python's ``WebhookSignature.verify_header`` with a 300 s tolerance: any ``v1`` signature must
    match ``HMAC-SHA256(secret, f"{t}.{body}")`` and ``t`` be at most 300 s old (Stripe's rule,
    reference-platform-rules.md section 1b).

    Returns:
        The event as a plain dict.

    Raises:
        BadSignature: Missing, malformed, wrong or stale signature.
        ValueError: The body is not a JSON event (checked after the signature, as Stripe does).
    """
    if not header:
        raise BadSignature("no Stripe-Signature header")
    try:
        stripe.WebhookSignature.verify_header(payload, header, secret, SIGNATURE_TOLERANCE_S)
    except stripe.SignatureVerificationError as error:
        raise BadSignature(str(error.user_message or error)) from None
    except UnicodeDecodeError:
        raise BadSignature("body is not UTF-8, so it cannot be what Stripe signed") from None
    event = json.loads(payload)
    if not isinstance(event, dict) or not isinstance(event.get("id"), str) or not isinstance(
        event.get("type"), str
    ) or not isinstance(event.get("data"), dict) or not isinstance(event["data"].get("object"), dict):
        raise ValueError("not a Stripe event (id, type and data.object are required)")
    return event


def _id_of(value: Any) -> str | None:
    if value is None or isinstance(value, str):
        return value
    return value.get("id")
