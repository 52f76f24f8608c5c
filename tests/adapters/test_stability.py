"""StabilityProvider against the loopback Stability AI double (contracts README §2a, §2b)."""

from __future__ import annotations

import base64
import io

import httpx
import pytest
from PIL import Image

from studiobot.providers.base import Finished, ImageRequest, ProviderKey, SourceImage
from studiobot.providers.errors import (
    AuthError,
    BadRequest,
    ContentRejected,
    ProviderError,
    QuotaExhausted,
    RateLimited,
    TaskFailed,
    Unavailable,
)
from studiobot.providers.stability import StabilityProvider
from tests.doubles.server import png, reply, stall
from tests.doubles.stability import (
    ERROR,
    FILTERED,
    MODERATED,
    SDXL_ENGINE,
    VALID_KEY,
    StabilityState,
    form_fields,
    running_stability,
    v1_error_body,
    v2_error_body,
)

KEY = ProviderKey(VALID_KEY)
SDXL_PATH = f"/v1/generation/{SDXL_ENGINE}/text-to-image"


@pytest.fixture
def state() -> StabilityState:
    return StabilityState()


@pytest.fixture
async def base_url(state: StabilityState):
    async with running_stability(state) as (url, _):
        yield url


@pytest.fixture
async def provider(base_url: str):
    adapter = StabilityProvider(base_url=base_url, timeout=0.3)
    yield adapter
    await adapter.aclose()


@pytest.fixture
async def json_provider(base_url: str):
    adapter = StabilityProvider(base_url=base_url, timeout=0.3, accept_json=True)
    yield adapter
    await adapter.aclose()


def png_size(data: bytes) -> tuple[int, int]:
    with Image.open(io.BytesIO(data)) as image:
        assert image.format == "PNG"
        image.load()
        return image.size


def posts(state: StabilityState) -> list:
    return [r for r in state.requests if r.method == "POST"]


# --- v2beta Stable Image (README §2a) ---------------------------------------------------------


async def test_core_sends_multipart_fields_and_reads_image_bytes(provider, state):
    result = await provider.submit(ImageRequest(prompt="a red fox", aspect="16:9", seed=42), KEY)

    assert isinstance(result, Finished)
    [image] = result.images
    width, height = png_size(image.data)
    assert width > height
    assert image.seed == 42
    [sent] = state.requests
    assert (sent.method, sent.path) == ("POST", "/v2beta/stable-image/generate/core")
    assert sent.headers["Content-Type"].startswith("multipart/form-data; boundary=")
    assert sent.headers["Accept"] == "image/*"
    assert sent.headers["Authorization"] == f"Bearer {VALID_KEY}"
    assert form_fields(sent) == {
        "prompt": "a red fox",
        "aspect_ratio": "16:9",
        "output_format": "png",
        "seed": "42",
    }


async def test_ultra_sends_negative_prompt_and_takes_the_seed_from_the_header(provider, state):
    request = ImageRequest(prompt="a café 🦊", aspect="9:16", model="ultra", negative_prompt="blur")

    result = await provider.submit(request, KEY)

    [sent] = state.requests
    assert sent.path == "/v2beta/stable-image/generate/ultra"
    assert form_fields(sent) == {
        "prompt": "a café 🦊",
        "aspect_ratio": "9:16",
        "output_format": "png",
        "negative_prompt": "blur",
    }
    width, height = png_size(result.images[0].data)
    assert height > width
    assert result.images[0].seed is not None and result.images[0].seed > 0  # the double's pick


@pytest.mark.parametrize("model", ["sd3.5-large", "sd3.5-large-turbo", "sd3.5-medium"])
async def test_sd3_models_go_to_the_sd3_endpoint_with_a_model_field(provider, state, model):
    result = await provider.submit(ImageRequest(prompt="a lighthouse", model=model), KEY)

    [sent] = state.requests
    assert sent.path == "/v2beta/stable-image/generate/sd3"
    assert form_fields(sent) == {
        "prompt": "a lighthouse",
        "aspect_ratio": "1:1",
        "output_format": "png",
        "model": model,
    }
    assert png_size(result.images[0].data) == (64, 64)


async def test_accept_json_reads_the_base64_answer(json_provider, state):
    result = await json_provider.submit(ImageRequest(prompt="a fox", aspect="3:2", seed=7), KEY)

    assert state.requests[0].headers["Accept"] == "application/json"
    width, height = png_size(result.images[0].data)
    assert width > height
    assert result.images[0].seed == 7


async def test_a_json_answer_is_read_even_when_image_bytes_were_asked_for(provider, state):
    data = png("1x1", 8)
    body = {"image": base64.b64encode(data).decode(), "finish_reason": "SUCCESS", "seed": 99}
    state.fail_next.append(reply(200, body))

    result = await provider.submit(ImageRequest(prompt="x"), KEY)

    assert result.images[0].data == data
    assert result.images[0].seed == 99


@pytest.mark.parametrize("accept_json", [False, True], ids=["image-header", "json-field"])
async def test_content_filtered_output_is_never_delivered(base_url, state, accept_json):
    state.outcomes.append(FILTERED)
    adapter = StabilityProvider(base_url=base_url, accept_json=accept_json)
    try:
        with pytest.raises(ContentRejected) as caught:
            await adapter.submit(ImageRequest(prompt="a fox"), KEY)
    finally:
        await adapter.aclose()
    assert "filter" in caught.value.user_message
    assert len(posts(state)) == 1


async def test_moderated_prompt_is_content_rejected(provider, state):
    with pytest.raises(ContentRejected) as caught:
        await provider.submit(ImageRequest(prompt="something Forbidden"), KEY)
    assert "content_moderation" in caught.value.detail


# --- v1 SDXL (README §2b) ---------------------------------------------------------------------


async def test_sdxl_sends_json_body_and_returns_every_sample(provider, state):
    request = ImageRequest(
        prompt="a castle", aspect="16:9", count=2, model="sdxl-1.0", negative_prompt="fog", seed=5
    )

    result = await provider.submit(request, KEY)

    [sent] = state.requests
    assert (sent.method, sent.path) == ("POST", SDXL_PATH)
    assert sent.headers["Accept"] == "application/json"
    assert sent.json == {
        "text_prompts": [{"text": "a castle", "weight": 1}, {"text": "fog", "weight": -1}],
        "width": 1344,
        "height": 768,
        "samples": 2,
        "seed": 5,
    }
    assert [image.seed for image in result.images] == [5, 6]
    for image in result.images:
        width, height = png_size(image.data)
        assert width > height


async def test_sdxl_reads_the_bare_list_form_of_the_2023_spec(provider, state):
    state.v1_bare_list = True
    result = await provider.submit(ImageRequest(prompt="x", model="sdxl-1.0", count=3), KEY)
    assert len(result.images) == 3
    assert "seed" not in state.requests[0].json


async def test_every_sdxl_aspect_maps_to_an_allowed_size_close_to_it(provider, state):
    expected = {
        "1:1": (1024, 1024), "16:9": (1344, 768), "9:16": (768, 1344), "4:3": (1152, 896),
        "3:4": (896, 1152), "3:2": (1216, 832), "2:3": (832, 1216),
    }  # fmt: skip
    for aspect, size in expected.items():
        state.requests.clear()
        # The double answers 400 invalid_height_or_width for any size SDXL does not allow.
        request = ImageRequest(prompt="x", aspect=aspect, model="sdxl-1.0")
        result = await provider.submit(request, KEY)
        sent = state.requests[0].json
        assert (sent["width"], sent["height"]) == size, aspect
        wanted_w, wanted_h = map(int, aspect.split(":"))
        assert abs(size[0] / size[1] / (wanted_w / wanted_h) - 1) < 0.05
        width, height = png_size(result.images[0].data)
        assert (width > height) == (size[0] > size[1]), aspect


@pytest.mark.parametrize(
    ("outcome", "expected"), [(FILTERED, ContentRejected), (ERROR, TaskFailed)]
)
async def test_sdxl_one_bad_artifact_fails_the_whole_request(provider, state, outcome, expected):
    state.outcomes.append(outcome)  # the double applies it to the last of the two artifacts
    with pytest.raises(expected):
        await provider.submit(ImageRequest(prompt="x", model="sdxl-1.0", count=2), KEY)


async def test_sdxl_filtered_words_are_content_rejected(provider):
    with pytest.raises(ContentRejected) as caught:
        await provider.submit(ImageRequest(prompt="a forbidden thing", model="sdxl-1.0"), KEY)
    assert "invalid_prompts" in caught.value.detail


# --- capabilities, price, refusals ------------------------------------------------------------


def test_capabilities_per_model(provider):
    caps = provider.capabilities
    assert caps.models == (
        "core", "ultra", "sd3.5-large", "sd3.5-large-turbo", "sd3.5-medium", "sdxl-1.0"
    )  # fmt: skip
    assert caps.default_model == "core"
    assert (caps.is_async, caps.can_cancel, caps.webhooks) == (False, False, False)
    assert (caps.seed, caps.negative_prompt) == (True, True)
    for model in caps.models[:5]:
        assert caps.aspects_for(model) == ("1:1", "16:9", "9:16", "3:2", "2:3")
        assert caps.max_images_for(model) == 1
    assert caps.aspects_for("sdxl-1.0") == ("1:1", "16:9", "9:16", "4:3", "3:4", "3:2", "2:3")
    assert caps.max_images_for("sdxl-1.0") == 4


async def test_price_is_the_models_price_times_count_with_overrides(base_url):
    adapter = StabilityProvider(base_url=base_url, credits_per_image={"ultra": 10})
    try:
        assert adapter.price(ImageRequest(prompt="x")) == 3
        assert adapter.price(ImageRequest(prompt="x", model="ultra")) == 10
        assert adapter.price(ImageRequest(prompt="x", model="sd3.5-large")) == 7
        assert adapter.price(ImageRequest(prompt="x", model="sdxl-1.0", count=4)) == 4
        with pytest.raises(BadRequest):
            adapter.price(ImageRequest(prompt="x", model="dall-e-3"))
    finally:
        await adapter.aclose()


@pytest.mark.parametrize(
    ("request_", "needle"),
    [
        (ImageRequest(prompt="x", aspect="4:3"), "1:1, 16:9, 9:16, 3:2, 2:3"),
        (ImageRequest(prompt="x", aspect="3:4", model="sd3.5-medium"), "aspect ratios"),
        (ImageRequest(prompt="x", count=2), "1 to 1"),
        (ImageRequest(prompt="x", count=5, model="sdxl-1.0"), "1 to 4"),
        (
            ImageRequest(prompt="x", model="sd3.5-large-turbo", negative_prompt="blur"),
            "negative prompt",
        ),
        (ImageRequest(prompt="x", seed=4294967295), "between 0 and 4294967294"),
        (ImageRequest(prompt="x", seed=-1, model="sdxl-1.0"), "between 0 and 4294967295"),
        (ImageRequest(prompt="x" * 2001, model="sdxl-1.0"), "2000 characters"),
        (ImageRequest(prompt="x", model="sdxl-0.9"), "core, ultra"),
        (
            ImageRequest(prompt="x", operation="upscale", source=SourceImage(None, 1)),
            "new images",
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


# --- error mapping ----------------------------------------------------------------------------

ERROR_CASES = [
    ("core", reply(400, v2_error_body("bad_request", "aspect_ratio: invalid")), BadRequest),
    ("core", reply(401, v2_error_body("unauthorized", "bad key")), AuthError),
    ("core", reply(402, v2_error_body("payment_required", "no credits")), QuotaExhausted),
    ("core", reply(403, v2_error_body("content_moderation", "flagged")), ContentRejected),
    ("core", reply(403, v2_error_body("forbidden", "not allowed")), AuthError),
    ("core", reply(413, v2_error_body("payload_too_large", "too big")), BadRequest),
    ("core", reply(422, v2_error_body("invalid_language", "English only")), BadRequest),
    ("core", reply(429, v2_error_body("rate_limit_exceeded", "slow down")), RateLimited),
    ("core", reply(500, v2_error_body("internal_error", "oops")), Unavailable),
    ("core", reply(502, "<html>bad gateway</html>"), Unavailable),
    ("core", reply(200, b"<html>not an image</html>", {"finish-reason": "SUCCESS"}), Unavailable),
    ("core", reply(200, "{not json", {"Content-Type": "application/json"}), Unavailable),
    ("core", reply(200, {"image": "@@not base64@@", "seed": 1}), Unavailable),
    ("sdxl-1.0", reply(400, v1_error_body("invalid_prompts", "filtered words")), ContentRejected),
    ("sdxl-1.0", reply(400, v1_error_body("invalid_samples", "bad samples")), BadRequest),
    ("sdxl-1.0", reply(401, v1_error_body("unauthorized", "missing header")), AuthError),
    ("sdxl-1.0", reply(403, v1_error_body("permission_denied", "no permission")), AuthError),
    ("sdxl-1.0", reply(404, v1_error_body("not_found", "engine not found")), BadRequest),
    ("sdxl-1.0", reply(500, v1_error_body("server_error", "unexpected")), Unavailable),
    ("sdxl-1.0", reply(200, {"artifacts": []}), Unavailable),
    ("sdxl-1.0", reply(200, [{"base64": "", "finishReason": "SUCCESS"}]), Unavailable),
]


@pytest.mark.parametrize(
    ("model", "script", "expected"),
    ERROR_CASES,
    ids=[f"{m}-{s[1]}-{e.__name__}" for m, s, e in ERROR_CASES],
)
async def test_error_answers_map_to_the_taxonomy_without_retrying_the_post(
    provider, state, model, script, expected
):
    state.fail_next.append(script)
    # A second scripted 500 would surface if the adapter retried the POST.
    state.fail_next.append(reply(500, v2_error_body("internal_error", "retried!")))

    with pytest.raises(expected) as caught:
        await provider.submit(ImageRequest(prompt="x", model=model), KEY)

    assert type(caught.value) is expected
    assert len(posts(state)) == 1
    assert caught.value.user_message and "{" not in caught.value.user_message


async def test_429_uses_retry_after_header(provider, state):
    state.fail_next.append(reply(429, v2_error_body("rate_limit", "slow"), {"Retry-After": "60"}))
    with pytest.raises(RateLimited) as caught:
        await provider.submit(ImageRequest(prompt="x"), KEY)
    assert caught.value.retry_after == 60.0


async def test_429_without_header_has_no_retry_hint(provider, state):
    state.fail_next.append(reply(429, v2_error_body("rate_limit", "slow")))
    with pytest.raises(RateLimited) as caught:
        await provider.submit(ImageRequest(prompt="x"), KEY)
    assert caught.value.retry_after is None


@pytest.mark.parametrize("model", ["core", "sdxl-1.0"])
async def test_timeout_is_unavailable_and_the_post_is_not_resent(provider, state, model):
    state.fail_next.append(stall(1.0))  # longer than the adapter's 0.3 s timeout

    with pytest.raises(Unavailable) as caught:
        await provider.submit(ImageRequest(prompt="x", model=model), KEY)

    assert "timed out" in caught.value.detail
    assert len(posts(state)) == 1


async def test_wrong_key_is_auth_error(provider):
    with pytest.raises(AuthError):
        await provider.submit(ImageRequest(prompt="x"), ProviderKey("sk-wrong-key-000000000000"))


async def test_missing_key_is_auth_error_without_a_request(provider, state):
    with pytest.raises(AuthError):
        await provider.submit(ImageRequest(prompt="x"), None)
    assert state.requests == []


def exception_texts(error: ProviderError) -> str:
    parts = [str(error), repr(error), error.detail, error.user_message, *map(str, error.args)]
    return " ".join(parts)


@pytest.mark.parametrize("model", ["core", "sdxl-1.0"])
async def test_echoed_keys_never_reach_exceptions(provider, state, model):
    state.echo_keys = True  # the 401 message carries the whole wrong key
    wrong = "sk-EchoedStabilitySecret0123456789abcdef"
    with pytest.raises(AuthError) as caught:
        await provider.submit(ImageRequest(prompt="x", model=model), ProviderKey(wrong))
    assert "Incorrect API key" in caught.value.detail
    assert "EchoedStabilitySecret" not in exception_texts(caught.value)


async def test_keys_of_any_shape_are_redacted_from_vendor_bodies(provider, state):
    odd_key = "plain-looking-secret-value-42"
    state.valid_keys.add(odd_key)
    state.fail_next.append(reply(400, v2_error_body("bad_request", f"bad key {odd_key} used")))
    with pytest.raises(BadRequest) as caught:
        await provider.submit(ImageRequest(prompt="x"), ProviderKey(odd_key))
    assert odd_key not in exception_texts(caught.value)
    assert "bad key *** used" in caught.value.detail


# --- check_key, poll, cancel ------------------------------------------------------------------


async def test_check_key_reads_the_balance_and_maps_401(provider, state):
    await provider.check_key(KEY)
    [sent] = state.requests
    assert (sent.method, sent.path) == ("GET", "/v1/user/balance")
    assert sent.headers["Authorization"] == f"Bearer {VALID_KEY}"

    with pytest.raises(AuthError):
        await provider.check_key(ProviderKey("sk-not-a-valid-key-123456789"))


async def test_check_key_is_retried_after_a_5xx(provider, state):
    state.fail_next.append(reply(502, "bad gateway"))
    await provider.check_key(KEY)
    assert len(state.requests) == 2


async def test_poll_and_cancel_do_not_apply(provider, state):
    with pytest.raises(BadRequest):
        await provider.poll("task-1", KEY)
    assert await provider.cancel("task-1", KEY) is False
    assert state.requests == []


# --- the double checks what the real API checks ------------------------------------------------

AUTH = {"Authorization": f"Bearer {VALID_KEY}"}
V2_CORE = "/v2beta/stable-image/generate/core"
V2_SD3 = "/v2beta/stable-image/generate/sd3"
DOUBLE_REFUSALS = [
    ("urlencoded", V2_CORE, {"data": {"prompt": "x"}}, "image/*", "multipart/form-data"),
    ("no-accept", V2_CORE, {"data": {"prompt": "x"}, "files": {"n": b""}}, "", "accept"),
    ("bad-aspect", V2_CORE, {"data": {"prompt": "x", "aspect_ratio": "4:3"}, "files": {"n": b""}},
     "image/*", "aspect_ratio"),
    ("bad-seed", V2_CORE, {"data": {"prompt": "x", "seed": "4294967295"}, "files": {"n": b""}},
     "image/*", "seed"),
    ("sd3-webp", V2_SD3, {"data": {"prompt": "x", "output_format": "webp"}, "files": {"n": b""}},
     "image/*", "output_format"),
    ("sd3-model", V2_SD3, {"data": {"prompt": "x", "model": "sd4"}, "files": {"n": b""}},
     "image/*", "model"),
    ("sdxl-size", SDXL_PATH, {"json": {"text_prompts": [{"text": "x"}], "width": 512,
     "height": 512}}, "application/json", "invalid_height_or_width"),
    ("sdxl-samples", SDXL_PATH, {"json": {"text_prompts": [{"text": "x"}], "width": 1024,
     "height": 1024, "samples": 11}}, "application/json", "samples"),
    ("sdxl-png-samples", SDXL_PATH, {"json": {"text_prompts": [{"text": "x"}], "width": 1024,
     "height": 1024, "samples": 2}}, "image/png", "invalid_samples"),
]  # fmt: skip


@pytest.mark.parametrize(
    ("path", "kwargs", "accept", "needle"),
    [case[1:] for case in DOUBLE_REFUSALS],
    ids=[case[0] for case in DOUBLE_REFUSALS],
)
async def test_double_refuses_what_the_api_refuses(base_url, path, kwargs, accept, needle):
    headers = {**AUTH, "Accept": accept} if accept else AUTH
    async with httpx.AsyncClient(base_url=base_url) as client:
        response = await client.post(path, headers=headers, **kwargs)
    assert response.status_code == 400
    assert needle in response.text


async def test_double_serves_json_and_raw_v2_forms(base_url):
    async with httpx.AsyncClient(base_url=base_url) as client:
        raw = await client.post(
            V2_CORE, headers={**AUTH, "Accept": "image/*"}, data={"prompt": "x"}, files={"n": b""}
        )
        as_json = await client.post(
            V2_CORE,
            headers={**AUTH, "Accept": "application/json"},
            data={"prompt": "x", "seed": "3"},
            files={"n": b""},
        )
    assert raw.headers["content-type"] == "image/png"
    assert raw.headers["finish-reason"] == "SUCCESS" and int(raw.headers["seed"]) > 0
    assert png_size(raw.content) == (64, 64)
    body = as_json.json()
    assert (body["finish_reason"], body["seed"]) == ("SUCCESS", 3)
    assert png_size(base64.b64decode(body["image"])) == (64, 64)


async def test_double_scripted_moderation_is_a_403_on_v2beta(base_url, state):
    state.outcomes.append(MODERATED)
    async with httpx.AsyncClient(base_url=base_url) as client:
        response = await client.post(
            V2_CORE, headers={**AUTH, "Accept": "image/*"}, data={"prompt": "x"}, files={"n": b""}
        )
    assert response.status_code == 403
    assert response.json()["name"] == "content_moderation"
