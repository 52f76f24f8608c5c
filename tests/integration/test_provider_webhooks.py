"""Provider webhooks through the real app and web server, on SQLite and PostgreSQL.

KIE calls back on an unguessable per-job URL; Replicate signs its deliveries (Standard Webhooks).
Either way the job ends through the same finisher as a poll would, once, and polling remains the
safety net: a delivery before the first poll, after the poll finished the job, or instead of any
poll gives the same single result.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from typing import Any

import httpx
import pytest
from sqlalchemy import func, select

from studiobot.app import App, build_app, web_server
from studiobot.commands.contract import UserRef
from studiobot.config import Settings
from studiobot.db.models import Asset, Job
from studiobot.web.server import WebServer
from tests.doubles.kie import VALID_KEY as KIE_KEY
from tests.doubles.kie import KieState, deliver_callback, kie_app
from tests.doubles.platform import RecordingOutbox
from tests.doubles.replicate import VALID_TOKEN, ReplicateState, deliver_webhook, make_replicate_app
from tests.doubles.server import serve
from tests.ports import free_port

USER = UserRef("shell", "ada", "ada")



class World:
    """The app (scheduler driven by hand), its web server, and the outbox it delivers to."""

    def __init__(self, app: App, web: WebServer, outbox: RecordingOutbox) -> None:
        self.app, self.web, self.outbox = app, web, outbox

    async def imagine(self, line: str) -> int:
        _, reply = await self.app.dispatcher.dispatch_text(USER, _chat(), line, invocation_id=line)
        assert reply.data.get("status") == "queued", reply.text
        return reply.data["job_id"]

    async def submit(self) -> None:
        await self.app.worker.run_once()
        await self.app.worker.inflight.idle()

    async def poll(self) -> None:
        await self.app.poller.run_once()
        await self.app.poller.inflight.idle()

    async def job(self, job_id: int) -> Any:
        async with self.app.db.read() as conn:
            return (await conn.execute(select(*Job.__table__.c).where(Job.id == job_id))).one()

    async def assets(self, job_id: int) -> int:
        async with self.app.db.read() as conn:
            return (await conn.execute(select(func.count()).select_from(Asset).where(Asset.job_id == job_id, Asset.kind == "image"))).scalar_one()

    async def settled(self) -> None:
        await self.app.webhooks.drain()


def _chat():
    from studiobot.commands.contract import ChatRef

    return ChatRef("shell", "terminal", "dm")


@pytest.fixture
async def world(make_settings: Callable[..., Settings], database_url: str, request) -> AsyncIterator[Callable]:
    """Build a World whose providers point at the given doubles' URLs."""
    opened: list[tuple[App, WebServer]] = []

    async def make(**overrides: Any) -> World:
        port = free_port()
        settings = make_settings(database_url=database_url, web_port=port, public_url=f"http://127.0.0.1:{port}",
                                 poll_backoff_max_s=0.05, **overrides)
        outbox = RecordingOutbox()
        app = await build_app(settings, {"shell": outbox})
        web = web_server(settings, app)
        await web.start()
        opened.append((app, web))
        return World(app, web, outbox)

    yield make
    for app, web in opened:
        await web.stop()
        await app.aclose()


@pytest.fixture
async def kie() -> AsyncIterator[tuple[str, KieState]]:
    state = KieState(steps=1)
    async with serve(kie_app(state)) as url:
        yield url, state


def record_infos(state: KieState) -> int:
    return sum(r.path.endswith("/record-info") for r in state.requests)


async def test_kie_callback_instead_of_any_poll(world, kie) -> None:
    url, state = kie
    w = await world(kie_base_url=url, kie_api_key=KIE_KEY)
    job_id = await w.imagine("/imagine a lighthouse --provider kie")
    await w.submit()
    (task_id,) = state.tasks
    callback = state.tasks[task_id].body["callBackUrl"]
    assert callback.startswith(f"http://127.0.0.1:{w.web.port}/webhooks/kie/{job_id}/")
    assert await deliver_callback(state, task_id) == 200
    await w.settled()
    job = await w.job(job_id)
    assert job.status == "succeeded" and await w.assets(job_id) == 4
    assert record_infos(state) == 0  # never polled
    assert len(w.outbox.results_for(job_id)) == 1
    await w.poll()  # a later poll finds nothing to do
    assert record_infos(state) == 0 and await w.assets(job_id) == 4


async def test_kie_callback_before_the_poll_then_a_redelivery(world, kie) -> None:
    url, state = kie
    w = await world(kie_base_url=url, kie_api_key=KIE_KEY)
    job_id = await w.imagine("/imagine a fox --provider kie")
    await w.submit()
    (task_id,) = state.tasks
    assert await deliver_callback(state, task_id) == 200
    await w.settled()
    assert await deliver_callback(state, task_id) == 200  # KIE may deliver twice
    await w.settled()
    assert (await w.job(job_id)).status == "succeeded" and await w.assets(job_id) == 4
    assert len(w.outbox.results_for(job_id)) == 1


async def test_kie_callback_after_the_poll_finished_the_job(world, kie) -> None:
    url, state = kie
    state.steps = 0
    w = await world(kie_base_url=url, kie_api_key=KIE_KEY)
    job_id = await w.imagine("/imagine a fox --provider kie")
    await w.submit()
    for _ in range(40):
        await asyncio.sleep(0.05)  # the first poll is due a moment after submission
        await w.poll()
        if (await w.job(job_id)).status == "succeeded":
            break
    assert (await w.job(job_id)).status == "succeeded"
    (task_id,) = state.tasks
    assert await deliver_callback(state, task_id) == 200
    await w.settled()
    assert await w.assets(job_id) == 4 and len(w.outbox.results_for(job_id)) == 1


async def test_forged_or_early_callbacks_change_nothing(world, kie) -> None:
    url, state = kie
    w = await world(kie_base_url=url, kie_api_key=KIE_KEY)
    job_id = await w.imagine("/imagine a fox --provider kie")
    root = f"http://127.0.0.1:{w.web.port}/webhooks/kie"
    base = f"{root}/{job_id}"
    job = await w.job(job_id)
    async with httpx.AsyncClient() as client:
        early = await client.post(f"{base}/{job.webhook_token}", json={"code": 200, "data": {"taskId": "x"}})
        assert early.status_code == 503  # not submitted yet: KIE retries, polls cover it
        await w.submit()
        (task_id,) = state.tasks
        good = {"code": 200, "msg": "success", "data": {"taskId": task_id, "resultUrls": ["http://evil.test/x.png"]}}
        assert (await client.post(f"{base}/wrong-token", json=good)).status_code == 404
        assert (await client.post(f"{root}/{job_id + 1}/{job.webhook_token}", json=good)).status_code == 404
        other = {"code": 200, "msg": "success", "data": {"taskId": "someone-else", "resultUrls": []}}
        assert (await client.post(f"{base}/{job.webhook_token}", json=other)).status_code == 400
        garbled = await client.post(f"{base}/{job.webhook_token}", content=b"{not json")
        assert garbled.status_code == 400
    assert (await w.job(job_id)).status == "running" and await w.assets(job_id) == 0


async def test_kie_failure_callback_fails_and_refunds(world, kie) -> None:
    from tests.doubles.kie import failure

    url, state = kie
    state.outcomes = [failure(501, "Image generation failed")]
    w = await world(kie_base_url=url, kie_api_key=KIE_KEY)
    job_id = await w.imagine("/imagine a fox --provider kie")
    await w.submit()
    (task_id,) = state.tasks
    assert await deliver_callback(state, task_id) == 200
    await w.settled()
    job = await w.job(job_id)
    assert job.status == "failed" and job.error_code == "task_failed"


@pytest.fixture
async def replicate() -> AsyncIterator[tuple[str, ReplicateState]]:
    state = ReplicateState(require_https_webhooks=False, steps=5)
    async with serve(make_replicate_app(state)) as url:
        yield url, state


async def test_replicate_signed_webhook_finishes_the_job_and_a_tampered_one_is_refused(world, replicate) -> None:
    url, state = replicate
    w = await world(replicate_base_url=url, replicate_api_token=VALID_TOKEN)
    job_id = await w.imagine("/imagine a fox --provider replicate")
    await w.submit()
    (prediction_id,) = state.predictions
    webhook, events = state._hooks[prediction_id]
    assert webhook.endswith(f"/webhooks/replicate/{job_id}/{(await w.job(job_id)).webhook_token}")
    assert events == {"completed"}
    assert await deliver_webhook(state, prediction_id, tamper=True) == 400
    await w.settled()
    assert (await w.job(job_id)).status == "running"
    assert await deliver_webhook(state, prediction_id) == 200
    await w.settled()
    assert (await w.job(job_id)).status == "succeeded" and await w.assets(job_id) == 1
    polls = sum(r.method == "GET" and "/predictions/" in r.path for r in state.requests)
    assert polls == 0 and len(w.outbox.results_for(job_id)) == 1
