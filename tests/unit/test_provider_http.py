"""The shared provider HTTP policy (studiobot.providers.http) over real loopback HTTP."""

from __future__ import annotations

import time
from datetime import datetime, timedelta, timezone
from email.utils import format_datetime

import httpx
import pytest
from aiohttp import web

from studiobot import __version__
from studiobot.providers import http
from studiobot.providers.errors import Unavailable
from tests.doubles.server import reply, respond, scripting_middleware, serve, stall
from tests.ports import free_port


class EchoState:
    def __init__(self) -> None:
        self.requests: list = []
        self.fail_next: list = []


def echo_app(state: EchoState) -> web.Application:
    app = web.Application(middlewares=[scripting_middleware(state)])

    async def ok(request: web.Request) -> web.Response:
        return respond(200, {"ok": True})

    async def moved(request: web.Request) -> web.Response:
        raise web.HTTPFound("/ok")

    app.router.add_route("*", "/ok", ok)
    app.router.add_get("/moved", moved)
    return app


@pytest.fixture
def state() -> EchoState:
    return EchoState()


@pytest.fixture
async def client(state: EchoState):
    async with serve(echo_app(state)) as url:
        async with http.make_client(url, timeout=0.3, connect_timeout=0.3) as c:
            yield c



def test_make_client_policy():
    client = http.make_client("http://127.0.0.1:1/v1", timeout=12.0, connect_timeout=3.0)
    assert client.timeout == httpx.Timeout(12.0, connect=3.0)
    assert client.headers["User-Agent"] == f"studiobot/{__version__}"
    assert client.follow_redirects is False
    assert str(client.base_url) == "http://127.0.0.1:1/v1/"


async def test_redirects_are_returned_not_followed(client, state):
    response = await http.send(client, "GET", "/moved", retry_idempotent=True)
    assert response.status_code == 302
    assert len(state.requests) == 1


async def test_non_idempotent_5xx_is_returned_after_one_attempt(client, state):
    state.fail_next.append(reply(500, "boom"))
    response = await http.send(client, "POST", "/ok", retry_idempotent=False, json={})
    assert response.status_code == 500
    assert len(state.requests) == 1


async def test_non_idempotent_timeout_is_unavailable_after_one_attempt(client, state):
    state.fail_next.append(stall(1.0))
    with pytest.raises(Unavailable) as caught:
        await http.send(client, "POST", "/ok?token=hunter2", retry_idempotent=False)
    assert len(state.requests) == 1
    assert caught.value.detail == "POST /ok: timed out (ReadTimeout)"  # no query string
    assert caught.value.__cause__ is None and caught.value.__suppress_context__


async def test_idempotent_5xx_is_retried_until_success(client, state):
    state.fail_next.extend([reply(500, "boom"), reply(503, "busy")])
    response = await http.send(client, "GET", "/ok", retry_idempotent=True)
    assert response.status_code == 200
    assert len(state.requests) == 3


async def test_idempotent_gives_back_the_last_5xx_after_three_attempts(client, state):
    state.fail_next.extend([reply(500, "one"), reply(500, "two"), reply(502, "three"), reply(500)])
    started = time.monotonic()
    response = await http.send(client, "GET", "/ok", retry_idempotent=True)
    assert (response.status_code, response.text) == (502, "three")
    assert len(state.requests) == 3
    assert time.monotonic() - started < 1.0  # backoff waits at most 0.2 s + 0.4 s


async def test_idempotent_timeout_is_retried(client, state):
    state.fail_next.append(stall(1.0))
    response = await http.send(client, "GET", "/ok", retry_idempotent=True)
    assert response.status_code == 200
    assert len(state.requests) == 2


async def test_4xx_is_never_retried(client, state):
    state.fail_next.append(reply(429, "slow down"))
    response = await http.send(client, "GET", "/ok", retry_idempotent=True)
    assert response.status_code == 429
    assert len(state.requests) == 1


async def test_connection_refused_is_unavailable_after_retries():
    async with http.make_client(f"http://127.0.0.1:{free_port()}", connect_timeout=0.3) as client:
        with pytest.raises(Unavailable) as caught:
            await http.send(client, "GET", "/x", retry_idempotent=True)
    assert caught.value.detail == "GET /x: ConnectError"
    assert caught.value.retryable


def response_with(headers: dict[str, str]) -> httpx.Response:
    return httpx.Response(429, headers=headers)


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("30", 30.0),
        ("1.5", 1.5),
        (" 0 ", 0.0),
        ("-4", 0.0),
        ("soon", None),
        ("", None),
        ("inf", None),
    ],
)
def test_retry_after_seconds_delta_form(value, expected):
    assert http.retry_after_seconds(response_with({"Retry-After": value})) == expected


def test_retry_after_seconds_http_date_form():
    future = datetime.now(timezone.utc) + timedelta(seconds=90)
    header = {"Retry-After": format_datetime(future, usegmt=True)}
    seconds = http.retry_after_seconds(response_with(header))
    assert seconds is not None and 85 <= seconds <= 90

    past = format_datetime(datetime(2001, 1, 1, tzinfo=timezone.utc), usegmt=True)
    assert http.retry_after_seconds(response_with({"Retry-After": past})) == 0.0


def test_retry_after_seconds_absent():
    assert http.retry_after_seconds(response_with({})) is None


def test_redact_removes_given_secrets_and_token_shapes():
    text = (
        "key my-odd-secret, openai sk-proj-AbC123_xyz-789 masked sk-abc***wxyz, "
        "replicate r8_ZZZ999aaa, header Authorization: Bearer eyJhbGciOi.payload.sig"
    )
    clean = http.redact(text, "my-odd-secret", "")
    for leaked in ("my-odd-secret", "sk-proj", "AbC123", "wxyz", "r8_ZZZ", "eyJhbGciOi"):
        assert leaked not in clean
    assert "Bearer ***" in clean
    assert "task-12345" in http.redact("task-12345")  # ordinary words that contain "sk-" survive


def test_redact_truncates_after_redacting():
    secret = "s3cr3t-value-that-is-long"
    text = "x" * 290 + secret + "y" * 100
    clean = http.redact(text, secret)
    assert len(clean) == http.REDACTED_MAX_CHARS
    assert "s3cr3t" not in clean


def test_parse_json():
    assert http.parse_json(httpx.Response(200, json={"a": [1]})) == {"a": [1]}
    with pytest.raises(Unavailable, match="malformed JSON"):
        http.parse_json(httpx.Response(200, content=b"{nope"))
    with pytest.raises(Unavailable, match="malformed JSON"):
        http.parse_json(httpx.Response(200, content=b"\xff\xfe\x00garbage"))
