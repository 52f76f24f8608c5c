"""The Discord double against the real discord.py (no project code): proof that it is faithful.

discord.py is unmodified; :func:`use_double` only points ``Route.BASE`` and the default gateway URL
at the double. Clients use ``guild_ready_timeout`` 0.05 s so ``on_ready`` comes quickly.
"""

from __future__ import annotations

import asyncio
import io
import json
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import aiohttp
import discord
import pytest
from discord import app_commands

from tests.doubles.discord import (
    API,
    APPLICATION_ID,
    CHANNEL_ID,
    DEFERRED_CHANNEL_MESSAGE,
    DEFERRED_UPDATE,
    EPHEMERAL,
    GUILD_ID,
    LOADING,
    OTHER_USER_ID,
    SECOND_CHANNEL_ID,
    SECOND_GUILD_ID,
    USER_ID,
    VALID_TOKEN,
    DiscordState,
    make_guild,
    rate_limited,
    running_discord,
    shard_of,
    use_double,
)

PNG = b"\x89PNG\r\n\x1a\n" + bytes(range(256)) * 4  # binary, with CR/LF bytes inside


@pytest.fixture
async def double() -> AsyncIterator[tuple[DiscordState, str]]:
    state = DiscordState(shards=2, guilds=[
        make_guild(GUILD_ID, channel_ids=(CHANNEL_ID,)),
        make_guild(SECOND_GUILD_ID, name="Second", channel_ids=(SECOND_CHANNEL_ID,)),
    ])
    async with running_discord(state) as (state, base_url):
        with use_double(base_url):
            yield state, base_url


@pytest.fixture(autouse=True)
def no_discord_errors(caplog: pytest.LogCaptureFixture) -> Any:
    """discord.py logs (rather than raises) what it cannot parse: any such error fails the test."""
    yield
    errors = [r for r in caplog.records if r.name.startswith("discord") and r.levelno >= 40]
    assert not errors, [r.getMessage() for r in errors]


@pytest.fixture
def state(double: tuple[DiscordState, str]) -> DiscordState:
    return double[0]


class Upscale(discord.ui.DynamicItem[discord.ui.Button], template=r"upscale:(?P<job>\d+)"):
    """A persistent button whose custom id carries a job id."""

    clicked: list[int] = []

    def __init__(self, job: int) -> None:
        super().__init__(discord.ui.Button(label="Upscale", custom_id=f"upscale:{job}"))
        self.job = job

    @classmethod
    async def from_custom_id(cls, interaction: discord.Interaction, item: discord.ui.Button,
                             match: Any) -> Upscale:
        return cls(int(match["job"]))

    async def callback(self, interaction: discord.Interaction) -> None:
        Upscale.clicked.append(self.job)
        await interaction.response.defer()


class FastShardedClient(discord.AutoShardedClient):
    """discord.py sleeps 5 s before every IDENTIFY but the first (Discord's identify rate limit).

    The double has no such limit, so the wait is skipped to keep tests fast.
    """

    async def before_identify_hook(self, shard_id: int | None, *, initial: bool = False) -> None:
        pass


@dataclass
class Bot:
    """A discord.py client with a command tree, and what its commands saw."""

    client: discord.Client
    tree: app_commands.CommandTree
    seen: list[tuple[str, Any]] = field(default_factory=list)
    modal_sent: asyncio.Event = field(default_factory=asyncio.Event)
    handled: asyncio.Event = field(default_factory=asyncio.Event)
    task: asyncio.Task[None] | None = None

    def saw(self, name: str, value: Any) -> None:
        self.seen.append((name, value))
        self.handled.set()

    async def wait_seen(self, count: int = 1) -> None:
        async with asyncio.timeout(5):
            while len(self.seen) < count:
                self.handled.clear()
                await self.handled.wait()


def build_bot(client: discord.Client, *, label_modal: bool = False) -> Bot:
    tree = app_commands.CommandTree(client)
    bot = Bot(client, tree)
    client.add_dynamic_items(Upscale)

    @tree.command(description="Draw an image")
    async def imagine(interaction: discord.Interaction, prompt: str, count: int = 1) -> None:
        await interaction.response.defer(thinking=True)
        bot.saw("imagine", (prompt, count, interaction.guild_id, interaction.user.id))
        await interaction.edit_original_response(
            content="done", attachments=[discord.File(io.BytesIO(PNG), "a.png")])

    @tree.command(description="Say hello")
    async def hello(interaction: discord.Interaction) -> None:
        await interaction.response.send_message("hi")
        message = await interaction.followup.send("more", wait=True, ephemeral=True)
        bot.saw("hello", message.id)

    class Refine(discord.ui.Modal, title="Refine"):
        def __init__(self) -> None:
            super().__init__(custom_id="refine")
            prompt = discord.ui.TextInput(custom_id="prompt", label="Prompt")
            self.prompt = prompt
            self.add_item(discord.ui.Label(text="Prompt", component=prompt) if label_modal
                          else prompt)

        async def on_submit(self, interaction: discord.Interaction) -> None:
            bot.saw("refine", self.prompt.value)
            await interaction.response.send_message(f"got {self.prompt.value}", ephemeral=True)

    @tree.command(description="Refine a prompt")
    async def refine(interaction: discord.Interaction) -> None:
        await interaction.response.send_modal(Refine())
        bot.modal_sent.set()

    async def styles(interaction: discord.Interaction, current: str
                     ) -> list[app_commands.Choice[str]]:
        return [app_commands.Choice(name=s, value=s) for s in ("anime", "photo") if current in s]

    @tree.command(description="Pick a style")
    @app_commands.autocomplete(name=styles)
    async def style(interaction: discord.Interaction, name: str) -> None:
        await interaction.response.send_message(name)

    return bot


async def start(bot: Bot, state: DiscordState, shards: tuple[int, ...]) -> None:
    """Start the client and wait for on_ready (failing fast if start() dies)."""
    bot.task = asyncio.create_task(bot.client.start(VALID_TOKEN))
    identified = asyncio.ensure_future(state.wait_ready(shards))
    done, _ = await asyncio.wait({bot.task, identified}, timeout=5,
                                 return_when=asyncio.FIRST_COMPLETED)
    if bot.task in done:
        identified.cancel()
        bot.task.result()
        raise AssertionError("client.start returned before the gateway was ready")
    assert identified in done, "the client never identified"
    identified.result()
    await asyncio.wait_for(bot.client.wait_until_ready(), 5)


async def stop(bot: Bot) -> None:
    await bot.client.close()
    if bot.task is not None:
        await asyncio.wait_for(bot.task, 5)


@pytest.fixture
async def bot(state: DiscordState) -> AsyncIterator[Bot]:
    """An AutoShardedClient that asks /gateway/bot for its shard count (2) and URL."""
    Upscale.clicked = []
    client = FastShardedClient(intents=discord.Intents.default(),
                                       guild_ready_timeout=0.05)
    running = build_bot(client)
    await start(running, state, shards=(0, 1))
    try:
        yield running
    finally:
        await stop(running)


# -- startup ---------------------------------------------------------------------------------


async def test_sharded_client_logs_in_identifies_each_shard_and_sees_both_guilds(state, bot):
    routes = [c.route for c in state.calls]
    assert routes[:3] == ["get_me", "application_info", "get_gateway_bot"]
    identifies = [f["d"] for f in state.gateway_received if f["op"] == 2]
    assert sorted(tuple(d["shard"]) for d in identifies) == [(0, 2), (1, 2)]
    assert all(d["token"] == VALID_TOKEN and d["intents"] == discord.Intents.default().value
               for d in identifies)
    assert any(f["op"] == 1 for f in state.gateway_received)  # first heartbeat right after HELLO
    assert any(f["op"] == 11 for f in state.gateway_sent)

    client = bot.client
    assert client.user is not None and client.user.id == state.bot_user_id
    assert client.application_id == APPLICATION_ID
    assert {g.id for g in client.guilds} == {GUILD_ID, SECOND_GUILD_ID}
    assert client.get_guild(SECOND_GUILD_ID).shard_id == 1 == shard_of(SECOND_GUILD_ID, 2)
    channel = client.get_channel(CHANNEL_ID)
    assert isinstance(channel, discord.TextChannel) and channel.guild.id == GUILD_ID
    assert channel.permissions_for(channel.guild.me).send_messages


async def test_plain_client_connects_to_the_default_gateway_without_asking(state):
    client = discord.Client(intents=discord.Intents.default(), guild_ready_timeout=0.05)
    running = Bot(client, app_commands.CommandTree(client))
    await start(running, state, shards=(0,))
    try:
        assert not state.calls_to("get_gateway_bot")
        identify = next(f["d"] for f in state.gateway_received if f["op"] == 2)
        assert "shard" not in identify
        # A plain client owns every guild.
        assert {g.id for g in client.guilds} == {GUILD_ID, SECOND_GUILD_ID}

        # RECONNECT: discord.py closes and RESUMEs on the resume_gateway_url.
        resumed = asyncio.Event()
        client.event(_setter("on_resumed", resumed))
        await state.request_reconnect(0)
        await asyncio.wait_for(resumed.wait(), 5)
        resume = next(f["d"] for f in state.gateway_received if f["op"] == 6)
        [session] = state.sessions.values()
        assert (resume["session_id"], session.resumes) == (session.session_id, 1)
        assert resume["seq"] == 1 + len(state.guilds)  # READY and the GUILD_CREATEs
    finally:
        await stop(running)


def _setter(name: str, event: asyncio.Event) -> Any:
    async def handler(*_: Any) -> None:
        event.set()

    handler.__name__ = name
    return handler


async def test_privileged_intents_not_enabled_close_with_4014(state):
    state.privileged_intents = 0
    client = discord.Client(intents=discord.Intents.all())
    try:
        with pytest.raises(discord.PrivilegedIntentsRequired):
            await asyncio.wait_for(client.start(VALID_TOKEN), 5)
    finally:
        await client.close()


async def test_bad_token_fails_login(state):
    client = discord.Client(intents=discord.Intents.default())
    try:
        with pytest.raises(discord.LoginFailure):
            await asyncio.wait_for(client.start("not-a-token"), 5)
    finally:
        await client.close()
    assert state.calls_to("get_me")[0].status == 401


# -- commands and interactions ---------------------------------------------------------------


async def test_sync_then_deferred_command_edits_the_original_with_a_file(state, bot):
    synced = await bot.tree.sync()
    assert state.command_puts == 1
    assert {c["name"] for c in state.commands} == {"imagine", "hello", "refine", "style"}
    imagine = next(c for c in state.commands if c["name"] == "imagine")
    assert {o["name"]: o["type"] for o in imagine["options"]} == {"prompt": 3, "count": 4}
    assert {c.id for c in synced} == {int(c["id"]) for c in state.commands}

    payload = state.slash_command("imagine", {"prompt": "a fox", "count": 2},
                                  guild_id=SECOND_GUILD_ID)
    assert payload["data"]["id"] == imagine["id"]
    record = await state.dispatch_interaction(payload)
    assert record.shard_id == 1

    callback = await state.wait_for(lambda c: c.route == "interaction_callback")
    assert callback.payload == {"type": DEFERRED_CHANNEL_MESSAGE}
    assert callback.query == {"with_response": "1"} and callback.status == 200
    assert callback.at - record.dispatched_at < 3

    edit = await state.wait_for(lambda c: c.route == "edit_original")
    assert edit.status == 200
    assert edit.payload["content"] == "done"
    assert edit.payload["attachments"] == [{"id": 0, "filename": "a.png"}]
    assert [(f.field, f.filename, f.size) for f in edit.files] == [("files[0]", "a.png", len(PNG))]
    assert edit.files[0].content == PNG
    assert bot.seen == [("imagine", ("a fox", 2, SECOND_GUILD_ID, USER_ID))]

    message = state.messages[record.original_id]
    assert message["content"] == "done" and message["type"] == 20
    assert not message["flags"] & LOADING
    assert [a["filename"] for a in message["attachments"]] == ["a.png"]
    recorded = next(r for r in state.requests if r.method == "PATCH")
    assert recorded.json["content"] == "done"  # multipart payload_json, decoded

    # The attachment URL is served by the double's CDN.
    async with aiohttp.ClientSession() as session:
        async with session.get(message["attachments"][0]["url"]) as response:
            assert await response.read() == PNG


async def test_reply_then_followup_in_a_dm(state, bot):
    record = await state.dispatch_interaction(state.slash_command("hello"))
    followup = await state.wait_for(lambda c: c.route == "followup")
    assert followup.query["wait"] == "1" and followup.payload["content"] == "more"
    callback = state.calls_to("interaction_callback")[0]
    assert callback.payload["type"] == 4 and callback.payload["data"]["content"] == "hi"

    assert record.payload["context"] == 1 and "user" in record.payload
    original = state.messages[record.original_id]
    assert original["content"] == "hi"
    assert original["channel_id"] == str(state.dm_channel_id(USER_ID))
    [followup_id] = record.followup_ids
    assert state.messages[followup_id]["flags"] & EPHEMERAL
    await bot.wait_seen()
    assert bot.seen == [("hello", followup_id)]


async def test_autocomplete_answers_choices(state, bot):
    await bot.tree.sync()
    await state.dispatch_interaction(
        state.autocomplete("style", {"name": "ph"}, focused="name", guild_id=GUILD_ID))
    callback = await state.wait_for(lambda c: c.route == "interaction_callback")
    assert callback.payload == {"type": 8, "data": {"choices": [{"name": "photo",
                                                                 "value": "photo"}]}}


async def test_button_click_reaches_a_dynamic_item(state, bot):
    payload = state.button_click("upscale:42", guild_id=GUILD_ID)
    await state.dispatch_interaction(payload)
    callback = await state.wait_for(lambda c: c.route == "interaction_callback")
    assert callback.payload == {"type": DEFERRED_UPDATE}
    assert Upscale.clicked == [42]


@pytest.mark.parametrize("label_modal", [False, True], ids=["action-row", "label"])
async def test_modal_submit_reaches_the_modal(state, label_modal):
    client = FastShardedClient(intents=discord.Intents.default(),
                                       guild_ready_timeout=0.05)
    running = build_bot(client, label_modal=label_modal)
    await start(running, state, shards=(0, 1))
    try:
        await state.dispatch_interaction(state.slash_command("refine", guild_id=GUILD_ID))
        # The modal is routable only once discord.py has read the callback's answer.
        await asyncio.wait_for(running.modal_sent.wait(), 5)
        sent = state.calls_to("interaction_callback")[0].payload
        assert sent["type"] == 9 and sent["data"]["custom_id"] == "refine"
        assert sent["data"]["components"][0]["type"] == (18 if label_modal else 1)

        submit = state.modal_submit("refine", {"prompt": "a red fox"}, guild_id=GUILD_ID)
        row = submit["data"]["components"][0]
        assert row["type"] == (18 if label_modal else 1)
        record = await state.dispatch_interaction(submit)
        reply = await state.wait_for(lambda c: c.route == "interaction_callback"
                                     and c.params["interaction_id"] == str(record.id))
        assert reply.payload["data"]["content"] == "got a red fox"
        await running.wait_seen()
        assert running.seen == [("refine", "a red fox")]
    finally:
        await stop(running)


# -- channel messages and DMs ----------------------------------------------------------------


async def test_posting_where_forbidden_raises_missing_permissions(state, bot):
    channel = bot.client.get_channel(CHANNEL_ID)
    sent = await channel.send("hello", file=discord.File(io.BytesIO(PNG), "b.png"))
    assert state.messages[sent.id]["attachments"][0]["size"] == len(PNG)

    state.forbidden_channels.add(CHANNEL_ID)
    with pytest.raises(discord.Forbidden) as caught:
        await channel.send("hello")
    assert (caught.value.status, caught.value.code) == (403, 50013)
    assert caught.value.text == "Missing Permissions"


async def test_dm_to_a_user_with_closed_dms_raises(state, bot):
    friend = await bot.client.fetch_user(USER_ID)
    sent = await friend.send("your image is ready")
    assert state.messages[sent.id]["channel_id"] == str(state.dm_channel_id(USER_ID))

    state.closed_dms.add(OTHER_USER_ID)
    stranger = await bot.client.fetch_user(OTHER_USER_ID)
    with pytest.raises(discord.Forbidden) as caught:
        await stranger.send("hi")
    assert caught.value.code == 50007


async def test_scripted_rate_limit_is_retried_by_discord_py(state, bot):
    state.fail_next.append(rate_limited(0.05))
    sent = await bot.client.get_channel(CHANNEL_ID).send("after a 429")
    assert [c.route for c in state.calls].count("create_message") == 1
    assert state.messages[sent.id]["content"] == "after a 429"
    assert [r.path for r in state.requests][-2:] == [f"{API}/channels/{CHANNEL_ID}/messages"] * 2


# -- raw protocol checks ---------------------------------------------------------------------


async def test_raw_http_rules(double):
    state, base_url = double
    auth = {"Authorization": f"Bot {VALID_TOKEN}"}
    async with aiohttp.ClientSession(base_url) as http:
        async with http.get(f"{API}/users/@me") as response:
            assert response.status == 401
            assert await response.json() == {"message": "401: Unauthorized", "code": 0}
        async with http.get(f"{API}/users/@me", headers=auth) as response:
            assert response.status == 200
            assert int(response.headers["X-RateLimit-Remaining"]) > 0
            assert "X-RateLimit-Bucket" in response.headers
        async with http.get(f"{API}/guilds/1/bans", headers=auth) as response:
            assert response.status == 404
            assert await response.json() == {"message": "404: Not Found", "code": 0}
        assert state.calls_to("unknown")[0].path == f"{API}/guilds/1/bans"

        async with http.post(f"{API}/interactions/123/nope/callback", json={"type": 5}) as r:
            assert (r.status, (await r.json())["code"]) == (404, 10062)

        # Interactions are registered on dispatch; a second answer is refused.
        payload = state.slash_command("imagine", {"prompt": "x"})
        state.register_interaction(payload)
        callback = f"{API}/interactions/{payload['id']}/{payload['token']}/callback"
        async with http.post(callback, json={"type": 5}) as response:
            assert response.status == 204  # without with_response
        async with http.post(callback, json={"type": 4, "data": {"content": "x"}}) as response:
            assert response.status == 400
            assert await response.json() == {
                "message": "Interaction has already been acknowledged.", "code": 40060}

        webhook = f"{API}/webhooks/{APPLICATION_ID}/{payload['token']}"
        form = aiohttp.FormData(quote_fields=False)
        form.add_field("payload_json", json.dumps({"content": "with file"}))
        form.add_field("files[0]", PNG, filename="c.png", content_type="application/octet-stream")
        async with http.post(webhook, data=form, params={"wait": "true"}) as response:
            assert response.status == 200
            body = await response.json()
        # The first followup after a "thinking" defer replaces the loading message.
        assert body["id"] == str(state.interactions[int(payload["id"])].original_id)
        assert body["attachments"][0]["filename"] == "c.png"

        state.expired_tokens.add(payload["token"])
        async with http.patch(f"{webhook}/messages/@original", json={"content": "y"}) as r:
            assert r.status == 401
            assert await r.json() == {"message": "Invalid Webhook Token", "code": 50027}

        # Discord forgets an interaction not answered within 3 s.
        late = state.slash_command("imagine", {"prompt": "x"})
        state.register_interaction(late).dispatched_at -= 3.5
        async with http.post(f"{API}/interactions/{late['id']}/{late['token']}/callback",
                             json={"type": 5}) as response:
            assert (response.status, (await response.json())["code"]) == (404, 10062)


async def test_gateway_rejects_a_wrong_identify_token(double):
    state, base_url = double
    async with aiohttp.ClientSession() as http:
        url = base_url.replace("http", "ws") + "/gateway?v=10&encoding=json"
        async with http.ws_connect(url) as ws:
            hello = await ws.receive_json(timeout=2)
            assert hello["op"] == 10
            assert hello["d"]["heartbeat_interval"] == state.heartbeat_interval_ms
            await ws.send_json({"op": 2, "d": {"token": "wrong", "intents": 0,
                                               "properties": {}}})
            closing = await ws.receive(timeout=2)
            assert closing.type is aiohttp.WSMsgType.CLOSE
            assert ws.close_code == 4004 or closing.data == 4004
