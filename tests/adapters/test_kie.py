"""KieProvider against the loopback KIE.ai double (contracts README §5)."""

from __future__ import annotations

import io
import json

import httpx
import pytest
from aiohttp import web
from PIL import Image

from studiobot.providers.base import (
    Finished,
    ImageRequest,
    Progress,
    ProviderKey,
    SourceImage,
    Submitted,
    WebhookProvider,
)
from studiobot.providers.errors import (
    AuthError,
    BadRequest,
    ContentRejected,
    ProviderError,
    QuotaExhausted,
    RateLimited,
    TaskFailed,
    Unavailable,
    WebhookRejected,
)
from studiobot.providers.kie import RATE_LIMIT_RETRY_SECONDS, KieProvider
from tests.doubles.kie import (
    CONTENT_POLICY,
    VALID_KEY,
    KieState,
    callback_body,
    deliver_callback,
    envelope,
    failure,
    kie_app,
)
from tests.doubles.server import reply, serve

KEY = ProviderKey(VALID_KEY)
HOOK = "https://bot.example.test/webhooks/kie/17/tok3n"


@pytest.fixture
def state() -> KieState:
    return KieState()


@pytest.fixture
async def base_url(state: KieState):
    async with serve(kie_app(state)) as url:
        yield url


@pytest.fixture
async def provider(base_url: str):
    adapter = KieProvider(base_url=base_url, timeout=0.5)
    yield adapter
    await adapter.aclose()


def calls(state: KieState, method: str) -> list:
    return [r for r in state.requests if r.method == method]


def remote(task_id: str) -> str:
    return task_id.split(":", 1)[1]


async def run_to_end(provider: KieProvider, task_id: str, limit: int = 10) -> list:
    """Poll until the task stops being Progress; return every answer (or raise)."""
    answers = []
    for _ in range(limit):
        answers.append(await provider.poll(task_id, KEY))
        if not isinstance(answers[-1], Progress):
            return answers
    raise AssertionError("task never finished")


async def png_sizes(finished: Finished) -> list[tuple[int, int]]:
    sizes = []
    async with httpx.AsyncClient() as client:
        for image in finished.images:
            assert image.data is None and image.url
            response = await client.get(image.url)
            assert response.status_code == 200
            with Image.open(io.BytesIO(response.content)) as picture:
                assert picture.format == "PNG"
                sizes.append(picture.size)
    return sizes


# --- create bodies ------------------------------------------------------------------------------


async def test_midjourney_is_the_default_and_sends_the_documented_body(provider, state):
    submitted = await provider.submit(ImageRequest(prompt="a fox", aspect="16:9"), KEY)

    [sent] = state.requests
    assert (sent.method, sent.path) == ("POST", "/api/v1/mj/generate")
    assert sent.headers["Authorization"] == f"Bearer {VALID_KEY}"
    assert sent.json == {
        "taskType": "mj_txt2img",
        "prompt": "a fox",
        "speed": "fast",
        "aspectRatio": "16:9",
        "version": "7",
    }
    assert isinstance(submitted, Submitted)
    assert submitted.task_id.startswith("mj:") and remote(submitted.task_id) in state.tasks


@pytest.mark.parametrize("model", ["flux-kontext-pro", "flux-kontext-max"])
async def test_flux_kontext_body(provider, state, model):
    submitted = await provider.submit(ImageRequest(prompt="a fox", aspect="9:16", model=model), KEY)

    [sent] = state.requests
    assert sent.path == "/api/v1/flux/kontext/generate"
    assert sent.json == {
        "prompt": "a fox", "model": model, "aspectRatio": "9:16", "outputFormat": "png",
    }  # fmt: skip
    assert submitted.task_id == f"flux:{next(iter(state.tasks))}"


@pytest.mark.parametrize("count", [1, 2, 4])
async def test_gpt4o_body_sends_count_as_n_variants(provider, state, count):
    request = ImageRequest(prompt="a fox", aspect="3:2", count=count, model="gpt-4o-image")

    submitted = await provider.submit(request, KEY)

    [sent] = state.requests
    assert sent.path == "/api/v1/gpt4o-image/generate"
    assert sent.json == {"prompt": "a fox", "size": "3:2", "nVariants": count}
    assert submitted.task_id.startswith("4o:")


@pytest.mark.parametrize("model", ["midjourney", "flux-kontext-pro", "gpt-4o-image"])
async def test_callback_url_is_sent_only_when_a_webhook_url_is_given(provider, state, model):
    await provider.submit(ImageRequest(prompt="a fox", model=model), KEY)
    await provider.submit(ImageRequest(prompt="a fox", model=model, webhook_url=HOOK), KEY)

    without, with_hook = (r.json for r in state.requests)
    assert "callBackUrl" not in without
    assert with_hook == without | {"callBackUrl": HOOK}


@pytest.mark.parametrize(
    ("request_", "needle"),
    [
        (ImageRequest(prompt="x", model="dall-e-3"), "must be one of"),
        (ImageRequest(prompt="x", model="flux-kontext-pro", count=2), "makes 1 image"),
        (ImageRequest(prompt="x", model="gpt-4o-image", count=3), "1, 2, 4"),
        (ImageRequest(prompt="x", model="gpt-4o-image", aspect="16:9"), "1:1, 3:2, 2:3"),
        (ImageRequest(prompt="x", model="flux-kontext-max", aspect="3:2"), "aspect ratios"),
        (ImageRequest(prompt="x", seed=7), "seed"),
        (ImageRequest(prompt="x", negative_prompt="blur"), "negative prompt"),
        (ImageRequest(prompt="x", count=5), "1, 2, 3, 4"),
        (
            ImageRequest(prompt="x", operation="upscale", source=SourceImage("mj:abc", 1)),
            "only generate",
        ),
    ],
)
async def test_unsupported_options_are_refused_before_any_request(
    provider, state, request_, needle
):
    with pytest.raises(BadRequest) as caught:
        await provider.submit(request_, KEY)
    assert needle in caught.value.user_message
    assert state.requests == []


def test_capabilities_and_price(provider):
    caps = provider.capabilities
    assert isinstance(provider, WebhookProvider)
    assert caps.models == ("midjourney", "flux-kontext-pro", "flux-kontext-max", "gpt-4o-image")
    assert (caps.is_async, caps.webhooks, caps.can_cancel) == (True, True, False)
    assert (caps.seed, caps.negative_prompt, caps.upscale, caps.variations) == (False,) * 4
    assert caps.aspects_for("gpt-4o-image") == ("1:1", "3:2", "2:3")
    assert caps.aspects_for("flux-kontext-pro") == ("1:1", "16:9", "9:16", "4:3", "3:4")
    assert [caps.max_images_for(m) for m in caps.models] == [4, 1, 1, 4]
    # Midjourney always renders (and bills) its grid of 4, whatever count asks for.
    assert provider.price(ImageRequest(prompt="x", count=1)) == 4
    assert provider.price(ImageRequest(prompt="x", model="gpt-4o-image", count=2)) == 6
    assert provider.price(ImageRequest(prompt="x", model="flux-kontext-max")) == 5


async def test_credits_per_image_override_merges_over_defaults(base_url):
    adapter = KieProvider(base_url=base_url, credits_per_image={"midjourney": 3})
    try:
        assert adapter.price(ImageRequest(prompt="x")) == 12
        assert adapter.price(ImageRequest(prompt="x", model="flux-kontext-pro")) == 3
    finally:
        await adapter.aclose()


# --- polling ------------------------------------------------------------------------------------


async def test_midjourney_progress_then_four_downloadable_pngs(provider, state):
    submitted = await provider.submit(ImageRequest(prompt="a fox", aspect="16:9", count=1), KEY)

    answers = await run_to_end(provider, submitted.task_id)

    assert answers[0] == Progress(stage="generating")
    [get] = calls(state, "GET")[:1]
    assert get.path == "/api/v1/mj/record-info"
    finished = answers[-1]
    assert isinstance(finished, Finished) and len(finished.images) == 4
    assert all(width > height for width, height in await png_sizes(finished))


async def test_gpt4o_progress_fraction_then_n_variants(provider, state):
    request = ImageRequest(prompt="a fox", aspect="2:3", count=2, model="gpt-4o-image")
    submitted = await provider.submit(request, KEY)

    answers = await run_to_end(provider, submitted.task_id)

    assert answers[0] == Progress(stage="generating", fraction=0.5)  # "progress": "0.50"
    assert calls(state, "GET")[0].path == "/api/v1/gpt4o-image/record-info"
    sizes = await png_sizes(answers[-1])
    assert len(sizes) == 2 and all(height > width for width, height in sizes)


async def test_flux_kontext_progress_then_one_image(provider, state):
    state.steps = 2
    request = ImageRequest(prompt="a fox", aspect="4:3", model="flux-kontext-max")
    submitted = await provider.submit(request, KEY)

    answers = await run_to_end(provider, submitted.task_id)

    assert answers[:2] == [Progress(stage="generating")] * 2
    assert calls(state, "GET")[0].path == "/api/v1/flux/kontext/record-info"
    [(width, height)] = await png_sizes(answers[-1])
    assert width > height


@pytest.mark.parametrize(
    ("model", "outcome", "expected", "needle"),
    [
        ("midjourney", failure(501, "Midjourney job crashed", flag=2), TaskFailed, "crashed;"),
        ("midjourney", failure(500, "Internal error", flag=3), TaskFailed, "Internal error;"),
        ("midjourney", failure(400, "Prompt contains prohibited words"), ContentRejected, ""),
        ("gpt-4o-image", failure(500, "GPT 4O failed to edit", flag=3), TaskFailed, "GPT 4O"),
        ("gpt-4o-image", failure(500, "failed to get user token", flag=2), TaskFailed, "token"),
        ("gpt-4o-image", CONTENT_POLICY, ContentRejected, ""),
        ("flux-kontext-pro", failure(501, "", flag=2), TaskFailed, "no reason given"),
        ("flux-kontext-pro", failure(400, "Sensitive content detected"), ContentRejected, ""),
    ],
)
async def test_failed_tasks(provider, state, model, outcome, expected, needle):
    state.outcomes.append(outcome)
    submitted = await provider.submit(ImageRequest(prompt="a fox", model=model), KEY)

    with pytest.raises(expected) as caught:
        await run_to_end(provider, submitted.task_id)

    assert type(caught.value) is expected
    assert needle in caught.value.user_message and "not charged" in caught.value.user_message


async def test_gpt4o_failure_states_are_the_documented_ones(provider, state, base_url):
    state.outcomes += [failure(flag=2), failure(flag=3)]
    first = await provider.submit(ImageRequest(prompt="a", model="gpt-4o-image"), KEY)
    second = await provider.submit(ImageRequest(prompt="b", model="gpt-4o-image"), KEY)
    state.steps = 0
    auth = {"Authorization": f"Bearer {VALID_KEY}"}
    statuses = []
    async with httpx.AsyncClient(base_url=base_url, headers=auth) as client:
        for task in (first, second):
            params = {"taskId": remote(task.task_id)}
            answer = await client.get("/api/v1/gpt4o-image/record-info", params=params)
            statuses.append(answer.json()["data"]["status"])
    assert statuses == ["CREATE_TASK_FAILED", "GENERATE_FAILED"]
    for task in (first, second):
        with pytest.raises(TaskFailed):
            await provider.poll(task.task_id, KEY)


async def test_unknown_task_is_task_failed(provider, state):
    flux = await provider.submit(ImageRequest(prompt="a fox", model="flux-kontext-pro"), KEY)

    # KIE answers "record is null" for ids it never made and for another family's ids.
    for task_id in ("mj:0000deadbeef", f"mj:{remote(flux.task_id)}"):
        with pytest.raises(TaskFailed) as caught:
            await provider.poll(task_id, KEY)
        assert "no longer knows this task" in caught.value.user_message


@pytest.mark.parametrize("task_id", ["", "abc", "dalle:123", "mj:"])
async def test_poll_of_a_foreign_task_id_is_bad_request_without_a_request(provider, state, task_id):
    with pytest.raises(BadRequest):
        await provider.poll(task_id, KEY)
    assert state.requests == []


async def test_poll_is_retried_after_a_proxy_502(provider, state):
    submitted = await provider.submit(ImageRequest(prompt="a fox"), KEY)
    state.fail_next.append(reply(502, "<html>Bad Gateway</html>"))

    assert await provider.poll(submitted.task_id, KEY) == Progress(stage="generating")
    assert len(calls(state, "GET")) == 2


# --- envelope codes -----------------------------------------------------------------------------

CODES = [
    pytest.param(400, "prompt is required", BadRequest, id="400"),
    pytest.param(400, "The prompt violates our content policy", ContentRejected, id="400-policy"),
    pytest.param(400, "Sensitive words detected", ContentRejected, id="400-sensitive"),
    pytest.param(400, "This prompt is not allowed", ContentRejected, id="400-not-allowed"),
    pytest.param(401, "You do not have access permissions", AuthError, id="401"),
    pytest.param(402, "Credits insufficient", QuotaExhausted, id="402"),
    pytest.param(404, "Not found", BadRequest, id="404"),
    pytest.param(422, "aspectRatio is invalid", BadRequest, id="422"),
    pytest.param(429, "Rate limited", RateLimited, id="429"),
    pytest.param(451, "Failed to fetch the image", BadRequest, id="451"),
    pytest.param(455, "Service maintenance", Unavailable, id="455"),
    pytest.param(500, "Server error", Unavailable, id="500"),
    pytest.param(501, "Generation failed", TaskFailed, id="501"),
    pytest.param(505, "Feature disabled", BadRequest, id="505"),
    pytest.param(599, "Something new", Unavailable, id="unknown"),
]


@pytest.mark.parametrize(("code", "msg", "expected"), CODES)
async def test_create_envelope_codes(provider, state, code, msg, expected):
    state.envelope_next.append((code, msg))

    with pytest.raises(expected) as caught:
        await provider.submit(ImageRequest(prompt="a fox"), KEY)

    assert type(caught.value) is expected
    assert f"code {code}" in caught.value.detail
    assert len(calls(state, "POST")) == 1 and state.tasks == {}  # never resent


POLL_CODES = [
    *CODES,
    pytest.param(422, "record is null", TaskFailed, id="422-record-is-null"),
    pytest.param(404, "record not found", TaskFailed, id="404-record"),
]


@pytest.mark.parametrize(("code", "msg", "expected"), POLL_CODES)
async def test_poll_envelope_codes(provider, state, code, msg, expected):
    submitted = await provider.submit(ImageRequest(prompt="a fox", model="gpt-4o-image"), KEY)
    state.envelope_next.append((code, msg))

    with pytest.raises(expected) as caught:
        await provider.poll(submitted.task_id, KEY)

    assert type(caught.value) is expected
    assert len(calls(state, "GET")) == 1  # HTTP 200: nothing for the transport to retry


async def test_http_200_codes_402_429_455_tell_the_user_and_the_scheduler(provider, state):
    state.envelope_next += [(402, "Insufficient credits"), (429, "Too many"), (455, "Maintenance")]
    errors = []
    for _ in range(3):
        with pytest.raises(ProviderError) as caught:
            await provider.submit(ImageRequest(prompt="a fox"), KEY)
        errors.append(caught.value)

    quota, limited, down = errors
    assert "KIE account has no credits left" in quota.user_message and not quota.retryable
    assert limited.retry_after == RATE_LIMIT_RETRY_SECONDS and limited.retryable
    assert "maintenance" in down.user_message and down.retryable


@pytest.mark.parametrize(
    ("script", "expected"),
    [
        pytest.param(reply(502, "<html>Bad Gateway</html>"), Unavailable, id="http-502"),
        pytest.param(reply(401, "Unauthorized"), AuthError, id="http-401"),
        pytest.param(reply(429, "slow down", {"Retry-After": "7"}), RateLimited, id="http-429"),
        pytest.param(reply(200, "{oops"), Unavailable, id="malformed-json"),
        pytest.param(reply(200, {"msg": "success"}), Unavailable, id="no-code"),
        pytest.param(reply(200, envelope(200, "success", {})), Unavailable, id="no-task-id"),
    ],
)
async def test_create_http_failures_are_mapped_and_never_retried(provider, state, script, expected):
    state.fail_next.append(script)

    with pytest.raises(expected) as caught:
        await provider.submit(ImageRequest(prompt="a fox"), KEY)

    assert len(calls(state, "POST")) == 1
    if expected is RateLimited:
        assert caught.value.retry_after == 7.0


async def test_wrong_key_is_auth_error(provider, state):
    bad = ProviderKey("0" * 32)
    with pytest.raises(AuthError):
        await provider.submit(ImageRequest(prompt="a fox"), bad)
    submitted = await provider.submit(ImageRequest(prompt="a fox"), KEY)
    with pytest.raises(AuthError):
        await provider.poll(submitted.task_id, bad)
    with pytest.raises(AuthError):
        await provider.submit(ImageRequest(prompt="a fox"), None)


async def test_check_key_reads_the_credit_balance(provider, state, base_url):
    await provider.check_key(KEY)
    assert [(r.method, r.path) for r in state.requests] == [("GET", "/api/v1/chat/credit")]
    async with httpx.AsyncClient() as client:
        answer = await client.get(
            f"{base_url}/api/v1/chat/credit", headers={"Authorization": f"Bearer {VALID_KEY}"}
        )
    assert answer.json() == {"code": 200, "msg": "success", "data": 1000}

    with pytest.raises(AuthError):
        await provider.check_key(ProviderKey("ffffffffffffffffffffffffffffffff"))


async def test_cancel_is_not_supported(provider, state):
    assert await provider.cancel("mj:abc", KEY) is False
    assert state.requests == []


# --- callbacks ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("model", "count", "images"),
    [("midjourney", 1, 4), ("flux-kontext-pro", 1, 1), ("gpt-4o-image", 4, 4)],
)
async def test_read_webhook_success(provider, state, model, count, images):
    request = ImageRequest(prompt="a fox", model=model, count=count, webhook_url=HOOK)
    submitted = await provider.submit(request, KEY)
    task = state.tasks[remote(submitted.task_id)]
    task.done = True  # results exist once KIE calls back

    finished = await provider.read_webhook(
        json.dumps(callback_body(task)).encode(), {}, submitted.task_id, KEY
    )

    assert [image.url for image in finished.images] == task.urls()
    assert len(await png_sizes(finished)) == images


async def test_read_webhook_takes_the_documented_midjourney_body(provider):
    urls = [f"https://tempfile.aiquickdraw.com/v/abc_0_{n}.jpeg" for n in range(4)]
    body = {"code": 200, "msg": "success",
            "data": {"taskId": "4edb3c5", "promptJson": "{}", "resultUrls": urls}}  # fmt: skip

    finished = await provider.read_webhook(json.dumps(body).encode(), {}, "mj:4edb3c5", None)

    assert [image.url for image in finished.images] == urls


@pytest.mark.parametrize(
    ("model", "outcome", "expected"),
    [
        ("gpt-4o-image", CONTENT_POLICY, ContentRejected),
        ("flux-kontext-pro", failure(501, "Image generation task failed"), TaskFailed),
        ("midjourney", failure(500, "Image generation failed"), TaskFailed),
    ],
)
async def test_read_webhook_failure(provider, state, model, outcome, expected):
    state.outcomes.append(outcome)
    submitted = await provider.submit(ImageRequest(prompt="a", model=model, webhook_url=HOOK), KEY)
    body = callback_body(state.tasks[remote(submitted.task_id)])

    with pytest.raises(expected) as caught:
        await provider.read_webhook(json.dumps(body).encode(), {}, submitted.task_id, KEY)
    assert type(caught.value) is expected


async def test_read_webhook_about_another_task_is_rejected(provider):
    body = envelope(200, "success", {"taskId": "other", "resultUrls": ["https://x.test/a.png"]})
    with pytest.raises(WebhookRejected):
        await provider.read_webhook(json.dumps(body).encode(), {}, "mj:mine", KEY)


@pytest.mark.parametrize(
    "body",
    [
        b"not json",
        b"[1, 2]",
        b'{"code": 200, "msg": "success"}',
        b'{"code": "200", "data": {"taskId": "t1", "resultUrls": ["https://x.test/a.png"]}}',
        b'{"code": 200, "data": {"taskId": "t1"}}',
        b'{"code": 200, "data": {"taskId": "t1", "resultUrls": ["not a url"]}}',
        b'{"code": 200, "data": {"taskId": "t1", "resultUrls": []}}',
    ],
)
async def test_malformed_webhook_is_rejected(provider, body):
    with pytest.raises(WebhookRejected):
        await provider.read_webhook(body, {}, "mj:t1", KEY)


async def test_callback_delivered_by_the_double_to_a_receiver(provider, state):
    received: list[bytes] = []

    async def hook(request: web.Request) -> web.Response:
        received.append(await request.read())
        return web.Response(text="ok")

    receiver = web.Application()
    receiver.router.add_post("/webhooks/kie/{job}/{token}", hook)
    async with serve(receiver) as receiver_url:
        url = f"{receiver_url}/webhooks/kie/17/tok3n"
        submitted = await provider.submit(ImageRequest(prompt="a fox", webhook_url=url), KEY)

        assert await deliver_callback(state, remote(submitted.task_id)) == 200
        assert await deliver_callback(state, remote(submitted.task_id)) == 200  # KIE may repeat

    first, again = [await provider.read_webhook(b, {}, submitted.task_id, KEY) for b in received]
    assert first == again and len(first.images) == 4
    assert len(await png_sizes(first)) == 4
    # The callback came before any poll; polling now agrees with it at once.
    assert await provider.poll(submitted.task_id, KEY) == first


# --- the double checks what KIE checks ----------------------------------------------------------


@pytest.mark.parametrize(
    ("path", "body", "needle"),
    [
        ("/api/v1/mj/generate", {"prompt": "x", "speed": "fast"}, "taskType"),
        ("/api/v1/mj/generate", {"taskType": "mj_txt2img", "prompt": "x" * 2001, "speed": "fast"},
         "2000"),
        ("/api/v1/mj/generate", {"taskType": "mj_txt2img", "prompt": "x"}, "speed"),
        ("/api/v1/mj/generate", {"taskType": "mj_txt2img", "prompt": "x", "speed": "fast",
                                 "version": "8"}, "version"),
        ("/api/v1/mj/generate", {"taskType": "mj_txt2img", "prompt": "x", "speed": "fast",
                                 "aspectRatio": "7:3"}, "aspectRatio"),
        ("/api/v1/gpt4o-image/generate", {"prompt": "x"}, "size"),
        ("/api/v1/gpt4o-image/generate", {"prompt": "x", "size": "1:1", "nVariants": 3},
         "nVariants"),
        ("/api/v1/flux/kontext/generate", {"prompt": "x", "model": "flux-pro"}, "model"),
        ("/api/v1/flux/kontext/generate", {"prompt": "x", "callBackUrl": "not a url"},
         "callBackUrl"),
    ],
)  # fmt: skip
async def test_double_validates_like_kie(base_url, state, path, body, needle):
    async with httpx.AsyncClient() as client:
        answer = await client.post(
            f"{base_url}{path}", json=body, headers={"Authorization": f"Bearer {VALID_KEY}"}
        )
    assert answer.status_code == 200
    assert answer.json()["code"] == 422 and needle in answer.json()["msg"]
    assert state.tasks == {}


# --- secrets ------------------------------------------------------------------------------------


def exception_texts(error: BaseException) -> str:
    parts = [str(error), repr(error), *map(str, error.args)]
    if isinstance(error, ProviderError):
        parts += [error.detail, error.user_message]
    return " ".join(parts)


async def test_no_key_in_any_exception_text(provider, state):
    caught: list[BaseException] = []
    state.envelope_next.append((400, f"Invalid key {VALID_KEY} for this model"))
    with pytest.raises(BadRequest) as error:
        await provider.submit(ImageRequest(prompt="a fox"), KEY)
    caught.append(error.value)

    state.outcomes.append(failure(501, f"upstream refused token {VALID_KEY}"))
    submitted = await provider.submit(ImageRequest(prompt="a", model="flux-kontext-pro"), KEY)
    with pytest.raises(TaskFailed) as error:
        await run_to_end(provider, submitted.task_id)
    caught.append(error.value)

    body = envelope(501, f"failed for Bearer {VALID_KEY}", {"taskId": remote(submitted.task_id)})
    with pytest.raises(TaskFailed) as error:
        await provider.read_webhook(json.dumps(body).encode(), {}, submitted.task_id, KEY)
    caught.append(error.value)

    state.fail_next.append(reply(502, f"proxy saw Authorization: Bearer {VALID_KEY}"))
    with pytest.raises(Unavailable) as error:
        await provider.submit(ImageRequest(prompt="a fox"), KEY)
    caught.append(error.value)

    for value in caught:
        assert VALID_KEY not in exception_texts(value)
