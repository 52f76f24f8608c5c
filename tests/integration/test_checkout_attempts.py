"""/buy against the Stripe double's idempotency, as Stripe behaves, on SQLite and PostgreSQL.

Stripe stores the first answer to an ``Idempotency-Key``, a 500 included, and replays it for 24
hours (docs.stripe.com/api/idempotent_requests). A failed checkout must not block the next /buy,
so each attempt has its own key; stripe-python's own retries of one attempt keep its key and get
the stored 500. Concurrent /buy taps, in one process or several sharing the database, make one
order and one Checkout Session, and every tap shows the same link. The real app (dispatcher,
``/buy``, billing, stripe-python) runs against the loopback double.
"""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import AsyncIterator, Callable
from contextlib import AsyncExitStack, asynccontextmanager
from typing import Any

import pytest
from sqlalchemy import Select, func, select

from studiobot.app import App, build_app
from studiobot.commands.contract import ChatRef, Reply, UserRef
from studiobot.config import Settings
from studiobot.db.models import CreditEntry, Order
from tests.doubles.platform import RecordingOutbox
from tests.doubles.stripe import VALID_KEY, StripeDouble, running_stripe

# stripe-python's HTTPXClient hands httpx the form body as data=<str>, which httpx deprecates.
pytestmark = pytest.mark.filterwarnings("ignore:Use 'content=<...>':DeprecationWarning")

ADA = UserRef("discord", "100", "ada")
GUILD = ChatRef("discord", "555", "guild_channel", community_id="777")
WELCOME = 5
_ids = itertools.count(1)


async def run(app: App, line: str) -> Reply:
    _, reply = await app.dispatcher.dispatch_text(ADA, GUILD, line, f"tap-{next(_ids)}")
    return reply


async def scalar(app: App, query: Select[Any]) -> Any:
    async with app.db.read() as conn:
        return (await conn.execute(query)).scalar_one()


@asynccontextmanager
async def apps(make_settings: Callable[..., Settings], database_url: str, stripe: StripeDouble,
               processes: int = 1) -> AsyncIterator[list[App]]:
    """``processes`` apps on one database, each with its own engine, as separate processes have."""
    settings = make_settings(database_url=database_url, welcome_credits=WELCOME,
                             stripe_secret_key=VALID_KEY, stripe_api_base=stripe.url)
    async with AsyncExitStack() as stack:
        started = []
        for _ in range(processes):
            app = await build_app(settings, {"discord": RecordingOutbox()})
            stack.push_async_callback(app.aclose)
            started.append(app)
        yield started


@pytest.fixture
async def stripe() -> AsyncIterator[StripeDouble]:
    async with running_stripe() as double:
        yield double


async def test_a_failed_checkout_does_not_block_the_next_buy(
        make_settings: Callable[..., Settings], database_url: str, stripe: StripeDouble) -> None:
    async with apps(make_settings, database_url, stripe) as (app,):
        stripe.state.fail_next_checkouts(1)

        failed = await run(app, "/buy small")

        assert "nothing was charged" in failed.text and "try /buy small again" in failed.text
        assert "checkout_url" not in failed.data
        creates = stripe.state.creates()
        # stripe-python retried twice under the attempt's key; Stripe replayed its stored 500.
        assert [(c.status, c.replayed) for c in creates] == [(500, False), (500, True), (500, True)]
        assert len({c.idempotency_key for c in creates}) == 1
        assert stripe.state.sessions == {}
        assert await scalar(app, select(func.count()).select_from(CreditEntry)
                            .where(CreditEntry.kind == "purchase")) == 0
        assert (await run(app, "/credits")).data["balance"] == WELCOME

        bought = await run(app, "/buy small")

        url = bought.data["checkout_url"]
        [session_id] = stripe.state.sessions
        assert url == stripe.state.sessions[session_id]["url"] and url in bought.text
        last = stripe.state.creates()[-1]
        assert (last.status, last.replayed) == (200, False)
        assert last.idempotency_key != creates[0].idempotency_key
        # Same order, next attempt: the key names both.
        order_id = bought.data["order_id"]
        assert creates[0].idempotency_key == f"studiobot-checkout:order:{order_id}:attempt:1"
        assert last.idempotency_key == f"studiobot-checkout:order:{order_id}:attempt:2"
        assert await scalar(app, select(func.count()).select_from(Order)) == 1
        assert (await run(app, "/credits")).data["balance"] == WELCOME

        again = await run(app, "/buy small")
        assert again.data["checkout_url"] == url and "already have a payment link" in again.text
        assert len(stripe.state.creates()) == 4


@pytest.mark.parametrize("processes", [1, 2])
async def test_concurrent_buys_make_one_order_and_one_session(
        make_settings: Callable[..., Settings], database_url: str, stripe: StripeDouble,
        processes: int) -> None:
    async with apps(make_settings, database_url, stripe, processes) as running:
        await run(running[0], "/credits")  # the user exists: the taps race on buying only

        replies = await asyncio.gather(*(run(running[tap % processes], "/buy small") for tap in range(5)))

        urls = {reply.data.get("checkout_url") for reply in replies}
        assert len(urls) == 1 and None not in urls, [reply.text for reply in replies]
        assert await scalar(running[0], select(func.count()).select_from(Order)) == 1
        assert {reply.data["order_id"] for reply in replies} == {await scalar(running[0], select(Order.id))}
        assert len(stripe.state.sessions) == 1
        [session] = stripe.state.sessions.values()
        assert urls == {session["url"]}
        assert all(session["url"] in reply.text for reply in replies)


async def test_concurrent_buys_that_fail_move_on_one_attempt(
        make_settings: Callable[..., Settings], database_url: str, stripe: StripeDouble) -> None:
    async with apps(make_settings, database_url, stripe) as (app,):
        await run(app, "/credits")
        stripe.state.fail_next_checkouts(1)

        failed = await asyncio.gather(*(run(app, "/buy small") for _ in range(5)))

        assert all("try /buy small again" in reply.text for reply in failed)
        assert {c.idempotency_key for c in stripe.state.creates()} == {
            "studiobot-checkout:order:1:attempt:1"}  # one attempt: its 500 replayed to every tap
        bought = await run(app, "/buy small")
        assert bought.data["order_id"] == 1 and "checkout_url" in bought.data
        assert stripe.state.creates()[-1].idempotency_key == "studiobot-checkout:order:1:attempt:2"
        assert len(stripe.state.sessions) == 1
