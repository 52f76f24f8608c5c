"""Job lifecycle through the real worker, poller, finisher and recovery, on SQLite and PostgreSQL.

Providers are the real adapters talking HTTP to loopback doubles that inject the documented
failures. Every job must end terminal, its reservation resolved exactly once, its user told once.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest
from sqlalchemy import func, select

from studiobot.app import App, build_app
from studiobot.commands.contract import ChatRef, Reply, UserRef
from studiobot.config import Settings
from studiobot.db.models import CreditAccount, CreditEntry, Job, JobEvent
from tests.doubles.openai_images import VALID_KEY, OpenAIState, error_body, make_openai_app
from tests.doubles.platform import RecordingOutbox
from tests.doubles.replicate import VALID_TOKEN, Outcome, ReplicateState, make_replicate_app, problem
from tests.doubles.server import reply, serve, stall

USER = UserRef("test", "ada", "Ada")
CHAT = ChatRef("test", "chat-1", "dm")
WELCOME = 50


@pytest.fixture
def openai_state() -> OpenAIState:
    return OpenAIState()


@pytest.fixture
def replicate_state() -> ReplicateState:
    return ReplicateState(steps=2)


@pytest.fixture
async def outbox() -> RecordingOutbox:
    return RecordingOutbox()


@pytest.fixture
async def make_app(
    database_url: str,
    make_settings: Callable[..., Settings],
    openai_state: OpenAIState,
    replicate_state: ReplicateState,
    outbox: RecordingOutbox,
) -> AsyncIterator[Callable[..., Any]]:
    """Build the real app against both doubles; the scheduler is driven by the test, not timers."""
    apps: list[App] = []
    async with serve(make_openai_app(openai_state)) as openai_url, serve(
        make_replicate_app(replicate_state)
    ) as replicate_url:

        async def make(**overrides: Any) -> App:
            values: dict[str, Any] = dict(
                database_url=database_url, welcome_credits=WELCOME,
                openai_api_key=VALID_KEY, openai_base_url=openai_url, openai_timeout_s=0.5,
                replicate_api_token=VALID_TOKEN, replicate_base_url=replicate_url,
                replicate_timeout_s=0.5, retry_backoff_max_s=0.05, poll_backoff_max_s=0.02,
                max_attempts=3,
            )
            values.update(overrides)
            app = await build_app(make_settings(**values), {"test": outbox})
            apps.append(app)
            return app

        yield make
        for app in apps:
            await app.aclose()


async def imagine(app: App, text: str, invocation: str) -> Reply:
    _, answer = await app.dispatcher.dispatch_text(USER, CHAT, text, invocation)
    return answer


async def drive(app: App, *, timeout: float = 20.0) -> None:
    """Run worker, poller and recovery until no job is active."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        await app.worker.run_once()
        await app.worker.inflight.idle()
        await app.poller.run_once()
        await app.poller.inflight.idle()
        await app.recovery.run_once()
        async with app.db.read() as conn:
            active = (await conn.execute(
                select(func.count()).where(Job.status.in_(("queued", "running"))))).scalar_one()
        if not active:
            return
        await asyncio.sleep(0.01)
    raise AssertionError("jobs still active after the timeout")


async def job_row(app: App, job_id: int) -> Any:
    async with app.db.read() as conn:
        return (await conn.execute(select(Job).where(Job.id == job_id))).one()


async def assert_ledger_consistent(app: App) -> None:
    """balance == sum of entries >= 0; every terminal job's reservation resolved exactly once."""
    async with app.db.read() as conn:
        for user_id, balance in (await conn.execute(select(CreditAccount.user_id, CreditAccount.balance))).all():
            total = (await conn.execute(
                select(func.coalesce(func.sum(CreditEntry.amount), 0)).where(CreditEntry.user_id == user_id)
            )).scalar_one()
            assert balance == total >= 0
        for job in (await conn.execute(select(Job.id, Job.status, Job.cost))).all():
            kinds = sorted((await conn.execute(
                select(CreditEntry.kind).where(CreditEntry.job_id == job.id))).scalars())
            if job.cost == 0:
                assert kinds == []
            elif job.status == "succeeded":
                assert kinds == ["capture", "reserve"], (job, kinds)
            elif job.status in ("failed", "cancelled"):
                assert kinds == ["refund", "reserve"], (job, kinds)
            else:
                assert kinds == ["reserve"], (job, kinds)


async def balance(app: App) -> int:
    async with app.db.read() as conn:
        return (await conn.execute(select(CreditAccount.balance))).scalar_one()


SYNC_CASES = [
    pytest.param([], "succeeded", None, 1, id="ok"),
    pytest.param([stall(2.0)], "succeeded", None, 2, id="timeout-then-ok"),
    pytest.param([reply(429, error_body("Rate limit reached for requests", "requests", "rate_limit_exceeded"),
                        {"Retry-After": "0"})], "succeeded", None, 2, id="429-retry-after"),
    pytest.param([reply(500, error_body("The server had an error", "server_error"))], "succeeded", None, 2, id="500-then-ok"),
    pytest.param([reply(200, "{not json")], "succeeded", None, 2, id="malformed-json-then-ok"),
    pytest.param([reply(503, "overloaded")] * 3, "failed", "unavailable", 3, id="503-every-time"),
    pytest.param([reply(400, error_body("Your request was rejected by the safety system.",
                                        "image_generation_user_error", "moderation_blocked"))],
                 "failed", "content_rejected", 1, id="moderation-blocked"),
    pytest.param([reply(429, error_body("You exceeded your current quota", "insufficient_quota",
                                        "insufficient_quota"))], "failed", "quota_exhausted", 1, id="quota"),
    pytest.param([reply(401, error_body("Incorrect API key provided", "invalid_request_error",
                                        "invalid_api_key"))], "failed", "auth_error", 1, id="401"),
]


@pytest.mark.parametrize(("script", "status", "error_code", "attempts"), SYNC_CASES)
async def test_sync_provider_job_lifecycle(make_app, openai_state, outbox, script, status, error_code, attempts):
    app = await make_app()
    openai_state.fail_next.extend(script)
    queued = await imagine(app, "/imagine a red fox --provider openai --count 2", "inv-1")
    job_id = queued.data["job_id"]
    assert queued.data["status"] == "queued" and queued.data["cost"] == 8

    await drive(app)

    job = await job_row(app, job_id)
    assert (job.status, job.error_code, job.attempts) == (status, error_code, attempts)
    assert await balance(app) == WELCOME - (8 if status == "succeeded" else 0)
    results = outbox.results_for(job_id)
    assert len(results) == 1 and results[0].data["status"] == status
    if status == "succeeded":
        assert [i.kind for i in results[0].images] == ["grid", "image", "image"]
        assert all(i.path.is_file() for i in results[0].images)
    else:
        assert "8 credits refunded" in results[0].text
        assert VALID_KEY not in results[0].text
    await assert_ledger_consistent(app)


ASYNC_CASES = [
    pytest.param([], [], "succeeded", None, id="ok"),
    pytest.param([reply(429, problem(429, "Request was throttled. Your rate limit resets in ~0s."),
                        {"Retry-After": "0"})], [], "succeeded", None, id="429-on-create"),
    pytest.param([reply(500, problem(500, "Internal"))], [], "succeeded", None, id="500-on-create"),
    pytest.param([], [Outcome("failed", error="NSFW content detected")], "failed", "content_rejected", id="nsfw"),
    pytest.param([], [Outcome("aborted")], "failed", "task_failed", id="aborted"),
    pytest.param([], [Outcome(missing_files=True)], "failed", "download", id="result-url-404"),
    pytest.param([], [Outcome(data_removed=True)], "failed", "task_failed", id="data-removed"),
]


@pytest.mark.parametrize(("script", "outcomes", "status", "error_code"), ASYNC_CASES)
async def test_async_provider_job_lifecycle(make_app, replicate_state, outbox, script, outcomes, status, error_code):
    app = await make_app()
    replicate_state.fail_next.extend(script)
    replicate_state.outcomes.extend(outcomes)
    queued = await imagine(app, "/imagine a red fox --provider replicate --ar 16:9", "inv-1")
    job_id = queued.data["job_id"]

    await drive(app)

    job = await job_row(app, job_id)
    assert (job.status, job.error_code) == (status, error_code)
    assert await balance(app) == WELCOME - (2 if status == "succeeded" else 0)
    assert len(outbox.results_for(job_id)) == 1
    creates = [r for r in replicate_state.requests if r.method == "POST" and r.path.endswith("/predictions")]
    assert creates[-1].json["input"]["aspect_ratio"] == "16:9"
    await assert_ledger_consistent(app)


async def test_poll_failures_are_retried_until_the_task_finishes(make_app, replicate_state, outbox):
    app = await make_app()
    queued = await imagine(app, "/imagine a red fox --provider replicate", "inv-1")
    await app.worker.run_once()
    await app.worker.inflight.idle()  # submitted: the poller takes over
    # Every poll below meets a failure first: 500 x3 exhausts the client's own retries, then
    # malformed JSON; the job stays running and is polled again later.
    replicate_state.fail_next.extend([reply(500, problem(500, "x"))] * 3 + [reply(200, "{oops")])

    await drive(app)

    job = await job_row(app, queued.data["job_id"])
    assert job.status == "succeeded"
    async with app.db.read() as conn:
        retries = (await conn.execute(select(func.count()).where(
            JobEvent.job_id == job.id, JobEvent.kind == "poll-retry"))).scalar_one()
    assert retries == 2
    await assert_ledger_consistent(app)


async def test_overdue_job_fails_with_refund_and_provider_cancel(make_app, replicate_state, outbox):
    replicate_state.steps = 10_000  # never finishes by itself
    app = await make_app(job_deadline_s=0.3)
    queued = await imagine(app, "/imagine a slow fox --provider replicate", "inv-1")

    await drive(app)

    job = await job_row(app, queued.data["job_id"])
    assert (job.status, job.error_code) == ("failed", "deadline")
    assert await balance(app) == WELCOME
    assert any(r.path.endswith("/cancel") for r in replicate_state.requests)
    assert "longer than" in outbox.results_for(job.id)[0].text
    await assert_ledger_consistent(app)


async def test_cancel_queued_and_running_jobs(make_app, replicate_state, outbox):
    replicate_state.steps = 10_000
    app = await make_app()
    first = (await imagine(app, "/imagine one --provider replicate", "inv-1")).data["job_id"]
    _, cancelled = await app.dispatcher.dispatch_text(USER, CHAT, f"/cancel {first}", "inv-2")
    assert cancelled.data == {"job_id": first, "status": "cancelled", "refunded": 2}

    second = (await imagine(app, "/imagine two --provider replicate", "inv-3")).data["job_id"]
    await app.worker.run_once()
    await app.worker.inflight.idle()
    assert (await job_row(app, second)).provider_task_id
    _, cancelled = await app.dispatcher.dispatch_text(USER, CHAT, f"/cancel {second}", "inv-4")
    assert cancelled.data["status"] == "cancelled"
    assert any(r.path.endswith("/cancel") for r in replicate_state.requests)

    _, again = await app.dispatcher.dispatch_text(USER, CHAT, f"/cancel {second}", "inv-5")
    assert "already cancelled" in again.text
    await app.recovery.run_once()
    assert outbox.results_for(first) == [] and outbox.results_for(second) == []  # the reply told them
    assert await balance(app) == WELCOME
    await assert_ledger_consistent(app)


async def test_many_mixed_jobs_all_end_terminal(make_app, openai_state, replicate_state, outbox):
    app = await make_app(max_active_jobs_per_user=20, welcome_credits=500)
    openai_state.fail_next.extend([reply(500, "x"), reply(200, "garbage"), stall(2.0)])
    replicate_state.outcomes.extend([Outcome(), Outcome("failed", error="boom"), Outcome(missing_files=True)])
    ids = []
    for i in range(12):
        provider = ("openai", "replicate", "offline")[i % 3]
        ids.append((await imagine(app, f"/imagine fox {i} --provider {provider}", f"inv-{i}")).data["job_id"])

    await drive(app, timeout=30)

    async with app.db.read() as conn:
        statuses = (await conn.execute(select(Job.status).where(Job.id.in_(ids)))).scalars().all()
    assert set(statuses) <= {"succeeded", "failed"} and "succeeded" in statuses
    assert all(len(outbox.results_for(job_id)) == 1 for job_id in ids)
    await assert_ledger_consistent(app)
