"""ReplicateProvider against the loopback predictions double (contracts README §3)."""

from __future__ import annotations

import io
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone

import httpx
import pytest
from aiohttp import web
from PIL import Image
from standardwebhooks.webhooks import Webhook

from studiobot.providers.base import (
    Finished,
    ImageRequest,
    Progress,
    ProviderKey,
    Submitted,
)
from studiobot.providers.errors import (
    AuthError,
    BadRequest,
    TaskFailed,
    ContentRejected,
    ProviderError,
    QuotaExhausted,
    RateLimited,
    Unavailable,
    WebhookRejected,
)
from studiobot.providers.replicate import ReplicateProvider
from tests.doubles.replicate import (
    FLUX_SCHNELL,
    FLUX_VERSION,
    VALID_TOKEN,
    Delivery,
    Outcome,
    ReplicateState,
    deliver_webhook,
    make_replicate_app,
    new_signing_secret,
    problem,
    settle_webhooks,
    signed_delivery,
)
from tests.doubles.server import reply, serve, stall

KEY = ProviderKey(VALID_TOKEN)
THROTTLED = {"detail": "Request was throttled. Your rate limit resets in ~30s."}


@pytest.fixture
def state() -> ReplicateState:
    return ReplicateState()


@pytest.fixture
async def base_url(state: ReplicateState):
    async with serve(make_replicate_app(state)) as url:
        yield url


@pytest.fixture
async def provider(base_url: str):
    adapter = ReplicateProvider(base_url=base_url, timeout=0.3)
    yield adapter
    await adapter.aclose()


def calls(state: ReplicateState, method: str) -> list:
    return [r for r in state.requests if r.method == method]


async def run_to_end(provider: ReplicateProvider, task_id: str, limit: int = 10):
    """Poll until the prediction stops being Progress; return every answer (or raise)."""
    answers = []
    for _ in range(limit):
        answer = await provider.poll(task_id, KEY)
        answers.append(answer)
        if not isinstance(answer, Progress):
            return answers
    raise AssertionError("prediction never finished")


async def test_create_uses_the_official_model_endpoint_and_no_prefer_wait(provider, state):
    submitted = await provider.submit(ImageRequest(prompt="a fox", aspect="16:9", count=2), KEY)

    assert isinstance(submitted, Submitted)
    assert submitted.task_id in state.predictions
    [sent] = state.requests
    assert (sent.method, sent.path) == ("POST", f"/models/{FLUX_SCHNELL}/predictions")
    assert sent.json == {
        "input": {
            "prompt": "a fox",
            "aspect_ratio": "16:9",
            "num_outputs": 2,
            "output_format": "png",
        }
    }
    assert "Prefer" not in sent.headers  # queue-first: never block on the create call
    assert sent.headers["Authorization"] == f"Bearer {VALID_TOKEN}"


async def test_create_sends_seed_and_completed_only_webhook(provider, state):
    request = ImageRequest(prompt="a fox", seed=1234, webhook_url="https://hooks.example.test/r/1")

    await provider.submit(request, KEY)

    body = state.requests[0].json
    assert body["input"]["seed"] == 1234
    assert body["webhook"] == "https://hooks.example.test/r/1"
    assert body["webhook_events_filter"] == ["completed"]


async def test_versioned_model_goes_to_predictions_with_version(base_url, state):
    versioned = f"{FLUX_SCHNELL}:{FLUX_VERSION}"
    adapter = ReplicateProvider(base_url=base_url, models=(versioned,), timeout=0.3)
    try:
        submitted = await adapter.submit(ImageRequest(prompt="a fox"), KEY)
    finally:
        await adapter.aclose()

    [sent] = state.requests
    assert (sent.path, sent.json["version"]) == ("/predictions", versioned)
    assert state.predictions[submitted.task_id]["version"] == FLUX_VERSION


async def test_create_that_already_succeeded_still_answers_submitted(provider, state):
    done = {"id": "done0000000000000000000000", "status": "succeeded", "output": ["x.png"]}
    state.fail_next.append(reply(201, done))

    assert await provider.submit(ImageRequest(prompt="a fox"), KEY) == Submitted(done["id"])


async def test_poll_reports_progress_then_finished_with_downloadable_pngs(provider, state):
    submitted = await provider.submit(ImageRequest(prompt="a fox", aspect="2:3", count=2), KEY)

    answers = await run_to_end(provider, submitted.task_id)

    assert answers[0] == Progress(stage="starting", fraction=None)
    assert answers[1] == Progress(stage="processing", fraction=0.5)  # from "50%|" in logs
    finished = answers[2]
    assert isinstance(finished, Finished) and len(finished.images) == 2
    async with httpx.AsyncClient() as client:
        for image in finished.images:
            assert image.data is None and image.url
            response = await client.get(image.url)
            with Image.open(io.BytesIO(response.content)) as picture:
                assert picture.format == "PNG"
                assert picture.height > picture.width


async def test_output_as_single_string_gives_one_image(provider, state):
    state.outcomes.append(Outcome(output_as_string=True))
    submitted = await provider.submit(ImageRequest(prompt="a fox", seed=5), KEY)

    finished = (await run_to_end(provider, submitted.task_id))[-1]

    assert len(finished.images) == 1 and finished.images[0].url.endswith("/0.png")
    assert finished.images[0].seed == 5


async def test_poll_does_not_fetch_results_so_a_dead_result_url_is_the_finishers_problem(
    provider, state
):
    state.outcomes.append(Outcome(missing_files=True))
    submitted = await provider.submit(ImageRequest(prompt="a fox"), KEY)

    finished = (await run_to_end(provider, submitted.task_id))[-1]

    async with httpx.AsyncClient() as client:
        assert (await client.get(finished.images[0].url)).status_code == 404


@pytest.mark.parametrize(
    ("outcome", "expected", "needle"),
    [
        (Outcome("failed", error="NSFW content detected."), ContentRejected, ""),
        (Outcome("failed", error="Flagged by the safety checker"), ContentRejected, ""),
        (Outcome("failed", error="CUDA out of memory\nTraceback ..."), TaskFailed, "memory;"),
        (Outcome("failed", error=None), TaskFailed, "no reason given"),
        (Outcome("canceled"), TaskFailed, "cancelled"),
        (Outcome("aborted"), TaskFailed, "aborted"),
        (Outcome(data_removed=True), TaskFailed, "deleted"),
    ],
)
async def test_terminal_failures(provider, state, outcome, expected, needle):
    state.outcomes.append(outcome)
    submitted = await provider.submit(ImageRequest(prompt="a fox"), KEY)

    with pytest.raises(expected) as caught:
        await run_to_end(provider, submitted.task_id)

    assert type(caught.value) is expected
    assert needle in caught.value.user_message
    assert "Traceback" not in caught.value.user_message


async def test_failed_prediction_user_message_names_the_reason_and_no_charge(provider, state):
    state.outcomes.append(Outcome("failed", error="prompt too long for model"))
    submitted = await provider.submit(ImageRequest(prompt="a fox"), KEY)

    with pytest.raises(TaskFailed) as caught:
        await run_to_end(provider, submitted.task_id)

    assert caught.value.user_message == (
        "The provider failed to generate this image: prompt too long for model; "
        "you were not charged."
    )


CREATE_ERRORS = [
    pytest.param(reply(402, problem(402, "Insufficient credit")), QuotaExhausted, id="402"),
    pytest.param(reply(422, problem(422, "- input.prompt: too long")), BadRequest, id="422"),
    pytest.param(reply(400, problem(400, "Bad request")), BadRequest, id="400"),
    pytest.param(reply(429, THROTTLED), RateLimited, id="429"),
    pytest.param(reply(500, problem(500, "Internal Server Error")), Unavailable, id="500"),
    pytest.param(reply(503, "<html>bad gateway</html>"), Unavailable, id="503-html"),
    pytest.param(reply(201, "{oops"), Unavailable, id="201-malformed-json"),
    pytest.param(reply(201, {"status": "starting"}), Unavailable, id="201-no-id"),
]


@pytest.mark.parametrize(("script", "expected"), CREATE_ERRORS)
async def test_create_errors_map_to_the_taxonomy_and_are_never_retried(
    provider, state, script, expected
):
    state.fail_next.append(script)

    with pytest.raises(expected) as caught:
        await provider.submit(ImageRequest(prompt="a fox"), KEY)

    assert type(caught.value) is expected
    assert len(calls(state, "POST")) == 1  # a resent create could bill twice
    assert state.predictions == {}


async def test_create_timeout_is_unavailable_and_not_resent(provider, state):
    state.fail_next.append(stall(1.0))
    with pytest.raises(Unavailable):
        await provider.submit(ImageRequest(prompt="a fox"), KEY)
    assert len(calls(state, "POST")) == 1


async def test_unknown_version_is_a_real_422(base_url, state):
    adapter = ReplicateProvider(base_url=base_url, models=(f"{FLUX_SCHNELL}:{'0' * 64}",))
    try:
        with pytest.raises(BadRequest):
            await adapter.submit(ImageRequest(prompt="a fox"), KEY)
    finally:
        await adapter.aclose()


async def test_wrong_token_is_auth_error(provider):
    with pytest.raises(AuthError):
        await provider.submit(ImageRequest(prompt="a fox"), ProviderKey("r8_WrongToken00000000"))


async def test_negative_prompt_is_refused_before_any_request(provider, state):
    with pytest.raises(BadRequest):
        await provider.submit(ImageRequest(prompt="a fox", negative_prompt="blur"), KEY)
    assert state.requests == []


async def test_429_retry_after_header_wins(provider, state):
    state.fail_next.append(reply(429, THROTTLED, {"Retry-After": "12"}))
    with pytest.raises(RateLimited) as caught:
        await provider.submit(ImageRequest(prompt="a fox"), KEY)
    assert caught.value.retry_after == 12.0


async def test_429_retry_after_falls_back_to_the_documented_body(provider, state):
    state.fail_next.append(reply(429, THROTTLED))
    with pytest.raises(RateLimited) as caught:
        await provider.submit(ImageRequest(prompt="a fox"), KEY)
    assert caught.value.retry_after == 30.0


async def test_poll_is_retried_after_a_500(provider, state):
    submitted = await provider.submit(ImageRequest(prompt="a fox"), KEY)
    state.fail_next.append(reply(500, problem(500, "Internal Server Error")))

    answer = await provider.poll(submitted.task_id, KEY)

    assert answer == Progress(stage="starting")
    assert len(calls(state, "GET")) == 2


async def test_poll_is_retried_after_a_timeout(provider, state):
    submitted = await provider.submit(ImageRequest(prompt="a fox"), KEY)
    state.fail_next.append(stall(1.0))

    answer = await provider.poll(submitted.task_id, KEY)

    assert isinstance(answer, Progress)
    assert len(calls(state, "GET")) == 2


async def test_poll_gives_up_after_three_attempts(provider, state):
    submitted = await provider.submit(ImageRequest(prompt="a fox"), KEY)
    state.fail_next.extend([reply(503, "down")] * 4)

    with pytest.raises(Unavailable):
        await provider.poll(submitted.task_id, KEY)

    assert len(calls(state, "GET")) == 3


@pytest.mark.parametrize(
    ("script", "expected"),
    [
        pytest.param(reply(429, THROTTLED), RateLimited, id="429"),
        pytest.param(reply(200, "{oops"), Unavailable, id="malformed-json"),
        pytest.param(reply(200, {"id": "x", "status": "exploded"}), Unavailable, id="bad-status"),
        pytest.param(
            reply(200, {"id": "x", "status": "succeeded", "output": [42], "data_removed": False}),
            Unavailable,
            id="output-not-urls",
        ),
        pytest.param(reply(401, problem(401, "Unauthenticated")), AuthError, id="401"),
    ],
)
async def test_poll_error_answers(provider, state, script, expected):
    submitted = await provider.submit(ImageRequest(prompt="a fox"), KEY)
    state.fail_next.append(script)

    with pytest.raises(expected):
        await provider.poll(submitted.task_id, KEY)


async def test_poll_unknown_prediction_is_task_not_found(provider):
    with pytest.raises(BadRequest) as caught:
        await provider.poll("doesnotexist0000000000000", KEY)
    assert "no longer knows this task" in caught.value.user_message


async def test_cancel_stops_a_running_prediction(provider, state):
    submitted = await provider.submit(ImageRequest(prompt="a fox"), KEY)

    assert await provider.cancel(submitted.task_id, KEY) is True

    assert state.requests[-1].path == f"/predictions/{submitted.task_id}/cancel"
    with pytest.raises(TaskFailed) as caught:
        await provider.poll(submitted.task_id, KEY)
    assert "cancelled" in caught.value.user_message


async def test_cancel_answers_false_when_replicate_cannot(provider, state):
    assert await provider.cancel("doesnotexist0000000000000", KEY) is False  # real 404

    submitted = await provider.submit(ImageRequest(prompt="a fox"), KEY)
    state.fail_next.append(reply(409, problem(409, "Prediction already completed")))
    assert await provider.cancel(submitted.task_id, KEY) is False


async def test_cancel_5xx_is_unavailable_after_retries(provider, state):
    state.fail_next.extend([reply(500, "boom")] * 3)
    with pytest.raises(Unavailable):
        await provider.cancel("abc", KEY)
    assert len(state.requests) == 3


async def test_check_key_reads_the_account(provider, state):
    await provider.check_key(KEY)
    assert [(r.method, r.path) for r in state.requests] == [("GET", "/account")]

    with pytest.raises(AuthError):
        await provider.check_key(ProviderKey("r8_NotAValidToken000000"))


def test_capabilities_and_price(provider):
    caps = provider.capabilities
    assert caps.models == (FLUX_SCHNELL,)
    assert (caps.is_async, caps.can_cancel, caps.webhooks) == (True, True, True)
    assert (caps.seed, caps.negative_prompt, caps.max_images) == (True, False, 4)
    assert provider.price(ImageRequest(prompt="x", count=3)) == 6


def exception_texts(error: ProviderError) -> str:
    parts = [str(error), repr(error), error.detail, error.user_message, *map(str, error.args)]
    return " ".join(parts)


@pytest.mark.parametrize("token", ["r8_EchoedToken0123456789abcdef", "an-opaque-user-token-42"])
async def test_echoed_tokens_never_reach_exceptions(provider, state, token):
    state.valid_tokens.add(token)
    state.fail_next.append(
        reply(422, problem(422, f"invalid input; header was Authorization: Bearer {token}"))
    )
    with pytest.raises(BadRequest) as caught:
        await provider.submit(ImageRequest(prompt="a fox"), ProviderKey(token))
    assert token not in exception_texts(caught.value)


async def test_failure_reason_echoing_the_token_is_redacted(provider, state):
    state.outcomes.append(Outcome("failed", error=f"upstream refused token {VALID_TOKEN}"))
    submitted = await provider.submit(ImageRequest(prompt="a fox"), KEY)

    with pytest.raises(TaskFailed) as caught:
        await run_to_end(provider, submitted.task_id)

    assert VALID_TOKEN not in exception_texts(caught.value)


# --- webhooks (README §3 webhooks; Standard Webhooks signatures) ---------------------------------

SECRET_PATH = "/webhooks/default/secret"
HOOK = "https://hooks.example.test/r/1"


def secret_fetches(state: ReplicateState) -> list:
    return [r for r in state.requests if r.path == SECRET_PATH]


async def ended(provider, state, outcome: Outcome | None = None, **fields) -> str:
    """Submit with a webhook and poll to the end; return the prediction id."""
    if outcome is not None:
        state.outcomes.append(outcome)
    request = ImageRequest(prompt="a fox", webhook_url=HOOK, **fields)
    submitted = await provider.submit(request, KEY)
    try:
        await run_to_end(provider, submitted.task_id)
    except ProviderError:
        pass  # the outcome under test is read from the webhook below
    return submitted.task_id


@pytest.mark.parametrize("case", [str.lower, str.title], ids=["lower", "Title-Case"])
async def test_webhook_succeeded_gives_the_same_finished_as_poll(provider, state, case):
    task_id = await ended(provider, state, count=2, seed=7)
    body, headers = signed_delivery(state, state.predictions[task_id])

    answer = await provider.read_webhook(
        body, {case(name): value for name, value in headers.items()}, task_id, KEY
    )

    assert answer == await provider.poll(task_id, KEY)
    assert [image.url for image in answer.images] == state.predictions[task_id]["output"]
    assert {image.seed for image in answer.images} == {7}
    [fetch] = secret_fetches(state)
    assert fetch.headers["Authorization"] == f"Bearer {VALID_TOKEN}"


@pytest.mark.parametrize(
    ("outcome", "expected", "needle"),
    [
        (Outcome("failed", error="NSFW content detected."), ContentRejected, "content filter"),
        (Outcome("failed", error="CUDA out of memory"), TaskFailed, "out of memory"),
        (Outcome("canceled"), TaskFailed, "cancelled"),
        (Outcome(data_removed=True), TaskFailed, "deleted"),
    ],
)
async def test_webhook_failures_map_like_poll(provider, state, outcome, expected, needle):
    task_id = await ended(provider, state, outcome)
    body, headers = signed_delivery(state, state.predictions[task_id])

    with pytest.raises(expected) as caught:
        await provider.read_webhook(body, headers, task_id, KEY)

    assert type(caught.value) is expected and needle in caught.value.user_message


async def test_webhook_for_a_running_prediction_is_progress(provider, state):
    submitted = await provider.submit(ImageRequest(prompt="a fox", webhook_url=HOOK), KEY)
    start = signed_delivery(state, state.predictions[submitted.task_id])  # a "start" event
    await provider.poll(submitted.task_id, KEY)
    await provider.poll(submitted.task_id, KEY)
    logs = signed_delivery(state, state.predictions[submitted.task_id])  # a "logs" event

    assert await provider.read_webhook(*start, submitted.task_id, KEY) == Progress(stage="starting")
    assert await provider.read_webhook(*logs, submitted.task_id, KEY) == Progress(
        stage="processing", fraction=0.5
    )


def _without(name: str):
    def build(state, prediction):
        body, headers = signed_delivery(state, prediction)
        del headers[name]
        return body, headers

    return build


def _with_header(name: str, value: str):
    def build(state, prediction):
        body, headers = signed_delivery(state, prediction)
        return body, headers | {name: value}

    return build


def _about_another_prediction(state, prediction):
    return signed_delivery(state, prediction | {"id": "someoneelse00000000000000"})


# (builder(state, prediction) -> (body, headers), reason fragment, secret fetches it costs)
REJECTIONS = [
    pytest.param(
        lambda s, p: signed_delivery(s, p, tamper=True), "does not match", 1, id="tampered-body"
    ),
    pytest.param(
        lambda s, p: signed_delivery(s, p, secret=new_signing_secret()),
        "does not match",
        1,
        id="wrong-secret",
    ),
    pytest.param(
        lambda s, p: signed_delivery(s, p, timestamp=int(time.time()) - 600),
        "timestamp",
        1,
        id="stale-timestamp",
    ),
    pytest.param(
        lambda s, p: signed_delivery(s, p, timestamp=int(time.time()) + 600),
        "timestamp",
        1,
        id="future-timestamp",
    ),
    pytest.param(_without("webhook-id"), "missing webhook-id", 0, id="no-id"),
    pytest.param(_without("webhook-timestamp"), "missing webhook-timestamp", 0, id="no-timestamp"),
    pytest.param(_without("webhook-signature"), "missing webhook-signature", 0, id="no-signature"),
    pytest.param(
        _with_header("webhook-timestamp", "yesterday"), "unix seconds", 0, id="timestamp-not-int"
    ),
    pytest.param(
        _with_header("webhook-signature", "garbage"), "malformed", 0, id="signature-not-v1"
    ),
    pytest.param(
        _with_header("webhook-signature", "v1,***"), "malformed", 0, id="signature-not-base64"
    ),
    pytest.param(
        _with_header("webhook-signature", "v1a,c2lnbmVk"), "malformed", 0, id="signature-only-v1a"
    ),
    pytest.param(_about_another_prediction, "another prediction", 1, id="another-prediction"),
]


@pytest.mark.parametrize(("build", "reason", "fetches"), REJECTIONS)
async def test_untrusted_deliveries_are_rejected(provider, state, build, reason, fetches):
    task_id = await ended(provider, state)
    body, headers = build(state, state.predictions[task_id])

    with pytest.raises(WebhookRejected) as caught:
        await provider.read_webhook(body, headers, task_id, KEY)

    assert reason in str(caught.value)
    assert state.signing_secret not in str(caught.value) and VALID_TOKEN not in str(caught.value)
    assert len(secret_fetches(state)) == fetches  # header junk never costs a request


async def test_signed_body_that_is_not_a_json_object_is_rejected(provider, state):
    now = datetime.now(timezone.utc)
    headers = {
        "webhook-id": "msg_1",
        "webhook-timestamp": str(int(now.timestamp())),
        "webhook-signature": Webhook(state.signing_secret).sign("msg_1", now, '["x"]'),
    }

    with pytest.raises(WebhookRejected, match="not a JSON object"):
        await provider.read_webhook(b'["x"]', headers, "x", KEY)


async def test_secret_is_fetched_once_per_account_and_cached(provider, state):
    other = "r8_SecondAccountToken0123456789"
    state.valid_tokens.add(other)
    state.account_secrets[other] = new_signing_secret()
    mine = await ended(provider, state)
    theirs = (await provider.submit(ImageRequest(prompt="a cat"), ProviderKey(other))).task_id

    for _ in range(3):
        await provider.read_webhook(*signed_delivery(state, state.predictions[mine]), mine, KEY)
    assert len(secret_fetches(state)) == 1

    theirs_delivery = signed_delivery(state, state.predictions[theirs])
    answer = await provider.read_webhook(*theirs_delivery, theirs, ProviderKey(other))
    assert answer == Progress(stage="starting")
    assert [f.headers["Authorization"] for f in secret_fetches(state)] == [
        f"Bearer {VALID_TOKEN}",
        f"Bearer {other}",
    ]
    with pytest.raises(WebhookRejected):  # another account's signature never passes for mine
        await provider.read_webhook(*theirs_delivery, theirs, KEY)


async def test_rotated_secret_is_refetched_once(provider, state):
    task_id = await ended(provider, state)
    await provider.read_webhook(*signed_delivery(state, state.predictions[task_id]), task_id, KEY)

    state.signing_secret = new_signing_secret()  # the account rotated its secret
    answer = await provider.read_webhook(
        *signed_delivery(state, state.predictions[task_id]), task_id, KEY
    )

    assert isinstance(answer, Finished)
    assert len(secret_fetches(state)) == 2
    forged = signed_delivery(state, state.predictions[task_id], secret=new_signing_secret())
    with pytest.raises(WebhookRejected):
        await provider.read_webhook(*forged, task_id, KEY)
    assert len(secret_fetches(state)) == 3  # one refetch per bad delivery, never a loop


@pytest.mark.parametrize(
    ("scripts", "expected", "fetches"),
    [
        # A refused fetch says nothing about the task: the delivery is dropped, polls decide.
        pytest.param([reply(401, problem(401, "Unauthenticated"))], WebhookRejected, 1, id="401"),
        pytest.param([reply(402, problem(402, "No credit"))], WebhookRejected, 1, id="402"),
        pytest.param([reply(404, problem(404, "Not found."))], WebhookRejected, 1, id="404"),
        pytest.param([reply(429, THROTTLED)], RateLimited, 1, id="429"),
        pytest.param([reply(500, "boom")] * 3, Unavailable, 3, id="500-after-retries"),
        pytest.param([reply(200, {"key": "not-a-secret"})], Unavailable, 1, id="bad-key"),
        pytest.param([reply(200, {"key": "whsec_!!!"})], Unavailable, 1, id="bad-base64"),
        pytest.param([reply(200, "{oops")], Unavailable, 1, id="malformed-json"),
    ],
)
async def test_secret_fetch_failures_map_to_the_taxonomy_and_are_not_cached(
    provider, state, scripts, expected, fetches
):
    task_id = await ended(provider, state)
    delivery = signed_delivery(state, state.predictions[task_id])
    state.fail_next.extend(scripts)

    with pytest.raises(expected) as caught:
        await provider.read_webhook(*delivery, task_id, KEY)

    assert type(caught.value) is expected
    assert len(secret_fetches(state)) == fetches
    assert "whsec_" not in str(caught.value) and "whsec_" not in repr(caught.value)
    assert isinstance(await provider.read_webhook(*delivery, task_id, KEY), Finished)


async def test_secret_fetch_is_retried_after_a_500(provider, state):
    task_id = await ended(provider, state)
    state.fail_next.append(reply(503, "down"))

    answer = await provider.read_webhook(
        *signed_delivery(state, state.predictions[task_id]), task_id, KEY
    )

    assert isinstance(answer, Finished) and len(secret_fetches(state)) == 2


async def test_webhook_without_a_key_is_auth_error_before_any_request(provider, state):
    body, headers = signed_delivery(state, {"id": "x", "status": "succeeded"})
    with pytest.raises(AuthError):
        await provider.read_webhook(body, headers, "x", None)
    assert state.requests == []


async def test_refused_secret_fetch_never_echoes_the_token(provider, state):
    state.fail_next.append(reply(403, problem(403, f"token {VALID_TOKEN} may not read secrets")))
    body, headers = signed_delivery(state, {"id": "x", "status": "succeeded"})

    with pytest.raises(WebhookRejected) as caught:
        await provider.read_webhook(body, headers, "x", KEY)

    assert "HTTP 403" in str(caught.value)
    assert VALID_TOKEN not in f"{caught.value} {caught.value!r}"


@dataclass
class Receiver:
    """A small web layer: ``/hooks/<job>`` reads deliveries with the adapter."""

    url: str = ""
    jobs: dict[str, str] = field(default_factory=dict)  # job -> prediction id
    results: list = field(default_factory=list)


@pytest.fixture
async def receiver(provider, state):
    state.require_https_webhooks = False  # the receiver is plain loopback HTTP
    hook = Receiver()

    async def handle(request: web.Request) -> web.Response:
        task_id = hook.jobs.get(request.match_info["job"])
        if task_id is None:
            return web.Response(status=404)
        try:
            body = await request.read()
            hook.results.append(await provider.read_webhook(body, request.headers, task_id, KEY))
        except WebhookRejected as exc:
            hook.results.append(exc)
            return web.Response(status=401)
        except ProviderError as exc:
            hook.results.append(exc)
        return web.Response(status=204)

    app = web.Application()
    app.router.add_post("/hooks/{job}", handle)
    async with serve(app) as url:
        hook.url = url
        yield hook


async def submit_to(provider, receiver: Receiver, job: str) -> str:
    request = ImageRequest(prompt="a fox", webhook_url=f"{receiver.url}/hooks/{job}")
    task_id = (await provider.submit(request, KEY)).task_id
    receiver.jobs[job] = task_id
    return task_id


async def test_real_delivery_reaches_a_receiver_once_when_polls_reveal_the_end(
    provider, state, receiver
):
    state.auto_webhooks = True
    task_id = await submit_to(provider, receiver, "job1")

    polled = (await run_to_end(provider, task_id))[-1]

    # The adapter asks for "completed" only, so start/logs/output are never sent.
    assert await settle_webhooks(state) == [Delivery(task_id, "completed", 204)]
    assert receiver.results == [polled]
    assert isinstance(polled, Finished) and polled.images


async def test_cancel_delivers_a_completed_webhook_read_as_task_failed(provider, state, receiver):
    state.auto_webhooks = True
    task_id = await submit_to(provider, receiver, "job1")

    await provider.cancel(task_id, KEY)

    assert await settle_webhooks(state) == [Delivery(task_id, "completed", 204)]
    [failure] = receiver.results
    assert isinstance(failure, TaskFailed) and "cancelled" in failure.user_message


async def test_deliver_webhook_completes_the_prediction_and_reports_the_receivers_answer(
    provider, state, receiver
):
    task_id = await submit_to(provider, receiver, "job1")

    assert await deliver_webhook(state, task_id) == 204
    assert await deliver_webhook(state, task_id, tamper=True) == 401
    assert await deliver_webhook(state, task_id, timestamp=int(time.time()) - 3600) == 401
    assert await deliver_webhook(state, task_id, event="start") is None  # filter: completed only

    finished, tampered, stale = receiver.results
    assert isinstance(finished, Finished) and state.predictions[task_id]["status"] == "succeeded"
    assert "does not match" in str(tampered) and "timestamp" in str(stale)
    assert len(secret_fetches(state)) == 2  # first read, then one refetch for the tampered body


@pytest.mark.parametrize(
    ("events", "sent"),
    [
        (["start", "completed"], ["start", "completed"]),
        (None, ["output", "completed"]),  # Replicate's default filter
        (["logs"], ["logs"]),
    ],
)
async def test_double_sends_only_the_filtered_events(base_url, state, receiver, events, sent):
    state.auto_webhooks = True
    body = {"input": {"prompt": "a fox"}, "webhook": f"{receiver.url}/hooks/unknown"}
    if events is not None:
        body["webhook_events_filter"] = events
    auth = {"Authorization": f"Bearer {VALID_TOKEN}"}
    async with httpx.AsyncClient(base_url=base_url, headers=auth) as client:
        created = (await client.post(f"/models/{FLUX_SCHNELL}/predictions", json=body)).json()
        while created["status"] not in ("succeeded", "failed"):
            created = (await client.get(f"/predictions/{created['id']}")).json()

    assert [d.event for d in await settle_webhooks(state)] == sent


async def test_plain_http_webhook_is_refused_like_replicate_does(provider, state):
    request = ImageRequest(prompt="a fox", webhook_url="http://hooks.example.test/r/1")
    with pytest.raises(BadRequest):
        await provider.submit(request, KEY)
