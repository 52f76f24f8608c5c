"""Prompts full of mentions ping nobody on Discord (issue 15 item 10).

Real discord.py, our bot and core, the loopback Discord: a prompt carrying a user mention, a
role mention and @everyone is echoed in progress edits, results, follow-ups, channel posts and
gallery posts. Each of those messages must go out with ``allowed_mentions`` parsing nothing from
the content and listing at most the requester (Discord API: Allowed Mentions Object); the double
resolves who each message would really notify (:func:`tests.doubles.discord.resolve_mentions`).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest

from studiobot.config import Settings
from tests.adapters.test_discord_bot import Harness
from tests.doubles.discord import (
    API,
    CHANNEL_ID,
    GUILD_ID,
    MANAGE_GUILD,
    MEMBER_PERMISSIONS,
    OTHER_USER_ID,
    SECOND_CHANNEL_ID,
    USER_ID,
    VALID_TOKEN,
    DiscordCall,
    DiscordState,
    make_guild,
    running_discord,
    use_double,
)

ROLE_ID = 1_400_000_000_000_000_001
HOSTILE = f"<@{OTHER_USER_ID}> <@&{ROLE_ID}> @everyone"
PROMPT = f"a fox for {HOSTILE}"
MANAGER = str(int(MEMBER_PERMISSIONS) | MANAGE_GUILD)
#: Routes whose body is a message (the callback only when it carries one).
MESSAGE_ROUTES = {"interaction_callback", "edit_original", "followup", "edit_followup",
                  "create_message", "edit_message"}


@pytest.fixture
async def bot(make_settings: Callable[..., Settings], database_url: str) -> AsyncIterator[Harness]:
    guild = make_guild(GUILD_ID, channel_ids=(CHANNEL_ID, SECOND_CHANNEL_ID))
    async with running_discord(DiscordState(guilds=[guild])) as (state, base_url):
        with use_double(base_url):
            settings = make_settings(
                database_url=database_url, discord_token=VALID_TOKEN, discord_api_base=base_url + API,
                offline_delay_s=3.5, poll_backoff_max_s=0.2,  # slow enough for progress edits
            )
            async with Harness(state, settings).running() as harness:
                yield harness


def checked_messages(calls: list[DiscordCall], requester: int) -> Counter[str]:
    """Assert every message body sent parses no mention and names at most ``requester``, and
    pings nobody else; return, by route, how many of them echoed the hostile mentions."""
    echoed: Counter[str] = Counter()
    for call in calls:
        body = call.message_body
        if call.route not in MESSAGE_ROUTES or body is None or "content" not in body:
            continue  # defers and deletes carry no message
        allowed = call.allowed_mentions
        assert allowed is not None, (call.route, body.get("content"))
        assert allowed.get("parse") == [] and not allowed.get("roles"), (call.route, allowed)
        assert {str(u) for u in allowed.get("users") or []} <= {str(requester)}, (call.route, allowed)
        pings = call.pings
        assert set(pings.users) <= {str(requester)} and pings.roles == () and not pings.everyone, call.route
        if HOSTILE in (body.get("content") or ""):
            echoed[call.route] += 1
    return echoed


def pinged_in_messages(state: DiscordState) -> set[str]:
    """Every user id the double's stored messages mention (after the last edit of each)."""
    for message in state.messages.values():
        assert message["mention_roles"] == [] and message["mention_everyone"] is False
    return {u["id"] for m in state.messages.values() for u in m["mentions"]}


async def test_responses_progress_edits_and_followups_echo_a_prompt_without_pinging(bot: Harness) -> None:
    state = bot.state
    sent = await bot.interact(state.slash_command("imagine", {"prompt": PROMPT}, guild_id=GUILD_ID))
    await bot.final_edit(sent)
    result: dict[str, Any] = state.messages[sent.original_id]
    assert result["embeds"][0]["description"] == PROMPT  # echoed as sent (embeds never ping)
    click = await bot.interact(state.button_click("sb:reroll 1", result, guild_id=GUILD_ID))
    await bot.followup_result(click)
    shown = await bot.interact(state.slash_command("job", {"job_id": 1}, guild_id=GUILD_ID))
    await bot.call("edit_original", lambda c: c.params.get("token") == shown.token)

    echoed = checked_messages(state.calls, USER_ID)
    # The prompt really was echoed in content on each kind of message the bot sends here.
    assert echoed["edit_original"] >= 2 and echoed["followup"] + echoed["edit_followup"] >= 1, echoed
    assert pinged_in_messages(state) == set()


async def test_channel_posts_ping_only_the_requester_and_gallery_posts_nobody(bot: Harness) -> None:
    state = bot.state
    chosen = await bot.interact(state.slash_command(
        "mod", {"action": "channel", "target": "set"}, user_id=OTHER_USER_ID, guild_id=GUILD_ID,
        channel_id=SECOND_CHANNEL_ID, permissions=MANAGER))
    await state.wait_for(lambda c: c.route in ("edit_original", "followup")
                         and c.params.get("token") == chosen.token)
    sent = await bot.interact(state.slash_command("imagine", {"prompt": PROMPT}, guild_id=GUILD_ID))
    await bot.call("edit_original", lambda c: c.params.get("token") == sent.token)
    state.expired_tokens.add(sent.token)  # as if 15 minutes had passed: the result is posted
    post = await bot.call("create_message", lambda c: c.params.get("channel_id") == str(CHANNEL_ID))
    assert post.payload["content"].startswith(f"<@{USER_ID}> ")
    assert post.pings.users == (str(USER_ID),)  # the requester is still told

    result = next(m for m in state.messages.values()
                  if m["channel_id"] == str(CHANNEL_ID) and m["content"] == post.payload["content"])
    share = await bot.interact(state.button_click("sb:share 1", result, guild_id=GUILD_ID))
    await bot.call("followup", lambda c: c.params.get("token") == share.token)
    gallery = await bot.call("create_message", lambda c: c.params.get("channel_id") == str(SECOND_CHANNEL_ID))
    assert HOSTILE in gallery.payload["content"]
    assert gallery.pings.users == () and gallery.allowed_mentions == {"parse": []}

    echoed = checked_messages(state.calls, USER_ID)
    assert echoed["create_message"] >= 1 and echoed["edit_original"] >= 1, echoed
    assert pinged_in_messages(state) == {str(USER_ID)}
