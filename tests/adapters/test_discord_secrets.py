"""Secret parameters (API keys) on Discord: asked for in a modal, answered ephemerally, never echoed.

The adapter is generic over the command table; this test gives it one extra command with a secret
parameter (the shape ``/keys add`` has), so the modal path is proven on its own.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable

import pytest

from studiobot.app import build_app
from studiobot.bot.discord.client import StudioBot, use_api_base
from studiobot.bot.discord.interactions import InteractionRegistry
from studiobot.bot.discord.outbox import DiscordOutbox
from studiobot.commands import COMMANDS
from studiobot.commands.dispatcher import Dispatcher
from studiobot.config import Settings
from tests.adapters.secret_command import KEY_COMMAND, SECRET, received
from tests.doubles.discord import (
    API,
    DEFERRED_CHANNEL_MESSAGE,
    EPHEMERAL,
    GUILD_ID,
    MODAL,
    VALID_TOKEN,
    DiscordState,
    running_discord,
    use_double,
)



async def test_a_secret_is_asked_in_a_modal_and_never_shown_or_logged(
    make_settings: Callable[..., Settings], database_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    received.clear()
    async with running_discord(DiscordState()) as (state, base_url):
        with use_double(base_url):
            settings = make_settings(database_url=database_url, discord_token=VALID_TOKEN,
                                     discord_api_base=base_url + API)
            use_api_base(settings.discord_api_base)
            interactions = InteractionRegistry()
            bot = StudioBot(interactions)
            app = await build_app(settings, {"discord": DiscordOutbox(bot, interactions)})
            bot.attach(Dispatcher((*COMMANDS, KEY_COMMAND), app.dispatcher.deps), app.db)
            task = asyncio.create_task(bot.start(VALID_TOKEN))
            try:
                await state.wait_ready(shards=(0,))
                registered = next(c for c in state.commands if c["name"] == "remember")
                assert [o["name"] for o in registered["options"]] == ["provider"]  # no key option
                sent = await state.dispatch_interaction(
                    state.slash_command("remember", {"provider": "openai"}, guild_id=GUILD_ID))
                await state.wait_until(lambda: sent.response_type is not None, 5, "the modal")
                assert sent.response_type == MODAL
                modal = sent.response["data"]
                assert modal["title"] == "/remember"
                await asyncio.sleep(0.05)  # discord.py registers the modal after the callback answer
                submit = await state.dispatch_interaction(state.modal_submit(
                    modal["custom_id"], {"secret:key": SECRET}, guild_id=GUILD_ID))
                edit = await state.wait_for(lambda c: c.route == "edit_original"
                                            and c.params.get("token") == submit.token)
                assert submit.response_type == DEFERRED_CHANNEL_MESSAGE
                assert submit.response["data"]["flags"] & EPHEMERAL
                assert edit.payload["content"] == "Stored your openai key ending in 6789."
                assert received == [SECRET]
            finally:
                await bot.close()
                await asyncio.wait_for(task, 10)
                await app.aclose()
    sent_bodies = b"".join(r.body for r in state.requests)
    assert SECRET.encode() not in sent_bodies  # never in anything the bot sent to Discord
    assert SECRET not in caplog.text


async def test_the_real_keys_command_opens_a_modal_only_to_add(
    make_settings: Callable[..., Settings], database_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    from studiobot.vault.cipher import new_master_key
    from tests.doubles.openai_images import OpenAIState, make_openai_app
    from tests.doubles.server import serve

    caplog.set_level(logging.DEBUG)
    user_key = "sk-proj-DiscordUsersKey0123456789abcdefghijkLMNO"
    openai = OpenAIState(valid_keys={user_key})
    async with running_discord(DiscordState()) as (state, base_url), serve(make_openai_app(openai)) as openai_url:
        with use_double(base_url):
            settings = make_settings(database_url=database_url, discord_token=VALID_TOKEN,
                                     discord_api_base=base_url + API, openai_base_url=openai_url,
                                     master_keys=new_master_key().decode())
            use_api_base(settings.discord_api_base)
            interactions = InteractionRegistry()
            bot = StudioBot(interactions)
            app = await build_app(settings, {"discord": DiscordOutbox(bot, interactions)})
            bot.attach(app.dispatcher, app.db)
            task = asyncio.create_task(bot.start(VALID_TOKEN))
            try:
                await state.wait_ready(shards=(0,))
                registered = next(c for c in state.commands if c["name"] == "keys")
                assert [o["name"] for o in registered["options"]] == ["action", "provider", "label"]
                listing = await state.dispatch_interaction(
                    state.slash_command("keys", {"action": "list"}, guild_id=GUILD_ID))
                edit = await state.wait_for(lambda c: c.route == "edit_original"
                                            and c.params.get("token") == listing.token)
                assert listing.response_type == DEFERRED_CHANNEL_MESSAGE  # no modal to list
                assert listing.response["data"]["flags"] & EPHEMERAL
                assert "You have no API keys" in edit.payload["content"]
                # A provider that takes no key: refused at once, no modal asking for one.
                wrong = await state.dispatch_interaction(
                    state.slash_command("keys", {"action": "add", "provider": "nosuchprovider"}, guild_id=GUILD_ID))
                edit = await state.wait_for(lambda c: c.route == "edit_original"
                                            and c.params.get("token") == wrong.token)
                assert wrong.response_type == DEFERRED_CHANNEL_MESSAGE
                assert wrong.response["data"]["flags"] & EPHEMERAL
                assert "There is no provider 'nosuchprovider'" in edit.payload["content"]
                adding = await state.dispatch_interaction(
                    state.slash_command("keys", {"action": "add", "provider": "openai"}, guild_id=GUILD_ID))
                await state.wait_until(lambda: adding.response_type is not None, 5, "the modal")
                assert adding.response_type == MODAL
                await asyncio.sleep(0.05)  # discord.py registers the modal after the callback answer
                submit = await state.dispatch_interaction(state.modal_submit(
                    adding.response["data"]["custom_id"], {"secret:key": user_key}, guild_id=GUILD_ID))
                edit = await state.wait_for(lambda c: c.route == "edit_original"
                                            and c.params.get("token") == submit.token)
                assert submit.response["data"]["flags"] & EPHEMERAL
                assert "Stored your openai key …LMNO" in edit.payload["content"]
            finally:
                await bot.close()
                await asyncio.wait_for(task, 10)
                await app.aclose()
    assert [r.headers["Authorization"] for r in openai.requests] == [f"Bearer {user_key}"]
    assert user_key.encode() not in b"".join(r.body for r in state.requests)
    assert user_key not in caplog.text
