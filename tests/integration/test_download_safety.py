"""A signed provider webhook cannot make the finisher fetch an internal address (SQLite, PostgreSQL).

Whoever brings their own Replicate key can sign a delivery naming any output URL. The download
client refuses addresses that are not public (unless the operator allows their network), so the
job fails with a refund and a message naming neither the address nor a status code.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest
from PIL import Image
from sqlalchemy import select

from studiobot.app import App, build_app, web_server
from studiobot.commands.contract import ChatRef, UserRef
from studiobot.config import Settings
from studiobot.db.models import CreditAccount, CreditEntry, Job
from studiobot.web.server import WebServer
from tests.doubles.platform import RecordingOutbox
from tests.doubles.replicate import VALID_TOKEN, ReplicateState, deliver_webhook, make_replicate_app
from tests.doubles.server import serve
from tests.ports import free_port

USER = UserRef("shell", "ada", "ada")
CHAT = ChatRef("shell", "terminal", "dm")
NEUTRAL = "The finished image could not be fetched: its address is not allowed."



@pytest.fixture
async def world(
    make_settings: Callable[..., Settings], database_url: str
) -> AsyncIterator[tuple[App, ReplicateState, RecordingOutbox]]:
    """The app with its web server, Replicate's double, and no network opened to downloads."""
    state = ReplicateState(require_https_webhooks=False, steps=5)
    async with serve(make_replicate_app(state)) as replicate_url:
        port = free_port()
        settings = make_settings(
            database_url=database_url, web_port=port, public_url=f"http://127.0.0.1:{port}",
            replicate_base_url=replicate_url, replicate_api_token=VALID_TOKEN,
            download_allow_networks=(),  # the default: the double's own 127.0.0.1 is not allowed
        )
        outbox = RecordingOutbox()
        app = await build_app(settings, {"shell": outbox})
        web: WebServer = web_server(settings, app)
        await web.start()
        try:
            yield app, state, outbox
        finally:
            await web.stop()
            await app.aclose()


async def _submitted(app: App) -> int:
    _, reply = await app.dispatcher.dispatch_text(USER, CHAT, "/imagine a fox --provider replicate",
                                                  invocation_id="one")
    assert reply.data.get("status") == "queued", reply.text
    await app.worker.run_once()
    await app.worker.inflight.idle()
    return reply.data["job_id"]


async def _read(app: App, statement: Any) -> list[Any]:
    async with app.db.read() as conn:
        return list((await conn.execute(statement)).all())


@pytest.mark.parametrize(
    "output", [None, "http://169.254.169.254/latest/meta-data/iam/security-credentials/"],
    ids=["double-on-loopback", "cloud-metadata"],
)
async def test_signed_webhook_naming_an_internal_url_fails_the_job_with_a_refund(world, output) -> None:
    app, state, outbox = world
    job_id = await _submitted(app)
    (prediction_id,) = state.predictions
    if output is not None:  # the user's own account "finished" with a URL of their choosing
        state.predictions[prediction_id] |= {"status": "succeeded", "output": [output]}

    assert await deliver_webhook(state, prediction_id) == 200
    await app.webhooks.drain()

    (job,) = await _read(app, select(Job.status, Job.error_code, Job.error_message).where(Job.id == job_id))
    assert (job.status, job.error_code, job.error_message) == ("failed", "download", NEUTRAL)
    assert not any("/files/" in r.path for r in state.requests)  # nothing was fetched
    entries = [kind for (kind,) in await _read(app, select(CreditEntry.kind).order_by(CreditEntry.id))]
    assert entries == ["grant", "reserve", "refund"]
    ((balance,),) = await _read(app, select(CreditAccount.balance))
    assert balance == app.settings.welcome_credits
    (told,) = outbox.results_for(job_id)
    assert NEUTRAL in told.text and "127.0.0.1" not in told.text and "169.254" not in told.text


async def test_the_app_sets_pillows_pixel_limit_from_the_settings(
    make_settings: Callable[..., Settings], database_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", Image.MAX_IMAGE_PIXELS)  # restored afterwards
    app = await build_app(make_settings(database_url=database_url, max_image_pixels=1_000_000), {})
    try:
        assert Image.MAX_IMAGE_PIXELS == 1_000_000
    finally:
        await app.aclose()
