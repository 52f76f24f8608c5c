"""A result the platform keeps refusing is sent a bounded number of times, with growing waits;
one it can never accept (``Undeliverable``) is sent once (issue 15, item 8, core side)."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

import pytest
from sqlalchemy import select

from studiobot.app import build_app
from studiobot.commands.contract import ChatRef, UserRef
from studiobot.config import Settings
from studiobot.db.models import Job, JobEvent
from studiobot.scheduler import lifecycle
from studiobot.scheduler.notify import Undeliverable
from tests.doubles.platform import RecordingOutbox

ADA = UserRef("discord", "100", "ada")
HERE = ChatRef("discord", "555", "guild_channel", community_id="777")


async def _finished_job(make_settings: Callable[..., Settings], database_url: str, outbox: RecordingOutbox):
    app = await build_app(
        make_settings(database_url=database_url, delivery_attempts=3, delivery_backoff_s=0.2),
        {"discord": outbox},
    )
    app.runner.start()
    _, reply = await app.dispatcher.dispatch_text(ADA, HERE, "/imagine a tin lantern", "m1")
    job_id = reply.data["job_id"]
    async with asyncio.timeout(10):
        while not outbox.refused:  # the first delivery, right after the job ended
            await asyncio.sleep(0.01)
    return app, job_id


async def _job(app, job_id):
    async with app.db.read() as conn:
        row = (await conn.execute(select(Job.__table__).where(Job.id == job_id))).one()
        events = (await conn.execute(select(JobEvent.kind).where(JobEvent.job_id == job_id))).scalars().all()
    return row, events


async def test_a_refused_delivery_is_retried_with_growing_waits_then_given_up(make_settings, database_url):
    outbox = RecordingOutbox(refuse=RuntimeError("HTTP 502 from the platform"))
    app, job_id = await _finished_job(make_settings, database_url, outbox)
    try:
        row, _ = await _job(app, job_id)
        assert row.status == "succeeded" and row.delivery_attempts == 1 and row.notified_at is None

        await app.notifier.sweep(grace_s=0)
        assert len(outbox.refused) == 1  # waiting 0.2 s before the next try

        await asyncio.sleep(0.25)
        await app.notifier.sweep(grace_s=0)
        assert len(outbox.refused) == 2
        await app.notifier.sweep(grace_s=0)
        assert len(outbox.refused) == 2  # now waiting 0.4 s

        await asyncio.sleep(0.45)
        await app.notifier.sweep(grace_s=0)
        row, events = await _job(app, job_id)
        assert len(outbox.refused) == 3 and row.delivery_attempts == 3
        assert row.notified_at is not None and "undelivered" in events

        for _ in range(3):
            await asyncio.sleep(0.1)
            await app.notifier.sweep(grace_s=0)
        assert len(outbox.refused) == 3  # given up: never sent again
        assert await lifecycle.unnotified(app.db, ["discord"], older_than=lifecycle.utcnow()) == []
    finally:
        await app.aclose()


async def test_an_undeliverable_result_is_sent_once(make_settings, database_url):
    outbox = RecordingOutbox(refuse=Undeliverable("the bot was removed from the server"))
    app, job_id = await _finished_job(make_settings, database_url, outbox)
    try:
        for _ in range(3):
            await asyncio.sleep(0.1)
            await app.notifier.sweep(grace_s=0)
        row, events = await _job(app, job_id)
        assert len(outbox.refused) == 1
        assert row.notified_at is not None and row.delivery_attempts == 0 and "undelivered" in events
    finally:
        await app.aclose()


@pytest.mark.parametrize("failures", [1, 2])
async def test_a_delivery_that_succeeds_on_a_later_try_is_kept(make_settings, database_url, failures):
    outbox = RecordingOutbox(refuse=RuntimeError("timeout"))
    app, job_id = await _finished_job(make_settings, database_url, outbox)
    try:
        for _ in range(failures - 1):
            await asyncio.sleep(0.5)
            await app.notifier.sweep(grace_s=0)
        outbox.refuse = None
        await asyncio.sleep(0.85)
        await app.notifier.sweep(grace_s=0)
        row, events = await _job(app, job_id)
        assert len(outbox.refused) == failures and len(outbox.results_for(job_id)) == 1
        assert row.notified_at is not None and "undelivered" not in events
    finally:
        await app.aclose()
