"""The Stripe double against the real stripe-python (StripeClient, async, HTTPXClient)."""

from __future__ import annotations

import json
import time
from collections.abc import AsyncIterator
from typing import Any

import pytest
import stripe
from aiohttp import web

from tests.doubles.server import reply, serve
from tests.doubles.stripe import (
    API_VERSION,
    VALID_KEY,
    StripeDouble,
    charge_refunded_event,
    decode_params,
    dispute_created_event,
    error_body,
    event_bytes,
    post_webhook,
    running_stripe,
    session_event,
    sign,
    signature,
)

# stripe-python's HTTPXClient hands httpx the form body as data=<str>, which httpx deprecates.
pytestmark = pytest.mark.filterwarnings("ignore:Use 'content=<...>':DeprecationWarning")

NOW = 1_789_887_310
SECRET = "whsec_test_double_secret"


def checkout_params(order_id: int = 7, **overrides: Any) -> dict[str, Any]:
    """Create parameters shaped like studiobot's."""
    params: dict[str, Any] = {
        "mode": "payment",
        "line_items": [{
            "price_data": {
                "currency": "usd",
                "unit_amount": 500,
                "product_data": {"name": "50 image credits", "description": "Credits pack"},
            },
            "quantity": 1,
        }],
        "success_url": "https://studiobot.example/paid?session_id={CHECKOUT_SESSION_ID}",
        "cancel_url": "https://studiobot.example/cancelled",
        "client_reference_id": f"order:{order_id}",
        "metadata": {"order_id": str(order_id)},
        "payment_intent_data": {"metadata": {"order_id": str(order_id)}},
        "expires_at": NOW + 3600,
    }  # fmt: skip
    params.update(overrides)
    return params


@pytest.fixture(autouse=True)
def telemetry_dir(tmp_path: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    # stripe-python writes a telemetry id under $XDG_CONFIG_HOME/stripe on its first request.
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path))


@pytest.fixture
async def double() -> AsyncIterator[StripeDouble]:
    async with running_stripe() as running:
        running.state.now = lambda: NOW
        yield running


@pytest.fixture
async def client(double: StripeDouble) -> AsyncIterator[stripe.StripeClient]:
    async with double.client() as stripe_client:
        yield stripe_client


async def create(client: stripe.StripeClient, params: dict[str, Any] | None = None,
                 key: str | None = None) -> stripe.checkout.Session:
    options = {"idempotency_key": key} if key else {}
    return await client.v1.checkout.sessions.create_async(
        params=params or checkout_params(), options=options  # type: ignore[arg-type]
    )


# -- create and idempotency -------------------------------------------------------------------


async def test_create_records_form_params_and_headers(double: StripeDouble,
                                                      client: stripe.StripeClient) -> None:
    session = await create(client, key="checkout:order:7")

    assert session.id.startswith("cs_test_")
    assert session.object == "checkout.session"
    assert (session.status, session.payment_status, session.mode) == ("open", "unpaid", "payment")
    assert session.url == f"https://checkout.stripe.com/c/pay/{session.id}"
    assert (session.amount_total, session.amount_subtotal, session.currency) == (500, 500, "usd")
    assert session.client_reference_id == "order:7"
    assert session.metadata.to_dict() == {"order_id": "7"}  # StripeObject is no dict
    assert (session.created, session.expires_at) == (NOW, NOW + 3600)
    assert session.payment_intent is None and session.livemode is False
    assert session.ui_mode == "hosted_page"
    assert session.success_url.endswith("{CHECKOUT_SESSION_ID}")
    assert double.state.payment_intent_data[session.id]["metadata"] == {"order_id": "7"}

    [call] = double.state.creates()
    assert call.status == 200 and not call.replayed
    assert call.idempotency_key == "checkout:order:7"
    assert call.headers["Authorization"] == f"Bearer {VALID_KEY}"
    assert call.headers["Stripe-Version"] == API_VERSION
    assert call.headers["Content-Type"] == "application/x-www-form-urlencoded"
    assert call.params == {
        "mode": "payment",
        "line_items": [{
            "price_data": {
                "currency": "usd", "unit_amount": "500",
                "product_data": {"name": "50 image credits", "description": "Credits pack"},
            },
            "quantity": "1",
        }],
        "success_url": "https://studiobot.example/paid?session_id={CHECKOUT_SESSION_ID}",
        "cancel_url": "https://studiobot.example/cancelled",
        "client_reference_id": "order:7",
        "metadata": {"order_id": "7"},
        "payment_intent_data": {"metadata": {"order_id": "7"}},
        "expires_at": str(NOW + 3600),
    }  # fmt: skip
    assert "line_items[0][price_data][unit_amount]=500" in call.raw  # brackets sent literally
    assert "payment_intent_data[metadata][order_id]=7" in call.raw


async def test_idempotent_replay_returns_the_first_session(double: StripeDouble,
                                                           client: stripe.StripeClient) -> None:
    first = await create(client, key="checkout:order:7")
    again = await create(client, key="checkout:order:7")

    assert again.id == first.id
    assert list(double.state.sessions) == [first.id]
    assert [c.replayed for c in double.state.creates()] == [False, True]
    assert again.last_response.headers["Idempotent-Replayed"] == "true"


async def test_idempotency_key_reused_with_other_params(double: StripeDouble,
                                                        client: stripe.StripeClient) -> None:
    await create(client, key="checkout:order:7")
    with pytest.raises(stripe.IdempotencyError) as caught:
        await create(client, checkout_params(order_id=8), key="checkout:order:7")

    assert "same parameters they were first used with" in caught.value.user_message
    assert len(double.state.sessions) == 1


async def test_validation_failures_store_no_idempotent_result(
        double: StripeDouble, client: stripe.StripeClient) -> None:
    with pytest.raises(stripe.InvalidRequestError):
        await create(client, checkout_params(expires_at=NOW + 60), key="k")
    session = await create(client, key="k")  # the key is still free

    assert double.state.sessions == {session.id: double.state.sessions[session.id]}


async def test_idempotency_keys_lapse_after_24_hours(double: StripeDouble,
                                                     client: stripe.StripeClient) -> None:
    first = await create(client, key="k")
    double.state.now = lambda: NOW + 24 * 3600
    second = await create(client, checkout_params(expires_at=NOW + 25 * 3600), key="k")

    assert second.id != first.id


async def test_retry_after_500_reuses_the_generated_key(double: StripeDouble,
                                                        client: stripe.StripeClient,
                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    async def no_sleep(seconds: float) -> None:
        return None

    monkeypatch.setattr(stripe.HTTPXClient, "sleep_async", lambda self, seconds: no_sleep(seconds))
    double.state.fail_next.append(reply(500, error_body("Boom", type_="api_error")))

    session = await create(client)  # no idempotency_key given: stripe-python makes one

    keys = [r.headers["Idempotency-Key"] for r in double.state.requests]
    assert len(keys) == 2 and keys[0] == keys[1]
    assert list(double.state.sessions) == [session.id]


async def test_should_retry_false_is_not_retried(double: StripeDouble,
                                                 client: stripe.StripeClient) -> None:
    double.state.fail_next.append(
        reply(500, error_body("Boom", type_="api_error"), {"Stripe-Should-Retry": "false"})
    )
    with pytest.raises(stripe.APIError):
        await create(client)
    assert len(double.state.requests) == 1


@pytest.fixture
def no_retry_sleep(monkeypatch: pytest.MonkeyPatch) -> None:
    async def no_sleep(seconds: float) -> None:
        return None

    monkeypatch.setattr(stripe.HTTPXClient, "sleep_async", lambda self, seconds: no_sleep(seconds))


async def test_a_stored_500_is_replayed_to_its_key(double: StripeDouble, client: stripe.StripeClient,
                                                   no_retry_sleep: None) -> None:
    double.state.fail_next_checkouts(1)

    # stripe-python retries a 500 twice under the same key; each retry gets the stored 500.
    with pytest.raises(stripe.APIError) as caught:
        await create(client, key="checkout:7:1")
    with pytest.raises(stripe.APIError) as again:
        await create(client, key="checkout:7:1")  # the failure is used up, yet still replayed

    first, *replays = double.state.creates()
    assert (first.status, first.replayed) == (500, False)
    assert [(c.status, c.replayed) for c in replays] == [(500, True)] * 5
    assert double.state.sessions == {} and double.state.checkout_failures == 0
    assert caught.value.http_status == again.value.http_status == 500
    assert caught.value.json_body == again.value.json_body == {
        "error": {"message": "An unknown error occurred", "type": "api_error"}}
    replayed = double.state.requests[-1]
    assert replayed.headers["Idempotency-Key"] == "checkout:7:1"
    headers = again.value.headers
    assert headers["Idempotent-Replayed"] == "true"
    assert headers["Original-Request"] == caught.value.headers["Original-Request"] != again.value.request_id

    session = await create(client, key="checkout:7:2")  # a fresh key is a new request
    assert list(double.state.sessions) == [session.id]
    assert (double.state.creates()[-1].status, double.state.creates()[-1].replayed) == (200, False)


async def test_a_stored_500_refuses_other_params_under_its_key(
        double: StripeDouble, client: stripe.StripeClient, no_retry_sleep: None) -> None:
    double.state.fail_next_checkouts(1)
    with pytest.raises(stripe.APIError):
        await create(client, key="k")

    with pytest.raises(stripe.IdempotencyError) as caught:
        await create(client, checkout_params(order_id=8), key="k")
    assert caught.value.http_status == 400
    assert "same parameters they were first used with" in caught.value.user_message
    assert double.state.sessions == {}


async def test_invalid_requests_and_replays_do_not_use_up_scripted_failures(
        double: StripeDouble, client: stripe.StripeClient, no_retry_sleep: None) -> None:
    ok = await create(client, key="ok")
    double.state.fail_next_checkouts(2)

    with pytest.raises(stripe.InvalidRequestError):
        await create(client, checkout_params(expires_at=NOW + 60), key="bad")
    assert (await create(client, key="ok")).id == ok.id  # a replay of a stored success
    assert double.state.checkout_failures == 2
    with pytest.raises(stripe.APIError):
        await create(client, key="a")
    with pytest.raises(stripe.APIError):
        await create(client, key="b")
    third = await create(client, key="c")

    assert set(double.state.sessions) == {ok.id, third.id}
    with pytest.raises(ValueError):
        double.state.fail_next_checkouts(-1)


# -- refusals ---------------------------------------------------------------------------------


async def test_bad_api_key_is_refused_with_a_masked_key(double: StripeDouble) -> None:
    bad_key = "sk_test_wrongWrongWrongWrong4242"
    async with double.client(bad_key) as bad_client:
        with pytest.raises(stripe.AuthenticationError) as caught:
            await create(bad_client)

    message = caught.value.user_message
    assert message.startswith("Invalid API Key provided: sk_test_")
    assert message.endswith("4242") and bad_key not in message
    assert double.state.sessions == {}
    assert double.state.creates()[0].status == 401


@pytest.mark.parametrize(("overrides", "param"), [
    ({"expires_at": NOW + 29 * 60}, "expires_at"),
    ({"expires_at": NOW + 24 * 3600 + 1}, "expires_at"),
    ({"mode": None}, "mode"),
    ({"line_items": None}, "line_items"),
    ({"success_url": "not a url"}, "success_url"),
    ({"metadata": {"k" * 41: "v"}}, "metadata[" + "k" * 41 + "]"),
    ({"metadata": {"order_id": "v" * 501}}, "metadata[order_id]"),
    ({"metadata": {f"k{n}": "v" for n in range(51)}}, "metadata"),
    ({"payment_intent_data": {"metadata": {"order_id": "v" * 501}}},
     "payment_intent_data[metadata][order_id]"),
    ({"client_reference_id": "r" * 201}, "client_reference_id"),
    ({"bogus": "1"}, "bogus"),
    ({"line_items": [{"price_data": {"currency": "USD", "unit_amount": 500,
                                     "product_data": {"name": "x"}}, "quantity": 1}]},
     "line_items[0][price_data][currency]"),
    ({"line_items": [{"price_data": {"currency": "usd", "unit_amount": -1,
                                     "product_data": {"name": "x"}}, "quantity": 1}]},
     "line_items[0][price_data][unit_amount]"),
    ({"line_items": [{"price_data": {"currency": "usd", "unit_amount": 500,
                                     "product_data": {"description": "x"}}, "quantity": 1}]},
     "line_items[0][price_data][product_data][name]"),
    # stripe-python leaves empty dicts off the wire, so {} reads as missing.
    ({"line_items": [{"price_data": {"currency": "usd", "unit_amount": 500,
                                     "product_data": {}}, "quantity": 1}]},
     "line_items[0][price_data][product_data]"),
    ({"line_items": [{"price_data": {"currency": "usd", "unit_amount": 500,
                                     "product_data": {"name": "x"}}}]},
     "line_items[0][quantity]"),
    ({"line_items": [{"price": "price_123", "quantity": 1}]}, "line_items[0][price]"),
    ({"line_items": [{"price_data": {"currency": "usd", "unit_amount": 10,
                                     "product_data": {"name": "x"}}, "quantity": 1}]},
     "line_items"),
])  # fmt: skip
async def test_create_validation(double: StripeDouble, client: stripe.StripeClient,
                                 overrides: dict[str, Any], param: str) -> None:
    with pytest.raises(stripe.InvalidRequestError) as caught:
        await create(client, checkout_params(**overrides))

    assert caught.value.param == param
    assert caught.value.http_status == 400
    assert double.state.sessions == {}


# -- retrieve, list, expire -------------------------------------------------------------------


async def test_retrieve_expands_line_items(client: stripe.StripeClient,
                                           double: StripeDouble) -> None:
    created = await create(client, checkout_params(line_items=[{
        "price_data": {"currency": "usd", "unit_amount": 250,
                       "product_data": {"name": "Credits"}},
        "quantity": 3,
    }]))  # fmt: skip

    plain = await client.v1.checkout.sessions.retrieve_async(created.id)
    expanded = await client.v1.checkout.sessions.retrieve_async(
        created.id, params={"expand": ["line_items"]}
    )

    assert "line_items" not in plain
    assert double.state.calls[-1].params == {"expand": ["line_items"]}
    assert double.state.calls[-1].raw == "expand[0]=line_items"  # indexed, in the query string
    [item] = expanded.line_items.data
    assert item.id.startswith("li_") and item.object == "item"
    assert (item.amount_total, item.amount_subtotal, item.quantity) == (750, 750, 3)
    assert (item.description, item.currency, item.price.unit_amount) == ("Credits", "usd", 250)
    assert expanded.line_items.has_more is False
    assert expanded.amount_total == 750


async def test_retrieve_unknown_session_is_404(client: stripe.StripeClient) -> None:
    with pytest.raises(stripe.InvalidRequestError) as caught:
        await client.v1.checkout.sessions.retrieve_async("cs_test_nope")

    assert caught.value.http_status == 404
    assert caught.value.code == "resource_missing"
    assert "cs_test_nope" in caught.value.user_message


async def test_list_filters_and_pages_newest_first(double: StripeDouble,
                                                   client: stripe.StripeClient) -> None:
    ids = []
    for offset in range(5):
        double.state.now = lambda offset=offset: NOW + offset * 10
        ids.append((await create(client, checkout_params(expires_at=NOW + 7200))).id)
    double.state.pay(ids[1])
    double.state.pay(ids[3])
    double.state.pay(ids[4])

    complete = await client.v1.checkout.sessions.list_async(
        params={"status": "complete", "created": {"gte": NOW + 10}, "limit": 2}
    )
    assert [s.id for s in complete.data] == [ids[4], ids[3]]
    assert complete.has_more is True and complete.url == "/v1/checkout/sessions"
    assert double.state.calls[-1].params == {
        "status": "complete", "created": {"gte": str(NOW + 10)}, "limit": "2",
    }

    rest = await client.v1.checkout.sessions.list_async(params={
        "status": "complete", "created": {"gte": NOW + 10}, "limit": 2,
        "starting_after": complete.data[-1].id,
    })  # fmt: skip
    assert [s.id for s in rest.data] == [ids[1]]
    assert rest.has_more is False

    odd = await client.v1.checkout.sessions.list_async(
        params={"payment_intent": "pi_a&b=c%26", "limit": 1}
    )
    assert odd.data == []
    assert double.state.calls[-1].params == {"payment_intent": "pi_a&b=c%26", "limit": "1"}

    window = await client.v1.checkout.sessions.list_async(
        params={"created": {"gte": NOW + 10, "lte": NOW + 30}}
    )
    assert [s.id for s in window.data] == [ids[3], ids[2], ids[1]]

    everything = [s.id async for s in (
        await client.v1.checkout.sessions.list_async(params={"limit": 2})
    ).auto_paging_iter()]  # fmt: skip
    assert everything == ids[::-1]


async def test_list_rejects_bad_limit(client: stripe.StripeClient) -> None:
    with pytest.raises(stripe.InvalidRequestError) as caught:
        await client.v1.checkout.sessions.list_async(params={"limit": 101})
    assert caught.value.param == "limit"


async def test_expire_only_while_open(double: StripeDouble, client: stripe.StripeClient) -> None:
    session = await create(client)

    expired = await client.v1.checkout.sessions.expire_async(session.id)
    assert (expired.status, expired.url) == ("expired", None)
    with pytest.raises(stripe.InvalidRequestError) as caught:
        await client.v1.checkout.sessions.expire_async(session.id)
    assert "status of `expired`" in caught.value.user_message


async def test_sessions_expire_when_the_clock_passes_expires_at(
        double: StripeDouble, client: stripe.StripeClient) -> None:
    session = await create(client)
    double.state.now = lambda: NOW + 3600

    fetched = await client.v1.checkout.sessions.retrieve_async(session.id)
    assert fetched.status == "expired"
    with pytest.raises(ValueError):
        double.state.pay(session.id)


async def test_pay_then_retrieve_shows_complete(double: StripeDouble,
                                                client: stripe.StripeClient) -> None:
    session = await create(client)
    double.state.pay(session.id)

    fetched = await client.v1.checkout.sessions.retrieve_async(session.id)
    assert (fetched.status, fetched.payment_status, fetched.url) == ("complete", "paid", None)
    assert fetched.payment_intent.startswith("pi_")


async def test_delayed_payment_settles(double: StripeDouble, client: stripe.StripeClient) -> None:
    session = await create(client)
    double.state.pay(session.id, payment_status="unpaid")
    assert double.state.sessions[session.id]["payment_status"] == "unpaid"
    with pytest.raises(ValueError):
        charge_refunded_event(double.state, session.id, 100)

    double.state.settle(session.id)
    fetched = await client.v1.checkout.sessions.retrieve_async(session.id)
    assert (fetched.status, fetched.payment_status) == ("complete", "paid")


async def test_unknown_route_is_404(double: StripeDouble, client: stripe.StripeClient) -> None:
    with pytest.raises(stripe.InvalidRequestError) as caught:
        await client.v1.customers.retrieve_async("cus_123")
    assert "Unrecognized request URL (GET: /v1/customers/cus_123)" in caught.value.user_message


# -- events and signatures --------------------------------------------------------------------


async def paid_session(double: StripeDouble, client: stripe.StripeClient) -> str:
    session = await create(client)
    double.state.pay(session.id)
    return session.id


async def test_session_event_verifies_with_stripe(double: StripeDouble,
                                                  client: stripe.StripeClient) -> None:
    session_id = await paid_session(double, client)
    event = session_event(double.state, session_id, "checkout.session.completed")
    payload = event_bytes(event)

    parsed = stripe.Webhook.construct_event(payload, sign(payload, SECRET), SECRET)

    assert parsed.id == event["id"] and parsed.id.startswith("evt_")
    assert parsed.type == "checkout.session.completed"
    assert parsed.api_version == API_VERSION
    assert (parsed.livemode, parsed.pending_webhooks) == (False, 1)
    assert parsed.request.id is None
    assert parsed.data.object.id == session_id
    assert parsed.data.object.payment_status == "paid"
    assert parsed.data.object.metadata.to_dict() == {"order_id": "7"}


@pytest.mark.parametrize("how", ["wrong secret", "tampered body", "stale timestamp",
                                 "no v1", "no header"])
async def test_bad_signatures_are_rejected(double: StripeDouble, client: stripe.StripeClient,
                                           how: str) -> None:
    session_id = await paid_session(double, client)
    payload = event_bytes(session_event(double.state, session_id, "checkout.session.completed"))
    header: str | None = sign(payload, SECRET)
    if how == "wrong secret":
        header = sign(payload, "whsec_other")
    elif how == "tampered body":
        payload = payload.replace(b'"paid"', b'"unpaid"')
    elif how == "stale timestamp":
        header = sign(payload, SECRET, int(time.time()) - 301)
    elif how == "no v1":
        header = header.replace("v1=", "v0=")
    else:
        header = None

    with pytest.raises(stripe.SignatureVerificationError):
        stripe.Webhook.construct_event(payload, header, SECRET, tolerance=300)


async def test_extra_signatures_for_rolled_secrets(double: StripeDouble,
                                                   client: stripe.StripeClient) -> None:
    session_id = await paid_session(double, client)
    payload = event_bytes(session_event(double.state, session_id, "checkout.session.completed"))
    ts = int(time.time())
    header = sign(payload, "whsec_new", ts,
                  extra_signatures=[("v1", signature(payload, SECRET, ts)), ("v0", "00ff")])

    assert header.startswith(f"t={ts},v1=") and header.endswith(",v0=00ff")
    assert header == stripe.WebhookSignature.generate_signature_header(
        payload.decode(), "whsec_new", ts
    ) + f",v1={signature(payload, SECRET, ts)},v0=00ff"
    stripe.Webhook.construct_event(payload, header, SECRET)  # the old secret still verifies


async def test_charge_and_dispute_events(double: StripeDouble,
                                         client: stripe.StripeClient) -> None:
    session_id = await paid_session(double, client)
    session = double.state.sessions[session_id]

    partial = charge_refunded_event(double.state, session_id, 200, refund_ids=["re_first"])
    full = charge_refunded_event(double.state, session_id, 500, include_refunds=True)
    dispute = dispute_created_event(double.state, session_id, reason="product_not_received")

    first, second = partial["data"]["object"], full["data"]["object"]
    assert first["id"] == second["id"] == dispute["data"]["object"]["charge"]
    assert first["id"].startswith("ch_") and first["object"] == "charge"
    assert (first["amount"], first["amount_refunded"], first["refunded"]) == (500, 200, False)
    assert (second["amount_refunded"], second["refunded"]) == (500, True)
    assert first["payment_intent"] == session["payment_intent"]
    assert first["metadata"] == {"order_id": "7"} and first["currency"] == "usd"
    assert "refunds" not in first  # not on Charges since API version 2022-11-15
    refunds = second["refunds"]["data"]
    assert [r["amount"] for r in refunds] == [300, 200] and refunds[1]["id"] == "re_first"
    assert refunds[0]["id"].startswith("re_")
    assert partial["type"] == "charge.refunded"

    disputed = dispute["data"]["object"]
    assert dispute["type"] == "charge.dispute.created"
    assert disputed["id"].startswith("dp_") and disputed["object"] == "dispute"
    assert (disputed["amount"], disputed["reason"], disputed["status"]) == (
        500, "product_not_received", "needs_response")
    assert disputed["payment_intent"] == session["payment_intent"]
    assert disputed["metadata"] == {}
    with pytest.raises(ValueError):
        charge_refunded_event(double.state, session_id, 500)  # nothing left to refund

    payload = event_bytes(dispute)
    parsed = stripe.Webhook.construct_event(payload, sign(payload, SECRET), SECRET)
    assert parsed.data.object.charge == first["id"]


async def test_post_webhook_delivers_raw_bytes(double: StripeDouble,
                                               client: stripe.StripeClient) -> None:
    session_id = await paid_session(double, client)
    received: list[tuple[bytes, dict[str, str]]] = []

    async def endpoint(request: web.Request) -> web.Response:
        body = await request.read()
        received.append((body, dict(request.headers)))
        try:
            stripe.Webhook.construct_event(body, request.headers.get("Stripe-Signature"), SECRET)
        except stripe.SignatureVerificationError:
            return web.Response(status=400, text="bad signature")
        return web.json_response({"received": True})

    app = web.Application()
    app.router.add_post("/stripe/webhook", endpoint)
    payload = event_bytes(session_event(double.state, session_id, "checkout.session.expired"))
    async with serve(app) as base:
        ok = await post_webhook(f"{base}/stripe/webhook", payload, sign(payload, SECRET))
        unsigned = await post_webhook(f"{base}/stripe/webhook", payload, None)

    assert ok == (200, json.dumps({"received": True}))
    assert unsigned == (400, "bad signature")
    body, headers = received[0]
    assert body == payload
    assert headers["Content-Type"].startswith("application/json")
    assert "Stripe-Signature" not in received[1][1]


# -- decoding ---------------------------------------------------------------------------------


def test_decode_params() -> None:
    assert decode_params(
        "line_items[0][price_data][unit_amount]=500&line_items[1][quantity]=2"
        "&metadata[0]=zero&metadata[order_id]=7&expand[]=a&expand[]=b&created[gte]=5"
        "&note=a[b]%26c%3Dd+%C3%A9&empty="
    ) == {
        "line_items": [{"price_data": {"unit_amount": "500"}}, {"quantity": "2"}],
        "metadata": {"0": "zero", "order_id": "7"},
        "expand": ["a", "b"],
        "created": {"gte": "5"},
        "note": "a[b]&c=d é",
        "empty": "",
    }  # fmt: skip
