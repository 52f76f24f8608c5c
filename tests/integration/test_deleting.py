"""Deleting images: shared files under concurrency, and jobs that have not finished (issue 15).

Files are stored by content, so two users asking for the same prompt and seed share a file. A
deletion racing a job that is saving the same bytes must never remove the file that job names.
A ``/delete`` of an unfinished job cancels it with a refund, or is refused when it cannot be
stopped; it never says "Deleted" for images that appear afterwards.
"""

from __future__ import annotations

import asyncio
import itertools
import random
from collections.abc import AsyncIterator, Callable

import pytest

from studiobot.app import App, build_app
from studiobot.commands.contract import ChatRef, Reply, UserRef
from studiobot.config import Settings
from studiobot.scheduler import lifecycle
from tests.doubles.platform import RecordingOutbox

ADA = UserRef("shell", "ada", "ada")
BOB = UserRef("shell", "bob", "bob")
HERE = ChatRef("shell", "terminal")
_ids = itertools.count(1)


@pytest.fixture
async def make_app(make_settings: Callable[..., Settings], database_url: str) -> AsyncIterator[Callable]:
    apps: list[App] = []

    async def make(*, start: bool = True, **overrides) -> App:
        settings = make_settings(database_url=database_url, **overrides)
        app = await build_app(settings, {"shell": RecordingOutbox()})
        apps.append(app)
        if start:
            app.runner.start()
        return app

    yield make
    for app in apps:
        await app.aclose()


async def run(app: App, line: str, user: UserRef = ADA) -> Reply:
    _, reply = await app.dispatcher.dispatch_text(user, HERE, line, str(next(_ids)))
    return reply


async def finished(app: App, job_id: int) -> None:
    async with asyncio.timeout(15):
        while not await lifecycle.is_notified(app.db, job_id):
            await asyncio.sleep(0.01)


async def files_of(app: App, job_id: int) -> list:
    async with app.db.read() as conn:
        assets = await lifecycle.assets_of(conn, job_id)
    return [app.store.path_for(k) for a in assets for k in (a.storage_key, a.thumbnail_key) if k]


async def balance(app: App, user: UserRef = ADA) -> int:
    return (await run(app, "/credits", user)).data["balance"]


async def test_deleting_never_removes_a_file_another_job_is_saving(make_app) -> None:
    app = await make_app(welcome_credits=500)
    rounds = 30
    for round_ in range(rounds):
        line = f"/imagine a shared lighthouse --seed {round_} --n 2"
        mine = (await run(app, line)).data["job_id"]
        await finished(app, mine)
        assert all(p.exists() for p in await files_of(app, mine))

        # Bob asks for the very same bytes while Ada deletes hers; start both in random order.
        async def bob() -> int:
            await asyncio.sleep(random.random() / 200)
            job = (await run(app, line, BOB)).data["job_id"]
            await finished(app, job)
            return job

        async def ada() -> None:
            await asyncio.sleep(random.random() / 200)
            assert (await run(app, f"/delete {mine}")).data["deleted"] is True

        theirs, _ = await asyncio.gather(bob(), ada())

        paths = await files_of(app, theirs)
        assert len(paths) == 5  # two images, two thumbnails, one grid
        missing = [p.name for p in paths if not p.exists()]
        assert not missing, f"round {round_}: Bob's job #{theirs} lost {missing}"
        assert (await run(app, f"/delete {theirs}", BOB)).data["deleted"] is True
        assert not any(p.exists() for p in paths)  # nobody names them now: they are gone


async def test_delete_of_a_queued_job_cancels_it_with_a_refund(make_app) -> None:
    app = await make_app(start=False)  # nothing takes the job: it stays queued
    before = await balance(app)
    job = (await run(app, "/imagine a paper boat --n 2")).data["job_id"]
    assert await balance(app) == before - 2

    reply = await run(app, f"/delete {job}")

    assert "cancelled" in reply.text and "2 credits refunded" in reply.text
    assert reply.data == {"job_id": job, "deleted": False, "status": "cancelled", "refunded": 2}
    assert await balance(app) == before
    async with app.db.read() as conn:
        assert (await lifecycle.get(conn, job)).status == "cancelled"


async def test_delete_of_a_running_asynchronous_job_cancels_it_and_its_result_never_appears(
    make_app,
) -> None:
    app = await make_app(offline_delay_s=1.0)  # the offline provider answers a task id, then polls
    before = await balance(app)
    job = (await run(app, "/imagine a red kite")).data["job_id"]
    async with asyncio.timeout(10):
        while True:
            async with app.db.read() as conn:
                row = await lifecycle.get(conn, job)
            if row.provider_task_id:
                break
            await asyncio.sleep(0.02)

    reply = await run(app, f"/delete {job}")

    assert reply.data["status"] == "cancelled" and "refunded" in reply.text
    await asyncio.sleep(1.5)  # past the provider's finishing time
    async with app.db.read() as conn:
        row = await lifecycle.get(conn, job)
        assets = await lifecycle.assets_of(conn, job)
    assert row.status == "cancelled" and assets == []
    assert await balance(app) == before
    shown = await run(app, f"/job {job}")
    assert "cancelled" in shown.text.lower() and not shown.images


async def test_delete_of_a_job_being_generated_is_refused_and_nothing_changes(make_app) -> None:
    app = await make_app(start=False)
    before = await balance(app)
    job = (await run(app, "/imagine a glass bird")).data["job_id"]
    # A worker took it and is generating synchronously (no task id to cancel).
    (claimed,) = await lifecycle.claim_queued(app.db, "busy-worker", batch=1, lease_s=60)
    assert claimed.id == job

    reply = await run(app, f"/delete {job}")

    assert "being generated right now" in reply.text and "nothing was deleted" in reply.text
    assert f"/delete {job}" in reply.text
    assert not reply.data.get("deleted")
    async with app.db.read() as conn:
        assert (await lifecycle.get(conn, job)).status == "running"
    assert await balance(app) == before - 1  # still reserved, to be captured or refunded
