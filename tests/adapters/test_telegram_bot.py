"""The Telegram adapter end to end: real python-telegram-bot, our bot and core, a loopback Bot API.

Each test starts ``run_platforms`` (what ``studiobot run`` runs with a Telegram token) against the
double, feeds real-shaped updates through ``getUpdates`` (or the webhook) and asserts what the bot
sent back.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from studiobot.app import build_app, run_platforms, run_worker
from studiobot.commands import COMMANDS
from studiobot.commands.contract import ChatRef, UserRef
from studiobot.config import Settings
from tests.adapters.stored import community_names
from tests.doubles.telegram import TelegramCall, TelegramState, running_telegram
from tests.ports import free_port

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures"  # copied from the shared fixtures
GROUP_ID = -1001234567890
ADA, BOB = 1111111, 2222222


class Harness:
    """One loopback Bot API plus a bot (in this event loop) that can be restarted."""

    def __init__(self, tg: TelegramState, settings: Settings) -> None:
        self.tg = tg
        self.settings = settings
        self.ada = tg.user(ADA, "Ada", "ada")
        self.bob = tg.user(BOB, "Bob", "bob")
        self.ada_chat = tg.private_chat(self.ada)
        self.group = tg.group_chat(GROUP_ID, "Painters")
        self._stop: asyncio.Event | None = None
        self._task: asyncio.Task[None] | None = None

    async def start(self, **overrides: Any) -> None:
        settings = self.settings.model_copy(update=overrides) if overrides else self.settings
        self._stop = asyncio.Event()
        self._task = asyncio.create_task(run_platforms(settings, stop=self._stop))
        ready = (lambda: self.tg.webhook is not None) if settings.telegram_webhook_url else (lambda: self.tg.polling)
        await self.tg.wait_until(lambda: self._task.done() or ready(), 10, "the bot receiving updates")
        if self._task.done():
            self._task.result()  # it stopped: raise why

    async def stop(self) -> None:
        assert self._stop is not None and self._task is not None
        self._stop.set()
        await asyncio.wait_for(self._task, 15)

    @contextlib.asynccontextmanager
    async def running(self) -> AsyncIterator[Harness]:
        """Started on entry, stopped on exit (a stop a test already made is not an error)."""
        await self.start()
        try:
            yield self
        finally:
            with contextlib.suppress(AssertionError):
                await self.stop()

    def say(self, chat: dict[str, Any], user: dict[str, Any], text: str) -> dict[str, Any]:
        """Push a user's message; returns the message."""
        update = self.tg.message_update(chat, user, text)
        self.tg.push_update(update)
        return update["message"]

    def tap(self, user: dict[str, Any], message: dict[str, Any], data: str) -> str:
        """Push a button press; returns the callback query id."""
        update = self.tg.callback_query_update(user, message, data)
        self.tg.push_update(update)
        return update["callback_query"]["id"]

    async def call(self, check: Callable[[TelegramCall], bool], timeout: float = 10.0) -> TelegramCall:
        return await self.tg.wait_for(check, timeout)

    async def result(self, chat_id: int, after: int = 0, timeout: float = 10.0) -> TelegramCall:
        """The message carrying a finished job's keyboard (U1...), sent after call index ``after``."""
        return await self.call(lambda c: c in self.tg.calls[after:] and c.ok and c.params.get("chat_id") == chat_id
                               and "upscale" in json.dumps(c.params.get("reply_markup") or {}), timeout)


def buttons(call: TelegramCall) -> list[tuple[str, str]]:
    markup = call.params.get("reply_markup") or {}
    return [(b["text"], b["callback_data"]) for row in markup.get("inline_keyboard", []) for b in row]


def sent_message(call: TelegramCall) -> dict[str, Any]:
    result = call.response["result"]
    return result[0] if isinstance(result, list) else result


@pytest.fixture
async def telegram_bot(make_settings: Callable[..., Settings], database_url: str) -> AsyncIterator[Harness]:
    async with running_telegram() as tg:
        settings = make_settings(database_url=database_url, telegram_token=tg.token, telegram_api_base=tg.base_url)
        async with Harness(tg, settings).running() as harness:
            yield harness


async def test_menus_are_generated_per_scope_and_uploaded_once(telegram_bot: Harness) -> None:
    tg = telegram_bot.tg
    private = [c["command"] for c in tg.commands_for({"type": "all_private_chats"})]
    groups = [c["command"] for c in tg.commands_for({"type": "all_group_chats"})]
    admins = [c["command"] for c in tg.commands_for({"type": "all_chat_administrators"})]
    assert "imagine" in private and "imagine" in groups
    assert "share" in groups and "share" not in private  # /share works only in groups
    assert set(groups) <= set(admins)
    assert set(private) | set(groups) <= {spec.name for spec in COMMANDS}
    uploads = len(tg.calls_to("setMyCommands"))
    assert uploads == 3
    await telegram_bot.stop()
    await telegram_bot.start()
    assert len(tg.calls_to("setMyCommands")) == uploads  # unchanged menus: not uploaded again


async def test_imagine_in_private_goes_from_update_to_photo_with_a_working_keyboard(telegram_bot: Harness) -> None:
    bot, tg = telegram_bot, telegram_bot.tg
    command = bot.say(bot.ada_chat, bot.ada, "/imagine a lighthouse at dusk")
    await bot.call(lambda c: c.method == "sendChatAction" and c.params["chat_id"] == ADA)
    status = await bot.call(lambda c: c.method == "sendMessage" and "is queued" in c.params["text"])
    assert [label for label, _ in buttons(status)] == ["Cancel"]
    photo = await bot.result(ADA)
    assert photo.method == "sendPhoto" and photo.files
    assert photo.params["reply_parameters"]["message_id"] == command["message_id"]
    assert "is ready" in photo.params["caption"]
    labels = [label for label, _ in buttons(photo)]
    assert labels == ["U1", "V1", "🔄 Re-roll", "★ Favorite", "Share", "Delete"]
    assert all(len(data.encode()) <= 64 for _, data in buttons(photo))
    # The status message is replaced by the result.
    status_id = sent_message(status)["message_id"]
    await tg.wait_until(lambda: (ADA, status_id) in tg.deleted_messages, 5, "the status message deleted")
    # U1 works: an upscale job, delivered as its own photo.
    result = sent_message(photo)
    mark = len(tg.calls)
    query = bot.tap(bot.ada, result, "upscale 1 1")
    await tg.wait_until(lambda: query in tg.callback_answers, 5, "the button answered")
    upscale = await bot.result(ADA, after=mark)
    assert "Upscale of job #1 image 1" in upscale.params["caption"]


async def test_in_a_group_commands_name_the_bot_and_several_images_come_as_an_album(telegram_bot: Harness) -> None:
    bot, tg = telegram_bot, telegram_bot.tg
    bot.say(bot.group, bot.ada, "/imagine@otherbot a red fox")  # for another bot: ignored
    bot.say(bot.group, bot.ada, "/imagine@studiobot_test_bot a red fox --count 2")
    album = await bot.call(lambda c: c.method == "sendMediaGroup" and c.ok)
    assert album.params["chat_id"] == GROUP_ID and len(album.params["media"]) == 2
    keyboard = await bot.result(GROUP_ID)
    assert keyboard.method == "sendMessage" and "is ready" in keyboard.params["text"]
    assert keyboard.params["reply_parameters"]["message_id"] == album.response["result"][0]["message_id"]
    assert [label for label, _ in buttons(keyboard)][:4] == ["U1", "U2", "V1", "V2"]
    statuses = [c for c in tg.calls_to("sendMessage") if "is queued" in c.params.get("text", "")]
    assert len(statuses) == 1 and "red fox" in statuses[0].params["text"]  # one job, not two
    assert (await community_names(bot.settings.database_url))[str(GROUP_ID)] == "Painters"  # the group's title


async def test_plain_text_in_private_means_imagine_and_start_greets_or_follows_a_deep_link(
    telegram_bot: Harness,
) -> None:
    bot = telegram_bot
    bot.say(bot.ada_chat, bot.ada, "a quiet harbour")
    photo = await bot.result(ADA)
    assert "a quiet harbour" in photo.params["caption"]
    bot.say(bot.ada_chat, bot.ada, "/start")
    hello = await bot.call(lambda c: c.method == "sendMessage" and "Commands:" in c.params.get("text", ""))
    assert "/imagine" in hello.params["text"]
    bot.say(bot.ada_chat, bot.ada, "/start credits")  # t.me/studiobot_test_bot?start=credits
    credits = await bot.call(lambda c: c.method == "sendMessage" and "Balance" in c.params.get("text", ""))
    assert credits.params["chat_id"] == ADA
    bot.say(bot.group, bot.bob, "just chatting about foxes")  # plain text in a group: not for us
    bot.say(bot.group, bot.bob, "/help@studiobot_test_bot")
    await bot.call(lambda c: c.method == "sendMessage" and c.params["chat_id"] == GROUP_ID)
    assert len(tg_sends(bot.tg, GROUP_ID)) == 1  # only the /help answer


def tg_sends(tg: TelegramState, chat_id: int) -> list[TelegramCall]:
    return [c for c in tg.sends_in(chat_id) if c.method != "sendChatAction"]


async def test_buttons_run_as_whoever_taps_and_keep_working_after_a_restart(telegram_bot: Harness) -> None:
    bot, tg = telegram_bot, telegram_bot.tg
    tg.set_admins(GROUP_ID, [9999999], bot_can_delete=True)
    bot.say(bot.group, bot.ada, "/imagine@studiobot_test_bot a castle")
    result = sent_message(await bot.result(GROUP_ID))
    # Bob is not the owner: the refusal is an alert only he sees, nothing is posted.
    before = len(tg_sends(tg, GROUP_ID))
    query = bot.tap(bot.bob, result, "vary 1 1")
    await tg.wait_until(lambda: query in tg.callback_answers, 5, "the refusal")
    assert tg.callback_answers[query]["text"] == "Job #1 is not one of yours."
    assert tg.callback_answers[query]["show_alert"] is True
    assert len(tg_sends(tg, GROUP_ID)) == before
    # After a restart, Ada's Delete on the old message still works and removes the result.
    await bot.stop()
    await bot.start()
    query = bot.tap(bot.ada, result, "delete 1")
    notice = await bot.call(lambda c: c.method == "sendMessage" and "Deleted the images of job #1" in c.params["text"])
    assert notice.params["chat_id"] == GROUP_ID
    assert (GROUP_ID, result["message_id"]) in tg.deleted_messages
    assert query in tg.callback_answers


async def test_group_admins_come_from_telegram_and_are_cached(telegram_bot: Harness) -> None:
    bot, tg = telegram_bot, telegram_bot.tg
    tg.set_admins(GROUP_ID, [BOB])
    bot.say(bot.group, bot.ada, "/imagine@studiobot_test_bot a garden")
    result = sent_message(await bot.result(GROUP_ID))
    bot.say(bot.group, bot.bob, "/delete@studiobot_test_bot 1")  # Bob administers the group
    await bot.call(lambda c: c.method == "sendMessage" and "Deleted the images of job #1" in c.params["text"])
    assert (GROUP_ID, result["message_id"]) in tg.deleted_messages
    assert len(tg.calls_to("getChatAdministrators")) == 1  # both commands, one request


async def test_a_key_pasted_in_a_group_is_deleted_and_never_repeated(telegram_bot: Harness) -> None:
    bot, tg = telegram_bot, telegram_bot.tg
    key = "sk-proj-" + "Abc123Def456Ghi789Jkl012"
    tg.set_admins(GROUP_ID, [9999999], bot_can_delete=True)
    pasted = bot.say(bot.group, bot.ada, f"here is my key {key}")
    warning = await bot.call(lambda c: c.method == "sendMessage" and "looked like" in c.params.get("text", ""))
    assert (GROUP_ID, pasted["message_id"]) in tg.deleted_messages
    assert "deleted it" in warning.params["text"] and "revoke" in warning.params["text"]
    # Where the bot may not delete, it asks the author to.
    other = tg.group_chat(-1009876543210, "Sculptors")
    tg.set_admins(other["id"], [9999999], bot_can_delete=False)
    left = bot.say(other, bot.ada, f"/imagine@studiobot_test_bot {key}")
    ask = await bot.call(lambda c: c.method == "sendMessage" and c.params["chat_id"] == other["id"])
    assert "please delete it" in ask.params["text"]
    assert (other["id"], left["message_id"]) in tg.messages
    # In private, a key is never taken as a prompt.
    private = bot.say(bot.ada_chat, bot.ada, key)
    await bot.call(lambda c: c.method == "sendMessage" and c.params["chat_id"] == ADA and "looked like" in c.params["text"])
    assert (ADA, private["message_id"]) in tg.deleted_messages
    assert not [c for c in tg.calls if "is queued" in str(c.params.get("text", ""))]  # nothing queued
    assert all(key not in text for text in tg.sent_texts())


async def test_anonymous_admins_are_told_to_post_as_themselves_and_their_keys_deleted(telegram_bot: Harness) -> None:
    bot, tg = telegram_bot, telegram_bot.tg
    tg.set_admins(GROUP_ID, [BOB], bot_can_delete=True)
    for line in ("/mod@studiobot_test_bot stats", "/imagine@studiobot_test_bot a garden"):
        update = tg.anonymous_message_update(bot.group, line)
        tg.push_update(update)
        answer = await bot.call(lambda c: c.method == "sendMessage" and c.ok
                                and c.params.get("reply_parameters", {}).get("message_id") == update["message"]["message_id"])
        assert "I can't tell who sent /" in answer.params["text"] and "Remain anonymous" in answer.params["text"]
    # A key is deleted whoever posts it.
    key = "sk-proj-" + "Abc123Def456Ghi789Jkl012"
    update = tg.anonymous_message_update(bot.group, f"our key is {key}")
    tg.push_update(update)
    warning = await bot.call(lambda c: c.method == "sendMessage" and "looked like" in c.params.get("text", ""))
    assert (GROUP_ID, update["message"]["message_id"]) in tg.deleted_messages
    assert warning.params["text"].startswith("Someone, that message")
    # Plain chatter on behalf of a chat is left alone; nothing ran and nobody was charged.
    tg.push_update(tg.anonymous_message_update(bot.group, "hello everyone"))
    bot.say(bot.group, bot.ada, "/credits@studiobot_test_bot")
    await bot.call(lambda c: c.method == "sendMessage" and "Balance" in c.params.get("text", ""))
    assert not [c for c in tg.calls if "is queued" in str(c.params.get("text", ""))]
    assert not tg.calls_to("sendPhoto")


async def test_progress_edits_the_status_message_at_most_every_3_seconds_in_a_group(telegram_bot: Harness) -> None:
    bot, tg = telegram_bot, telegram_bot.tg
    await bot.stop()
    await bot.start(offline_delay_s=4.0, poll_backoff_max_s=0.2)
    bot.say(bot.group, bot.ada, "/imagine@studiobot_test_bot a slow sunrise")
    await bot.result(GROUP_ID, timeout=15)
    edits = tg.calls_to("editMessageText")
    assert edits, "no progress edit"
    assert all("a slow sunrise" in e.params["text"] and "%" in e.params["text"] for e in edits)
    assert all(buttons(e) == [("Cancel", "cancel 1")] for e in edits)
    for earlier, later in zip(edits, edits[1:]):
        assert later.at - earlier.at >= 2.9 and later.params["text"] != earlier.params["text"]


async def test_flood_limits_hold_and_retry_after_is_honoured(telegram_bot: Harness) -> None:
    bot, tg = telegram_bot, telegram_bot.tg
    from tests.doubles.telegram import FloodLimits

    # Telegram: no more than 1 message a second, short bursts tolerated. The double allows 10% of
    # arrival jitter: the bot paces sends 1.05 s apart, but a loaded machine can deliver two closer.
    tg.flood_limits = FloodLimits(private=(1, 0.9))
    for n in range(4):
        bot.say(bot.ada_chat, bot.ada, f"/imagine a kite number {n}")
    await tg.wait_until(lambda: sum(1 for c in tg.sends_in(ADA) if c.ok and c.method == "sendPhoto") == 4,
                        30, "four results")
    sends = [c for c in tg.sends_in(ADA) if c.method != "sendChatAction"]
    assert all(c.status != 429 for c in sends)  # the limiter kept under Telegram's limit
    assert all(later.at - earlier.at >= 0.9 for earlier, later in zip(sends, sends[1:]))
    # A 429 anyway (Telegram's limits move): the request waits retry_after, then goes through.
    tg.flood_limits = FloodLimits(private=(1, 60.0), retry_after=1)
    bot.say(bot.ada_chat, bot.ada, "/credits")
    refused = await bot.call(lambda c: c.status == 429)
    tg.flood_limits = None
    retried = await bot.call(lambda c: c.ok and c.params.get("text") == refused.params["text"], timeout=10)
    assert retried.at - refused.at >= 1.0 and "Balance" in retried.params["text"]


async def test_inline_mode_lists_only_the_users_own_images(telegram_bot: Harness) -> None:
    bot, tg = telegram_bot, telegram_bot.tg
    bot.say(bot.ada_chat, bot.ada, "/imagine a lighthouse at dusk")
    photo = await bot.result(ADA)
    file_id = photo.response["result"]["photo"][-1]["file_id"]
    query = tg.inline_query_update(bot.ada, "lighthouse")
    tg.push_update(query)
    answer = await bot.call(lambda c: c.method == "answerInlineQuery" and c.ok)
    (item,) = answer.params["results"]
    assert item["type"] == "photo" and item["photo_file_id"] == file_id
    assert answer.params["is_personal"] is True
    tg.push_update(tg.inline_query_update(bot.bob, "lighthouse"))
    other = await bot.call(lambda c: c.method == "answerInlineQuery" and c is not answer and c.ok)
    assert other.params["results"] == []
    tg.push_update(tg.inline_query_update(bot.ada, "castle"))
    none = await bot.call(lambda c: c.method == "answerInlineQuery" and c not in (answer, other) and c.ok)
    assert none.params["results"] == []


async def test_originals_come_as_documents_when_the_user_asks(telegram_bot: Harness) -> None:
    bot, tg = telegram_bot, telegram_bot.tg
    bot.say(bot.ada_chat, bot.ada, "/settings on")
    await bot.call(lambda c: c.method == "sendMessage" and "Saved" in c.params.get("text", ""))
    bot.say(bot.ada_chat, bot.ada, "/imagine a mountain lake")
    document = await bot.result(ADA)
    assert document.method == "sendDocument" and document.files
    assert "is ready" in document.params["caption"]



async def test_webhook_mode_checks_the_secret_token_and_handles_each_update_once(
    make_settings: Callable[..., Settings], database_url: str
) -> None:
    port = free_port()
    url = f"http://127.0.0.1:{port}/telegram/webhook"
    async with running_telegram() as tg:
        settings = make_settings(
            database_url=database_url, telegram_token=tg.token, telegram_api_base=tg.base_url,
            telegram_webhook_url=url, web_port=port,
        )
        bot = Harness(tg, settings)
        await bot.start()
        try:
            assert tg.webhook["url"] == url and not tg.calls_to("getUpdates")
            secret = tg.webhook["secret_token"]
            assert secret and tg.token not in secret
            assert set(tg.allowed_updates or ()) == {"message", "callback_query", "inline_query"}
            update = tg.message_update(bot.ada_chat, bot.ada, "/imagine a harbour by night")
            update["update_id"] = 777
            # Forged or missing secret: 403, nothing happens.
            assert (await tg.post_to_webhook(update, secret_token="wrong"))[0] == 403
            assert (await tg.post_to_webhook(update, secret_token=None))[0] == 403
            # Malformed bodies: 400 (Telegram gives up on them), nothing happens.
            async with aiohttp.ClientSession() as session:
                headers = {"X-Telegram-Bot-Api-Secret-Token": secret}
                async with session.post(url, data=b"{not json", headers=headers) as response:
                    assert response.status == 400
                async with session.post(url, json={"no": "update id"}, headers=headers) as response:
                    assert response.status == 400
                # Telegram's own curl sample lacks User.is_bot, which real updates always carry
                # (fixtures/*.source.txt): refused as not an update rather than half-read.
                sample = json.loads((FIXTURES / "telegram_update_message_command.json").read_text())
                async with session.post(url, json=sample, headers=headers) as response:
                    assert response.status == 400
                async with session.get(f"http://127.0.0.1:{port}/healthz") as response:
                    assert await response.json() == {"ok": True}
            assert not tg_sends(tg, ADA)
            # The real thing, delivered twice (Telegram retries when an answer is lost): one job.
            assert (await tg.post_to_webhook(update))[0] == 200
            assert (await tg.post_to_webhook(update))[0] == 200
            photo = await bot.result(ADA)
            assert "a harbour by night" in photo.params["caption"]
            query = tg.callback_query_update(bot.ada, sent_message(photo), "favorite 1")
            assert (await tg.post_to_webhook(query))[0] == 200
            await tg.wait_until(lambda: query["callback_query"]["id"] in tg.callback_answers, 5, "the button")
            assert "favourites" in tg.callback_answers[query["callback_query"]["id"]]["text"]
            await asyncio.sleep(0.3)
            queued = [c for c in tg.calls_to("sendMessage") if "is queued" in c.params.get("text", "")]
            assert len(queued) == 1
        finally:
            await bot.stop()


async def test_a_worker_process_delivers_results_over_the_bot_api(
    make_settings: Callable[..., Settings], database_url: str
) -> None:
    async with running_telegram() as tg:
        settings = make_settings(database_url=database_url, telegram_token=tg.token, telegram_api_base=tg.base_url)
        # A bot process accepts the command, then stops before the job runs...
        front = await build_app(settings, {})
        chat = ChatRef("telegram", str(GROUP_ID), "group", str(GROUP_ID), reply_to="5")
        _, reply = await front.dispatcher.dispatch_text(
            UserRef("telegram", str(ADA), "Ada"), chat, "/imagine a lighthouse", f"{GROUP_ID}:5")
        await front.aclose()
        assert reply.data["status"] == "queued"
        # ...and a worker process (no updates of its own) makes it and posts the result.
        stop = asyncio.Event()
        worker = asyncio.create_task(run_worker(settings, stop=stop))
        try:
            photo = await tg.wait_for(lambda c: c.method == "sendPhoto" and c.ok, timeout=15)
        finally:
            stop.set()
            await asyncio.wait_for(worker, 10)
        assert photo.params["chat_id"] == GROUP_ID and photo.params["reply_parameters"]["message_id"] == 5
        assert not tg.calls_to("getUpdates") and not tg.calls_to("setWebhook")


async def test_a_result_goes_to_the_private_chat_when_the_group_refuses(telegram_bot: Harness) -> None:
    bot, tg = telegram_bot, telegram_bot.tg
    await bot.stop()
    await bot.start(offline_delay_s=1.0, poll_backoff_max_s=0.2)
    bot.say(bot.group, bot.ada, "/imagine@studiobot_test_bot a paper boat")
    await bot.call(lambda c: c.method == "sendMessage" and "is queued" in c.params.get("text", ""))
    tg.kicked_chats.add(GROUP_ID)  # removed from the group while the job ran
    photo = await bot.result(ADA, timeout=15)
    assert "a paper boat" in photo.params["caption"]


async def test_a_typed_cancel_updates_the_status_message(telegram_bot: Harness) -> None:
    bot, tg = telegram_bot, telegram_bot.tg
    await bot.stop()
    await bot.start(offline_delay_s=30.0)
    bot.say(bot.group, bot.ada, "/imagine@studiobot_test_bot a long night")
    status = await bot.call(lambda c: c.method == "sendMessage" and "is queued" in c.params.get("text", ""))
    status_id = sent_message(status)["message_id"]
    await asyncio.sleep(0.3)  # the status message is recorded as the job's
    bot.say(bot.group, bot.ada, "/cancel@studiobot_test_bot 1")
    edit = await bot.call(lambda c: c.method == "editMessageText" and c.params["message_id"] == status_id
                          and "Cancelled job #1" in c.params["text"])
    assert "reply_markup" not in edit.params or not buttons(edit)  # no Cancel button left
