"""Galleries through the real dispatcher, scheduler and database (SQLite and PostgreSQL): contact
sheet pages, favourites, collections, the community gallery and its channel, votes, visibility, and
a private image unreachable by anyone else through every command and button."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from dataclasses import replace

import pytest
from PIL import Image
from sqlalchemy import func, select

from studiobot.commands.contract import ChatRef
from studiobot.commands.presenter import JobPresenter
from studiobot.config import Settings
from studiobot.db.models import Community as CommunityRow, Vote
from tests.integration.community_app import (
    ADA,
    BOB,
    CY,
    GALLERY_CHANNEL,
    GUILD,
    MOD,
    OTHER_GUILD,
    Community,
    community_app,
    dm,
)


@pytest.fixture
async def hub(make_settings: Callable[..., Settings], database_url: str) -> AsyncIterator[Community]:
    async with community_app(make_settings, database_url, max_active_jobs_per_user=20) as community:
        yield community


def item_ids(reply) -> list[int]:  # type: ignore[no-untyped-def]
    return [i["job_id"] for i in reply.data["items"]]


async def test_pages_are_contact_sheets_with_newer_older_and_an_open_menu(hub: Community) -> None:
    jobs = [await hub.make(f"fox number {i}", chat=dm(ADA)) for i in range(11)]
    first = await hub.run("/gallery", chat=dm(ADA))
    assert item_ids(first) == jobs[::-1][:9]
    sheet = first.images[0]
    assert sheet.kind == "sheet" and len(first.images) == 1
    with Image.open(sheet.path) as picture:
        assert picture.format == "JPEG" and picture.size == (768, 768)  # 3 x 3 cells of 256
    assert [o.action for o in first.menu.options] == [f"show {j} 1" for j in jobs[::-1][:9]]
    assert [b.label for b in first.buttons] == ["Older ▶"]
    older = first.buttons[0].action
    second = await hub.run("/" + older, chat=dm(ADA))
    assert item_ids(second) == jobs[1::-1] and second.replaces_source
    with Image.open(second.images[0].path) as picture:
        assert picture.size == (512, 256)  # two cells in one row
    assert [b.label for b in second.buttons] == ["◀ Newer"]
    back = await hub.run("/" + second.buttons[0].action, chat=dm(ADA))
    assert item_ids(back) == item_ids(first) and back.data["page"] == 1
    typed = await hub.run("/gallery mine --page 2", chat=dm(ADA))
    assert item_ids(typed) == item_ids(second)
    for button in (*first.buttons, *second.buttons, *first.menu.options):
        assert len(button.action.encode()) <= 64  # Telegram's callback_data


async def test_every_image_of_a_page_opens_with_its_buttons(hub: Community) -> None:
    job = await hub.make("two owls", n=2, chat=dm(ADA))
    page = await hub.run("/gallery", chat=dm(ADA))
    opened = await hub.run("/" + page.menu.options[1].action, chat=dm(ADA))
    assert opened.data["job_id"] == job and len(opened.images) == 1
    assert [b.action for b in opened.buttons][:2] == [f"upscale {job} 1", f"vary {job} 1"]
    whole = await hub.run(f"/show {job}", chat=GUILD)  # anywhere, with every button
    assert {b.action for b in whole.buttons} >= {f"upscale {job} 2", f"reroll {job}", f"share {job}"}
    assert [i.kind for i in whole.images] == ["grid", "image", "image"]


async def test_favorites_and_collections_page_the_same_way(hub: Community) -> None:
    mine = await hub.make("a heron")
    bobs = await hub.make("a crane", user=BOB)
    assert (await hub.run(f"/favorite {mine}")).data["favorite"]
    assert (await hub.run(f"/favorite {bobs}")).data["favorite"]  # shared here, so Ada may keep it
    assert item_ids(await hub.run("/gallery favorites")) == [bobs, mine]
    assert "Created" in (await hub.run("/collection create birds")).text
    assert "already" in (await hub.run("/collection create Birds")).text
    assert "one word" in (await hub.run("/collection create bad.name")).text
    assert (await hub.run(f"/collection add birds {mine}")).data["changed"] == 1
    assert (await hub.run(f"/collection add birds {bobs}")).data["changed"] == 1
    assert (await hub.run(f"/collection add birds {bobs}")).data["changed"] == 0
    shown = await hub.run("/collection show birds")
    assert item_ids(shown) == [bobs, mine] and shown.images[0].kind == "sheet"
    assert (await hub.run("/collection list")).data["collections"] == [{"name": "birds", "images": 2}]
    assert (await hub.run(f"/collection remove birds {mine}")).data["changed"] == 1
    assert item_ids(await hub.run("/collection show birds")) == [bobs]
    # Bob makes his image private again: it leaves Ada's favourites and collection views.
    await hub.run(f"/visibility {bobs} private", user=BOB)
    assert item_ids(await hub.run("/gallery favorites")) == [mine]
    assert "empty" in (await hub.run("/collection show birds")).text
    assert "no collection" in (await hub.run("/collection show fish")).text


async def test_images_made_here_are_in_the_community_gallery_and_dm_ones_are_not(hub: Community) -> None:
    here = await hub.make("a lighthouse")
    private = await hub.make("my diary", chat=dm(ADA))
    elsewhere = await hub.make("another server", chat=OTHER_GUILD)
    seen = await hub.run("/gallery community", user=BOB)
    assert item_ids(seen) == [here]
    assert item_ids(await hub.run("/gallery community", user=BOB, chat=OTHER_GUILD)) == [elsewhere]
    assert "server or group" in (await hub.run("/gallery community", user=BOB, chat=dm(BOB))).text
    await hub.run("/mod sharing off", user=MOD, admin=True)
    quiet = await hub.make("not shared by default")
    assert item_ids(await hub.run("/gallery community", user=BOB)) == [here]
    shared = await hub.run(f"/share {quiet}")
    assert shared.data["visibility"] == "community" and not shared.data["posted"]
    assert item_ids(await hub.run("/gallery community", user=BOB)) == [quiet, here]
    assert private not in item_ids(await hub.run("/gallery community", user=BOB))


async def test_sharing_posts_to_the_gallery_channel_crediting_the_author(hub: Community) -> None:
    set_here = await hub.run("/mod channel set", user=MOD, chat=GALLERY_CHANNEL, admin=True)
    assert set_here.data["gallery_channel"]["chat_id"] == GALLERY_CHANNEL.chat_id
    job = await hub.make("a comet over the bay", chat=dm(ADA))
    shared = await hub.run(f"/share {job}")
    assert shared.data["posted"] and "gallery channel" in shared.text
    posts = [(chat, reply) for chat, reply in hub.outbox.delivered if reply.data.get("gallery_post")]
    assert len(posts) == 1
    chat, post = posts[0]
    assert chat.chat_id == GALLERY_CHANNEL.chat_id and chat.reply_to is None
    assert post.text.startswith("ada shared job") and "a comet over the bay" in post.text
    assert len(post.images) == 1 and {b.action for b in post.buttons} == {f"vote {job}", f"favorite {job}"}
    assert "nowhere" not in (await hub.run("/mod channel", user=MOD, admin=True)).text
    await hub.run("/mod channel clear", user=MOD, admin=True)
    again = await hub.make("after clearing")
    assert not (await hub.run(f"/share {again}")).data["posted"]


async def test_top_of_the_week_ranks_by_votes(hub: Community) -> None:
    one, two = await hub.make("first"), await hub.make("second")
    assert (await hub.run(f"/vote {one}", user=BOB)).data["voted"]
    assert (await hub.run(f"/vote {one}", user=CY)).data["voted"]
    assert (await hub.run(f"/vote {two}", user=CY)).data["voted"]
    top = await hub.run("/gallery community top", user=BOB)
    assert item_ids(top) == [one, two] and "▲2" in top.text
    assert "own images" in (await hub.run(f"/vote {one}")).text
    assert not (await hub.run(f"/vote {one}", user=CY)).data["voted"]  # again: taken back
    assert await hub.scalar(select(func.count()).select_from(Vote)) == 2


async def test_a_private_image_is_unreachable_by_anyone_else_through_every_command(hub: Community) -> None:
    secret = await hub.make("a private sketch", chat=dm(ADA))
    assert "private" in (await hub.run(f"/show {secret}", chat=dm(ADA))).text  # the owner sees it
    missing = "is not one you can see here."
    for user in (BOB, MOD):
        for chat in (GUILD, dm(user)):
            for line in (f"/show {secret}", f"/show {secret} 1", f"/favorite {secret}", f"/vote {secret}",
                         f"/collection add x {secret}"):
                if line.startswith("/collection"):
                    await hub.run("/collection create x", user=user, chat=chat)
                reply = await hub.run(line, user=user, chat=chat, admin=user is MOD)
                assert reply.text == f"Job #{secret} {missing}" and not reply.images, (line, reply.text)
            for line in ("/gallery community", "/gallery favorites", "/gallery", "/collection show x"):
                reply = await hub.run(line, user=user, chat=chat)
                assert secret not in [i["job_id"] for i in reply.data.get("items", [])], line
            for line in (f"/visibility {secret} public", f"/share {secret}", f"/reroll {secret}"):
                reply = await hub.run(line, user=user, chat=chat)
                assert "not one of yours" in reply.text or "server or group" in reply.text, line
    # Also not by its id number: a missing job answers the same.
    assert (await hub.run("/show 99999", user=BOB)).text == f"Job #99999 {missing}"


async def test_visibility_levels_and_what_stays_put(hub: Community) -> None:
    job = await hub.make("a public map", n=2, chat=dm(ADA))
    assert "server or group" in (await hub.run(f"/visibility {job} community", chat=dm(ADA))).text
    public = await hub.run(f"/visibility {job} public 1", chat=dm(ADA))
    assert public.data["changed"] == 1 and "url" not in public.data  # no web gallery configured
    seen = await hub.run(f"/show {job}", user=BOB, chat=OTHER_GUILD)
    assert seen.data["visible"] and len(seen.images) == 1 and "By ada" in seen.text
    assert "cost" not in seen.text.lower()  # what Ada paid is her business
    await hub.flag_nsfw(job)
    refused = await hub.run(f"/visibility {job} public 2", chat=dm(ADA))
    assert refused.data["changed"] == 0 and "never public" in refused.text


async def test_admins_hide_images_from_their_community_only(hub: Community) -> None:
    job = await hub.make("a rude doodle")
    assert "admins" in (await hub.run(f"/mod hide {job}", user=BOB)).text
    hid = await hub.run(f"/mod hide {job} off-topic", user=MOD, admin=True)
    assert hid.data["changed"] == 1
    assert job not in item_ids(await hub.run("/gallery community", user=BOB))
    assert "not one you can see" in (await hub.run(f"/show {job}", user=BOB)).text
    assert "hid" in (await hub.run(f"/show {job}")).text  # its owner still has it
    assert "hid job" in (await hub.run(f"/share {job}")).text
    other = await hub.run(f"/mod hide {job}", user=MOD, chat=OTHER_GUILD, admin=True)
    assert "no shown images in this community" in other.text
    await hub.run(f"/mod unhide {job}", user=MOD, admin=True)
    assert job in item_ids(await hub.run("/gallery community", user=BOB))


@pytest.mark.parametrize("policy", ["spoiler", "block", "age_restricted"])
async def test_nsfw_policy_applies_to_results_pages_and_posts(hub: Community, policy: str) -> None:
    job = await hub.make("a flagged image")
    await hub.flag_nsfw(job)
    await hub.run(f"/mod nsfw {policy}", user=MOD, admin=True)
    shown = await hub.run(f"/show {job}", user=BOB)
    page = await hub.run("/gallery community", user=BOB)
    if policy == "spoiler":
        assert shown.images and all(i.spoiler for i in shown.images)
        assert page.images[0].spoiler and job in item_ids(page)
    else:
        assert not shown.images and shown.data["withheld"] == 1 and "flagged as NSFW" in shown.text
        assert job not in item_ids(page)
    adults = ChatRef("discord", "557", "guild_channel", community_id=GUILD.community_id, age_restricted=True)
    in_adult_channel = await hub.run(f"/show {job}", user=BOB, chat=adults)
    assert bool(in_adult_channel.images) == (policy != "block")
    own_dm = await hub.run(f"/show {job}", chat=dm(ADA))
    assert own_dm.images and all(i.spoiler for i in own_dm.images)  # private chats: behind a spoiler


async def test_result_delivery_applies_the_policy_too(hub: Community) -> None:
    await hub.run("/mod nsfw block", user=MOD, admin=True)
    job = await hub.make("will be flagged")
    await hub.flag_nsfw(job)
    # Delivered again by the real listener, as the scheduler would once the flag was stored.
    presenter = JobPresenter(hub.app.db, hub.app.store, {"discord": hub.outbox}, hub.app.dispatcher.deps.communities)
    await presenter.job_finished(job)
    _, delivered = hub.outbox.delivered[-1]
    assert delivered.data["job_id"] == job and not delivered.images and delivered.data["withheld"] == 1



async def test_favourite_pages_go_older_and_newer_skipping_what_became_private(hub: Community) -> None:
    mine = [await hub.make(f"mine {n}") for n in range(8)]
    bobs = [await hub.make(f"bob's {n}", user=BOB) for n in range(4)]
    for job in mine + bobs:
        await hub.run(f"/favorite {job}")
    await hub.run(f"/visibility {bobs[0]} private", user=BOB)
    first = await hub.run("/gallery favorites")
    expected = sorted(mine + bobs[1:], reverse=True)
    assert item_ids(first) == expected[:9]
    second = await hub.run("/" + first.buttons[-1].action)
    assert item_ids(second) == expected[9:] and [b.label for b in second.buttons] == ["◀ Newer"]
    assert item_ids(await hub.run("/" + second.buttons[0].action)) == expected[:9]
    assert item_ids(await hub.run("/gallery favorites --page 2")) == expected[9:]


async def test_a_community_is_known_by_the_name_its_platform_shows(hub: Community) -> None:
    """The web gallery titles a community's page with ``communities.name``: kept as the platform
    names the guild or group now, never blanked by a surface that does not say."""
    async def stored_name() -> str:
        return await hub.scalar(select(CommunityRow.name).where(CommunityRow.platform_community_id == "777"))

    await hub.run("/gallery community", chat=replace(GUILD, community_name="Painters' Guild"))
    assert await stored_name() == "Painters' Guild"
    await hub.run("/gallery community", chat=replace(GUILD, community_name="Sculptors"))  # renamed on Discord
    assert await stored_name() == "Sculptors"
    await hub.run("/gallery community", chat=GUILD)
    assert await stored_name() == "Sculptors"
    await hub.run("/gallery community", chat=replace(GUILD, community_name="x" * 300))
    assert await stored_name() == "x" * 100  # the column's width
