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
from typing import Any

import pytest

from studiobot.app import run_platforms
from studiobot.commands import COMMANDS
from studiobot.config import Settings
from tests.doubles.telegram import TelegramCall, TelegramState, running_telegram

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
        harness = Harness(tg, settings)
        await harness.start()
        try:
            yield harness
        finally:
            with contextlib.suppress(AssertionError):
                await harness.stop()


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
