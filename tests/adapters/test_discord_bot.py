"""The Discord adapter end to end: real discord.py, our bot and core, a loopback Discord.

Each test starts ``run_platforms`` (what ``studiobot run`` runs with a Discord token) against the
double, drives real interaction payloads through its gateway and asserts what the bot sent back.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest

from studiobot.app import build_app, run_platforms, run_worker
from studiobot.commands import COMMANDS
from studiobot.commands.contract import ChatRef, UserRef
from studiobot.config import Settings
from tests.adapters.stored import community_names
from tests.doubles.discord import (
    API,
    CHANNEL_ID,
    DEFERRED_CHANNEL_MESSAGE,
    DEFERRED_UPDATE,
    EPHEMERAL,
    GUILD_ID,
    OTHER_USER_ID,
    USER_ID,
    VALID_TOKEN,
    DiscordCall,
    DiscordState,
    SentInteraction,
    running_discord,
    use_double,
)

MANAGE_GUILD = 1 << 5
PLAIN_MEMBER = str(int("2248473465835073") & ~MANAGE_GUILD)


class Harness:
    """One loopback Discord plus a bot process (in this event loop) that can be restarted."""

    def __init__(self, state: DiscordState, settings: Settings) -> None:
        self.state = state
        self.settings = settings
        self._stop: asyncio.Event | None = None
        self._task: asyncio.Task[None] | None = None

    async def start(self, **overrides: Any) -> None:
        settings = self.settings.model_copy(update=overrides) if overrides else self.settings
        sessions = len(self.state.sessions)
        self._stop = asyncio.Event()
        self._task = asyncio.create_task(run_platforms(settings, stop=self._stop))
        await self.state.wait_until(
            lambda: self._task.done() or len(self.state.sessions) > sessions, 10, "a gateway session"
        )
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

    async def interact(self, payload: dict[str, Any]) -> SentInteraction:
        return await self.state.dispatch_interaction(payload)

    async def call(self, route: str, check: Callable[[DiscordCall], bool] = lambda c: True,
                   timeout: float = 10.0) -> DiscordCall:
        return await self.state.wait_for(lambda c: c.route == route and check(c), timeout)

    def calls(self, route: str, token: str | None = None) -> list[DiscordCall]:
        return [c for c in self.state.calls_to(route)
                if token is None or c.params.get("token") == token]

    async def final_edit(self, sent: SentInteraction, timeout: float = 10.0) -> DiscordCall:
        """The edit of the original response that carries a file (a finished job)."""
        return await self.call("edit_original", lambda c: c.params.get("token") == sent.token
                               and bool(c.files), timeout)

    async def followup_result(self, click: SentInteraction, timeout: float = 10.0) -> DiscordCall:
        """A button's follow-up edited into a finished job (or sent finished)."""
        return await self.call(
            "edit_followup", lambda c: c.params.get("token") == click.token and bool(c.files), timeout
        )


@pytest.fixture
async def discord_bot(make_settings: Callable[..., Settings], database_url: str) -> AsyncIterator[Harness]:
    async with running_discord(DiscordState()) as (state, base_url):
        with use_double(base_url):
            settings = make_settings(
                database_url=database_url, discord_token=VALID_TOKEN, discord_api_base=base_url + API,
            )
            async with Harness(state, settings).running() as harness:
                yield harness


def custom_ids(message: dict[str, Any]) -> list[str]:
    return [c["custom_id"] for row in message.get("components", []) for c in row["components"]]


async def imagine(bot: Harness, **options: Any) -> tuple[SentInteraction, DiscordCall]:
    sent = await bot.interact(bot.state.slash_command("imagine", options, guild_id=GUILD_ID))
    return sent, await bot.final_edit(sent)


async def test_slash_commands_are_generated_from_the_command_table_and_synced_once(
    discord_bot: Harness,
) -> None:
    state = discord_bot.state
    assert state.command_puts == 1
    assert sorted(c["name"] for c in state.commands) == sorted(spec.name for spec in COMMANDS)
    imagine_cmd = next(c for c in state.commands if c["name"] == "imagine")
    options = {o["name"]: o for o in imagine_cmd["options"]}
    assert options["prompt"]["required"] is True and options["prompt"]["type"] == 3
    assert (options["count"]["type"], options["count"]["min_value"], options["count"]["max_value"]) == (4, 1, 4)
    assert options["aspect"]["autocomplete"] is True and options["provider"]["autocomplete"] is True
    assert imagine_cmd["contexts"] == [0, 1]
    share_cmd = next(c for c in state.commands if c["name"] == "share")
    assert share_cmd["contexts"] == [0]  # only in a server
    await discord_bot.stop()
    await discord_bot.start()
    assert state.command_puts == 1  # unchanged command set: no second upload after a restart


async def test_imagine_defers_at_once_then_edits_in_the_result_with_embed_file_and_buttons(
    discord_bot: Harness,
) -> None:
    sent, final = await imagine(discord_bot, prompt="a lighthouse at dusk", count=2)
    assert sent.response_type == DEFERRED_CHANNEL_MESSAGE
    assert sent.responded_at - sent.dispatched_at < 3.0
    assert not (sent.response or {}).get("data", {}).get("flags", 0) & EPHEMERAL
    (file,) = final.files
    assert file.filename == "1-grid.jpg" and file.content[:3] == b"\xff\xd8\xff"
    (embed,) = final.payload["embeds"]
    assert embed["title"] == "Job #1" and embed["description"] == "a lighthouse at dusk"
    fields = {f["name"]: f["value"] for f in embed["fields"]}
    assert fields["Provider"] == "offline" and fields["Cost"] == "2 credits" and "," in fields["Seeds"]
    assert embed["image"]["url"] == "attachment://1-grid.jpg"
    message = discord_bot.state.messages[sent.original_id]
    assert custom_ids(message) == [
        "sb:upscale 1 1", "sb:upscale 1 2", "sb:vary 1 1", "sb:vary 1 2",
        "sb:reroll 1", "sb:favorite 1", "sb:share 1", "sb:delete 1",
    ]
    rows = [[c["custom_id"] for c in row["components"]] for row in message["components"]]
    assert rows[0] == ["sb:upscale 1 1", "sb:upscale 1 2"] and rows[1] == ["sb:vary 1 1", "sb:vary 1 2"]
    assert (await community_names(discord_bot.settings.database_url))[str(GUILD_ID)] == "Test Guild"


async def test_progress_edits_the_response_at_most_every_3_seconds_and_only_on_change(
    discord_bot: Harness,
) -> None:
    await discord_bot.stop()
    await discord_bot.start(offline_delay_s=4.0, poll_backoff_max_s=0.2)
    sent = await discord_bot.interact(
        discord_bot.state.slash_command("imagine", {"prompt": "a slow sunrise"}, guild_id=GUILD_ID)
    )
    await discord_bot.final_edit(sent, timeout=15)
    edits = discord_bot.calls("edit_original", sent.token)
    progress = [e for e in edits if "%" in (e.payload or {}).get("content", "")]
    assert progress, [e.payload.get("content") for e in edits]
    assert all("[" in p.payload["content"] and "a slow sunrise" in p.payload["content"] for p in progress)
    assert all(custom_ids(p.payload) == ["sb:cancel 1"] for p in progress)
    for earlier, later in zip(progress, progress[1:]):
        assert later.at - earlier.at >= 2.9 and later.payload["content"] != earlier.payload["content"]
    assert edits[-1].files  # the result came last; no progress edit covered it


async def test_private_answers_are_ephemeral(discord_bot: Harness) -> None:
    sent = await discord_bot.interact(discord_bot.state.slash_command("credits", {}, guild_id=GUILD_ID))
    edit = await discord_bot.call("edit_original", lambda c: c.params.get("token") == sent.token)
    assert sent.response["data"]["flags"] & EPHEMERAL
    assert "50 credits" in edit.payload["content"]


async def test_an_error_under_a_public_defer_becomes_an_ephemeral_followup_and_costs_nothing(
    discord_bot: Harness,
) -> None:
    sent = await discord_bot.interact(discord_bot.state.slash_command(
        "imagine", {"prompt": "a fox", "provider": "nonesuch"}, guild_id=GUILD_ID))
    followup = await discord_bot.call("followup", lambda c: c.params.get("token") == sent.token)
    assert followup.payload["flags"] & EPHEMERAL
    assert "Unknown provider 'nonesuch'" in followup.payload["content"]
    assert discord_bot.calls("delete_original", sent.token)  # the public "thinking" message is gone
    credits = await discord_bot.interact(discord_bot.state.slash_command("credits", {}, guild_id=GUILD_ID))
    edit = await discord_bot.call("edit_original", lambda c: c.params.get("token") == credits.token)
    assert "50 credits" in edit.payload["content"]


async def test_autocomplete_offers_configured_providers_and_their_aspect_ratios(discord_bot: Harness) -> None:
    state = discord_bot.state
    sent = await discord_bot.interact(state.autocomplete("imagine", {"prompt": "x", "provider": "off"},
                                                         "provider", guild_id=GUILD_ID))
    await state.wait_until(lambda: sent.response is not None, 5, "autocomplete answer")
    assert [c["value"] for c in sent.response["data"]["choices"]] == ["offline"]
    sent = await discord_bot.interact(state.autocomplete("imagine", {"prompt": "x", "aspect": "16"},
                                                         "aspect", guild_id=GUILD_ID))
    await state.wait_until(lambda: sent.response is not None, 5, "autocomplete answer")
    assert [c["value"] for c in sent.response["data"]["choices"]] == ["16:9"]


async def test_result_buttons_work_for_the_owner_and_refuse_anyone_else(discord_bot: Harness) -> None:
    state = discord_bot.state
    first, _ = await imagine(discord_bot, prompt="a red fox", count=2)
    message = state.messages[first.original_id]
    click = await discord_bot.interact(state.button_click("sb:upscale 1 2", message, guild_id=GUILD_ID))
    queued = await discord_bot.call("followup", lambda c: c.params.get("token") == click.token)
    assert click.response_type == DEFERRED_UPDATE  # no loading message: the follow-up answers
    assert not queued.payload.get("flags", 0) & EPHEMERAL
    assert "Upscale of job #1 image 2" in queued.payload["content"]
    upscaled = await discord_bot.followup_result(click)
    assert upscaled.payload["embeds"][0]["title"] == "Job #2"
    stranger = await discord_bot.interact(
        state.button_click("sb:vary 1 1", message, guild_id=GUILD_ID, user_id=OTHER_USER_ID))
    refusal = await discord_bot.call("followup", lambda c: c.params.get("token") == stranger.token)
    assert refusal.payload["flags"] & EPHEMERAL and refusal.payload["content"] == "Job #1 is not one of yours."
    assert not [c for c in discord_bot.calls("edit_original", stranger.token) if c.files]


async def test_buttons_still_work_after_a_restart(discord_bot: Harness) -> None:
    state = discord_bot.state
    first, _ = await imagine(discord_bot, prompt="a paper crane")
    message = state.messages[first.original_id]
    await discord_bot.stop()
    await discord_bot.start()
    click = await discord_bot.interact(state.button_click("sb:reroll 1", message, guild_id=GUILD_ID))
    result = await discord_bot.followup_result(click)
    assert result.payload["embeds"][0]["title"] == "Job #2"


async def test_delete_replaces_the_result_message_for_the_owner_or_an_admin(discord_bot: Harness) -> None:
    state = discord_bot.state
    first, _ = await imagine(discord_bot, prompt="a secret")
    message = state.messages[first.original_id]
    refused = await discord_bot.interact(state.button_click(
        "sb:delete 1", message, guild_id=GUILD_ID, user_id=OTHER_USER_ID, permissions=PLAIN_MEMBER))
    await discord_bot.call("followup", lambda c: c.params.get("token") == refused.token)
    assert state.messages[first.original_id]["attachments"]
    admin = await discord_bot.interact(state.button_click(
        "sb:delete 1", message, guild_id=GUILD_ID, user_id=OTHER_USER_ID,
        permissions=str(int(PLAIN_MEMBER) | MANAGE_GUILD)))
    edit = await discord_bot.call("edit_original", lambda c: c.params.get("token") == admin.token)
    assert edit.payload["content"] == "Deleted the images of job #1."
    assert edit.payload["attachments"] == [] and edit.payload["embeds"] == []
    assert edit.payload["components"] == []
    assert not state.messages[first.original_id]["attachments"]


async def test_after_the_token_expires_the_result_is_posted_in_the_channel_mentioning_the_user(
    discord_bot: Harness,
) -> None:
    state = discord_bot.state
    await discord_bot.stop()
    await discord_bot.start(offline_delay_s=1.0, poll_backoff_max_s=0.2)
    sent = await discord_bot.interact(state.slash_command("imagine", {"prompt": "a late owl"}, guild_id=GUILD_ID))
    await discord_bot.call("edit_original", lambda c: c.params.get("token") == sent.token)
    state.expired_tokens.add(sent.token)  # as if 15 minutes had passed
    post = await discord_bot.call("create_message", lambda c: c.params.get("channel_id") == str(CHANNEL_ID))
    assert post.payload["content"].startswith(f"<@{USER_ID}> Job #1")
    assert post.pings.users == (str(USER_ID),) and post.allowed_mentions["parse"] == []  # only the requester
    assert post.files and custom_ids(post.payload)[0] == "sb:upscale 1 1"


async def test_when_the_channel_refuses_the_result_goes_by_direct_message(discord_bot: Harness) -> None:
    state = discord_bot.state
    await discord_bot.stop()
    await discord_bot.start(offline_delay_s=1.0, poll_backoff_max_s=0.2)
    state.forbidden_channels.add(CHANNEL_ID)
    sent = await discord_bot.interact(state.slash_command("imagine", {"prompt": "a shy cat"}, guild_id=GUILD_ID))
    await discord_bot.call("edit_original", lambda c: c.params.get("token") == sent.token)
    state.expired_tokens.add(sent.token)
    await discord_bot.call("create_dm")
    dm = await discord_bot.call("create_message", lambda c: c.params.get("channel_id") == str(state.dm_channel_id(USER_ID)))
    assert dm.payload["content"].startswith("Job #1") and dm.files


async def test_shards_come_from_settings_so_processes_can_split_them(
    make_settings: Callable[..., Settings], database_url: str
) -> None:
    async with running_discord(DiscordState(shards=2)) as (state, base_url):
        with use_double(base_url):
            settings = make_settings(
                database_url=database_url, discord_token=VALID_TOKEN, discord_api_base=base_url + API,
                discord_shard_count=2, discord_shard_ids=(1,),
            )
            harness = Harness(state, settings)
            await harness.start()
            try:
                await state.wait_ready(shards=(1,))
                identify = [f["d"] for f in state.gateway_received if f.get("op") == 2]
                assert [i["shard"] for i in identify] == [[1, 2]]
                assert identify[0]["intents"] & (1 << 1 | 1 << 8 | 1 << 15) == 0  # no privileged intents
            finally:
                await harness.stop()


async def test_a_worker_without_a_gateway_delivers_results_over_rest(
    make_settings: Callable[..., Settings], database_url: str
) -> None:
    async with running_discord(DiscordState()) as (state, base_url):
        with use_double(base_url):
            settings = make_settings(
                database_url=database_url, discord_token=VALID_TOKEN, discord_api_base=base_url + API,
            )
            # A bot process accepts the command, then stops before the job runs...
            front = await build_app(settings, {})
            chat = ChatRef("discord", str(CHANNEL_ID), "guild_channel", str(GUILD_ID), reply_to="42")
            _, reply = await front.dispatcher.dispatch_text(
                UserRef("discord", str(USER_ID), "ada"), chat, "/imagine a lighthouse", "42")
            await front.aclose()
            assert reply.data["status"] == "queued"
            # ...and a worker process (REST only) makes it and posts the result.
            stop = asyncio.Event()
            worker = asyncio.create_task(run_worker(settings, stop=stop))
            try:
                post = await state.wait_for(lambda c: c.route == "create_message", timeout=15)
            finally:
                stop.set()
                await asyncio.wait_for(worker, 10)
            assert post.payload["content"].startswith(f"<@{USER_ID}> Job #1")
            assert post.files and not state.sessions  # never opened a gateway connection


async def test_a_result_over_the_upload_limit_is_sent_as_a_smaller_preview(discord_bot: Harness) -> None:
    await discord_bot.stop()
    await discord_bot.start(offline_size=1024)
    limit = 24_000
    sent = await discord_bot.interact(discord_bot.state.slash_command(
        "imagine", {"prompt": "a detailed city at night", "count": 4}, guild_id=GUILD_ID,
        attachment_size_limit=limit))
    final = await discord_bot.final_edit(sent)
    (file,) = final.files
    assert file.filename == "1-grid-preview.jpg" and file.size <= limit
    assert final.payload["embeds"][0]["image"]["url"] == "attachment://1-grid-preview.jpg"
