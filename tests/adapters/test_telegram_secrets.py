"""Secrets on Telegram: keys go only through a private chat, are deleted from it, and never echoed.

The adapter is generic over the command table; this test gives it one extra command with a secret
parameter (the shape ``/keys add`` has), so the private-chat path is proven on its own.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable

import pytest

from studiobot.app import build_app, open_database
from studiobot.bot.telegram.bot import TelegramBot, build_application
from studiobot.commands import COMMANDS
from studiobot.commands.dispatcher import Dispatcher
from studiobot.config import Settings
from tests.adapters.secret_command import KEY_COMMAND, SECRET, received
from tests.doubles.telegram import running_telegram

GROUP_ID = -1001234567890


async def test_keys_travel_only_through_a_private_chat_and_are_never_shown_or_logged(
    make_settings: Callable[..., Settings], database_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    received.clear()
    async with running_telegram() as tg:
        settings = make_settings(database_url=database_url, telegram_token=tg.token, telegram_api_base=tg.base_url)
        db = await open_database(settings)
        telegram = TelegramBot(build_application(tg.token, tg.base_url), db)
        app = await build_app(settings, {"telegram": telegram.outbox}, db=db)
        telegram.attach(Dispatcher((*COMMANDS, KEY_COMMAND), app.dispatcher.deps))
        task = asyncio.create_task(telegram.run())
        ada = tg.user(1111111, "Ada", "ada")
        private, group = tg.private_chat(ada), tg.group_chat(GROUP_ID)
        tg.set_admins(GROUP_ID, [9999999], bot_can_delete=True)

        async def said(chat: dict, text: str) -> tuple[dict, str]:
            update = tg.message_update(chat, ada, text)
            mark = len(tg.calls)
            tg.push_update(update)
            answer = await tg.wait_for(lambda c: c in tg.calls[mark:] and c.method == "sendMessage" and c.ok)
            return update["message"], answer.params["text"]

        try:
            await tg.wait_until(lambda: tg.polling, 10, "polling")
            # In a group: directions to a private chat, with a deep link; nothing is run.
            _, text = await said(group, "/remember@studiobot_test_bot openai")
            assert "private" in text and "https://t.me/studiobot_test_bot?start=remember_openai" in text
            # A key typed in a group is deleted and never run.
            message, text = await said(group, f"/remember@studiobot_test_bot openai --key {SECRET}")
            assert (GROUP_ID, message["message_id"]) in tg.deleted_messages and "revoke" in text
            assert received == []
            # The deep link's /start runs the command in private: the bot asks for the key...
            _, text = await said(private, "/start remember_openai")
            assert text.startswith("Send me your API key in your next message")
            # ...the next message is the key: stored, then the message holding it is deleted.
            message, text = await said(private, SECRET)
            assert text == "Stored your openai key ending in 6789."
            await tg.wait_until(lambda: (private["id"], message["message_id"]) in tg.deleted_messages, 5, "deleted")
            # All in one message works too (and is deleted too).
            message, text = await said(private, f"/remember anthropic --key {SECRET}")
            assert text == "Stored your anthropic key ending in 6789."
            await tg.wait_until(lambda: (private["id"], message["message_id"]) in tg.deleted_messages, 5, "deleted")
            assert received == [SECRET, SECRET]
            # After that, plain text is a prompt again.
            _, text = await said(private, "a lighthouse at dusk")
            assert "is queued" in text or "is ready" in text
        finally:
            await telegram.close()
            await asyncio.wait_for(task, 10)
            await app.aclose()
    assert all(SECRET not in text for text in tg.sent_texts())
    assert not any(SECRET.encode() in r.body for r in tg.requests if r.path.endswith(("sendMessage", "sendPhoto")))
    ours = [r for r in caplog.records if not r.name.startswith("aiohttp")]  # the double's own access log
    assert all(SECRET not in r.getMessage() and tg.token not in r.getMessage() for r in ours)


async def test_the_real_keys_command_asks_only_for_add_and_only_in_private(
    make_settings: Callable[..., Settings], database_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    from studiobot.vault.cipher import new_master_key
    from tests.doubles.openai_images import OpenAIState, make_openai_app
    from tests.doubles.server import serve

    caplog.set_level(logging.DEBUG)
    user_key = "sk-proj-TelegramUsersKey0123456789abcdefghijkLMNO"
    openai = OpenAIState(valid_keys={user_key})
    async with running_telegram() as tg, serve(make_openai_app(openai)) as openai_url:
        settings = make_settings(database_url=database_url, telegram_token=tg.token,
                                 telegram_api_base=tg.base_url, openai_base_url=openai_url,
                                 master_keys=new_master_key().decode())
        db = await open_database(settings)
        telegram = TelegramBot(build_application(tg.token, tg.base_url), db)
        app = await build_app(settings, {"telegram": telegram.outbox}, db=db)
        telegram.attach(app.dispatcher)
        task = asyncio.create_task(telegram.run())
        ada = tg.user(1111111, "Ada", "ada")
        private, group = tg.private_chat(ada), tg.group_chat(GROUP_ID)
        tg.set_admins(GROUP_ID, [9999999], bot_can_delete=True)

        async def said(chat: dict, text: str, *, replies: int = 1) -> tuple[dict, list]:
            update = tg.message_update(chat, ada, text)
            mark = len(tg.calls)
            tg.push_update(update)
            await tg.wait_until(
                lambda: len([c for c in tg.calls[mark:] if c.method == "sendMessage" and c.ok]) >= replies, 10,
                "replies")
            sent = [c for c in tg.calls[mark:] if c.method == "sendMessage" and c.ok]
            return update["message"], [(c.params["chat_id"], c.params["text"]) for c in sent]

        try:
            await tg.wait_until(lambda: tg.polling, 10, "polling")
            # /keys list in a group needs no secret: answered in private, the group told so.
            _, sent = await said(group, "/keys@studiobot_test_bot list", replies=2)
            assert (ada["id"], sent[0][1]) == sent[0] and "You have no API keys" in sent[0][1]
            assert sent[1] == (GROUP_ID, "I sent you the details in a private chat.")
            # /keys add in a group: directions to the private chat, nothing asked for there.
            _, sent = await said(group, "/keys@studiobot_test_bot add openai")
            assert sent[0][0] == GROUP_ID and "works only in private" in sent[0][1] and "t.me/" in sent[0][1]
            # A provider that takes no key is refused before a key is asked for.
            _, sent = await said(private, "/keys add nosuchprovider")
            assert "There is no provider 'nosuchprovider'" in sent[0][1]
            _, sent = await said(private, "a lighthouse at dusk")  # so this is a prompt, not a key
            assert "is queued" in sent[0][1] or "is ready" in sent[0][1]
            # In private: asked for, checked with OpenAI, stored, and the message holding it deleted.
            _, sent = await said(private, "/keys add openai")
            assert sent[0][1].startswith("Send me your API key in your next message")
            message, sent = await said(private, user_key)
            assert "Stored your openai key …LMNO" in sent[0][1]
            await tg.wait_until(lambda: (private["id"], message["message_id"]) in tg.deleted_messages, 5, "deleted")
            _, sent = await said(private, "/keys list")
            assert "…LMNO" in sent[0][1] and "active" in sent[0][1]
        finally:
            await telegram.close()
            await asyncio.wait_for(task, 10)
            await app.aclose()
    assert [r.headers["Authorization"] for r in openai.requests] == [f"Bearer {user_key}"]
    assert all(user_key not in text for text in tg.sent_texts())
    ours = [r for r in caplog.records if not r.name.startswith("aiohttp")]
    assert all(user_key not in r.getMessage() for r in ours)
