"""Tests for the offline provider: real Pillow drawing, no network, an injected clock."""

from __future__ import annotations

import base64
import dataclasses
import io
import itertools
import json
import threading

import pytest
from PIL import Image, ImageChops, ImageStat

from studiobot.providers import offline
from studiobot.providers.base import (
    ASPECT_RATIOS,
    Finished,
    ImageRequest,
    Progress,
    Provider,
    ProviderKey,
    Submitted,
)
from studiobot.providers.errors import BadRequest
from studiobot.providers.offline import OfflineProvider, image_size

SMALL = 192  # pixels; big enough to draw text, small enough to keep the suite fast


class FakeClock:
    def __init__(self, now: float = 1_700_000_000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


async def _draw(request: ImageRequest, *, base_size: int = SMALL) -> Finished:
    result = await OfflineProvider(base_size=base_size).submit(request, None)
    assert isinstance(result, Finished)
    return result


def _image(data: bytes | None) -> Image.Image:
    assert data is not None
    image = Image.open(io.BytesIO(data))
    assert image.format == "PNG"
    return image.convert("RGB")


def _art_difference(a: bytes | None, b: bytes | None) -> float:
    """Mean per-channel difference (0-255) of the pictures above the caption, at 16x16."""

    def art(data: bytes | None) -> Image.Image:
        image = _image(data)
        w, h = image.size
        return image.crop((0, h // 8, w, h * 6 // 10)).resize((16, 16), Image.Resampling.BOX)

    return sum(ImageStat.Stat(ImageChops.difference(art(a), art(b))).mean) / 3


# --- the protocol surface -------------------------------------------------------------------


def test_sync_capabilities_and_price() -> None:
    provider = OfflineProvider(credits_per_image=3)

    assert isinstance(provider, Provider)
    assert provider.name == "offline"
    caps = provider.capabilities
    assert caps.models == ("offline-sketch",)
    assert caps.aspects == ASPECT_RATIOS
    assert (caps.max_images, caps.negative_prompt, caps.seed) == (4, True, True)
    assert (caps.is_async, caps.can_cancel, caps.webhooks) == (False, False, False)
    assert provider.price(ImageRequest(prompt="x", count=4)) == 12


def test_async_capabilities() -> None:
    caps = OfflineProvider(delay=2.5).capabilities

    assert caps.is_async is True
    assert caps.can_cancel is True


@pytest.mark.parametrize("options", [{"delay": -1}, {"delay": float("nan")},
                                     {"credits_per_image": -1}, {"base_size": 10}])
def test_bad_construction_is_refused(options) -> None:
    with pytest.raises(ValueError):
        OfflineProvider(**options)


async def test_check_key_accepts_anything_and_aclose_is_harmless() -> None:
    provider = OfflineProvider()

    await provider.check_key(ProviderKey(secret="anything at all", source="user"))
    await provider.aclose()


# --- drawing ----------------------------------------------------------------------------------


_EXPECTED_512 = {
    "1:1": (512, 512),
    "16:9": (512, 288),
    "9:16": (288, 512),
    "4:3": (512, 384),
    "3:4": (384, 512),
    "3:2": (510, 340),  # 512 is no multiple of 3; the ratio wins over the last two pixels
    "2:3": (340, 510),
}


@pytest.mark.parametrize("aspect", ASPECT_RATIOS)
async def test_every_aspect_has_its_exact_size(aspect: str) -> None:
    result = await _draw(ImageRequest(prompt="size check", aspect=aspect), base_size=512)

    assert _image(result.images[0].data).size == _EXPECTED_512[aspect]


@pytest.mark.parametrize("aspect", ASPECT_RATIOS)
@pytest.mark.parametrize("base_size", [64, 333, 512, 1024, 1536])
def test_image_size_keeps_ratio_exactly(aspect: str, base_size: int) -> None:
    w_term, h_term = map(int, aspect.split(":"))

    width, height = image_size(aspect, base_size)

    assert width * h_term == height * w_term
    assert base_size - max(w_term, h_term) < max(width, height) <= base_size


async def test_same_request_gives_identical_bytes() -> None:
    request = ImageRequest(prompt="a lighthouse at dusk", aspect="4:3", count=2, seed=7)

    first, second = await _draw(request), await _draw(request)

    assert first == second


@pytest.mark.parametrize("count", [1, 2, 3, 4])
async def test_count_images_each_different(count: int) -> None:
    result = await _draw(ImageRequest(prompt="count", count=count, seed=100))

    assert len(result.images) == count
    assert [image.seed for image in result.images] == list(range(100, 100 + count))
    for a, b in itertools.combinations(result.images, 2):
        assert _art_difference(a.data, b.data) > 20


async def test_reported_seed_reproduces_each_image_alone() -> None:
    batch = await _draw(ImageRequest(prompt="reproduce me", count=3, seed=40))

    alone = await _draw(ImageRequest(prompt="reproduce me", count=1, seed=batch.images[2].seed))

    assert alone.images[0].data == batch.images[2].data


async def test_missing_seed_is_fresh_each_time_and_reported() -> None:
    takes = [await _draw(ImageRequest(prompt="no seed given")) for _ in range(5)]

    seeds = [take.images[0].seed for take in takes]
    assert all(isinstance(seed, int) and 0 <= seed < 2**31 for seed in seeds)
    assert len(set(seeds)) == 5  # a re-roll is a new picture
    assert len({take.images[0].data for take in takes}) == 5
    explicit = await _draw(ImageRequest(prompt="no seed given", seed=seeds[0]))
    assert explicit.images[0].data == takes[0].images[0].data  # the reported seed repeats it


async def test_different_prompts_look_different() -> None:
    prompts = ["a red fox in snow", "a red fox in snow!", "cat", "a castle on a hill",
               "portrait of an old man", "ocean waves"]
    images = {p: (await _draw(ImageRequest(prompt=p, seed=1))).images[0].data for p in prompts}

    for a, b in itertools.combinations(prompts, 2):
        assert images[a] != images[b]
        assert _art_difference(images[a], images[b]) > 20, (a, b)


async def test_different_seeds_and_negative_prompts_look_different() -> None:
    base = ImageRequest(prompt="same prompt", seed=1)
    variants = [
        base,
        ImageRequest(prompt="same prompt", seed=2),
        ImageRequest(prompt="same prompt", seed=1, negative_prompt="blurry"),
        ImageRequest(prompt="same prompt", seed=1, aspect="16:9"),
    ]
    images = [(await _draw(request)).images[0].data for request in variants]

    for a, b in itertools.combinations(images, 2):
        assert _art_difference(a, b) > 20


async def test_caption_band_is_drawn() -> None:
    # The band is near-black behind light text; the art above it is a saturated palette.
    result = await _draw(ImageRequest(prompt="caption check", seed=3), base_size=512)
    image = _image(result.images[0].data)

    band = image.crop((0, 480, 512, 512)).convert("L")
    assert ImageStat.Stat(band).mean[0] < 90
    assert band.getextrema()[1] > 200  # there is bright text in it


async def test_awkward_prompts_are_drawn() -> None:
    for prompt in ["x" * 5000, "日本の庭園 🌸", "line one\nline two\ttab", "  "]:
        result = await _draw(ImageRequest(prompt=prompt, aspect="9:16"))
        assert _image(result.images[0].data).size == image_size("9:16", SMALL)


async def test_drawing_runs_off_the_event_loop_thread(monkeypatch) -> None:
    threads: list[int] = []
    real = offline.render_sketch

    def spy(*args, **kwargs):
        threads.append(threading.get_ident())
        return real(*args, **kwargs)

    monkeypatch.setattr(offline, "render_sketch", spy)

    await _draw(ImageRequest(prompt="thread check", count=2))

    assert len(threads) == 2
    assert threading.get_ident() not in threads


@pytest.mark.parametrize(
    "request_",
    [
        ImageRequest(prompt="x", count=0),
        ImageRequest(prompt="x", count=5),
        ImageRequest(prompt="x", aspect="21:9"),
        ImageRequest(prompt="x", model="dall-e-3"),
    ],
)
async def test_unsupported_options_are_bad_requests(request_: ImageRequest) -> None:
    for provider in (OfflineProvider(), OfflineProvider(delay=1)):
        with pytest.raises(BadRequest):
            await provider.submit(request_, None)


async def test_named_model_is_accepted() -> None:
    result = await _draw(ImageRequest(prompt="x", model="offline-sketch"))

    assert len(result.images) == 1


# --- asynchronous mode --------------------------------------------------------------------------


async def test_async_task_progresses_then_finishes() -> None:
    clock = FakeClock()
    provider = OfflineProvider(delay=10, base_size=SMALL, clock=clock)
    request = ImageRequest(prompt="slow fox", aspect="3:2", count=2, seed=5)

    submitted = await provider.submit(request, None)

    assert isinstance(submitted, Submitted)
    assert submitted.task_id.startswith("off1.")
    assert await provider.poll(submitted.task_id, None) == Progress(fraction=0.0, stage="drawing")
    clock.now += 2.5
    assert await provider.poll(submitted.task_id, None) == Progress(fraction=0.25, stage="drawing")
    clock.now += 7.4
    assert isinstance(await provider.poll(submitted.task_id, None), Progress)
    clock.now += 0.1
    finished = await provider.poll(submitted.task_id, None)
    assert finished == await _draw(request)  # same pictures as the synchronous mode


async def test_progress_never_goes_below_zero_when_clock_steps_back() -> None:
    clock = FakeClock()
    provider = OfflineProvider(delay=10, clock=clock)
    submitted = await provider.submit(ImageRequest(prompt="x"), None)
    assert isinstance(submitted, Submitted)

    clock.now -= 60

    assert await provider.poll(submitted.task_id, None) == Progress(fraction=0.0, stage="drawing")


async def test_sync_provider_finishes_any_task_at_once() -> None:
    clock = FakeClock()
    task_id = _forge({**_GOOD, "t": clock.now + 3600})  # even one "submitted" in the future

    assert isinstance(await OfflineProvider(clock=clock).poll(task_id, None), Finished)


async def test_task_id_survives_a_restart() -> None:
    request = ImageRequest(prompt="über café 🌸", negative_prompt="rain", seed=None, count=3)
    before = OfflineProvider(delay=5, base_size=SMALL, clock=FakeClock(1000.0))
    submitted = await before.submit(request, None)
    assert isinstance(submitted, Submitted)
    del before

    after = OfflineProvider(delay=5, base_size=SMALL, clock=FakeClock(1006.0))
    finished = await after.poll(submitted.task_id, None)
    again = await after.poll(submitted.task_id, None)

    assert isinstance(finished, Finished) and finished == again  # the drawn seed is in the task id
    seed = finished.images[0].seed
    assert finished == await _draw(dataclasses.replace(request, seed=seed))
    assert await after.cancel(submitted.task_id, None) is True


async def test_cancel_is_refused_in_sync_mode() -> None:
    async_provider = OfflineProvider(delay=1)
    submitted = await async_provider.submit(ImageRequest(prompt="x"), None)
    assert isinstance(submitted, Submitted)

    assert await OfflineProvider().cancel(submitted.task_id, None) is False


def _forge(body) -> str:
    raw = json.dumps(body).encode()
    return "off1." + base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


_GOOD = {"p": "x", "n": None, "s": 1, "a": "1:1", "c": 1, "t": 0.0}


@pytest.mark.parametrize(
    "task_id",
    [
        "",
        "off1.",
        "off1.!!!!",
        "off1.a",
        "rep-123456",
        "off1." + base64.urlsafe_b64encode(b"\xff\xfe not json").decode(),
        _forge([1, 2, 3]),
        _forge({k: v for k, v in _GOOD.items() if k != "s"}),
        _forge({**_GOOD, "c": "4"}),
        _forge({**_GOOD, "c": 99}),
        _forge({**_GOOD, "a": "5:1"}),
        _forge({**_GOOD, "s": 1.5}),
        _forge({**_GOOD, "s": True}),
        _forge({**_GOOD, "p": 7}),
        _forge({**_GOOD, "n": ["x"]}),
        _forge({**_GOOD, "t": "yesterday"}),
        _forge({**_GOOD, "t": float("inf")}),
        "off1." + "A" * 100_000,
        "off1." + base64.urlsafe_b64encode(b"[" * 40_000).decode(),  # deep nesting
    ],
)
async def test_malformed_task_ids_are_bad_requests(task_id: str) -> None:
    provider = OfflineProvider(delay=1)

    with pytest.raises(BadRequest):
        await provider.poll(task_id, None)
    with pytest.raises(BadRequest):
        await provider.cancel(task_id, None)


async def test_forged_but_wellformed_task_id_is_accepted() -> None:
    finished = await OfflineProvider(delay=1, base_size=SMALL).poll(_forge(_GOOD), None)

    assert isinstance(finished, Finished)
    assert finished.images[0].seed == 1
