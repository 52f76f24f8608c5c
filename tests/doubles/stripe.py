"""Loopback double of the Stripe Checkout Sessions API, for the real stripe-python, plus webhooks.

stripe-python runs unmodified against it::

    async with running_stripe() as double:
        client = stripe.StripeClient(VALID_KEY, base_addresses={"api": double.url},
                                     http_client=stripe.HTTPXClient(), max_network_retries=2)

(or ``async with double.client() as client``, which also closes the HTTP client). Implemented:
``POST /v1/checkout/sessions`` (create, ``mode=payment`` with ``price_data`` line items),
``GET /v1/checkout/sessions/{id}``, ``GET /v1/checkout/sessions`` (list: ``status``, ``created``,
``payment_intent``, ``limit``, ``starting_after``, ``ending_before``),
``GET /v1/checkout/sessions/{id}/line_items`` and ``POST /v1/checkout/sessions/{id}/expire``.
Anything else answers 404 ``Unrecognized request URL`` as Stripe does.

stripe-python sends v1 parameters form-encoded with literal brackets, GET parameters in the query
string: ``line_items[0][price_data][unit_amount]=500``, ``metadata[order_id]=7``,
``expand[0]=line_items``, ``created[gte]=1789887310``, booleans as ``true``/``false``; None values
and empty dicts are left out. :func:`decode_params` turns that back into nested dicts and lists,
all leaves strings (Stripe's server coerces them; so does the double). Errors use Stripe's shape
``{"error": {"type", "message", "code", "param", "doc_url"}}`` (absent keys left out), which
stripe-python maps to ``AuthenticationError`` (401), ``InvalidRequestError`` (400/404) and
``IdempotencyError`` (``type: idempotency_error``). Unknown parameters answer 400
``parameter_unknown``, as Stripe does; the accepted names come from stripe-python's own
``SessionCreateParams``/``SessionListParams`` types, so they follow the pinned API version.

Idempotency follows docs.stripe.com/api/idempotent_requests ("Stripe saves the status code and
body of the first request made with a given idempotency key after endpoint execution begins.
Retries with the same key return the saved response, including 500 errors"): a POST's first answer
once its parameters passed validation, success or 500, is stored under its ``Idempotency-Key``
(stripe-python sends one on every POST, generating it when the caller gives none, and keeps it
across its retries) for 24 hours of ``state.now()``. The same key with the same method, path and
parameters replays the stored status and body with ``Idempotent-Replayed: true``; with anything
else it answers 400 ``idempotency_error``. Requests that fail validation store nothing, as
Stripe's don't. :meth:`StripeState.fail_next_checkouts` makes the next creates fail with a 500
*inside* the endpoint, so that 500 is stored and replayed like Stripe's; ``state.fail_next``
answers before any of this (a proxy or load balancer error) and stores nothing.

The clock is ``state.now()`` (epoch seconds, settable). Open sessions whose ``expires_at`` has come
read as ``expired``, as Stripe expires them on time. Tests move sessions along with
:meth:`StripeState.pay`, :meth:`StripeState.settle` and :meth:`StripeState.expire`, build events
with :func:`session_event`, :func:`charge_refunded_event` and :func:`dispute_created_event`,
serialise them with :func:`event_bytes`, sign them with :func:`sign` exactly as Stripe does, and
deliver them with :func:`post_webhook`.

Deliberate simplifications: only ``mode=payment``, ``ui_mode=hosted_page`` and ``price_data`` line
items (``price``/``product`` ids answer ``resource_missing``, as unknown ids do on Stripe); no tax,
discounts or customers; ``currency`` must already be lowercase (Stripe itself may lowercase it);
the charge minimum is checked for a few currencies only. ``state.requests`` and
``state.fail_next`` work as in :mod:`tests.doubles.server` (scripted answers are not recorded in
``state.calls``).
"""

from __future__ import annotations

import asyncio
import contextlib
import copy
import hashlib
import hmac
import json
import re
import secrets
import string
import time
import urllib.parse
from collections.abc import AsyncIterator, Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

import aiohttp
import stripe
import stripe.params.checkout as checkout_params
from aiohttp import web

from tests.doubles.server import RecordedRequest, Watched, respond, scripting_middleware, serve

VALID_KEY = "sk_test_doubleStudiobotValidKey0123456789"
API_VERSION = stripe.api_version  # what StripeClient pins and sends as Stripe-Version
IDEMPOTENCY_TTL = 24 * 3600
EXPIRES_MIN, EXPIRES_MAX, EXPIRES_DEFAULT = 30 * 60, 24 * 3600, 24 * 3600
METADATA_MAX_KEYS, METADATA_KEY_MAX, METADATA_VALUE_MAX = 50, 40, 500
CLIENT_REFERENCE_MAX = 200
UNIT_AMOUNT_MAX = 99_999_999  # eight digits, Stripe's amount limit
QUANTITY_MAX = 999_999
# Smallest total a payment-mode session may charge, in the currency's minor unit (a subset of
# docs.stripe.com/currencies#minimum-and-maximum-charge-amounts); other currencies go unchecked.
MINIMUM_CHARGE = {"usd": 50, "eur": 50, "gbp": 30, "cad": 50, "aud": 50, "chf": 50, "jpy": 50}
SESSION_EVENTS = frozenset({
    "checkout.session.completed",
    "checkout.session.async_payment_succeeded",
    "checkout.session.async_payment_failed",
    "checkout.session.expired",
})
WEBHOOK_USER_AGENT = "Stripe/1.0 (+https://stripe.com/docs/webhooks)"
REQUEST_ID = web.RequestKey("request_id", str)

_OPTION_KEYS = frozenset(stripe.RequestOptions.__annotations__)  # options, never form fields
CREATE_PARAMS = frozenset(checkout_params.SessionCreateParams.__annotations__) - _OPTION_KEYS
LIST_PARAMS = frozenset(checkout_params.SessionListParams.__annotations__) - _OPTION_KEYS
LINE_ITEM_PARAMS = frozenset(checkout_params.SessionCreateParamsLineItem.__annotations__)
PRICE_DATA_PARAMS = frozenset(checkout_params.SessionCreateParamsLineItemPriceData.__annotations__)
PRODUCT_DATA_PARAMS = frozenset(
    checkout_params.SessionCreateParamsLineItemPriceDataProductData.__annotations__
)
PAYMENT_INTENT_DATA_PARAMS = frozenset(
    checkout_params.SessionCreateParamsPaymentIntentData.__annotations__
)
_ALNUM = string.ascii_letters + string.digits


# -- state ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class StripeCall:
    """One request that reached a route, decoded.

    Attributes:
        method: ``GET`` or ``POST``.
        path: The URL path, e.g. ``/v1/checkout/sessions``.
        params: Form body (POST) or query string (GET) decoded by :func:`decode_params`.
        headers: Request headers as sent.
        status: HTTP status of the answer.
        replayed: The answer was an idempotent replay of an earlier one.
        raw: The form body or query string as sent.
    """

    method: str
    path: str
    params: dict[str, Any]
    headers: dict[str, str]
    status: int
    replayed: bool = False
    raw: str = ""

    @property
    def idempotency_key(self) -> str | None:
        """The ``Idempotency-Key`` header (any case), or None."""
        return _header(self.headers, "Idempotency-Key")


@dataclass
class IdempotentResult:
    """A stored first answer for one ``Idempotency-Key``."""

    method: str
    path: str
    params: dict[str, Any]
    status: int
    body: bytes
    request_id: str
    at: int


def _wall_clock() -> int:
    return int(time.time())


@dataclass
class StripeState(Watched):
    """What the double knows and saw, plus the test-side controls.

    Attributes:
        valid_keys: Secret keys accepted in ``Authorization: Bearer <key>``.
        now: The clock, in epoch seconds (replace it to freeze or move time).
        echo_keys: When True, 401 messages echo the whole key (Stripe masks it), to prove
            adapters redact whatever a vendor sends back.
        requests: Every request received, in order (see :mod:`tests.doubles.server`).
        fail_next: Scripted answers played before normal handling, first first.
        calls: Every request that reached a route, decoded, in order.
        sessions: Checkout Session objects by id, as Stripe returns them (without
            ``line_items``, which only show when expanded).
        line_items: The line item objects of each session, by session id.
        payment_intent_data: The ``payment_intent_data`` each session was created with (its
            ``metadata`` belongs to the PaymentIntent and is copied onto the Charge).
        charges: The Charge of each paid session, by session id (made on first need; its id
            stays the same for every event about that session).
        refunds: Refund objects of each session's charge, oldest first, by session id.
        idempotency: Stored first answers by ``Idempotency-Key``.
        events: Every event the builders made, in order.
        checkout_failures: How many more valid ``POST /v1/checkout/sessions`` executions answer
            500 (see :meth:`fail_next_checkouts`).
    """

    valid_keys: set[str] = field(default_factory=lambda: {VALID_KEY})
    now: Callable[[], int] = _wall_clock
    echo_keys: bool = False
    requests: list[RecordedRequest] = field(default_factory=list)
    fail_next: list[tuple[Any, ...]] = field(default_factory=list)
    calls: list[StripeCall] = field(default_factory=list)
    sessions: dict[str, dict[str, Any]] = field(default_factory=dict)
    line_items: dict[str, list[dict[str, Any]]] = field(default_factory=dict)
    payment_intent_data: dict[str, dict[str, Any]] = field(default_factory=dict)
    charges: dict[str, dict[str, Any]] = field(default_factory=dict)
    refunds: dict[str, list[dict[str, Any]]] = field(default_factory=dict)
    idempotency: dict[str, IdempotentResult] = field(default_factory=dict)
    events: list[dict[str, Any]] = field(default_factory=list)
    checkout_failures: int = 0
    _paid_at: dict[str, int] = field(default_factory=dict, repr=False)
    _changed: asyncio.Event | None = field(default=None, repr=False)

    def fail_next_checkouts(self, count: int = 1) -> None:
        """Make the next ``count`` Checkout Session creates fail with a 500 ``api_error``.

        The failure happens after validation, where Stripe's endpoint execution begins, so it is
        stored under the request's ``Idempotency-Key`` and replayed (status and body, with
        ``Idempotent-Replayed: true``) to every later request with that key for 24 hours.
        Replays and invalid requests do not use up a failure.

        Raises:
            ValueError: ``count`` is negative.
        """
        if count < 0:
            raise ValueError(f"count must be 0 or more, not {count}")
        self.checkout_failures += count

    def creates(self) -> list[StripeCall]:
        """The ``POST /v1/checkout/sessions`` calls, replays and refusals included, in order."""
        return [c for c in self.calls if c.method == "POST" and c.path == "/v1/checkout/sessions"]

    def session(self, session_id: str) -> dict[str, Any]:
        """The session object as it is now.

        Raises:
            KeyError: No such session.
        """
        self._sweep()
        return self.sessions[session_id]

    def pay(self, session_id: str, payment_status: str = "paid",
            email: str = "buyer@example.com") -> dict[str, Any]:
        """Complete an open session as a customer would.

        Args:
            session_id: The session.
            payment_status: ``paid``, or ``unpaid`` for a delayed method (bank debits and the
                like) whose outcome comes later through :meth:`settle` or an
                ``async_payment_failed`` event.
            email: ``customer_details.email``.

        Returns:
            The session, now ``complete`` with a ``payment_intent``.

        Raises:
            ValueError: The session is not open, or ``payment_status`` is not paid/unpaid.
        """
        if payment_status not in ("paid", "unpaid"):
            raise ValueError(f"payment_status must be 'paid' or 'unpaid', not {payment_status!r}")
        session = self._open_session(session_id)
        session.update(
            status="complete",
            payment_status=payment_status,
            payment_intent=_new_id("pi_", 24),
            url=None,
            customer_details={
                "address": None, "email": email, "name": "Test Buyer", "phone": None,
                "tax_exempt": "none", "tax_ids": [],
            },
        )  # fmt: skip
        if payment_status == "paid":
            self._paid_at[session_id] = self.now()
        self._notify()
        return session

    def settle(self, session_id: str) -> dict[str, Any]:
        """Mark a delayed payment as succeeded (``unpaid`` -> ``paid``).

        Raises:
            ValueError: The session is not complete and unpaid.
        """
        session = self.session(session_id)
        if session["status"] != "complete" or session["payment_status"] != "unpaid":
            raise ValueError(f"{session_id} is {session['status']}/{session['payment_status']}, "
                             "not complete/unpaid")
        session["payment_status"] = "paid"
        self._paid_at[session_id] = self.now()
        self._notify()
        return session

    def expire(self, session_id: str) -> dict[str, Any]:
        """Expire an open session, as Stripe does at ``expires_at`` or on the expire call.

        Raises:
            ValueError: The session is not open.
        """
        session = self._open_session(session_id)
        session.update(status="expired", url=None)
        self._notify()
        return session

    def _open_session(self, session_id: str) -> dict[str, Any]:
        session = self.session(session_id)
        if session["status"] != "open":
            raise ValueError(f"{session_id} is {session['status']}, not open")
        return session

    def _sweep(self) -> None:
        """Expire open sessions whose ``expires_at`` has come."""
        now = self.now()
        for session in self.sessions.values():
            if session["status"] == "open" and session["expires_at"] <= now:
                session.update(status="expired", url=None)


# -- form decoding ----------------------------------------------------------------------------


class StripeError(Exception):
    """An error answer: raised inside handlers, sent as Stripe's error JSON."""

    def __init__(self, status: int, message: str, *, type_: str = "invalid_request_error",
                 code: str | None = None, param: str | None = None) -> None:
        super().__init__(message)
        self.status, self.message, self.type, self.code, self.param = (
            status, message, type_, code, param
        )

    def body(self) -> dict[str, Any]:
        """The ``{"error": {...}}`` body."""
        return error_body(self.message, type_=self.type, code=self.code, param=self.param)


def error_body(message: str, *, type_: str = "invalid_request_error", code: str | None = None,
               param: str | None = None) -> dict[str, Any]:
    """Stripe's error JSON; ``code``, ``doc_url`` and ``param`` only when they apply."""
    error: dict[str, Any] = {}
    if code is not None:
        error["code"] = code
        error["doc_url"] = f"https://stripe.com/docs/error-codes/{code.replace('_', '-')}"
    error["message"] = message
    if param is not None:
        error["param"] = param
    error["type"] = type_
    return {"error": error}


def decode_params(encoded: str) -> dict[str, Any]:
    """Decode a Stripe v1 form body or query string into nested dicts and lists.

    ``a[b][0][c]=1`` becomes ``{"a": {"b": [{"c": "1"}]}}``: a hash whose keys are all integers
    becomes a list in index order, and ``a[]=x`` appends. Hashes named ``metadata`` stay hashes,
    whatever their keys (``metadata[0]=x`` is a key, not an index). Leaves stay strings.

    Raises:
        StripeError: A name is used both as a value and as a hash (Stripe's ``Invalid hash``).
    """
    root: dict[str, Any] = {}
    for name, value in urllib.parse.parse_qsl(encoded, keep_blank_values=True):
        head, _, rest = name.partition("[")
        parts = [head] + (re.findall(r"([^\[\]]*)\]", "[" + rest) if rest else [])
        node = root
        for depth, part in enumerate(parts):
            if part == "":  # "a[]": append as the next index
                part = str(len(node))
            if depth == len(parts) - 1:
                if isinstance(node.get(part), dict):
                    raise StripeError(400, "Invalid hash", param=name)
                node[part] = value
            else:
                child = node.setdefault(part, {})
                if not isinstance(child, dict):
                    raise StripeError(400, "Invalid hash", param=name)
                node = child
    return _listify(root)


def _listify(node: dict[str, Any], name: str = "") -> Any:
    converted = {
        key: value if key == "metadata" or not isinstance(value, dict) else _listify(value, key)
        for key, value in node.items()
    }
    if name and converted and all(key.isdigit() for key in converted):
        return [converted[key] for key in sorted(converted, key=int)]
    return converted


# -- validation helpers -----------------------------------------------------------------------


def _missing(param: str) -> StripeError:
    return StripeError(400, f"Missing required param: {param}.", code="parameter_missing",
                       param=param)


def _invalid(param: str, message: str, code: str = "parameter_invalid") -> StripeError:
    return StripeError(400, message, code=code, param=param)


def _check_known(params: Any, allowed: Iterable[str], prefix: str = "") -> None:
    if not isinstance(params, dict):
        raise _invalid(prefix or "params", "Invalid hash")
    for key in params:
        if key not in allowed:
            name = f"{prefix}[{key}]" if prefix else key
            raise StripeError(400, f"Received unknown parameter: {name}",
                              code="parameter_unknown", param=name)


def _integer(value: Any, param: str, *, minimum: int | None = None,
             maximum: int | None = None) -> int:
    if not isinstance(value, str) or not re.fullmatch(r"-?\d+", value):
        raise _invalid(param, f"Invalid integer: {value}", "parameter_invalid_integer")
    number = int(value)
    if minimum is not None and number < minimum:
        raise _invalid(param, f"This value must be greater than or equal to {minimum}.",
                       "parameter_invalid_integer")
    if maximum is not None and number > maximum:
        raise _invalid(param, f"This value must be less than or equal to {maximum}.",
                       "parameter_invalid_integer")
    return number


def _string(value: Any, param: str, max_length: int | None = None) -> str:
    if not isinstance(value, str):
        raise _invalid(param, f"Invalid string: {value!r}", "parameter_invalid_string")
    if max_length is not None and len(value) > max_length:
        raise _invalid(param, f"Invalid string: {value[:20]}...; must be at most {max_length} "
                       "characters", "parameter_invalid_string")
    return value


def _url(value: Any, param: str) -> str:
    text = _string(value, param, 5000)
    parts = urllib.parse.urlsplit(text)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise _invalid(param, "Not a valid URL", "url_invalid")
    return text


def _metadata(value: Any, param: str) -> dict[str, str]:
    """Metadata as Stripe stores it: empty values unset their key; limits per the docs."""
    if value == "":  # "metadata=" clears all keys
        return {}
    if not isinstance(value, dict):
        raise _invalid(param, "Invalid hash")
    kept = {key: text for key, text in value.items() if text != ""}
    if len(kept) > METADATA_MAX_KEYS:
        raise _invalid(param, f"Invalid {param}: metadata can have at most {METADATA_MAX_KEYS} "
                       f"keys, but you passed {len(kept)}.")
    for key, text in kept.items():
        if len(key) > METADATA_KEY_MAX:
            raise _invalid(f"{param}[{key}]", f"Metadata keys can have up to {METADATA_KEY_MAX} "
                           f"characters, but you passed in a key that is {len(key)} characters. "
                           f"Invalid key: {key[:40]}...")
        if not isinstance(text, str):
            raise _invalid(f"{param}[{key}]", "Metadata values must be strings.")
        if len(text) > METADATA_VALUE_MAX:
            raise _invalid(f"{param}[{key}]", f"Metadata values can have up to "
                           f"{METADATA_VALUE_MAX} characters, but you passed in a value that is "
                           f"{len(text)} characters. Invalid value: {text[:40]}...")
    return kept


def _expand(params: dict[str, Any], allowed: Iterable[str]) -> set[str]:
    value = params.get("expand", [])
    if isinstance(value, str):
        value = [value]
    if not isinstance(value, list):
        raise _invalid("expand", "Invalid array")
    for path in value:
        if path not in allowed:
            # The double only models line_items; Stripe would expand ids like payment_intent.
            raise _invalid("expand", f"This property cannot be expanded ({path}).")
    return set(value)


# -- objects ----------------------------------------------------------------------------------


def _new_id(prefix: str, length: int) -> str:
    return prefix + "".join(secrets.choice(_ALNUM) for _ in range(length))


def _list_object(data: list[dict[str, Any]], url: str, has_more: bool = False) -> dict[str, Any]:
    return {"object": "list", "data": data, "has_more": has_more, "url": url}


def _line_items(state: StripeState, session_id: str) -> dict[str, Any]:
    return _list_object(copy.deepcopy(state.line_items[session_id]),
                        f"/v1/checkout/sessions/{session_id}/line_items")


def _render(state: StripeState, session_id: str, expand: Iterable[str] = ()) -> dict[str, Any]:
    session = copy.deepcopy(state.sessions[session_id])
    if "line_items" in expand:
        session["line_items"] = _line_items(state, session_id)
    return session


def _validated_line_items(value: Any, now: int) -> list[dict[str, Any]]:
    """Validate ``line_items`` and build the line item objects Stripe would return."""
    if not isinstance(value, list):
        raise _invalid("line_items", "Invalid array")
    if not value:
        raise _missing("line_items")
    items = []
    for index, item in enumerate(value):
        prefix = f"line_items[{index}]"
        _check_known(item, LINE_ITEM_PARAMS, prefix)
        if "price" in item:
            raise StripeError(400, f"No such price: '{item['price']}'", code="resource_missing",
                              param=f"{prefix}[price]")
        if "price_data" not in item:
            raise _missing(f"{prefix}[price_data]")
        price_data = item["price_data"]
        _check_known(price_data, PRICE_DATA_PARAMS, f"{prefix}[price_data]")
        if "currency" not in price_data:
            raise _missing(f"{prefix}[price_data][currency]")
        currency = price_data["currency"]
        if not isinstance(currency, str) or not re.fullmatch(r"[a-z]{3}", currency):
            raise _invalid(f"{prefix}[price_data][currency]", f"Invalid currency: {currency}")
        if "product" in price_data:
            raise StripeError(400, f"No such product: '{price_data['product']}'",
                              code="resource_missing", param=f"{prefix}[price_data][product]")
        if "product_data" not in price_data:
            raise _missing(f"{prefix}[price_data][product_data]")
        product_data = price_data["product_data"]
        _check_known(product_data, PRODUCT_DATA_PARAMS, f"{prefix}[price_data][product_data]")
        if not product_data.get("name"):
            raise _missing(f"{prefix}[price_data][product_data][name]")
        name = _string(product_data["name"], f"{prefix}[price_data][product_data][name]", 250)
        if "unit_amount" not in price_data:
            raise _missing(f"{prefix}[price_data][unit_amount]")
        unit_amount = _integer(price_data["unit_amount"], f"{prefix}[price_data][unit_amount]",
                               minimum=0, maximum=UNIT_AMOUNT_MAX)
        if "quantity" not in item:
            raise _missing(f"{prefix}[quantity]")
        quantity = _integer(item["quantity"], f"{prefix}[quantity]", minimum=1,
                            maximum=QUANTITY_MAX)
        total = unit_amount * quantity
        items.append({
            "id": _new_id("li_", 24),
            "object": "item",
            "amount_discount": 0,
            "amount_subtotal": total,
            "amount_tax": 0,
            "amount_total": total,
            "currency": currency,
            "description": name,
            "price": {
                "id": _new_id("price_", 24), "object": "price", "active": False,
                "billing_scheme": "per_unit", "created": now, "currency": currency,
                "custom_unit_amount": None, "livemode": False, "lookup_key": None, "metadata": {},
                "nickname": None, "product": _new_id("prod_", 14), "recurring": None,
                "tax_behavior": "unspecified", "tiers_mode": None, "transform_quantity": None,
                "type": "one_time", "unit_amount": unit_amount,
                "unit_amount_decimal": str(unit_amount),
            },
            "quantity": quantity,
        })  # fmt: skip
    currencies = {item["currency"] for item in items}
    if len(currencies) > 1:
        raise _invalid("line_items", "All line items must use the same currency, but you "
                       f"passed {', '.join(sorted(currencies))}.")
    return items


def _create_session(state: StripeState, params: dict[str, Any]) -> str | None:
    """Validate create parameters like Stripe and store the new session; returns its id, or None
    for a failure scripted with :meth:`StripeState.fail_next_checkouts` (nothing stored)."""
    _check_known(params, CREATE_PARAMS)
    now = state.now()
    if "mode" not in params:
        raise _missing("mode")
    if params["mode"] not in ("payment", "setup", "subscription"):
        raise _invalid("mode", "Invalid mode: must be one of payment, setup, or subscription")
    if params["mode"] != "payment":
        raise _invalid("mode", f"The double implements mode=payment only, not {params['mode']}.")
    ui_mode = params.get("ui_mode", "hosted_page")
    if ui_mode != "hosted_page":
        raise _invalid("ui_mode", f"The double implements ui_mode=hosted_page only, not {ui_mode}.")
    if "line_items" not in params:
        raise _missing("line_items")
    items = _validated_line_items(params["line_items"], now)
    success_url = _url(params["success_url"], "success_url") if "success_url" in params else None
    cancel_url = _url(params["cancel_url"], "cancel_url") if "cancel_url" in params else None
    reference = params.get("client_reference_id")
    if reference is not None:
        reference = _string(reference, "client_reference_id", CLIENT_REFERENCE_MAX)
    metadata = _metadata(params.get("metadata", {}), "metadata")
    intent_data = params.get("payment_intent_data", {})
    _check_known(intent_data, PAYMENT_INTENT_DATA_PARAMS, "payment_intent_data")
    intent_data = dict(intent_data, metadata=_metadata(intent_data.get("metadata", {}),
                                                        "payment_intent_data[metadata]"))
    expires_at = now + EXPIRES_DEFAULT
    if "expires_at" in params:
        expires_at = _integer(params["expires_at"], "expires_at")
        if expires_at < now + EXPIRES_MIN:
            raise _invalid("expires_at", "The expires_at timestamp must be at least 30 minutes "
                           "from Checkout Session creation.")
        if expires_at > now + EXPIRES_MAX:
            raise _invalid("expires_at", "The expires_at timestamp must be less than 24 hours "
                           "from Checkout Session creation.")
    currency = items[0]["currency"]
    total = sum(item["amount_total"] for item in items)
    minimum = MINIMUM_CHARGE.get(currency)
    if minimum is not None and total < minimum:
        raise _invalid("line_items", "The Checkout Session's total amount due must add up to at "
                       f"least {minimum} (in the smallest {currency} unit).")
    if state.checkout_failures > 0:
        state.checkout_failures -= 1
        return None
    session_id = _new_id("cs_test_", 58)
    state.sessions[session_id] = {
        "id": session_id,
        "object": "checkout.session",
        "adaptive_pricing": None,
        "after_expiration": None,
        "allow_promotion_codes": None,
        "amount_subtotal": total,
        "amount_total": total,
        "automatic_tax": {"enabled": False, "liability": None, "provider": None, "status": None},
        "billing_address_collection": None,
        "cancel_url": cancel_url,
        "client_reference_id": reference,
        "client_secret": None,
        "collected_information": None,
        "consent": None,
        "consent_collection": None,
        "created": now,
        "currency": currency,
        "custom_fields": [],
        "custom_text": {"after_submit": None, "shipping_address": None, "submit": None,
                        "terms_of_service_acceptance": None},
        "customer": None,
        "customer_creation": "if_required",
        "customer_details": None,
        "customer_email": params.get("customer_email"),
        "discounts": [],
        "expires_at": expires_at,
        "invoice": None,
        "invoice_creation": None,
        "livemode": False,
        "locale": params.get("locale"),
        "metadata": metadata,
        "mode": "payment",
        "payment_intent": None,
        "payment_link": None,
        "payment_method_collection": "if_required",
        "payment_method_options": {},
        "payment_method_types": params.get("payment_method_types", ["card"]),
        "payment_status": "unpaid",
        "phone_number_collection": {"enabled": False},
        "recovered_from": None,
        "saved_payment_method_options": None,
        "setup_intent": None,
        "shipping_address_collection": None,
        "shipping_cost": None,
        "shipping_options": [],
        "status": "open",
        "submit_type": None,
        "subscription": None,
        "success_url": success_url,
        "total_details": {"amount_discount": 0, "amount_shipping": 0, "amount_tax": 0},
        "ui_mode": "hosted_page",
        "url": f"https://checkout.stripe.com/c/pay/{session_id}",
    }
    state.line_items[session_id] = items
    state.payment_intent_data[session_id] = intent_data
    return session_id


def _no_such_session(session_id: str, param: str = "session", status: int = 404) -> StripeError:
    return StripeError(status, f"No such checkout.session: '{session_id}'",
                       code="resource_missing", param=param)


def _list_sessions(state: StripeState, params: dict[str, Any]) -> dict[str, Any]:
    _check_known(params, LIST_PARAMS)
    expand = _expand(params, ("data.line_items",))
    limit = _integer(params.get("limit", "10"), "limit")
    if not 1 <= limit <= 100:
        raise _invalid("limit", "Invalid limit: must be between 1 and 100")
    if "starting_after" in params and "ending_before" in params:
        raise StripeError(400, "You may only specify one of these parameters: ending_before, "
                          "starting_after.")
    checks: list[Callable[[dict[str, Any]], bool]] = []
    if "status" in params:
        if params["status"] not in ("open", "complete", "expired"):
            raise _invalid("status", "Invalid status: must be one of complete, expired, or open")
        checks.append(lambda s, wanted=params["status"]: s["status"] == wanted)
    created = params.get("created")
    if isinstance(created, str):
        created = {"eq": created}
    if created is not None:
        _check_known(created, ("gt", "gte", "lt", "lte", "eq"), "created")
        tests = {"gt": int.__gt__, "gte": int.__ge__, "lt": int.__lt__, "lte": int.__le__,
                 "eq": int.__eq__}
        for op, raw in created.items():
            bound = _integer(raw, "created" if op == "eq" else f"created[{op}]")
            checks.append(lambda s, op=op, bound=bound: tests[op](s["created"], bound))
    for name in ("payment_intent", "customer", "payment_link", "subscription"):
        if name in params:
            checks.append(lambda s, name=name, wanted=params[name]: s[name] == wanted)
    if "customer_details" in params:
        _check_known(params["customer_details"], ("email",), "customer_details")
        email = params["customer_details"].get("email")
        checks.append(lambda s: (s["customer_details"] or {}).get("email") == email)

    # Newest first, as Stripe lists; creation order breaks ties within one second.
    rank = {session_id: index for index, session_id in enumerate(state.sessions)}
    ordered = sorted(state.sessions.values(), key=lambda s: (s["created"], rank[s["id"]]),
                     reverse=True)
    position = {session["id"]: index for index, session in enumerate(ordered)}
    if "starting_after" in params:
        cursor = params["starting_after"]
        if cursor not in position:
            raise _no_such_session(cursor, "starting_after", 400)
        candidates = ordered[position[cursor] + 1:]
    elif "ending_before" in params:
        cursor = params["ending_before"]
        if cursor not in position:
            raise _no_such_session(cursor, "ending_before", 400)
        candidates = ordered[:position[cursor]]
    else:
        candidates = ordered
    matching = [s for s in candidates if all(check(s) for check in checks)]
    page = matching[-limit:] if "ending_before" in params else matching[:limit]
    data = [_render(state, s["id"], {"line_items"} if expand else set()) for s in page]
    return _list_object(data, "/v1/checkout/sessions", has_more=len(matching) > limit)


# -- the app ----------------------------------------------------------------------------------


def _header(headers: dict[str, str], name: str) -> str | None:
    lowered = name.lower()
    return next((value for key, value in headers.items() if key.lower() == lowered), None)


def _masked(key: str) -> str:
    """A key as Stripe shows it in errors: its type prefix and last four characters."""
    prefix = re.match(r"(?:sk|rk|pk)_(?:test|live)_", key)
    head = prefix.group(0) if prefix else ""
    if len(key) - len(head) <= 8:
        return head + "*" * (len(key) - len(head))
    return head + "*" * (len(key) - len(head) - 4) + key[-4:]


def make_stripe_app(state: StripeState) -> web.Application:
    """Build the double's aiohttp application around ``state``."""

    @web.middleware
    async def stamp(request: web.Request, handler: Any) -> web.StreamResponse:
        # Outermost, so scripted answers carry a Request-Id too: stripe-python reads it into
        # error messages and its telemetry header.
        request[REQUEST_ID] = _new_id("req_", 14)
        response = await handler(request)
        response.headers.setdefault("Request-Id", request[REQUEST_ID])
        response.headers.setdefault("Stripe-Version",
                                    request.headers.get("Stripe-Version", API_VERSION))
        return response

    app = web.Application(middlewares=[stamp, scripting_middleware(state)])

    def refused(request: web.Request) -> StripeError | None:
        scheme, _, key = request.headers.get("Authorization", "").partition(" ")
        if scheme.lower() != "bearer" or not key.strip():
            return StripeError(401, "You did not provide an API key. You need to provide your "
                               "API key in the Authorization header, using Bearer auth (e.g. "
                               "'Authorization: Bearer YOUR_SECRET_KEY'). See "
                               "https://stripe.com/docs/api#authentication for details, or we "
                               "can help at https://support.stripe.com/.")
        if key.strip() not in state.valid_keys:
            shown = key if state.echo_keys else _masked(key.strip())
            return StripeError(401, f"Invalid API Key provided: {shown}")
        return None

    def route(handler: Callable[[web.Request, dict[str, Any]], tuple[int, Any]]) -> Any:
        """Wrap a synchronous handler with auth, decoding, idempotency and recording.

        Handlers are synchronous so nothing interleaves between the idempotency check and the
        store of its result.
        """

        async def wrapped(request: web.Request) -> web.Response:
            # raw_query_string: exactly as sent (query_string would be decoded once already).
            encoded = (await request.text() if request.method == "POST"
                       else request.rel_url.raw_query_string)
            headers = dict(request.headers)
            key = request.headers.get("Idempotency-Key") if request.method == "POST" else None
            state._sweep()
            replayed = False
            params: dict[str, Any] = {}
            try:
                malformed: StripeError | None = None
                try:
                    params = decode_params(encoded)
                except StripeError as problem:
                    malformed = problem
                if (refusal := refused(request)) is not None:
                    raise refusal  # before anything about the parameters, as Stripe answers
                if malformed is not None:
                    raise malformed
                stored = state.idempotency.get(key) if key else None
                if stored is not None and state.now() - stored.at >= IDEMPOTENCY_TTL:
                    del state.idempotency[key]  # Stripe prunes keys after 24 hours
                    stored = None
                if stored is not None:
                    if (stored.method, stored.path, stored.params) != (
                            request.method, request.path, params):
                        raise StripeError(
                            400, "Keys for idempotent requests can only be used with the same "
                            "parameters they were first used with. Try using a key other than "
                            f"'{key}' if you meant to execute a different request.",
                            type_="idempotency_error")
                    replayed = True
                    response = web.Response(
                        status=stored.status, body=stored.body, content_type="application/json",
                        headers={"Idempotent-Replayed": "true", "Idempotency-Key": key,
                                 "Original-Request": stored.request_id},
                    )
                else:
                    status, body = handler(request, params)
                    response = respond(status, body)
                    if key:
                        response.headers["Idempotency-Key"] = key
                        response.headers["Original-Request"] = request[REQUEST_ID]
                        state.idempotency[key] = IdempotentResult(
                            request.method, request.path, params, status, response.body,
                            request[REQUEST_ID], state.now())
            except StripeError as error:
                response = respond(error.status, error.body())
            state.calls.append(StripeCall(request.method, request.path, params, headers,
                                          response.status, replayed, encoded))
            state._notify()
            return response

        return wrapped

    def create(request: web.Request, params: dict[str, Any]) -> tuple[int, Any]:
        expand = _expand(params, ("line_items",))
        session_id = _create_session(state, params)
        if session_id is None:
            # Returned, not raised: the route stores it under the key, as Stripe stores its 500s.
            return 500, error_body("An unknown error occurred", type_="api_error")
        return 200, _render(state, session_id, expand)

    def retrieve(request: web.Request, params: dict[str, Any]) -> tuple[int, Any]:
        _check_known(params, ("expand",))
        expand = _expand(params, ("line_items",))
        session_id = request.match_info["id"]
        if session_id not in state.sessions:
            raise _no_such_session(session_id)
        return 200, _render(state, session_id, expand)

    def list_sessions(request: web.Request, params: dict[str, Any]) -> tuple[int, Any]:
        return 200, _list_sessions(state, params)

    def list_items(request: web.Request, params: dict[str, Any]) -> tuple[int, Any]:
        # Pagination parameters are accepted but moot: a session holds few items.
        _check_known(params, ("expand", "limit", "starting_after", "ending_before"))
        session_id = request.match_info["id"]
        if session_id not in state.sessions:
            raise _no_such_session(session_id)
        return 200, _line_items(state, session_id)

    def expire(request: web.Request, params: dict[str, Any]) -> tuple[int, Any]:
        _check_known(params, ("expand",))
        expand = _expand(params, ("line_items",))
        session_id = request.match_info["id"]
        session = state.sessions.get(session_id)
        if session is None:
            raise _no_such_session(session_id)
        if session["status"] != "open":
            raise StripeError(400, 'Only Checkout Sessions with a status in ["open"] can be '
                              f"expired. This Checkout Session has a status of "
                              f"`{session['status']}`.")
        session.update(status="expired", url=None)
        return 200, _render(state, session_id, expand)

    def unrecognized(request: web.Request, params: dict[str, Any]) -> tuple[int, Any]:
        raise StripeError(404, f"Unrecognized request URL ({request.method}: {request.path}). "
                          "Please see https://stripe.com/docs or we can help at "
                          "https://support.stripe.com/.")

    app.router.add_post("/v1/checkout/sessions", route(create))
    app.router.add_get("/v1/checkout/sessions", route(list_sessions))
    app.router.add_get("/v1/checkout/sessions/{id}", route(retrieve))
    app.router.add_get("/v1/checkout/sessions/{id}/line_items", route(list_items))
    app.router.add_post("/v1/checkout/sessions/{id}/expire", route(expire))
    app.router.add_route("*", "/{tail:.*}", route(unrecognized))
    return app


# -- events and signatures --------------------------------------------------------------------


def make_event(state: StripeState, type_: str, obj: dict[str, Any]) -> dict[str, Any]:
    """A full Event around ``obj`` (deep-copied), as Stripe delivers it to a webhook endpoint.

    The event is also appended to ``state.events``.
    """
    event = {
        "id": _new_id("evt_", 24),
        "object": "event",
        "api_version": API_VERSION,
        "created": state.now(),
        "data": {"object": copy.deepcopy(obj)},
        "livemode": False,
        "pending_webhooks": 1,
        "request": {"id": None, "idempotency_key": None},
        "type": type_,
    }
    state.events.append(event)
    return event


def session_event(state: StripeState, session_id: str, type_: str) -> dict[str, Any]:
    """A ``checkout.session.*`` event whose object is the session as it is now.

    Set the state first (:meth:`StripeState.pay`, :meth:`~StripeState.settle`,
    :meth:`~StripeState.expire`); the builder does not check that it fits ``type_``, so tests can
    also send events out of order.

    Raises:
        ValueError: ``type_`` is not one of :data:`SESSION_EVENTS`.
        KeyError: No such session.
    """
    if type_ not in SESSION_EVENTS:
        raise ValueError(f"not a checkout session event: {type_!r}")
    return make_event(state, type_, state.session(session_id))


def charge_for(state: StripeState, session_id: str) -> dict[str, Any]:
    """The Charge of a paid session: made on first need, then the same object (and id).

    Its ``metadata`` is the session's ``payment_intent_data.metadata``, which Stripe copies
    from the PaymentIntent onto the charge. It carries no ``refunds`` list: Stripe stopped
    including one on Charges in API version 2022-11-15.

    Raises:
        ValueError: The session is not paid.
    """
    session = state.session(session_id)
    if session["payment_status"] != "paid":
        raise ValueError(f"{session_id} is not paid")
    charge = state.charges.get(session_id)
    if charge is None:
        charge = {
            "id": _new_id("ch_", 24),
            "object": "charge",
            "amount": session["amount_total"],
            "amount_captured": session["amount_total"],
            "amount_refunded": 0,
            "balance_transaction": _new_id("txn_", 24),
            "captured": True,
            "created": state._paid_at.get(session_id, state.now()),
            "currency": session["currency"],
            "customer": None,
            "description": None,
            "disputed": False,
            "failure_code": None,
            "failure_message": None,
            "livemode": False,
            "metadata": dict(state.payment_intent_data[session_id].get("metadata", {})),
            "outcome": {"network_status": "approved_by_network", "reason": None,
                        "risk_level": "normal", "seller_message": "Payment complete.",
                        "type": "authorized"},
            "paid": True,
            "payment_intent": session["payment_intent"],
            "payment_method": _new_id("pm_", 24),
            "receipt_email": None,
            "refunded": False,
            "status": "succeeded",
        }
        state.charges[session_id] = charge
        state.refunds[session_id] = []
    return charge


def charge_refunded_event(state: StripeState, session_id: str, amount_refunded: int, *,
                          refund_ids: Sequence[str] | None = None,
                          include_refunds: bool = False) -> dict[str, Any]:
    """A ``charge.refunded`` event for a paid session, updating its charge.

    Args:
        state: The double's state.
        session_id: A paid session.
        amount_refunded: The charge's cumulative refunded amount after this refund (Stripe's
            ``amount_refunded``); ``refunded`` turns true when it reaches ``amount``.
        refund_ids: Ids for the Refund objects this event adds (the new amount is split
            among them, the first taking any remainder); one generated ``re_...`` by default.
            They are kept in ``state.refunds[session_id]``.
        include_refunds: Add the ``refunds`` list to the charge, as API versions before
            2022-11-15 did (and ``expand[]=refunds`` still does). Off by default because the
            pinned version's webhooks do not carry it.

    Raises:
        ValueError: The session is not paid, or ``amount_refunded`` does not grow within the
            charge amount, or ``refund_ids`` is empty.
    """
    charge = charge_for(state, session_id)
    if not charge["amount_refunded"] < amount_refunded <= charge["amount"]:
        raise ValueError(f"amount_refunded must be above {charge['amount_refunded']} and at most "
                         f"{charge['amount']}, not {amount_refunded}")
    ids = list(refund_ids) if refund_ids is not None else [_new_id("re_", 24)]
    if not ids:
        raise ValueError("refund_ids must name at least one refund")
    added = amount_refunded - charge["amount_refunded"]
    share, remainder = divmod(added, len(ids))
    for index, refund_id in enumerate(ids):
        state.refunds[session_id].append({
            "id": refund_id,
            "object": "refund",
            "amount": share + (remainder if index == 0 else 0),
            "balance_transaction": _new_id("txn_", 24),
            "charge": charge["id"],
            "created": state.now(),
            "currency": charge["currency"],
            "metadata": {},
            "payment_intent": charge["payment_intent"],
            "reason": None,
            "receipt_number": None,
            "source_transfer_reversal": None,
            "status": "succeeded",
            "transfer_reversal": None,
        })
    charge.update(amount_refunded=amount_refunded,
                  refunded=amount_refunded == charge["amount"])
    obj = copy.deepcopy(charge)
    if include_refunds:
        refunds = list(reversed(state.refunds[session_id]))  # newest first, as lists are
        obj["refunds"] = _list_object(refunds, f"/v1/charges/{charge['id']}/refunds")
        obj["refunds"]["total_count"] = len(refunds)
    state._notify()
    return make_event(state, "charge.refunded", obj)


def dispute_created_event(state: StripeState, session_id: str, *, reason: str = "fraudulent",
                          amount: int | None = None) -> dict[str, Any]:
    """A ``charge.dispute.created`` event against a paid session's charge.

    Args:
        state: The double's state.
        session_id: A paid session.
        reason: The dispute ``reason`` (``fraudulent``, ``product_not_received``, ...).
        amount: Disputed amount; the charge amount by default.

    Raises:
        ValueError: The session is not paid.
    """
    charge = charge_for(state, session_id)
    charge["disputed"] = True
    now = state.now()
    dispute = {
        "id": _new_id("dp_", 24),
        "object": "dispute",
        "amount": charge["amount"] if amount is None else amount,
        "balance_transactions": [],
        "charge": charge["id"],
        "created": now,
        "currency": charge["currency"],
        "evidence_details": {"due_by": now + 7 * 24 * 3600, "has_evidence": False,
                             "past_due": False, "submission_count": 0},
        "is_charge_refundable": False,
        "livemode": False,
        "metadata": {},
        "payment_intent": charge["payment_intent"],
        "reason": reason,
        "status": "needs_response",
    }
    state._notify()
    return make_event(state, "charge.dispute.created", dispute)


def event_bytes(event: dict[str, Any]) -> bytes:
    """The webhook body for ``event``: compact JSON. Sign and send these exact bytes.

    Stripe itself sends indented JSON; the layout does not matter as long as receivers verify
    the raw bytes they got, which is the point of signing them.
    """
    return json.dumps(event, separators=(",", ":")).encode()


def signature(payload: bytes, secret: str, timestamp: int) -> str:
    """Stripe's ``v1`` signature: hex HMAC-SHA256 of ``"<ts>.<payload>"`` keyed by ``secret``."""
    signed = f"{timestamp}.".encode() + payload
    return hmac.new(secret.encode(), signed, hashlib.sha256).hexdigest()


def sign(payload: bytes, secret: str, timestamp: int | None = None, *,
         extra_signatures: Sequence[tuple[str, str]] = ()) -> str:
    """A ``Stripe-Signature`` header for ``payload``, as Stripe builds it.

    Args:
        payload: The exact body that will be sent.
        secret: The endpoint's signing secret (``whsec_...``).
        timestamp: Epoch seconds; now (wall clock, which verifiers compare against) by default.
        extra_signatures: ``(scheme, value)`` entries appended after the real one, e.g.
            ``("v1", signature(payload, old_secret, ts))`` for a secret being rolled, or
            ``("v0", ...)`` as test-mode events carry.

    Returns:
        ``t=<timestamp>,v1=<hex>`` plus any extra entries.
    """
    timestamp = int(time.time()) if timestamp is None else timestamp
    parts = [f"t={timestamp}", f"v1={signature(payload, secret, timestamp)}"]
    parts += [f"{scheme}={value}" for scheme, value in extra_signatures]
    return ",".join(parts)


async def post_webhook(url: str, payload: bytes, header: str | None, *,
                       timeout: float = 10.0) -> tuple[int, str]:
    """POST ``payload`` to a webhook endpoint the way Stripe delivers events.

    Args:
        url: The endpoint.
        payload: The raw body (usually :func:`event_bytes`).
        header: The ``Stripe-Signature`` value, or None to send none.
        timeout: Total seconds allowed.

    Returns:
        The response status and text.
    """
    headers = {"Content-Type": "application/json; charset=utf-8", "User-Agent": WEBHOOK_USER_AGENT,
               "Accept": "*/*; q=0.5, application/xml", "Cache-Control": "no-cache"}
    if header is not None:
        headers["Stripe-Signature"] = header
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=timeout)) as session:
        async with session.post(url, data=payload, headers=headers) as response:
            return response.status, await response.text()


# -- running it -------------------------------------------------------------------------------


@dataclass
class StripeDouble:
    """A running double: its base ``url`` (give it as ``base_addresses={"api": url}``) and state."""

    url: str
    state: StripeState

    @contextlib.asynccontextmanager
    async def client(self, api_key: str = VALID_KEY, *, max_network_retries: int = 2,
                     timeout: float = 10.0) -> AsyncIterator[stripe.StripeClient]:
        """A ``StripeClient`` configured as studiobot configures it, pointed at the double.

        Its HTTPX client is closed when the ``async with`` ends.
        """
        http_client = stripe.HTTPXClient(timeout=timeout)
        try:
            yield stripe.StripeClient(api_key, base_addresses={"api": self.url},
                                      http_client=http_client,
                                      max_network_retries=max_network_retries)
        finally:
            await http_client.close_async()


@contextlib.asynccontextmanager
async def running_stripe(state: StripeState | None = None) -> AsyncIterator[StripeDouble]:
    """Serve the double on 127.0.0.1 (a free port) for the duration of the ``async with``.

    Yields:
        The running double, with ``.url`` and ``.state``.
    """
    state = state or StripeState()
    async with serve(make_stripe_app(state)) as url:
        yield StripeDouble(url, state)
