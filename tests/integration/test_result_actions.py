"""The commands behind the result buttons, through the real dispatcher, scheduler and database."""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest
from PIL import Image
from sqlalchemy import func, select

from studiobot.app import App, build_app
from studiobot.commands.contract import ChatRef, Reply, UserRef
from studiobot.config import Settings
from studiobot.db.models import Asset, Favorite
from studiobot.scheduler import lifecycle
from tests.doubles.openai_images import VALID_KEY, OpenAIState, make_openai_app
from tests.doubles.platform import RecordingOutbox
from tests.doubles.server import serve

ADA = UserRef("discord", "100", "ada")
BOB = UserRef("discord", "200", "bob")
GUILD_CHANNEL = ChatRef("discord", "555", "guild_channel", community_id="777")
_ids = itertools.count(1)


@pytest.fixture
async def app(make_settings: Callable[..., Settings], database_url: str) -> AsyncIterator[App]:
    outbox = RecordingOutbox()
    application = await build_app(make_settings(database_url=database_url), {"discord": outbox})
    application.runner.start()
    try:
        yield application
    finally:
        await application.aclose()


async def run(app: App, line: str, *, user: UserRef = ADA, chat: ChatRef = GUILD_CHANNEL,
              is_admin: bool = False) -> Reply:
    _, reply = await app.dispatcher.dispatch_text(user, chat, line, str(next(_ids)), is_admin=is_admin)
    return reply


async def finished(app: App, reply: Reply) -> int:
    job_id = reply.data["job_id"]
    async with asyncio.timeout(10):
        while not await lifecycle.is_notified(app.db, job_id):
            await asyncio.sleep(0.02)
    return job_id


async def count(app: App, query: Any) -> int:
    async with app.db.read() as conn:
        return (await conn.execute(query)).scalar_one()


async def test_upscale_makes_one_image_twice_the_size_of_the_chosen_one(app: App) -> None:
    first = await finished(app, await run(app, "/imagine a red fox --n 2 --ar 16:9"))
    upscaled = await finished(app, await run(app, f"/upscale {first} 2"))
    async with app.db.read() as conn:
        source = [a for a in await lifecycle.assets_of(conn, first) if a.position == 2][0]
        result = [a for a in await lifecycle.assets_of(conn, upscaled) if a.kind == "image"]
    assert len(result) == 1
    assert (result[0].width, result[0].height) == (source.width * 2, source.height * 2)
    assert result[0].seed == source.seed  # the same picture, more pixels
    with Image.open(app.store.path_for(result[0].storage_key)) as image:
        assert image.size == (source.width * 2, source.height * 2)


async def test_variations_are_new_images_of_the_same_count_and_each_click_differs(app: App) -> None:
    first = await finished(app, await run(app, "/imagine a lighthouse --n 2"))
    one = await finished(app, await run(app, f"/vary {first} 1"))
    two = await finished(app, await run(app, f"/vary {first} 1"))
    async with app.db.read() as conn:
        sha = {job: {a.storage_key for a in await lifecycle.assets_of(conn, job) if a.kind == "image"}
               for job in (first, one, two)}
    assert len(sha[one]) == 2 and len(sha[two]) == 2
    assert sha[one].isdisjoint(sha[first]) and sha[one] != sha[two]


async def test_reroll_charges_a_new_job_with_the_same_prompt(app: App) -> None:
    first = await finished(app, await run(app, "/imagine a quiet harbour --n 3"))
    before = (await run(app, "/credits")).data["balance"]
    again = await run(app, f"/reroll {first}")
    assert again.data["prompt"] == "a quiet harbour" and again.data["cost"] == 3
    assert again.data["balance"] == before - 3
    second = await finished(app, again)
    async with app.db.read() as conn:
        old = {a.storage_key for a in await lifecycle.assets_of(conn, first) if a.kind == "image"}
        new = {a.storage_key for a in await lifecycle.assets_of(conn, second) if a.kind == "image"}
    assert len(old) == len(new) == 3 and old.isdisjoint(new)  # a new seed: new pictures


async def test_actions_on_someone_elses_job_are_refused_without_charge(app: App) -> None:
    first = await finished(app, await run(app, "/imagine a secret garden"))
    bob_before = (await run(app, "/credits", user=BOB)).data["balance"]
    for line in (f"/upscale {first} 1", f"/vary {first} 1", f"/reroll {first}", f"/share {first}",
                 f"/visibility {first} public"):
        reply = await run(app, line, user=BOB)
        assert reply.ephemeral and reply.text == f"Job #{first} is not one of yours.", line
    # Made in the server, so it is in the community gallery: others here may keep it as a favourite.
    assert (await run(app, f"/favorite {first}", user=BOB)).data["favorite"] is True
    await run(app, f"/visibility {first} private")
    hidden = await run(app, f"/favorite {first}", user=BOB)
    assert hidden.ephemeral and hidden.text == f"Job #{first} is not one you can see here."
    refused = await run(app, f"/delete {first}", user=BOB)
    assert refused.ephemeral and "Only the person who made" in refused.text
    assert (await run(app, "/credits", user=BOB)).data["balance"] == bob_before
    assert await count(app, select(func.count()).select_from(Asset).where(Asset.job_id == first)) == 1


async def test_favorite_toggles_and_share_makes_images_community_visible(app: App) -> None:
    job = await finished(app, await run(app, "/imagine two cats --n 2"))
    added = await run(app, f"/favorite {job}")
    assert added.data["favorite"] is True and "Added" in added.text
    assert await count(app, select(func.count()).select_from(Favorite)) == 2
    removed = await run(app, f"/favorite {job}")
    assert removed.data["favorite"] is False
    assert await count(app, select(func.count()).select_from(Favorite)) == 0
    one = await run(app, f"/favorite {job} 2")
    assert one.data["favorite"] is True and "image 2" in one.text
    shared = await run(app, f"/share {job}")
    assert shared.data["visibility"] == "community"
    assert await count(app, select(func.count()).select_from(Asset).where(
        Asset.job_id == job, Asset.visibility == "community", Asset.community_id.is_not(None))) == 3
    in_dm = await run(app, f"/share {job}", chat=ChatRef("discord", "9", "dm"))
    assert in_dm.ephemeral and "server or group" in in_dm.text


async def test_delete_by_owner_or_admin_removes_images_and_files_but_keeps_the_ledger(app: App) -> None:
    job = await finished(app, await run(app, "/imagine a paper boat"))
    async with app.db.read() as conn:
        paths = [app.store.path_for(a.storage_key) for a in await lifecycle.assets_of(conn, job)]
    assert paths and all(p.exists() for p in paths)
    deleted = await run(app, f"/delete {job}", user=BOB, is_admin=True)
    assert deleted.replaces_source and deleted.data["deleted"] is True
    assert not any(p.exists() for p in paths)
    shown = await run(app, f"/job {job}")
    assert "images were deleted" in shown.text and not shown.images and not shown.buttons
    history = (await run(app, "/credits")).text
    assert "job" in history.lower()
    elsewhere = await finished(app, await run(app, "/imagine a kite"))
    other_guild = ChatRef("discord", "1", "guild_channel", community_id="888")
    refused = await run(app, f"/delete {elsewhere}", user=BOB, chat=other_guild, is_admin=True)
    assert "Only the person who made" in refused.text


async def test_upscale_on_a_provider_without_it_is_refused_clearly_and_free(
    make_settings: Callable[..., Settings], database_url: str
) -> None:
    state = OpenAIState()
    async with serve(make_openai_app(state)) as base:
        settings = make_settings(database_url=database_url, openai_api_key=VALID_KEY,
                                 openai_base_url=base + "/v1", default_provider="openai")
        application = await build_app(settings, {"discord": RecordingOutbox()})
        application.runner.start()
        try:
            job = await finished(application, await run(application, "/imagine a bridge"))
            balance = (await run(application, "/credits")).data["balance"]
            for line, word in ((f"/upscale {job} 1", "Upscales"), (f"/vary {job} 1", "Variations")):
                reply = await run(application, line)
                assert reply.ephemeral
                assert reply.text.startswith(f"{word} are not supported by openai")
                assert f"/reroll {job}" in reply.text
            assert (await run(application, "/credits")).data["balance"] == balance
        finally:
            await application.aclose()
