"""OpenAIProvider against the loopback Images API double (contracts README §1)."""

from __future__ import annotations

import base64
import io

import httpx
import pytest
from PIL import Image

from studiobot.providers.base import Finished, ImageRequest, ProviderKey
from studiobot.providers.errors import (
    AuthError,
    BadRequest,
    ContentRejected,
    ProviderError,
    QuotaExhausted,
    RateLimited,
    Unavailable,
)
from studiobot.providers.openai import OpenAIProvider
from tests.doubles.openai_images import (
    VALID_KEY,
    OpenAIState,
    error_body,
    make_openai_app,
)
from tests.doubles.server import png, reply, serve, stall

KEY = ProviderKey(VALID_KEY)


@pytest.fixture
def state() -> OpenAIState:
    return OpenAIState()


@pytest.fixture
async def base_url(state: OpenAIState):
    async with serve(make_openai_app(state)) as url:
        yield url


@pytest.fixture
async def provider(base_url: str):
    adapter = OpenAIProvider(base_url=base_url, timeout=0.3)
    yield adapter
    await adapter.aclose()


def png_size(data: bytes) -> tuple[int, int]:
    with Image.open(io.BytesIO(data)) as image:
        assert image.format == "PNG"
        image.load()
        return image.size


def posts(state: OpenAIState) -> list:
    return [r for r in state.requests if r.method == "POST"]


async def test_gpt_image_1_sends_documented_body_and_decodes_pngs(provider, state):
    result = await provider.submit(ImageRequest(prompt="a red fox", aspect="3:2", count=2), KEY)

    assert isinstance(result, Finished)
    assert len(result.images) == 2
    for image in result.images:
        width, height = png_size(image.data)
        assert width > height  # 1536x1024 scaled down keeps its orientation
    [sent] = state.requests
    assert (sent.method, sent.path) == ("POST", "/images/generations")
    # README §1: never response_format for gpt-image-1 (it answers 400 Unknown parameter).
    assert sent.json == {
        "model": "gpt-image-1",
        "prompt": "a red fox",
        "n": 2,
        "size": "1536x1024",
    }
    assert sent.headers["Authorization"] == f"Bearer {VALID_KEY}"
    assert sent.headers["User-Agent"].startswith("studiobot/")


async def test_dall_e_3_asks_for_base64_and_returns_revised_prompt(provider, state):
    request = ImageRequest(prompt="a lighthouse", aspect="9:16", model="dall-e-3")

    result = await provider.submit(request, KEY)

    assert state.requests[0].json == {
        "model": "dall-e-3",
        "prompt": "a lighthouse",
        "n": 1,
        "size": "1024x1792",
        "response_format": "b64_json",
    }
    width, height = png_size(result.images[0].data)
    assert height > width
    assert result.revised_prompt and "a lighthouse" in result.revised_prompt


async def test_double_rejects_response_format_for_gpt_image_1_like_the_real_api(base_url):
    async with httpx.AsyncClient(base_url=base_url) as client:
        response = await client.post(
            "/images/generations",
            json={"model": "gpt-image-1", "prompt": "x", "response_format": "b64_json"},
            headers={"Authorization": f"Bearer {VALID_KEY}"},
        )
    assert response.status_code == 400
    assert response.json()["error"]["message"] == "Unknown parameter: 'response_format'."


def test_capabilities_and_per_model_limits(provider):
    caps = provider.capabilities
    assert caps.models == ("gpt-image-1", "dall-e-3")
    assert set(caps.aspects) == {"1:1", "16:9", "9:16", "3:2", "2:3"}
    assert (caps.is_async, caps.can_cancel, caps.seed, caps.negative_prompt) == (
        False,
        False,
        False,
        False,
    )
    assert caps.max_images == 4
    assert provider.capabilities.aspects_for("gpt-image-1") == ("1:1", "3:2", "2:3")
    assert provider.capabilities.aspects_for("dall-e-3") == ("1:1", "16:9", "9:16")
    assert (provider.capabilities.max_images_for("gpt-image-1"), provider.capabilities.max_images_for("dall-e-3")) == (4, 1)


async def test_price_is_per_image_price_of_the_model_times_count(base_url):
    adapter = OpenAIProvider(base_url=base_url, credits_per_image={"dall-e-3": 7})
    try:
        assert adapter.price(ImageRequest(prompt="x", count=3)) == 12
        assert adapter.price(ImageRequest(prompt="x", model="dall-e-3")) == 7
    finally:
        await adapter.aclose()


@pytest.mark.parametrize(
    ("request_", "needle"),
    [
        (ImageRequest(prompt="x", aspect="16:9"), "1:1, 3:2, 2:3"),
        (ImageRequest(prompt="x", aspect="3:2", model="dall-e-3"), "1:1, 16:9, 9:16"),
        (ImageRequest(prompt="x", count=2, model="dall-e-3"), "1 to 1"),
        (ImageRequest(prompt="x", count=5), "1 to 4"),
        (ImageRequest(prompt="x", seed=7), "seed"),
        (ImageRequest(prompt="x", negative_prompt="blur"), "negative prompt"),
        (ImageRequest(prompt="x", model="dall-e-2"), "gpt-image-1, dall-e-3"),
    ],
)
async def test_unsupported_options_are_refused_before_any_request(
    provider, state, request_, needle
):
    with pytest.raises(BadRequest) as caught:
        await provider.submit(request_, KEY)
    assert needle in caught.value.user_message
    assert state.requests == []


ERROR_CASES = [
    pytest.param(
        reply(
            400,
            error_body(
                "Your request was rejected by the safety system.",
                "image_generation_user_error",
                "moderation_blocked",
            ),
        ),
        ContentRejected,
        id="400-moderation_blocked",
    ),
    pytest.param(
        reply(400, error_body("Rejected.", "invalid_request_error", "content_policy_violation")),
        ContentRejected,
        id="400-content_policy_violation",
    ),
    pytest.param(
        reply(400, error_body("Invalid size.", "invalid_request_error", "invalid_value", "size")),
        BadRequest,
        id="400-other",
    ),
    pytest.param(
        reply(
            403,
            error_body(
                "Country, region, or territory not supported",
                "request_forbidden",
                "unsupported_country_region_territory",
            ),
        ),
        AuthError,
        id="403",
    ),
    pytest.param(
        reply(
            429,
            error_body(
                "You exceeded your current quota.", "insufficient_quota", "insufficient_quota"
            ),
        ),
        QuotaExhausted,
        id="429-insufficient_quota",
    ),
    pytest.param(
        reply(
            429, error_body("Rate limit reached for requests", "requests", "rate_limit_exceeded")
        ),
        RateLimited,
        id="429-rate-limit",
    ),
    pytest.param(
        reply(500, error_body("The server had an error.", "server_error")), Unavailable, id="500"
    ),
    pytest.param(reply(503, "upstream connect error"), Unavailable, id="503-plain-text"),
    pytest.param(reply(200, "{not json"), Unavailable, id="200-malformed-json"),
    pytest.param(reply(200, {"created": 1}), Unavailable, id="200-no-data"),
    pytest.param(reply(200, {"created": 1, "data": []}), Unavailable, id="200-empty-data"),
    pytest.param(
        reply(200, {"created": 1, "data": [{"url": "http://127.0.0.1:9/x.png"}]}),
        Unavailable,
        id="200-url-not-b64",
    ),
    pytest.param(
        reply(200, {"created": 1, "data": [{"b64_json": "@@not base64@@"}]}),
        Unavailable,
        id="200-bad-base64",
    ),
]


@pytest.mark.parametrize(("script", "expected"), ERROR_CASES)
async def test_error_answers_map_to_the_taxonomy_without_retrying_the_post(
    provider, state, script, expected
):
    state.fail_next.append(script)
    # A second scripted 500 would surface if the adapter retried the POST.
    state.fail_next.append(reply(500, error_body("retried!", "server_error")))

    with pytest.raises(expected) as caught:
        await provider.submit(ImageRequest(prompt="x"), KEY)

    assert type(caught.value) is expected
    assert len(posts(state)) == 1  # paid work is never resent automatically
    assert caught.value.user_message and "{" not in caught.value.user_message


async def test_403_tells_the_user_about_region_or_permissions(provider, state):
    state.fail_next.append(reply(403, error_body("Forbidden", "request_forbidden")))
    with pytest.raises(AuthError) as caught:
        await provider.submit(ImageRequest(prompt="x"), KEY)
    assert "region" in caught.value.user_message


async def test_429_uses_retry_after_header(provider, state):
    state.fail_next.append(
        reply(
            429,
            error_body("Rate limit reached", "requests", "rate_limit_exceeded"),
            {"Retry-After": "7"},
        )
    )
    with pytest.raises(RateLimited) as caught:
        await provider.submit(ImageRequest(prompt="x"), KEY)
    assert caught.value.retry_after == 7.0


async def test_429_without_header_has_no_retry_hint(provider, state):
    state.fail_next.append(reply(429, error_body("Rate limit reached", "requests")))
    with pytest.raises(RateLimited) as caught:
        await provider.submit(ImageRequest(prompt="x"), KEY)
    assert caught.value.retry_after is None


async def test_timeout_is_unavailable_and_the_post_is_not_resent(provider, state):
    state.fail_next.append(stall(1.0))  # longer than the adapter's 0.3 s timeout

    with pytest.raises(Unavailable) as caught:
        await provider.submit(ImageRequest(prompt="x"), KEY)

    assert "timed out" in caught.value.detail
    assert len(posts(state)) == 1


async def test_wrong_key_is_auth_error(provider):
    with pytest.raises(AuthError):
        await provider.submit(ImageRequest(prompt="x"), ProviderKey("sk-wrong-key-000000"))


async def test_missing_key_is_auth_error_without_a_request(provider, state):
    with pytest.raises(AuthError):
        await provider.submit(ImageRequest(prompt="x"), None)
    assert state.requests == []


def exception_texts(error: ProviderError) -> str:
    parts = [str(error), repr(error), error.detail, error.user_message, *map(str, error.args)]
    return " ".join(parts)


async def test_echoed_keys_never_reach_exceptions(provider, state):
    state.echo_keys = True  # the 401 message carries the whole wrong key
    wrong = "sk-proj-EchoedSecret0123456789abcdef"
    with pytest.raises(AuthError) as caught:
        await provider.submit(ImageRequest(prompt="x"), ProviderKey(wrong))
    assert wrong not in exception_texts(caught.value)
    assert "EchoedSecret" not in exception_texts(caught.value)


async def test_keys_of_any_shape_are_redacted_from_vendor_bodies(provider, state):
    odd_key = "plain-looking-secret-value-42"
    state.valid_keys.add(odd_key)
    state.fail_next.append(
        reply(400, error_body(f"bad request from key {odd_key}", "invalid_request_error"))
    )
    with pytest.raises(BadRequest) as caught:
        await provider.submit(ImageRequest(prompt="x"), ProviderKey(odd_key))
    assert odd_key not in exception_texts(caught.value)
    assert "bad request from key ***" in caught.value.detail


async def test_check_key_calls_models_and_maps_401(provider, state):
    await provider.check_key(KEY)
    assert [(r.method, r.path) for r in state.requests] == [("GET", "/models")]

    with pytest.raises(AuthError):
        await provider.check_key(ProviderKey("sk-not-a-valid-key-1234"))


async def test_check_key_is_retried_after_a_5xx(provider, state):
    state.fail_next.append(reply(502, "bad gateway"))
    await provider.check_key(KEY)
    assert len(state.requests) == 2


async def test_poll_and_cancel_do_not_apply(provider, state):
    with pytest.raises(BadRequest):
        await provider.poll("task-1", KEY)
    assert await provider.cancel("task-1", KEY) is False
    assert state.requests == []


def test_base64_payload_sanity():
    # The double's images must be real PNGs, or the decode assertions above would prove nothing.
    data = png("1536x1024", 64)
    assert png_size(base64.b64decode(base64.b64encode(data))) == (64, 43)
