"""Tests for studiobot.media.charts: real matplotlib renders, checked as decoded pixels."""

from __future__ import annotations

import asyncio
import datetime
import io

import numpy as np
import pytest
from PIL import Image

from studiobot.media.charts import TOP_PROVIDERS, usage_chart

START = datetime.date(2025, 5, 20)
SUCCEEDED_COLOUR = (0x4F, 0x46, 0xE5)
PROVIDER_COLOUR = (0x0D, 0x94, 0x88)
# The provider panel's share of the 1000 px width (its tick labels included).
PROVIDERS_LEFT = 640


def _days(count: int) -> list[datetime.date]:
    return [START + datetime.timedelta(days=i) for i in range(count)]


def _month() -> dict:
    jobs = [(i * 7) % 23 for i in range(30)]
    return {
        "days": _days(30),
        "jobs": jobs,
        "succeeded": [j - j // 5 for j in jobs],
        "credits": [3 * j for j in jobs],
        "providers": [("openai", 120), ("stability", 80), ("replicate", 45)],
    }


def _render(data: dict, title: str = "Usage") -> Image.Image:
    png = usage_chart(
        data["days"], data["jobs"], data["succeeded"], data["credits"], data["providers"],
        title=title,
    )
    image = Image.open(io.BytesIO(png))
    assert image.format == "PNG"
    return image.convert("RGB")


def _pixels_near(
    image: Image.Image, colour: tuple[int, int, int], tolerance: int = 12
) -> np.ndarray:
    """A boolean mask of the pixels within ``tolerance`` of ``colour`` in every channel."""
    difference = np.abs(np.asarray(image).astype(int) - np.array(colour)).max(axis=-1)
    return difference <= tolerance


def _colour_count(image: Image.Image) -> int:
    colours = image.getcolors(maxcolors=image.width * image.height)
    assert colours is not None
    return len(colours)


def test_month_chart_has_the_expected_size_and_content() -> None:
    image = _render(_month())

    assert image.size == (1000, 600)
    assert _colour_count(image) > 100  # bars, line, text with anti-aliasing: not a blank canvas
    daily = image.crop((0, 0, PROVIDERS_LEFT, 600))
    busiest = image.crop((PROVIDERS_LEFT, 0, 1000, 600))
    assert _pixels_near(daily, SUCCEEDED_COLOUR).sum() > 5000
    assert _pixels_near(busiest, PROVIDER_COLOUR).sum() > 5000


def _bar_widths(panel: Image.Image) -> list[int]:
    """Widths in pixels of the provider bars from top to bottom."""
    mask = _pixels_near(panel, PROVIDER_COLOUR)
    widths: list[int] = []
    previous = 0
    for row in mask.sum(axis=1):
        if row and not previous:
            widths.append(int(row))
        previous = row
    return widths


def test_providers_are_ranked_busiest_first_and_capped() -> None:
    data = _month()
    data["providers"] = [(f"provider-{n}", n * 10) for n in range(1, TOP_PROVIDERS + 3)]
    data["providers"].append(("idle", 0))

    widths = _bar_widths(_render(data).crop((PROVIDERS_LEFT, 0, 1000, 600)))

    assert len(widths) == TOP_PROVIDERS
    assert widths == sorted(widths, reverse=True)
    assert widths[-1] < widths[0]


def test_a_single_day_renders() -> None:
    image = _render(
        {"days": [START], "jobs": [5], "succeeded": [4], "credits": [12], "providers": [("kie", 5)]}
    )

    assert image.size == (1000, 600)
    assert _pixels_near(image.crop((0, 0, PROVIDERS_LEFT, 600)), SUCCEEDED_COLOUR).sum() > 1000


def test_an_idle_month_without_providers_says_no_jobs() -> None:
    zeros = [0] * 30
    image = _render(
        {"days": _days(30), "jobs": zeros, "succeeded": zeros, "credits": zeros, "providers": []}
    )

    assert image.size == (1000, 600)
    assert _colour_count(image) > 20  # axes and text are still drawn
    below_legend = image.crop((0, 100, PROVIDERS_LEFT, 600))
    assert _pixels_near(below_legend, SUCCEEDED_COLOUR).sum() == 0  # no bars
    busiest = image.crop((PROVIDERS_LEFT, 0, 1000, 600))
    assert _pixels_near(busiest, PROVIDER_COLOUR).sum() == 0
    # The words "no jobs" in grey, in the middle of the otherwise empty panel (whose left edge
    # may still hold the daily panel's "credits" label).
    middle = image.crop((760, 250, 1000, 350))
    assert (~_pixels_near(middle, (255, 255, 255), tolerance=40)).sum() > 100


def test_days_may_come_in_any_order() -> None:
    data = _month()
    shuffled = {**data}
    order = list(range(29, -1, -1))
    for key in ("days", "jobs", "succeeded", "credits"):
        shuffled[key] = [data[key][i] for i in order]

    assert np.array_equal(np.asarray(_render(shuffled)), np.asarray(_render(data)))


@pytest.mark.parametrize("shorter", ["days", "jobs", "succeeded", "credits"])
def test_per_day_sequences_of_different_lengths_are_refused(shorter: str) -> None:
    data = _month()
    data[shorter] = data[shorter][:-1]

    with pytest.raises(ValueError):
        _render(data)


@pytest.mark.parametrize(
    "change",
    [
        {"days": [], "jobs": [], "succeeded": [], "credits": []},
        {"jobs": [-1] + [0] * 29},
        {"credits": [-5] + [0] * 29},
        {"succeeded": [99] + [0] * 29},
        {"providers": [("openai", -1)]},
    ],
    ids=["no days", "negative jobs", "negative credits", "more succeeded than jobs", "provider"],
)
def test_impossible_figures_are_refused(change: dict) -> None:
    with pytest.raises(ValueError):
        _render({**_month(), **change})


async def test_charts_render_in_worker_threads() -> None:
    data = _month()
    args = (data["days"], data["jobs"], data["succeeded"], data["credits"], data["providers"])
    expected = usage_chart(*args, title="Usage")

    pngs = await asyncio.gather(
        *(asyncio.to_thread(usage_chart, *args, title="Usage") for _ in range(6))
    )

    assert all(png == expected for png in pngs)  # concurrent renders do not disturb each other
