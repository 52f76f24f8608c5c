"""Moderation through the real dispatcher, scheduler and database (SQLite and PostgreSQL): bans and
blocked prompts refused before any charge, limits, the audit log, usage statistics, and every
admin command refusing non-admins."""

from __future__ import annotations

import io
from collections.abc import AsyncIterator, Callable
from datetime import timedelta

import pytest
from PIL import Image
from sqlalchemy import func, insert, select

from studiobot.commands.mod import ACTIONS
from studiobot.config import Settings
from studiobot.db.models import AuditEntry, Ban, Job, utcnow
from tests.integration.community_app import (
    ADA,
    BOB,
    GUILD,
    MOD,
    OPS,
    OTHER_GUILD,
    Community,
    community_app,
    dm,
)


@pytest.fixture
async def hub(make_settings: Callable[..., Settings], database_url: str) -> AsyncIterator[Community]:
    async with community_app(make_settings, database_url, max_active_jobs_per_user=10,
                                         max_jobs_per_hour=50) as community:
        yield community


async def jobs_of(hub: Community) -> int:
    return await hub.scalar(select(func.count()).select_from(Job))


async def refused_before_charge(hub: Community, line: str, *, user=BOB, chat=GUILD) -> str:  # type: ignore[no-untyped-def]
    """Run ``line`` and check that it neither charged nor queued anything; returns the refusal."""
    balance, jobs = await hub.balance(user), await jobs_of(hub)
    reply = await hub.run(line, user=user, chat=chat)
    assert reply.ephemeral and "job_id" not in reply.data, reply.text
    assert await hub.balance(user) == balance and await jobs_of(hub) == jobs
    return reply.text


@pytest.mark.parametrize("action", ACTIONS)
async def test_every_mod_action_refuses_non_admins(hub: Community, action: str) -> None:
    reply = await hub.run(f"/mod {action} x", user=BOB, chat=GUILD)
    assert reply.ephemeral and reply.text == "/mod is for this community's admins."
    reply = await hub.run(f"/mod {action} x", user=BOB, chat=dm(BOB))
    assert reply.ephemeral and reply.text.startswith("/mod is for the admins of a server or group")
    assert await hub.scalar(select(func.count()).select_from(AuditEntry)) == 0
    # /admin is for operators only, even for a community's admins.
    assert "operators" in (await hub.run("/admin ledger #1", user=MOD, admin=True)).text


async def test_a_banned_user_is_refused_before_any_charge_until_unbanned(hub: Community) -> None:
    await hub.balance(BOB)  # Bob has used the bot
    assert (await hub.run("/mod ban <@200> 2h spamming the channel", user=MOD, admin=True)).data["banned"]
    text = await refused_before_charge(hub, "/imagine a cat")
    assert text.startswith("You are banned here until") and "spamming the channel" in text
    assert "banned" in await refused_before_charge(hub, "/gallery community")
    assert (await hub.run("/credits", user=BOB)).data["balance"] == 50  # still told their balance
    # Only here: another server and private chats are not affected.
    await hub.make("elsewhere", user=BOB, chat=OTHER_GUILD)
    await hub.make("in private", user=BOB, chat=dm(BOB))
    listed = await hub.run("/mod bans", user=MOD, admin=True)
    assert listed.data["bans"] == [await hub.app.dispatcher.deps.users.user_id(BOB)]
    assert "Lifted" in (await hub.run("/mod unban discord:200 appealed", user=MOD, admin=True)).text
    await hub.make("welcome back", user=BOB)
    assert "not banned" in (await hub.run("/mod unban discord:200", user=MOD, admin=True)).text


async def test_an_expired_ban_no_longer_applies(hub: Community) -> None:
    bob = await hub.app.dispatcher.deps.users.user_id(BOB)
    await hub.app.db.run(lambda conn: conn.execute(insert(Ban).values(
        user_id=bob, community_id=None, until=utcnow() - timedelta(minutes=1), reason="old", actor="x",
        created_at=utcnow() - timedelta(days=1))))
    hub.app.dispatcher.deps.guards.forget()
    await hub.make("after the ban ended", user=BOB)


async def test_operators_ban_globally_from_a_private_chat(hub: Community) -> None:
    await hub.balance(BOB)
    assert "admins" in (await hub.run("/mod ban discord:200", user=MOD, chat=dm(MOD))).text
    banned = await hub.run("/mod ban discord:200 1w fraud", user=OPS, chat=dm(OPS))
    assert "everywhere for 1 week" in banned.text
    for chat in (GUILD, OTHER_GUILD, dm(BOB)):
        assert "banned from using this bot" in await refused_before_charge(hub, "/imagine hello", chat=chat)
    assert "yourself" in (await hub.run("/mod ban discord:900", user=OPS, chat=dm(OPS))).text
    assert "Nobody" in (await hub.run("/mod ban discord:12345", user=OPS, chat=dm(OPS))).text
    assert "at least one minute" in (await hub.run("/mod ban discord:200 0d", user=OPS, chat=dm(OPS))).text
    entries = (await hub.run("/mod audit", user=OPS, chat=dm(OPS))).data["entries"]
    assert [(e["actor"], e["action"], e["target"]) for e in entries] == [("discord:900", "ban", "discord:200")]
    assert entries[0]["reason"].startswith("fraud (until ")


async def test_blocked_prompts_are_refused_before_any_charge(hub: Community) -> None:
    await hub.run("/mod blocklist add gore", user=MOD, admin=True)
    await hub.run("/mod blocklist add re:sp[a@]m+y", user=MOD, admin=True)
    await hub.run("/mod blocklist add c++", user=OPS, chat=dm(OPS))  # global, by an operator
    assert "“gore”, which is blocked by this community" in await refused_before_charge(hub, "/imagine some GORE here")
    assert "“gore”" in await refused_before_charge(hub, "/imagine ｇｏｒｅ")  # full-width letters
    assert "blocked pattern" in await refused_before_charge(hub, "/imagine very sp@mmmy art")
    assert "on this bot" in await refused_before_charge(hub, "/imagine learn C++ today", chat=dm(BOB))
    assert "blocked" in await refused_before_charge(hub, "/imagine a cat --negative gore")
    # Whole words only, and only where they are blocked.
    await hub.make("gorement is not a word", user=BOB)
    await hub.make("some gore", user=BOB, chat=OTHER_GUILD)
    listed = await hub.run("/mod blocklist list", user=MOD, admin=True)
    assert listed.data["terms"] == ["gore", "re:sp[a@]m+y"]
    assert "does not compile" in (await hub.run("/mod blocklist add re:(unclosed", user=MOD, admin=True)).text
    assert "already" in (await hub.run("/mod blocklist add gore", user=MOD, admin=True)).text
    assert "Unblocked" in (await hub.run("/mod blocklist remove gore", user=MOD, admin=True)).text
    await hub.make("some gore again", user=BOB)


async def test_a_job_whose_prompt_was_blocked_later_cannot_be_rerolled(hub: Community) -> None:
    job = await hub.make("a stormy sea", user=BOB)
    await hub.run("/mod blocklist add stormy", user=MOD, admin=True)
    assert "blocked" in await refused_before_charge(hub, f"/reroll {job}")


async def test_admins_lower_limits_within_the_operators(hub: Community) -> None:
    shown = await hub.run("/mod limits", user=MOD, admin=True)
    assert shown.data == {"per-hour": 50, "per-user": 10, "community": 20}
    assert "between 1 and 50" in (await hub.run("/mod limits per-hour 500", user=MOD, admin=True)).text
    assert (await hub.run("/mod limits per-hour 1", user=MOD, admin=True)).data["per-hour"] == 1
    await hub.make("the one allowed", user=BOB)
    assert "hourly limit" in await refused_before_charge(hub, "/imagine one more")
    await hub.make("other servers keep their own", user=BOB, chat=OTHER_GUILD)
    assert (await hub.run("/mod limits per-hour default", user=MOD, admin=True)).data["per-hour"] == 50
    await hub.make("back to the default", user=BOB)


async def test_a_community_wide_concurrency_limit(hub: Community) -> None:
    await hub.run("/mod limits community 1", user=MOD, admin=True)
    await hub.app.runner.shutdown()  # nothing runs: jobs stay queued
    first = await hub.run("/imagine first", user=ADA)
    assert first.data["status"] == "queued"
    assert "This community already has 1 images in progress" in await refused_before_charge(hub, "/imagine second")


async def test_every_admin_action_lands_in_the_audit_log(hub: Community) -> None:
    await hub.balance(BOB)
    job = await hub.make("to be hidden")
    lines = ["/mod ban discord:200 1d spam", "/mod unban discord:200 sorry", "/mod blocklist add gore",
             "/mod blocklist remove gore", "/mod limits per-user 2", "/mod nsfw block", "/mod sharing off",
             "/mod channel set", "/mod channel clear", f"/mod hide {job} off-topic", f"/mod unhide {job}",
             f"/delete {job}"]
    for line in lines:
        await hub.run(line, user=MOD, admin=True)
    await hub.run("/admin grant discord:100 5 --reason prize", user=OPS, chat=dm(OPS))
    log = (await hub.run("/mod audit", user=MOD, admin=True)).data["entries"]
    assert [e["action"] for e in log][::-1] == [
        "ban", "unban", "blocklist add", "blocklist remove", "limits", "nsfw", "sharing", "channel set",
        "channel clear", "hide", "unhide", "delete"]
    assert all(e["actor"] == "discord:400" for e in log)
    assert log[-1]["reason"].startswith("spam") and log[2]["target"] == f"job #{job}"
    assert "admins" in (await hub.run("/mod audit", user=ADA)).text
    global_log = (await hub.run("/mod audit", user=OPS, chat=dm(OPS))).data["entries"]
    assert [(e["action"], e["target"], e["reason"]) for e in global_log] == [("grant", "discord:100", "+5: prize")]
    # Another community sees none of it.
    assert (await hub.run("/mod audit", user=MOD, chat=OTHER_GUILD, admin=True)).data["entries"] == []


async def test_the_audit_log_pages(hub: Community) -> None:
    for n in range(20):
        await hub.run(f"/mod blocklist add word{n}", user=MOD, admin=True)
    first = await hub.run("/mod audit", user=MOD, admin=True)
    assert len(first.data["entries"]) == 15 and first.buttons
    rest = await hub.run("/" + first.buttons[0].action, user=MOD, admin=True)
    assert [e["target"] for e in rest.data["entries"]] == [f"word{n}" for n in range(4, -1, -1)]


async def test_usage_statistics_with_a_chart(hub: Community) -> None:
    for n in range(3):
        await hub.make(f"job {n}", n=2)  # 2 credits each
    await hub.make("one by bob", user=BOB)
    await hub.make("in another server", chat=OTHER_GUILD)
    stats = await hub.run("/mod stats 7", user=MOD, admin=True)
    assert (stats.data["jobs"], stats.data["succeeded"], stats.data["failed"], stats.data["credits"]) == (4, 4, 0, 7)
    assert stats.data["providers"] == {"offline": 4}
    assert "jobs: 4 by 2 users" in stats.text and "credits spent: 7" in stats.text
    assert "success rate 100%" in stats.text
    (chart,) = stats.images
    with Image.open(io.BytesIO(chart.path.read_bytes())) as image:
        assert image.format == "PNG" and image.size == (1000, 600)
    everything = await hub.run("/mod stats", user=OPS, chat=dm(OPS))
    assert (everything.data["jobs"], everything.data["credits"]) == (5, 8) and "The whole bot" in everything.text
    assert "1 to 366 days" in (await hub.run("/mod stats 999", user=MOD, admin=True)).text
