"""A result the platform keeps refusing is sent a bounded number of times, with growing waits;
one it can never accept (``Undeliverable``) is sent once (issue 15, item 8, core side)."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import select, update

from studiobot.app import build_app
from studiobot.commands.contract import ChatRef, UserRef
from studiobot.config import Settings
from studiobot.db.models import Job, JobEvent
from studiobot.scheduler import lifecycle
from studiobot.scheduler.notify import Undeliverable
from tests.doubles.platform import RecordingOutbox

ADA = UserRef("discord", "100", "ada")
HERE = ChatRef("discord", "555", "guild_channel", community_id="777")
BACKOFF_S = 60.0


async def _finished_job(make_settings: Callable[..., Settings], database_url: str, outbox: RecordingOutbox):
    """An app whose job has ended and whose first delivery has been tried and recorded; its runner
    is stopped then, so each later delivery is one the test drives (no background sweep races)."""
    app = await build_app(
        make_settings(database_url=database_url, delivery_attempts=3, delivery_backoff_s=BACKOFF_S),
        {"discord": outbox},
    )
    app.runner.start()
    _, reply = await app.dispatcher.dispatch_text(ADA, HERE, "/imagine a tin lantern", "m1")
    job_id = reply.data["job_id"]
    async with asyncio.timeout(10):
        while True:  # the first delivery, right after the job ended, and its bookkeeping
            row, _ = await _job(app, job_id)
            if row.delivery_attempts or row.notified_at is not None:
                break
            await asyncio.sleep(0.01)
    await app.runner.shutdown()
    return app, job_id


async def _job(app, job_id):
    async with app.db.read() as conn:
        row = (await conn.execute(select(Job.__table__).where(Job.id == job_id))).one()
        events = (await conn.execute(select(JobEvent.kind).where(JobEvent.job_id == job_id))).scalars().all()
    return row, events


async def _time_passes(app, job_id) -> None:
    """The next try falls due now (the clock is moved rather than waited for)."""
    due = lifecycle.utcnow() - timedelta(seconds=1)
    await app.db.run(lambda conn: conn.execute(update(Job).where(Job.id == job_id).values(delivery_due_at=due)))


def _wait_s(row) -> float:
    """How long after now the job's next delivery try is due, in seconds."""
    return (_aware(row.delivery_due_at) - lifecycle.utcnow()).total_seconds()


def _aware(moment: datetime) -> datetime:
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)  # SQLite returns naive UTC


async def test_a_refused_delivery_is_retried_with_growing_waits_then_given_up(make_settings, database_url):
    outbox = RecordingOutbox(refuse=RuntimeError("HTTP 502 from the platform"))
    app, job_id = await _finished_job(make_settings, database_url, outbox)
    try:
        row, _ = await _job(app, job_id)
        assert row.status == "succeeded" and row.delivery_attempts == 1 and row.notified_at is None
        assert BACKOFF_S - 5 < _wait_s(row) <= BACKOFF_S

        await app.notifier.sweep(grace_s=0)
        assert len(outbox.refused) == 1  # not due yet

        await _time_passes(app, job_id)
        await app.notifier.sweep(grace_s=0)
        await app.notifier.sweep(grace_s=0)
        row, _ = await _job(app, job_id)
        assert len(outbox.refused) == 2 and row.delivery_attempts == 2
        assert 2 * BACKOFF_S - 5 < _wait_s(row) <= 2 * BACKOFF_S  # the wait doubled

        await _time_passes(app, job_id)
        await app.notifier.sweep(grace_s=0)
        row, events = await _job(app, job_id)
        assert len(outbox.refused) == 3 and row.delivery_attempts == 3
        assert row.notified_at is not None and "undelivered" in events

        for _ in range(3):
            await _time_passes(app, job_id)
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
            await _time_passes(app, job_id)
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
            await _time_passes(app, job_id)
            await app.notifier.sweep(grace_s=0)
        outbox.refuse = None
        await app.notifier.sweep(grace_s=0)
        assert outbox.results_for(job_id) == []  # the next try is not due yet
        await _time_passes(app, job_id)
        await app.notifier.sweep(grace_s=0)
        row, events = await _job(app, job_id)
        assert len(outbox.refused) == failures and len(outbox.results_for(job_id)) == 1
        assert row.notified_at is not None and "undelivered" not in events
    finally:
        await app.aclose()
