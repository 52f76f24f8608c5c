"""HuggingFaceProvider against the loopback Inference Providers double (contracts README §6)."""

from __future__ import annotations

import io

import httpx
import pytest
from PIL import Image

from studiobot.providers.base import Finished, ImageRequest, ProviderKey
from studiobot.providers.errors import (
    AuthError,
    BadRequest,
    ProviderError,
    QuotaExhausted,
    RateLimited,
    Unavailable,
)
from studiobot.providers.huggingface import HuggingFaceProvider
from tests.doubles.huggingface import (
    FLUX_SCHNELL,
    SDXL,
    VALID_TOKEN,
    HuggingFaceState,
    error,
    huggingface_app,
    loading_body,
)
from tests.doubles.server import reply, serve, stall

KEY = ProviderKey(VALID_TOKEN)
FLUX_PATH = "/hf-inference/models/black-forest-labs/FLUX.1-schnell"
PERMISSION_ERROR = (
    "This authentication method does not have sufficient permissions to call Inference "
    "Providers on behalf of user studiobot-test"
)
CREDITS_ERROR = (
    "You have exceeded your monthly included credits for Inference Providers. Subscribe to PRO "
    "to get 20x more monthly included credits."
)


@pytest.fixture
def state() -> HuggingFaceState:
    return HuggingFaceState()


@pytest.fixture
async def url(state: HuggingFaceState):
    async with serve(huggingface_app(state)) as root:
        yield root


@pytest.fixture
async def provider(url: str):
    adapter = HuggingFaceProvider(base_url=f"{url}/hf-inference", hub_url=url, timeout=0.3)
    yield adapter
    await adapter.aclose()


def image_info(data: bytes) -> tuple[str, tuple[int, int]]:
    with Image.open(io.BytesIO(data)) as image:
        image.load()
        return image.format, image.size


def posts(state: HuggingFaceState) -> list:
    return [r for r in state.requests if r.method == "POST"]


def exception_texts(error_: ProviderError) -> str:
    parts = [str(error_), repr(error_), error_.detail, error_.user_message, *map(str, error_.args)]
    return " ".join(parts)


async def test_submit_posts_the_documented_body_and_returns_the_png(provider, state):
    result = await provider.submit(ImageRequest(prompt="a red fox", aspect="16:9"), KEY)

    assert isinstance(result, Finished)
    [image] = result.images
    assert image.url is None and image.seed is None
    fmt, (width, height) = image_info(image.data)
    assert fmt == "PNG" and (width, height) == (64, 37)  # 1344x768 scaled to 64 px
    [sent] = state.requests
    assert (sent.method, sent.path) == ("POST", FLUX_PATH)  # the model id's slash is kept
    assert sent.json == {"inputs": "a red fox", "parameters": {"width": 1344, "height": 768}}
    assert sent.headers["Authorization"] == f"Bearer {VALID_TOKEN}"
    assert sent.headers["Accept"] == "image/png"
    assert sent.headers["Content-Type"] == "application/json"
    assert sent.headers["User-Agent"].startswith("studiobot/")


@pytest.mark.parametrize(
    ("aspect", "size"),
    [
        ("1:1", (1024, 1024)),
        ("16:9", (1344, 768)),
        ("9:16", (768, 1344)),
        ("4:3", (1152, 896)),
        ("3:4", (896, 1152)),
        ("3:2", (1216, 832)),
        ("2:3", (832, 1216)),
    ],
)
async def test_aspect_ratio_becomes_a_megapixel_width_and_height(provider, state, aspect, size):
    await provider.submit(ImageRequest(prompt="x", aspect=aspect), KEY)

    params = state.requests[0].json["parameters"]
    assert (params["width"], params["height"]) == size
    width, height = size
    assert width % 64 == 0 and height % 64 == 0
    assert 0.9e6 < width * height < 1.1e6
    left, right = map(int, aspect.split(":"))
    assert abs(width / height - left / right) < 0.05


async def test_negative_prompt_and_seed_are_sent_and_the_seed_is_reported(provider, state):
    request = ImageRequest(prompt="a castle", model=SDXL, negative_prompt="blurry", seed=42)

    result = await provider.submit(request, KEY)

    [sent] = state.requests
    assert sent.path == "/hf-inference/models/stabilityai/stable-diffusion-xl-base-1.0"
    assert sent.json == {
        "inputs": "a castle",
        "parameters": {"width": 1024, "height": 1024, "negative_prompt": "blurry", "seed": 42},
    }
    assert result.images[0].seed == 42


async def test_jpeg_answers_are_accepted(provider, state):
    state.image_format = "jpeg"
    result = await provider.submit(ImageRequest(prompt="x", aspect="3:4"), KEY)
    fmt, (width, height) = image_info(result.images[0].data)
    assert fmt == "JPEG" and height > width


async def test_model_id_segments_are_percent_encoded_but_the_slash_is_not(url, state):
    odd = "acme/sd#1?x"  # unquoted, '#' would cut the path and '?' start a query
    state.models.add(odd)
    adapter = HuggingFaceProvider(base_url=f"{url}/hf-inference", hub_url=url, models=(odd,))
    try:
        result = await adapter.submit(ImageRequest(prompt="x"), KEY)
    finally:
        await adapter.aclose()
    assert result.images[0].data
    assert state.requests[0].path == "/hf-inference/models/acme/sd#1?x"


def test_capabilities_and_price(provider):
    caps = provider.capabilities
    assert caps.models == (FLUX_SCHNELL, SDXL)
    assert caps.default_model == FLUX_SCHNELL
    assert caps.aspects == ("1:1", "16:9", "9:16", "4:3", "3:4", "3:2", "2:3")
    assert caps.max_images == 1
    assert not (caps.is_async or caps.can_cancel or caps.webhooks)
    assert (caps.negative_prompt, caps.seed) == (True, True)
    assert provider.price(ImageRequest(prompt="x")) == 1


async def test_price_follows_credits_per_image(url):
    adapter = HuggingFaceProvider(base_url=url, hub_url=url, credits_per_image=3)
    try:
        assert adapter.price(ImageRequest(prompt="x")) == 3
    finally:
        await adapter.aclose()


@pytest.mark.parametrize(
    ("request_", "needle"),
    [
        (ImageRequest(prompt="x", count=2), "one image per request"),
        (ImageRequest(prompt="x", aspect="21:9"), "1:1, 16:9"),
        (ImageRequest(prompt="x", model="acme/other"), FLUX_SCHNELL),
    ],
)
async def test_unsupported_options_are_refused_before_any_request(
    provider, state, request_, needle
):
    with pytest.raises(BadRequest) as caught:
        await provider.submit(request_, KEY)
    assert needle in caught.value.user_message
    assert state.requests == []


async def test_loading_model_is_a_retryable_wait_then_succeeds(provider, state):
    state.loading[FLUX_SCHNELL] = 1

    with pytest.raises(RateLimited) as caught:
        await provider.submit(ImageRequest(prompt="x"), KEY)

    assert caught.value.retry_after == 20.0
    assert caught.value.retryable
    assert caught.value.user_message == "The model is warming up; we will retry in about 20 s."
    assert "currently loading" in caught.value.detail
    assert len(posts(state)) == 1  # the adapter does not wait and resend by itself

    result = await provider.submit(ImageRequest(prompt="x"), KEY)
    assert isinstance(result, Finished)
    assert len(posts(state)) == 2


async def test_fractional_estimated_time_is_kept_and_rounded_up_for_people(provider, state):
    state.loading[FLUX_SCHNELL] = 1
    state.estimated_time = 7.2
    with pytest.raises(RateLimited) as caught:
        await provider.submit(ImageRequest(prompt="x"), KEY)
    assert caught.value.retry_after == 7.2
    assert "about 8 s" in caught.value.user_message


@pytest.mark.parametrize(
    ("script", "retry_after", "needle"),
    [
        (reply(503, error("Model m is currently loading"), {"Retry-After": "5"}), 5.0, "5 s"),
        (reply(503, error("Model m is currently loading")), None, "shortly"),
        (reply(503, loading_body("m", 0)), 0.0, "about 1 s"),
    ],
)
async def test_loading_without_estimated_time_falls_back(
    provider, state, script, retry_after, needle
):
    state.fail_next.append(script)
    with pytest.raises(RateLimited) as caught:
        await provider.submit(ImageRequest(prompt="x"), KEY)
    assert caught.value.retry_after == retry_after
    assert needle in caught.value.user_message


ERROR_CASES = [
    pytest.param(reply(400, error("Input should be a valid string")), BadRequest, id="400"),
    pytest.param(reply(400, error(["bad width", "bad height"])), BadRequest, id="400-list"),
    pytest.param(reply(401, error("Invalid credentials")), AuthError, id="401"),
    pytest.param(reply(402, error(CREDITS_ERROR)), QuotaExhausted, id="402"),
    pytest.param(reply(403, error(PERMISSION_ERROR)), AuthError, id="403"),
    pytest.param(reply(404, error("Model acme/x not found")), BadRequest, id="404"),
    pytest.param(reply(422, error("Unprocessable")), BadRequest, id="422"),
    pytest.param(reply(429, error("Rate limit reached")), RateLimited, id="429"),
    pytest.param(reply(500, error("Internal Server Error")), Unavailable, id="500"),
    pytest.param(reply(502, "<html>Bad Gateway</html>"), Unavailable, id="502-html"),
    pytest.param(reply(503, error("Service Unavailable")), Unavailable, id="503-not-loading"),
    pytest.param(reply(200, error("Something went wrong")), Unavailable, id="200-json"),
    pytest.param(
        reply(200, "<html>hi</html>", {"Content-Type": "text/html"}), Unavailable, id="200-html"
    ),
    pytest.param(reply(200, b"", {"Content-Type": "image/png"}), Unavailable, id="200-empty-image"),
]


@pytest.mark.parametrize(("script", "expected"), ERROR_CASES)
async def test_error_answers_map_to_the_taxonomy_without_retrying_the_post(
    provider, state, script, expected
):
    state.fail_next.append(script)
    # A second scripted 500 would surface if the adapter resent the POST.
    state.fail_next.append(reply(500, error("retried!")))

    with pytest.raises(expected) as caught:
        await provider.submit(ImageRequest(prompt="x"), KEY)

    assert type(caught.value) is expected
    assert len(posts(state)) == 1  # paid work is never resent automatically
    assert caught.value.user_message and "{" not in caught.value.user_message
    assert "retried!" not in caught.value.detail


@pytest.mark.parametrize(
    ("script", "needle"),
    [
        (reply(401, error("Invalid credentials in Authorization header")), "/keys"),
        (reply(402, error(CREDITS_ERROR)), "monthly Inference Providers credits"),
        (reply(403, error(PERMISSION_ERROR)), '"Make calls to Inference Providers"'),
        (reply(404, error("Model acme/x not found")), "does not serve this model"),
    ],
)
async def test_user_messages_say_what_to_do(provider, state, script, needle):
    state.fail_next.append(script)
    with pytest.raises(ProviderError) as caught:
        await provider.submit(ImageRequest(prompt="x"), KEY)
    assert needle in caught.value.user_message


async def test_vendor_reasons_reach_the_detail(provider, state):
    state.fail_next.append(reply(400, error(["bad width", "bad height"])))
    with pytest.raises(BadRequest) as caught:
        await provider.submit(ImageRequest(prompt="x"), KEY)
    assert caught.value.detail == "huggingface HTTP 400: bad width; bad height"


async def test_200_json_error_is_unavailable_with_its_reason(provider, state):
    state.fail_next.append(reply(200, error("CUDA out of memory")))
    with pytest.raises(Unavailable) as caught:
        await provider.submit(ImageRequest(prompt="x"), KEY)
    assert "CUDA out of memory" in caught.value.detail


async def test_model_the_provider_does_not_serve_is_bad_request(url, state):
    adapter = HuggingFaceProvider(
        base_url=f"{url}/hf-inference", hub_url=url, models=("acme/gone",)
    )
    try:
        with pytest.raises(BadRequest) as caught:
            await adapter.submit(ImageRequest(prompt="x"), KEY)
    finally:
        await adapter.aclose()
    assert "Model acme/gone not found" in caught.value.detail


async def test_429_uses_retry_after_header(provider, state):
    state.fail_next.append(reply(429, error("Rate limit reached"), {"Retry-After": "7"}))
    with pytest.raises(RateLimited) as caught:
        await provider.submit(ImageRequest(prompt="x"), KEY)
    assert caught.value.retry_after == 7.0


async def test_timeout_is_unavailable_and_the_post_is_not_resent(provider, state):
    state.fail_next.append(stall(1.0))  # longer than the adapter's 0.3 s timeout
    with pytest.raises(Unavailable) as caught:
        await provider.submit(ImageRequest(prompt="x"), KEY)
    assert "timed out" in caught.value.detail
    assert len(posts(state)) == 1


async def test_wrong_token_is_auth_error(provider):
    with pytest.raises(AuthError) as caught:
        await provider.submit(ImageRequest(prompt="x"), ProviderKey("hf_WrongToken000000000"))
    assert "Invalid credentials" in caught.value.detail


async def test_missing_key_is_auth_error_without_a_request(provider, state):
    with pytest.raises(AuthError):
        await provider.submit(ImageRequest(prompt="x"), None)
    with pytest.raises(AuthError):
        await provider.check_key(ProviderKey(""))
    assert state.requests == []


async def test_echoed_wrong_token_never_reaches_exceptions(provider, state):
    state.echo_tokens = True
    wrong = "hf_EchoedSecret0123456789abcdefXYZ"
    with pytest.raises(AuthError) as caught:
        await provider.submit(ImageRequest(prompt="x"), ProviderKey(wrong))
    assert "EchoedSecret" not in exception_texts(caught.value)
    assert "Invalid credentials" in caught.value.detail


ECHOES = [
    reply(400, error(f"bad input from {VALID_TOKEN}")),
    reply(402, error([CREDITS_ERROR, f"Authorization: Bearer {VALID_TOKEN}"])),
    reply(403, error(f"{PERMISSION_ERROR} (token {VALID_TOKEN})")),
    reply(429, error(f"slow down {VALID_TOKEN}")),
    reply(500, f"traceback ... headers={{'authorization': 'Bearer {VALID_TOKEN}'}}"),
    reply(503, error(f"Model m is currently loading for {VALID_TOKEN}", estimated_time=3.0)),
    reply(200, error(f"odd success for {VALID_TOKEN}")),
]


@pytest.mark.parametrize("script", ECHOES)
async def test_echoed_valid_token_never_reaches_exceptions(provider, state, script):
    state.fail_next.append(script)
    with pytest.raises(ProviderError) as caught:
        await provider.submit(ImageRequest(prompt="x"), KEY)
    assert VALID_TOKEN not in exception_texts(caught.value)
    assert "TestDoubleValidToken" not in exception_texts(caught.value)


async def test_tokens_of_any_shape_are_redacted(provider, state):
    odd = "plain-looking-secret-value-42"
    state.valid_tokens.add(odd)
    state.fail_next.append(reply(400, error(f"bad request from key {odd}")))
    with pytest.raises(BadRequest) as caught:
        await provider.submit(ImageRequest(prompt="x"), ProviderKey(odd))
    assert odd not in exception_texts(caught.value)
    assert caught.value.detail == "huggingface HTTP 400: bad request from key ***"


async def test_check_key_asks_the_hub_whoami(provider, state):
    await provider.check_key(KEY)

    [sent] = state.requests
    assert (sent.method, sent.path) == ("GET", "/api/whoami-v2")  # the hub, not the router
    assert sent.headers["Authorization"] == f"Bearer {VALID_TOKEN}"


async def test_check_key_refuses_a_bad_token(provider, state):
    state.echo_tokens = True
    bad = "hf_NotAValidToken0123456789"
    with pytest.raises(AuthError) as caught:
        await provider.check_key(ProviderKey(bad))
    assert bad not in exception_texts(caught.value)
    assert len(state.requests) == 1  # a 401 is an answer, not an outage: no retry


async def test_check_key_is_retried_after_a_5xx(provider, state):
    state.fail_next.append(reply(502, "bad gateway"))
    await provider.check_key(KEY)
    assert len(state.requests) == 2


async def test_check_key_needs_a_json_object(provider, state):
    state.fail_next.append(reply(200, ["not", "an", "object"]))
    with pytest.raises(Unavailable):
        await provider.check_key(KEY)


async def test_poll_and_cancel_do_not_apply(provider, state):
    with pytest.raises(BadRequest):
        await provider.poll("task-1", KEY)
    assert await provider.cancel("task-1", KEY) is False
    assert state.requests == []


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ({"inputs": 3}, "valid string"),
        ({"inputs": "x", "parameters": {"negativePrompt": ["x"]}}, "Unexpected parameter"),
        ({"inputs": "x", "parameters": {"width": "1024"}}, "wrong type"),
        ({"inputs": "x", "parameters": {"seed": True}}, "wrong type"),
        ({"inputs": "x", "parameters": {"width": 1001}}, "multiple of 8"),
    ],
)
async def test_double_checks_the_input_schema(url, body, message):
    async with httpx.AsyncClient(base_url=url) as client:
        response = await client.post(
            FLUX_PATH, json=body, headers={"Authorization": f"Bearer {VALID_TOKEN}"}
        )
    assert response.status_code == 400
    assert message in response.json()["error"]


async def test_double_checks_auth_before_anything_else(url):
    async with httpx.AsyncClient(base_url=url) as client:
        response = await client.post("/hf-inference/models/acme/none", json={"inputs": "x"})
    assert response.status_code == 401
    assert response.json() == {"error": "Invalid credentials in Authorization header"}
