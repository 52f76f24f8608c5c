"""Galleries and moderation on Discord: real discord.py, our bot and core, the loopback Discord.

Each test starts ``run_platforms`` against the double (REST and gateway), drives interaction
payloads as Discord sends them and reads what the bot made of them: messages, attachments,
buttons and select menus, as the double holds them after every edit.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest
from sqlalchemy import update
from sqlalchemy.engine import Connection

from studiobot.bot.discord.components import action_view
from studiobot.commands.contract import Button, Menu
from studiobot.config import Settings
from studiobot.db.engine import Database
from studiobot.db.models import Asset
from tests.adapters.test_discord_bot import Harness, custom_ids
from tests.doubles.discord import (
    ADMINISTRATOR,
    API,
    CHANNEL_ID,
    EPHEMERAL,
    GUILD_ID,
    MANAGE_GUILD,
    MEMBER_PERMISSIONS,
    OTHER_USER_ID,
    SECOND_CHANNEL_ID,
    USER_ID,
    VALID_TOKEN,
    DiscordCall,
    DiscordState,
    SentInteraction,
    components_problem,
    make_guild,
    running_discord,
    use_double,
    user_object,
)

NSFW_CHANNEL_ID = 1_300_000_000_000_000_003  # an age-restricted channel (Discord's nsfw flag)
THIRD_USER_ID = 1_333_333_333_333_333_333
ADMIN = str(int(MEMBER_PERMISSIONS) | ADMINISTRATOR)
MANAGER = str(int(MEMBER_PERMISSIONS) | MANAGE_GUILD)
JPEG, PNG = b"\xff\xd8\xff", b"\x89PNG\r\n\x1a\n"
PAGE_SIZE = 2


def _guild() -> dict[str, Any]:
    guild = make_guild(GUILD_ID, channel_ids=(CHANNEL_ID, SECOND_CHANNEL_ID, NSFW_CHANNEL_ID))
    guild["channels"][2]["nsfw"] = True
    return guild


@pytest.fixture
async def bot(make_settings: Callable[..., Settings], database_url: str) -> AsyncIterator[Harness]:
    async with running_discord(DiscordState(guilds=[_guild()])) as (state, base_url):
        with use_double(base_url):
            settings = make_settings(
                database_url=database_url, discord_token=VALID_TOKEN, discord_api_base=base_url + API,
                gallery_page_size=PAGE_SIZE,
            )
            async with Harness(state, settings).running() as harness:
                yield harness


async def slash(bot: Harness, name: str, options: dict[str, Any] | None = None, *, user_id: int = USER_ID,
                guild_id: int | None = GUILD_ID, channel_id: int | None = None,
                permissions: str = MEMBER_PERMISSIONS) -> SentInteraction:
    return await bot.interact(bot.state.slash_command(
        name, options or {}, user_id=user_id, guild_id=guild_id, channel_id=channel_id, permissions=permissions))


async def answer(bot: Harness, sent: SentInteraction) -> DiscordCall:
    """A command's first answer: the edit of its response, or the follow-up that replaced it."""
    return await bot.state.wait_for(
        lambda c: c.route in ("edit_original", "followup") and c.params.get("token") == sent.token)


async def refusal(bot: Harness, sent: SentInteraction) -> DiscordCall:
    """The ephemeral follow-up answering a public command or a click, which must carry no file."""
    call = await bot.call("followup", lambda c: c.params.get("token") == sent.token)
    assert call.payload["flags"] & EPHEMERAL and not call.files
    return call


async def imagine(bot: Harness, prompt: str, **where: Any) -> SentInteraction:
    """Make one image and wait for its result (edited into the command's response)."""
    sent = await slash(bot, "imagine", {"prompt": prompt}, **where)
    await bot.final_edit(sent)
    return sent


async def mod(bot: Harness, action: str, target: str = "", details: str = "", *, permissions: str = MANAGER,
              channel_id: int | None = None) -> DiscordCall:
    options = {"action": action} | ({"target": target} if target else {}) | ({"details": details} if details else {})
    sent = await slash(bot, "mod", options, user_id=OTHER_USER_ID, permissions=permissions, channel_id=channel_id)
    return await answer(bot, sent)


async def balance_line(bot: Harness, user_id: int) -> str:
    return (await answer(bot, await slash(bot, "credits", user_id=user_id))).payload["content"]


def selects(message: dict[str, Any]) -> list[dict[str, Any]]:
    return [c for row in message.get("components", []) for c in row["components"] if c["type"] == 3]


def display_name(user_id: int) -> str:
    return str(user_object(user_id)["global_name"])


def _flag_nsfw(conn: Connection, job_id: int) -> None:
    conn.execute(update(Asset).where(Asset.job_id == job_id).values(nsfw=True))


async def flag_as_provider_would(bot: Harness, job_id: int) -> None:
    """Stand in for a provider's safety flag on a job's images (``assets.nsfw``): the offline
    provider never flags anything, and the finisher stores exactly this column from the flag."""
    db = Database(bot.settings.database_url)
    try:
        await db.run(_flag_nsfw, job_id)
    finally:
        await db.dispose()


async def test_gallery_pages_in_place_and_its_menu_opens_an_image_even_after_a_restart(bot: Harness) -> None:
    state = bot.state
    for prompt in ("a red fox", "a blue heron", "a green frog"):
        await imagine(bot, prompt)
    sent = await slash(bot, "gallery")
    first = await bot.call("edit_original", lambda c: c.params.get("token") == sent.token)
    assert sent.response["data"]["flags"] & EPHEMERAL
    (sheet,) = first.files
    assert sheet.filename.endswith(".jpg") and sheet.content[:3] == JPEG
    message = state.messages[sent.original_id]
    assert message["content"].startswith("Your images, page 1:") and len(message["attachments"]) == 1
    (older,) = custom_ids(message)[:-1]
    assert older.startswith("sb:gallery mine --b ") and older.endswith(" --p 2")
    (menu,) = selects(message)
    assert message["components"][-1]["components"] == [menu]  # a select fills its own row
    assert menu["custom_id"] == "sbm:menu" and menu["placeholder"] == "Open an image"
    assert [o["value"] for o in menu["options"]] == ["show 3 1", "show 2 1"]
    assert [o["label"] for o in menu["options"]] == ["1. a green frog", "2. a blue heron"]

    click = await bot.interact(state.button_click(older, message, guild_id=GUILD_ID))
    await bot.call("edit_original", lambda c: c.params.get("token") == click.token and bool(c.files))
    assert click.original_id == sent.original_id  # the same message, now page 2
    page_two = state.messages[sent.original_id]
    assert page_two["content"].startswith("Your images, page 2:") and len(page_two["attachments"]) == 1
    assert [o["value"] for o in selects(page_two)[0]["options"]] == ["show 1 1"]
    (newer,) = custom_ids(page_two)[:-1]
    assert newer.startswith("sb:gallery mine --a ") and newer.endswith(" --p 1")
    assert not bot.calls("followup", click.token)

    await bot.stop()
    await bot.start()
    pick = await bot.interact(state.button_click("sbm:menu", page_two, guild_id=GUILD_ID, component_type=3,
                                                 values=["show 1 1"]))
    shown = await bot.call("followup", lambda c: c.params.get("token") == pick.token)
    assert not shown.payload.get("flags", 0) & EPHEMERAL
    assert shown.payload["embeds"][0]["title"] == "Job #1" and len(shown.files) == 1
    assert "sb:upscale 1 1" in custom_ids(shown.payload) and "sb:share 1" in custom_ids(shown.payload)


async def test_mod_refuses_members_and_shows_admins_stats_with_a_chart(bot: Harness) -> None:
    await imagine(bot, "a lighthouse")
    for action, target in (("stats", ""), ("ban", f"<@{USER_ID}>")):
        refused = await mod(bot, action, target, permissions=MEMBER_PERMISSIONS)
        assert refused.route == "edit_original" and not refused.files
        assert refused.payload["content"] == "/mod is for this community's admins."
    stats = await mod(bot, "stats", permissions=ADMIN)  # Administrator alone is enough
    (chart,) = stats.files
    assert chart.filename.endswith(".png") and chart.content[:8] == PNG
    assert stats.payload["content"].startswith("This community, last 30 days") and "jobs: 1" in stats.payload["content"]
    assert (await mod(bot, "bans", permissions=MANAGER)).payload["content"] == "Nobody is banned here."


async def test_share_posts_to_the_gallery_channel_an_admin_chose_crediting_the_author(bot: Harness) -> None:
    state = bot.state
    chosen = await mod(bot, "channel", "set", channel_id=SECOND_CHANNEL_ID)
    assert chosen.payload["content"].startswith("Shared images are posted to")
    made = await imagine(bot, "two paper cranes", channel_id=CHANNEL_ID)
    result = state.messages[made.original_id]
    click = await bot.interact(state.button_click("sb:share 1", result, guild_id=GUILD_ID))
    told = await bot.call("followup", lambda c: c.params.get("token") == click.token)
    assert told.payload["flags"] & EPHEMERAL and "posted it to the gallery channel" in told.payload["content"]
    post = await bot.call("create_message", lambda c: c.params.get("channel_id") == str(SECOND_CHANNEL_ID))
    assert post.payload["content"].startswith(f"{display_name(USER_ID)} shared job #1: “two paper cranes”")
    assert len(post.files) == 1 and post.files[0].content
    assert custom_ids(post.payload) == ["sb:vote 1", "sb:favorite 1"]


async def test_private_images_stay_out_of_reach_of_other_users_by_any_path(bot: Harness) -> None:
    state = bot.state
    await imagine(bot, "a diary page", guild_id=None)  # made in a DM: private
    await imagine(bot, "a hidden garden")  # made in the server: community-visible
    seen = await slash(bot, "show", {"job_id": 2}, user_id=OTHER_USER_ID)
    assert (await bot.final_edit(seen)).payload["embeds"][0]["title"] == "Job #2"
    hidden = await answer(bot, await slash(bot, "visibility", {"job_id": 2, "level": "private"}))
    assert "now private" in hidden.payload["content"]

    for job in (1, 2):
        sent = await slash(bot, "show", {"job_id": job}, user_id=OTHER_USER_ID)
        assert (await refusal(bot, sent)).payload["content"] == f"Job #{job} is not one you can see here."
        pick = await bot.interact(state.button_click("sbm:menu", guild_id=GUILD_ID, user_id=OTHER_USER_ID,
                                                     component_type=3, values=[f"show {job} 1"]))
        assert (await refusal(bot, pick)).payload["content"] == f"Job #{job} is not one you can see here."
        press = await bot.interact(state.button_click(f"sb:favorite {job}", guild_id=GUILD_ID, user_id=OTHER_USER_ID))
        assert (await refusal(bot, press)).payload["content"] == f"Job #{job} is not one you can see here."
        assert not [c for c in bot.calls("edit_original", sent.token) if c.files]


async def test_banned_users_and_blocked_prompts_are_refused_before_any_charge(bot: Harness) -> None:
    assert "50 credits" in await balance_line(bot, USER_ID)
    banned = await mod(bot, "ban", f"<@{USER_ID}>", "1d spamming")
    assert banned.payload["content"].startswith(f"Banned discord:{USER_ID} here for 1 day")
    refused = await refusal(bot, await slash(bot, "imagine", {"prompt": "a fox"}))
    assert refused.payload["content"].startswith("You are banned here until ")
    assert "Reason: spamming." in refused.payload["content"]
    assert "50 credits" in await balance_line(bot, USER_ID)

    blocked = await mod(bot, "blocklist", "add", "dragon")
    assert blocked.payload["content"].startswith("Blocked “dragon”")
    assert "50 credits" in await balance_line(bot, THIRD_USER_ID)
    refused = await refusal(bot, await slash(bot, "imagine", {"prompt": "a red Dragon"}, user_id=THIRD_USER_ID))
    assert refused.payload["content"].startswith("Your prompt contains “dragon”, which is blocked by this community.")
    assert "50 credits" in await balance_line(bot, THIRD_USER_ID)


async def test_flagged_images_follow_the_communitys_nsfw_policy(bot: Harness) -> None:
    await imagine(bot, "a moonlit statue")
    await flag_as_provider_would(bot, 1)

    assert "spoiler" in (await mod(bot, "nsfw", "spoiler")).payload["content"]
    spoiled = await bot.final_edit(await slash(bot, "show", {"job_id": 1}))
    (file,) = spoiled.files
    assert file.filename.startswith("SPOILER_")
    assert "image" not in spoiled.payload["embeds"][0]  # an embed would show it unblurred

    await mod(bot, "nsfw", "block")
    sent = await slash(bot, "show", {"job_id": 1})
    withheld = await answer(bot, sent)
    assert not withheld.files and withheld.payload["attachments"] == []
    assert "flagged as NSFW" in withheld.payload["content"] and "withholds them" in withheld.payload["content"]

    await mod(bot, "nsfw", "age_restricted")
    adults = await bot.final_edit(await slash(bot, "show", {"job_id": 1}, channel_id=NSFW_CHANNEL_ID))
    assert not adults.files[0].filename.startswith("SPOILER_")
    elsewhere = await answer(bot, await slash(bot, "show", {"job_id": 1}, channel_id=CHANNEL_ID))
    assert not elsewhere.files and "only in age-restricted channels" in elsewhere.payload["content"]


def test_the_double_refuses_layouts_discord_refuses() -> None:
    select = {"type": 3, "custom_id": "sbm:menu", "options": [{"label": "1", "value": "show 1 1"}]}
    button = {"type": 2, "style": 2, "label": "U1", "custom_id": "sb:upscale 1 1"}
    assert components_problem([{"type": 1, "components": [button]}, {"type": 1, "components": [select]}]) is None
    assert components_problem([{"type": 1, "components": [button, select]}]) is not None
    assert components_problem([{"type": 1, "components": [button]}] * 6) is not None
    too_many = select | {"options": [{"label": str(n), "value": str(n)} for n in range(26)]}
    assert components_problem([{"type": 1, "components": [too_many]}]) is not None
    twice = select | {"options": [{"label": "a", "value": "x"}, {"label": "b", "value": "x"}]}
    assert components_problem([{"type": 1, "components": [twice]}]) is not None


async def test_a_menu_gets_the_last_of_five_rows_and_at_most_25_options() -> None:
    buttons = [Button(f"B{n}", f"cmd{n} 1") for n in range(30)]  # 30 single buttons: 6 rows' worth
    options = [Button(f"{n}. an image with a very long prompt " + "x" * 100, f"show {n} 1") for n in range(30)]
    view = action_view(buttons, Menu("Open an image", options))
    assert view is not None
    rows = view.to_components()
    assert components_problem(rows) is None
    assert len(rows) == 5 and [c["type"] for c in rows[-1]["components"]] == [3]
    (menu,) = rows[-1]["components"]
    assert len(menu["options"]) == 25 and all(len(o["label"]) <= 100 for o in menu["options"])
    assert menu["options"][0]["value"] == "show 0 1"
