"""Telegram refusing a job's news for good (issue 15 item 8): real python-telegram-bot, our bot and
core, a loopback Bot API that answers as Telegram does.

* The bot may not post photos (or text) in the group: the result goes to the user privately, once.
* The group was upgraded to a supergroup: the result goes to the supergroup, and so does all later
  news for the old id, in every process.
* Nobody can be reached (blocked, never started, removed): ``Undeliverable``, never a resend.

The end-to-end tests run ``run_platforms`` (the Harness of ``test_telegram_bot.py``), then sweep
for forgotten jobs from a second "process" (its own database connection and Bot API client), as
the recovery pass of any process does; a job whose news was handled is never sent again.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from PIL import Image
from telegram import Bot
from telegram.error import BadRequest, ChatMigrated, NetworkError

from studiobot.bot.telegram.bot import open_outbox
from studiobot.bot.telegram.outbox import TelegramOutbox
from studiobot.commands.communities import Communities
from studiobot.commands.contract import ChatRef, ImageRef, Reply, Undeliverable
from studiobot.commands.presenter import JobPresenter
from studiobot.config import Settings
from studiobot.db import platform_state
from studiobot.db.engine import Database
from studiobot.media.store import LocalStore
from studiobot.scheduler import lifecycle
from studiobot.scheduler.notify import Notifier
from tests.adapters.test_telegram_bot import ADA, BOB, GROUP_ID, Harness
from tests.doubles.telegram import TelegramCall, TelegramState, api_error, running_telegram

BOT_NAME = "@studiobot_test_bot"
BASIC_GROUP_ID = -4518810793  # a basic group: only these are upgraded to supergroups
NO_PHOTOS = "not enough rights to send photos to the chat"
UPGRADED = "group chat was upgraded to a supergroup chat"
PRIVATELY = "so here it is privately"


@pytest.fixture
async def bot(make_settings: Callable[..., Settings], database_url: str) -> AsyncIterator[Harness]:
    async with running_telegram() as tg:
        # Results after 1 s, so a test can change the chat while the job runs.
        settings = make_settings(database_url=database_url, telegram_token=tg.token, telegram_api_base=tg.base_url,
                                 offline_delay_s=1.0, poll_backoff_max_s=0.2)
        async with Harness(tg, settings).running() as harness:
            yield harness


@dataclass
class Process:
    """Another process: its own database connection and Bot API client, the real presenter and
    notifier over them."""

    db: Database
    outbox: TelegramOutbox
    presenter: JobPresenter
    notifier: Notifier

    async def sweep(self) -> None:
        """Three recovery sweeps for jobs nobody was told about (no grace time)."""
        for _ in range(3):
            await self.notifier.sweep(grace_s=0)


@contextlib.asynccontextmanager
async def other_process(bot: Harness) -> AsyncIterator[Process]:
    db = Database(bot.settings.database_url)
    outbox, close = await open_outbox(bot.tg.token, bot.tg.base_url, db)
    presenter = JobPresenter(db, LocalStore(bot.settings.media_dir), {"telegram": outbox},
                             Communities(db, bot.settings))
    try:
        yield Process(db, outbox, presenter, Notifier(db, presenter, ["telegram"]))
    finally:
        await close()
        await db.dispose()


async def eventually(check: Callable[[], Awaitable[Any]], what: str, timeout: float = 5.0) -> None:
    """Wait until ``check()`` gives something truthy."""
    deadline = asyncio.get_running_loop().time() + timeout
    while not await check():
        if asyncio.get_running_loop().time() > deadline:
            raise TimeoutError(f"timed out waiting for {what}")
        await asyncio.sleep(0.05)


def photos_to(tg: TelegramState, chat_id: int) -> list[TelegramCall]:
    """Every sendPhoto naming ``chat_id``, refused ones included."""
    return [c for c in tg.calls_to("sendPhoto") if c.params.get("chat_id") == chat_id]


def description(call: TelegramCall) -> str:
    return str((call.response or {}).get("description", ""))


async def queued(bot: Harness, chat: dict[str, Any], prompt: str) -> None:
    """``/imagine prompt`` in ``chat`` by Ada; returns once the "queued" answer is out."""
    mention = "" if chat["type"] == "private" else BOT_NAME
    bot.say(chat, bot.ada, f"/imagine{mention} {prompt}")
    await bot.call(lambda c: c.method == "sendMessage" and c.ok and "is queued" in c.params.get("text", ""))


async def notified(db: Database, job_id: int) -> bool:
    async with db.read() as conn:
        job = await lifecycle.get(conn, job_id)
    assert job is not None
    return job.notified_at is not None


async def stop_once_notified(bot: Harness, job_id: int) -> None:
    """Stop the bot once it marked the job notified (a stop mid-delivery would rightly leave the
    job to the sweep); fails if it never does."""
    db = Database(bot.settings.database_url)
    try:
        await eventually(lambda: notified(db, job_id), f"job #{job_id} marked notified")
    finally:
        await db.dispose()
    await bot.stop()


# Rights -----------------------------------------------------------------------------------------


async def test_a_result_in_a_group_without_photo_rights_reaches_the_user_privately_once(bot: Harness) -> None:
    tg = bot.tg
    tg.restrict_bot(GROUP_ID, "can_send_photos")  # text is allowed: the "queued" answer shows
    await queued(bot, bot.group, "a paper crane")
    private = await bot.result(ADA, timeout=15)
    refused = photos_to(tg, GROUP_ID)
    assert [(c.status, description(c)) for c in refused] == [(400, f"Bad Request: {NO_PHOTOS}")]
    assert private.method == "sendPhoto" and private.files
    caption = private.params["caption"]
    assert caption.startswith("I'm not allowed to post this in the group") and PRIVATELY in caption
    assert "a paper crane" in caption
    await stop_once_notified(bot, 1)
    async with other_process(bot) as other:
        await other.sweep()
    assert len(photos_to(tg, GROUP_ID)) == 1 and len(photos_to(tg, ADA)) == 1  # never sent again


async def test_a_group_that_refuses_the_bots_answers_gets_them_privately(bot: Harness) -> None:
    tg = bot.tg
    tg.restrict_bot(GROUP_ID, "can_send_messages", "can_send_photos")
    bot.say(bot.group, bot.ada, f"/credits{BOT_NAME}")
    balance = await bot.call(lambda c: c.method == "sendMessage" and c.ok and c.params["chat_id"] == ADA)
    assert balance.params["text"].startswith("I'm not allowed to post this in the group")
    assert "Balance" in balance.params["text"]
    # A job asked for there: its "queued" answer, then its result, both privately, once each.
    bot.say(bot.group, bot.ada, f"/imagine{BOT_NAME} a paper crane")
    await bot.call(lambda c: c.method == "sendMessage" and c.ok and c.params["chat_id"] == ADA
                   and "is queued" in c.params["text"])
    result = await bot.result(ADA, timeout=15)
    assert result.method == "sendPhoto" and PRIVATELY in result.params["caption"]
    await stop_once_notified(bot, 1)
    assert len(photos_to(tg, ADA)) == 1
    posted = [c for c in tg.calls if c.params.get("chat_id") == GROUP_ID and c.ok and c.method.startswith("send")]
    assert [c.method for c in posted] == ["sendChatAction", "sendChatAction"]  # nothing got through but "typing"


@pytest.mark.parametrize(("right", "images"), [("can_send_photos", True), ("can_send_messages", False)])
async def test_each_missing_right_sends_the_news_privately(
    make_settings: Callable[..., Settings], db: Database, tmp_path: Path, right: str, images: bool
) -> None:
    picture = tmp_path / "fox.png"
    Image.new("RGB", (64, 48), "orange").save(picture)
    reply = Reply("Job #7 failed: the provider is down." if not images else "Job #7 is ready.",
                  images=[ImageRef(picture, "image", "1", None)] if images else ())
    async with running_telegram() as tg:
        tg.group_chat(GROUP_ID, "Painters")
        tg.restrict_bot(GROUP_ID, right)
        outbox, close = await open_outbox(tg.token, tg.base_url, db)
        try:
            await outbox.deliver(ChatRef("telegram", str(GROUP_ID), "group", str(GROUP_ID)), reply,
                                 recipient=str(ADA))
        finally:
            await close()
    method = "sendPhoto" if images else "sendMessage"
    calls = tg.calls_to(method)
    what = "photos" if images else "text messages"
    assert [(c.params["chat_id"], c.status) for c in calls] == [(GROUP_ID, 400), (ADA, 200)]
    assert description(calls[0]) == f"Bad Request: not enough rights to send {what} to the chat"
    shown = calls[1].params["caption" if images else "text"]
    assert PRIVATELY in shown and reply.text in shown


async def test_rights_refused_and_no_private_chat_is_undeliverable(db: Database, tmp_path: Path) -> None:
    picture = tmp_path / "fox.png"
    Image.new("RGB", (64, 48), "orange").save(picture)
    async with running_telegram() as tg:
        tg.group_chat(GROUP_ID, "Painters")
        tg.restrict_bot(GROUP_ID, "can_send_photos")
        tg.closed_dms.add(ADA)  # Ada never pressed Start
        outbox, close = await open_outbox(tg.token, tg.base_url, db)
        try:
            with pytest.raises(Undeliverable, match="cannot be messaged privately"):
                await outbox.deliver(ChatRef("telegram", str(GROUP_ID), "group", str(GROUP_ID)),
                                     Reply("Job #7 is ready.", images=[ImageRef(picture)]), recipient=str(ADA))
        finally:
            await close()
    assert [(c.params["chat_id"], c.status) for c in tg.calls_to("sendPhoto")] == [(GROUP_ID, 400), (ADA, 403)]
    assert tg.token not in str(tg.calls)  # nothing we sent carries the token


# Supergroup upgrades ----------------------------------------------------------------------------


async def test_a_migrated_group_gets_the_result_in_the_supergroup_and_later_news_goes_straight_there(
    bot: Harness,
) -> None:
    tg = bot.tg
    old = tg.group_chat(BASIC_GROUP_ID, "Sketchers")
    await queued(bot, old, "a paper lantern")
    new = tg.upgrade_to_supergroup(BASIC_GROUP_ID)  # while the job runs
    upgraded = time.monotonic()
    result = await bot.result(new["id"], timeout=15)
    assert "a paper lantern" in result.params["caption"] and "reply_parameters" not in result.params
    # A progress edit or the result itself met the upgrade in the old group; nothing got through.
    refused = [c for c in tg.calls if c.params.get("chat_id") == BASIC_GROUP_ID and c.at > upgraded]
    assert refused and {(c.status, description(c)) for c in refused} == {(400, f"Bad Request: {UPGRADED}")}
    assert all(c.response["parameters"] == {"migrate_to_chat_id": new["id"]} for c in refused)
    await stop_once_notified(bot, 1)
    async with other_process(bot) as other:
        assert await platform_state.get(other.db, f"telegram:migrated:{BASIC_GROUP_ID}") == str(new["id"])
        await other.sweep()
        assert len(photos_to(tg, new["id"])) == 1  # not sent again
        # A process that never saw the upgrade sends later news for the old id straight there.
        mark = len(tg.calls)
        await other.outbox.deliver(ChatRef("telegram", str(BASIC_GROUP_ID), "group", str(BASIC_GROUP_ID), reply_to="3"),
                             Reply("Job #2 failed: the provider is down."), recipient=str(ADA))
    later = tg.calls[mark:]
    assert [(c.method, c.params.get("chat_id"), c.status) for c in later] == [("sendMessage", new["id"], 200)]


async def test_a_send_to_an_upgraded_group_is_made_once_more_in_the_supergroup(db: Database) -> None:
    async with running_telegram() as tg:
        tg.group_chat(BASIC_GROUP_ID, "Sketchers")
        new = tg.upgrade_to_supergroup(BASIC_GROUP_ID)
        chat = ChatRef("telegram", str(BASIC_GROUP_ID), "group", str(BASIC_GROUP_ID), reply_to="3")
        for job in (7, 8):  # two processes in turn (or one, restarted)
            outbox, close = await open_outbox(tg.token, tg.base_url, db)
            try:
                await outbox.deliver(chat, Reply(f"Job #{job} failed."), recipient=str(ADA))
            finally:
                await close()
            # The second reads the move from the database and goes straight there.
            assert await platform_state.get(db, f"telegram:migrated:{BASIC_GROUP_ID}") == str(new["id"])
    sends = [(c.params["chat_id"], c.status, description(c)) for c in tg.calls_to("sendMessage")]
    assert sends == [(BASIC_GROUP_ID, 400, f"Bad Request: {UPGRADED}"), (new["id"], 200, ""), (new["id"], 200, "")]
    assert "reply_parameters" not in tg.calls_to("sendMessage")[1].params  # the old ids mean nothing there


@pytest.mark.parametrize("seen", ["migrate_to_chat_id", "migrate_from_chat_id"])
async def test_the_upgrade_service_message_records_the_move(bot: Harness, seen: str) -> None:
    tg = bot.tg
    tg.group_chat(BASIC_GROUP_ID, "Sketchers")
    new = tg.upgrade_to_supergroup(BASIC_GROUP_ID)
    # Either of the two service messages Telegram posts is enough (a bot may see only one chat).
    update = next(u for u in tg.migration_updates(BASIC_GROUP_ID, bot.ada) if seen in u["message"])
    tg.push_update(update)
    async with other_process(bot) as other:
        key = f"telegram:migrated:{BASIC_GROUP_ID}"
        await eventually(lambda: platform_state.get(other.db, key), "the move recorded")
        assert await platform_state.get(other.db, key) == str(new["id"])
        mark = len(tg.calls)
        await other.outbox.deliver(ChatRef("telegram", str(BASIC_GROUP_ID), "group", str(BASIC_GROUP_ID)),
                             Reply("Job #2 is cancelled."), recipient=str(ADA))
    assert [(c.method, c.params.get("chat_id")) for c in tg.calls[mark:]] == [("sendMessage", new["id"])]


async def said(bot: Harness, chat: dict[str, Any], user: dict[str, Any], line: str, words: str) -> str:
    """``line`` said in group ``chat`` by ``user``; the text of the answer holding ``words``."""
    mark = len(bot.tg.calls)
    bot.say(chat, user, line.replace(" ", f"{BOT_NAME} ", 1))
    answer = await bot.call(lambda c: c in bot.tg.calls[mark:] and c.ok and c.method == "sendMessage"
                            and c.params["chat_id"] == chat["id"] and words in c.params["text"])
    return str(answer.params["text"])


@pytest.mark.parametrize("supergroup_used_first", [False, True])
async def test_an_upgraded_group_keeps_its_admins_choices(bot: Harness, supergroup_used_first: bool) -> None:
    tg = bot.tg
    bob = tg.user(BOB, "Bob", "bob")
    old = tg.group_chat(BASIC_GROUP_ID, "Sketchers")
    tg.set_admins(BASIC_GROUP_ID, [BOB])
    await said(bot, old, bob, "/mod blocklist add dragon", "Blocked")
    await said(bot, old, bob, "/mod limits per-hour 3", "Limits here")
    await said(bot, old, bob, "/mod channel set", f"posted to telegram channel {BASIC_GROUP_ID}")
    new = tg.upgrade_to_supergroup(BASIC_GROUP_ID)
    if supergroup_used_first:  # a command in the supergroup before the move is seen: two rows to merge
        await said(bot, new, bob, "/mod limits per-user 2", "Limits here")
    for update in tg.migration_updates(BASIC_GROUP_ID, bot.ada):
        tg.push_update(update)
    async with other_process(bot) as other:
        key = f"telegram:migrated:{BASIC_GROUP_ID}"
        await eventually(lambda: platform_state.get(other.db, key), "the move recorded")
    refusal = await said(bot, new, bot.ada, "/imagine a dragon over the bay", "blocked")
    assert "dragon" in refusal and "Something went wrong" not in refusal
    limits = await said(bot, new, bob, "/mod limits", "Limits here")
    assert "3 jobs per user per hour" in limits
    if supergroup_used_first:
        assert "2 in progress per user" in limits  # the supergroup's own choice is kept too
    audit = await said(bot, new, bob, "/mod audit", "blocklist")
    assert "dragon" in audit
    await said(bot, new, bob, "/mod channel", f"posted to telegram channel {new['id']}")  # the gallery moved too


# Nobody to tell, and errors worth retrying ------------------------------------------------------


async def test_a_user_who_blocked_the_bot_is_undeliverable(bot: Harness) -> None:
    tg = bot.tg
    await queued(bot, bot.ada_chat, "a paper moon")
    tg.blocked_users.add(ADA)  # while the job runs
    refused = await bot.call(lambda c: c.method == "sendPhoto" and c.status == 403, timeout=15)
    assert description(refused) == "Forbidden: bot was blocked by the user"
    await stop_once_notified(bot, 1)  # given up at once: Undeliverable is final for the notifier
    async with other_process(bot) as other:
        await other.sweep()
        with pytest.raises(Undeliverable, match="blocked"):
            await other.presenter.job_finished(1)  # the job's own news, as the notifier sends it
    assert len(photos_to(tg, ADA)) == 2  # the refused result, and the direct call just above


@pytest.mark.parametrize("gone", ["kicked", "chat not found"])
async def test_a_group_gone_and_no_private_chat_is_undeliverable(db: Database, gone: str) -> None:
    async with running_telegram() as tg:
        if gone == "kicked":
            tg.group_chat(GROUP_ID, "Painters")
            tg.kicked_chats.add(GROUP_ID)
        else:
            tg.strict_chats = True  # the group was deleted: Telegram no longer knows it
            tg.private_chat(tg.user(ADA, "Ada"))
        tg.blocked_users.add(ADA)
        outbox, close = await open_outbox(tg.token, tg.base_url, db)
        try:
            with pytest.raises(Undeliverable):
                await outbox.deliver(ChatRef("telegram", str(GROUP_ID), "group", str(GROUP_ID)),
                                     Reply("Job #7 failed."), recipient=str(ADA))
        finally:
            await close()
    assert [c.params["chat_id"] for c in tg.calls_to("sendMessage")] == [GROUP_ID, ADA]


@pytest.mark.parametrize("what", ["notice", "gallery post"])
async def test_a_refused_notice_or_gallery_post_is_dropped_without_error(db: Database, what: str) -> None:
    # Nobody retries these and their callers (payments, key notices, /share) expect no error.
    async with running_telegram() as tg:
        tg.group_chat(GROUP_ID, "Painters")
        tg.kicked_chats.add(GROUP_ID)
        tg.blocked_users.add(ADA)
        outbox, close = await open_outbox(tg.token, tg.base_url, db)
        reply = (Reply("Payment received: 100 credits.", private=True) if what == "notice"
                 else Reply("Ada shared job #7.", data={"job_id": 7, "gallery_post": True}))
        try:
            shown = await outbox.deliver(ChatRef("telegram", str(GROUP_ID), "group", str(GROUP_ID)), reply,
                                         recipient=str(ADA) if what == "notice" else None)
        finally:
            await close()
    assert shown is None
    assert [c.status for c in tg.calls_to("sendMessage")] == [403]


@pytest.mark.parametrize(("status", "text"), [(502, "Bad Gateway"), (500, "Internal Server Error"),
                                              (400, "Bad Request: message caption is too long")])
async def test_other_errors_are_raised_to_be_retried(db: Database, status: int, text: str) -> None:
    async with running_telegram() as tg:
        tg.group_chat(GROUP_ID, "Painters")
        outbox, close = await open_outbox(tg.token, tg.base_url, db)
        try:
            tg.fail_next.append(api_error(status, text))
            with pytest.raises(NetworkError) as raised:  # BadRequest is one too
                await outbox.deliver(ChatRef("telegram", str(GROUP_ID), "group", str(GROUP_ID)),
                                     Reply("Job #7 failed."), recipient=str(ADA))
            assert not isinstance(raised.value, Undeliverable)
        finally:
            await close()
    assert [c.params["chat_id"] for c in tg.calls_to("sendMessage")] == [GROUP_ID]  # no fallback tried


# The double answers as Telegram does ------------------------------------------------------------


async def test_the_double_answers_both_400s_as_telegram_does() -> None:
    async with running_telegram() as tg:
        tg.group_chat(GROUP_ID, "Painters")
        tg.restrict_bot(GROUP_ID, "can_send_photos")
        tg.group_chat(BASIC_GROUP_ID, "Sketchers")
        new = tg.upgrade_to_supergroup(BASIC_GROUP_ID)
        bot = Bot(tg.token, base_url=tg.base_url, base_file_url=tg.base_file_url)
        async with bot, aiohttp.ClientSession() as http:
            async with http.post(f"{tg.base_url}{tg.token}/sendMessage",
                                 data={"chat_id": str(BASIC_GROUP_ID), "text": "hi"}) as answer:
                assert answer.status == 400
                assert await answer.json() == {"ok": False, "error_code": 400, "description": f"Bad Request: {UPGRADED}",
                                               "parameters": {"migrate_to_chat_id": new["id"]}}
            with pytest.raises(ChatMigrated) as migrated:
                await bot.delete_message(BASIC_GROUP_ID, 1)  # every method naming the old id
            assert migrated.value.new_chat_id == new["id"] and new["type"] == "supergroup"
            with pytest.raises(BadRequest, match="Not enough rights to send photos to the chat"):
                await bot.send_photo(GROUP_ID, "AgACAgIAAxkDAAI-unknown")
            assert tg.calls_to("sendPhoto")[-1].response == {
                "ok": False, "error_code": 400, "description": f"Bad Request: {NO_PHOTOS}"}
            assert (await bot.send_message(GROUP_ID, "text is still allowed")).text
            assert (await bot.send_message(new["id"], "the supergroup works")).chat.id == new["id"]
