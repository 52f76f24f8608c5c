"""Bad input through the real dispatcher, scheduler and database (SQLite and PostgreSQL).

Each case once ended in "Something went wrong" (or, for keys, in a stored job): a NUL character
(PostgreSQL text cannot hold one), a lone UTF-16 surrogate (no UTF-8 form), numbers beyond 64 bits,
digits of other scripts, an API key typed as a prompt, and concurrent double taps of /vote and
/favorite (duplicate keys on PostgreSQL). Each must now be a clear refusal, with no job and no
charge; a key must reach no table and no log line.
"""

from __future__ import annotations

import asyncio
import io
import json
import logging
from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest
from sqlalchemy import func, inspect, select, text

from studiobot.app import run_shell
from studiobot.commands.contract import Reply
from studiobot.config import Settings
from studiobot.db.gallery import add_to_collection
from studiobot.db.models import CollectionItem, Favorite, Job, Vote
from tests.integration.community_app import ADA, BOB, GUILD, Community, community_app, dm

TOO_BIG = "99999999999999999999"  # 20 digits: beyond signed 64 bits
JUST_OVER = str(2**63)  # one more than PostgreSQL's BIGINT and SQLite's INTEGER hold
LARGEST = str(2**63 - 1)

#: Keys of every shape the core must refuse, as a user might paste them (fake, never valid).
KEYS = {
    "openai": "sk-proj-Abc123Def456Ghi789Jkl012Mno345Pqr678",
    "stability": "sk-TestDoubleStabilityKey0123456789abcdef",
    "replicate": "r8_Zt3kQ9wXv2LmN8pR4sT6uY1aB5cD7eF0gH2jK",
    "huggingface": "hf_QwErTyUiOpAsDfGhJkLzXcVbNm0123456789",
    "kie": "3f9c2b7e4a1d8c6b5e0f9a2d7c4b1e8a",
    "stripe": "sk_live_51Hx9aBcDeFgHiJkLmNoPqRsTuV",
    "stripe-restricted": "rk_live_51Hx9aBcDeFgHiJkLmNoPqRsTuV",
    "webhook": "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw",
}
KEY_REFUSAL = "it was not saved. To add your own key use /keys add <provider>"


@pytest.fixture
async def hub(make_settings: Callable[..., Settings], database_url: str) -> AsyncIterator[Community]:
    async with community_app(make_settings, database_url, max_active_jobs_per_user=50) as community:
        yield community


async def jobs(hub: Community) -> int:
    return await hub.scalar(select(func.count()).select_from(Job))


def refused(reply: Reply, *needles: str) -> None:
    """A clear refusal naming what to fix: never the internal-error apology."""
    assert reply.data.get("error") not in (None, "internal"), reply.text
    assert "Something went wrong" not in reply.text
    for needle in needles:
        assert needle in reply.text, reply.text


async def assert_nothing_happened(hub: Community, balance: int) -> None:
    assert await jobs(hub) == 0
    assert await hub.balance(ADA) == balance


async def texts_holding(db: Any, needle: str) -> list[str]:
    """Every ``table.column`` whose value holds ``needle``: every row of every table, read back."""
    found = []
    async with db.read() as conn:
        tables = await conn.run_sync(lambda sync: inspect(sync).get_table_names())
        for table in tables:
            result = await conn.execute(text(f'SELECT * FROM "{table}"'))
            columns = list(result.keys())
            for row in result.all():
                for column, value in zip(columns, row, strict=True):
                    if value is not None and needle in (value if isinstance(value, str) else repr(value)):
                        found.append(f"{table}.{column}")
    return found


# NUL and lone surrogates --------------------------------------------------------------------------


BAD_TEXT = [
    ("/imagine a fox\x00 in snow", ("prompt contains a NUL character", "Remove it")),
    ("/imagine a fox --negative blur\x00", ("negative contains a NUL character",)),
    ("/imagine a fox \ud800 in snow", ("prompt contains a broken character", "Retype")),
    ("/imagine a fox --negative \udfff", ("negative contains a broken character",)),
    ("/collection create bi\x00rds", ("name contains a NUL character",)),
    ("/nosuchcommand \x00", ("Your message contains a NUL character",)),
]


async def test_nul_and_lone_surrogates_are_refused_before_anything_is_stored(hub: Community) -> None:
    before = await hub.balance(ADA)
    for line, needles in BAD_TEXT:
        refused(await hub.run(line, chat=dm(ADA)), *needles)
    await assert_nothing_happened(hub, before)


async def test_typed_arguments_are_screened_too(hub: Community) -> None:
    """Platforms with typed options (Discord) pass arguments, not a line: the same checks apply."""
    before = await hub.balance(ADA)
    dispatcher = hub.app.dispatcher
    for args in ({"prompt": "a fox \ud83d"}, {"prompt": "a fox", "negative": "x\x00"},
                 {"prompt": KEYS["replicate"]}, {"prompt": "a fox", "negative": KEYS["kie"]}):
        refused(await dispatcher.dispatch(ADA, GUILD, "imagine", args, "typed-1"))
    refused(await dispatcher.dispatch(ADA, GUILD, "job", {"job_id": 2**63}, "typed-2"), "too large")
    await assert_nothing_happened(hub, before)


# Numbers --------------------------------------------------------------------------------------------


BIG_NUMBERS = [
    f"/job {TOO_BIG}", f"/job {JUST_OVER}", f"/show {TOO_BIG}", f"/show {TOO_BIG} 1", f"/delete {TOO_BIG}",
    f"/cancel {TOO_BIG}", f"/vote {TOO_BIG}", f"/favorite {TOO_BIG}", f"/reroll {TOO_BIG}",
    f"/upscale {TOO_BIG} 1", f"/share {TOO_BIG}", f"/visibility {TOO_BIG} private",
    f"/gallery --before {TOO_BIG}", f"/gallery --after {TOO_BIG}", f"/gallery --page {TOO_BIG}",
    f"/collection add birds {TOO_BIG}", f"/imagine a fox --seed {TOO_BIG}", f"/imagine a fox --count {TOO_BIG}",
    f"/job -{TOO_BIG}", "/job " + "9" * 5000,
]


async def test_numbers_beyond_64_bits_are_refused_before_sql(hub: Community) -> None:
    before = await hub.balance(ADA)
    for line in BIG_NUMBERS:
        reply = await hub.run(line)
        refused(reply, "is not a valid", "(the limit is")
        assert len(reply.text) < 200, line  # a 5,000-digit number is not echoed back
    await assert_nothing_happened(hub, before)


async def test_the_largest_64_bit_number_reaches_the_database_and_finds_nothing(hub: Community) -> None:
    refused(await hub.run(f"/job {LARGEST}"), "#9223372036854775807")
    assert item_count(await hub.run(f"/gallery --before {LARGEST}", chat=dm(ADA))) == 0
    refused(await hub.run(f"/vote {LARGEST}"))


def item_count(reply: Reply) -> int:
    assert reply.data.get("error") is None, reply.text
    return len(reply.data.get("items", []))


OTHER_DIGITS = [
    "/imagine a fox --count ٣",  # Arabic-Indic three
    "/imagine a fox --count ３",  # full-width three
    "/imagine a fox --seed ๕๕",  # Thai digits
    "/job ٣",
    "/gallery --page ２",
    "/show 1 ３",
]


async def test_digits_other_than_0_to_9_are_refused(hub: Community) -> None:
    before = await hub.balance(ADA)
    for line in OTHER_DIGITS:
        refused(await hub.run(line, chat=dm(ADA)), "must be written with the digits 0-9")
    await assert_nothing_happened(hub, before)


#: Free-text arguments the moderation commands read numbers from: "²" passes str.isdigit() yet
#: int() refuses it, and a number past 64 bits once reached the database.
ODD_NUMBERS = [
    ("/mod limits per-hour ²", "Give a number or default"),
    ("/mod limits per-hour " + TOO_BIG, "between 1 and"),
    ("/mod stats ²", "Stats cover 1 to"),
    ("/mod stats " + TOO_BIG, "Stats cover 1 to"),
    ("/mod ban #² 3d spam", "There is no user #²"),
    ("/mod ban #" + TOO_BIG, f"There is no user #{TOO_BIG}"),
    ("/mod unban #" + JUST_OVER, f"There is no user #{JUST_OVER}"),
]


async def test_moderation_numbers_are_read_as_0_to_9_within_64_bits(hub: Community) -> None:
    for line, needle in ODD_NUMBERS:
        refused(await hub.run(line, admin=True), needle)
    async with hub.app.db.read() as conn:
        audited = (await conn.execute(text("SELECT count(*) FROM audit_log"))).scalar_one()
    assert audited == 0  # nothing was changed, so nothing was recorded


# Keys typed as prompts ------------------------------------------------------------------------------


async def test_a_key_typed_as_a_prompt_or_negative_is_refused_and_stored_nowhere(
    hub: Community, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)  # the SQL drivers log statement parameters at DEBUG
    before = await hub.balance(ADA)
    for key in KEYS.values():
        for line in (f"/imagine {key}", f"/imagine a fox wearing {key} as a hat --ar 16:9",
                     f"/imagine a fox --negative {key}", f"/imagine a fox --no blur, {key}"):
            for chat in (dm(ADA), GUILD):
                reply = await hub.run(line, chat=chat)
                refused(reply, "That looks like", KEY_REFUSAL)
                assert key not in reply.text
    await assert_nothing_happened(hub, before)
    for key in KEYS.values():
        assert await texts_holding(hub.app.db, key) == []
        assert key not in caplog.text


async def test_a_key_anywhere_in_any_command_is_refused(hub: Community) -> None:
    key = KEYS["openai"]
    for line in (f"/collection create {key}", f"/help {key}", f"/gallery {key}", f"/nosuchcommand {key}",
                 f"/imagine a fox --{key}", key, f"/{key}"):
        reply = await hub.run(line, chat=dm(ADA))
        refused(reply, KEY_REFUSAL)
        assert key not in reply.text
    assert await texts_holding(hub.app.db, key) == []


async def test_a_key_typed_as_a_bare_shell_line_is_refused_and_stored_nowhere(
    make_settings: Callable[..., Settings], database_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    """A shell line without a slash is a prompt: ``printf 'sk-…' | studiobot run``."""
    from studiobot.db.engine import Database

    caplog.set_level(logging.DEBUG)
    out = io.StringIO()
    script = "".join(f"{key}\n" for key in KEYS.values()) + "/credits\n/gallery\n"
    await run_shell(make_settings(database_url=database_url), user="ada", json_mode=True,
                    stdin=io.StringIO(script), stdout=out)
    records = [json.loads(line) for line in out.getvalue().splitlines()]
    *refusals, credits, listing = records
    assert len(refusals) == len(KEYS)
    for record in refusals:
        assert record["command"] == "imagine" and KEY_REFUSAL in record["text"], record
    assert credits["data"]["balance"] == 50
    assert "Something went wrong" not in listing["text"]
    db = Database(database_url)
    try:
        assert await db_count(db, Job) == 0
        for key in KEYS.values():
            assert await texts_holding(db, key) == []
            assert key not in out.getvalue() and key not in caplog.text
    finally:
        await db.dispose()


async def db_count(db: Any, model: Any) -> int:
    async with db.read() as conn:
        return (await conn.execute(select(func.count()).select_from(model))).scalar_one()


# Double taps ----------------------------------------------------------------------------------------


async def test_concurrent_votes_and_favourites_of_one_image_never_fail(hub: Community) -> None:
    """Twenty taps at once by one person: no error, never more than one row, and the state left
    behind is the one the next tap sees (a vote there is taken back, none there is cast)."""
    job = await hub.make("a lighthouse at dusk")  # made in the server: shared with its gallery
    for command, model, flag in (("vote", Vote, "voted"), ("favorite", Favorite, "favorite")):
        replies = await asyncio.gather(*(hub.run(f"/{command} {job}", user=BOB) for _ in range(20)))
        for reply in replies:
            assert reply.data.get("error") is None, reply.text
        rows = await hub.scalar(select(func.count()).select_from(model))
        assert rows in (0, 1)
        after = await hub.run(f"/{command} {job}", user=BOB)
        assert after.data[flag] is (rows == 0)
        assert await hub.scalar(select(func.count()).select_from(model)) == 1 - rows


async def test_concurrent_adds_to_a_collection_never_fail(hub: Community) -> None:
    """Twenty taps of /collection add at once: each image once, one "Added 3", the rest "Already in"."""
    job = await hub.make("a lighthouse at dusk", n=3)
    created = await hub.run("/collection create harbours", chat=dm(ADA))
    assert created.data.get("collection") == "harbours", created.text
    replies = await asyncio.gather(*(hub.run(f"/collection add harbours {job}", chat=dm(ADA)) for _ in range(20)))
    for reply in replies:
        assert reply.data.get("error") is None, reply.text
    assert sum(r.data["changed"] for r in replies) == 3
    assert await db_count(hub.app.db, CollectionItem) == 3


async def test_adding_to_a_collection_being_deleted_is_a_clear_answer(hub: Community) -> None:
    """/collection add and /collection delete at once: either order is fine, never an error."""
    job = await hub.make("a lighthouse at dusk")
    for round_ in range(15):
        name = f"race{round_}"
        await hub.run(f"/collection create {name}", chat=dm(ADA))
        added, deleted = await asyncio.gather(hub.run(f"/collection add {name} {job}", chat=dm(ADA)),
                                              hub.run(f"/collection delete {name}", chat=dm(ADA)))
        assert deleted.data.get("deleted") is True, deleted.text
        assert added.data.get("error") in (None, "NotFound"), added.text
        assert "Something went wrong" not in added.text
    assert await db_count(hub.app.db, CollectionItem) == 0  # every collection went, with its items
    # The moment itself, made certain: the collection is gone when the add commits.
    assert await hub.app.db.run(add_to_collection, 2**62, [1]) is None
