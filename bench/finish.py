"""Benchmark the media work that finishes a 4-image job: clean x4, thumbnail x4, grid.

Run: ``python bench/finish.py [--repeat 20] [--source offline|noise]``. The process is pinned to
one CPU (where the OS allows it), because the budget is stated for one core. Prints one JSON line:
``{"finish_4x1024_ms": {"p50": N, "p99": N}, "target_ms": 300}``.

Sources: ``offline`` draws four 1024x1024 PNGs with the offline provider (flat shapes and
gradients, ~100-200 KB each); ``noise`` makes four 1024x1024 PNGs of Pillow Gaussian noise
(~3 MB each, incompressible): the worst case for PNG decoding.
"""

from __future__ import annotations

import argparse
import asyncio
import io
import json
import math
import os
import time

from PIL import Image

from studiobot.media.images import clean_image, grid, thumbnail
from studiobot.providers.base import Finished, ImageRequest
from studiobot.providers.offline import OfflineProvider

TARGET_MS = 300


def offline_pngs() -> list[bytes]:
    provider = OfflineProvider(base_size=1024)
    request = ImageRequest(prompt="benchmark: a harbour at dawn, oil painting", count=4, seed=1)
    result = asyncio.run(provider.submit(request, None))
    assert isinstance(result, Finished)
    return [image.data for image in result.images if image.data is not None]


def noise_pngs() -> list[bytes]:
    pngs = []
    for sigma in (40, 50, 60, 70):
        bands = [Image.effect_noise((1024, 1024), sigma + offset) for offset in (0, 5, 10)]
        out = io.BytesIO()
        Image.merge("RGB", bands).save(out, "PNG")
        pngs.append(out.getvalue())
    return pngs


def finish(pngs: list[bytes]) -> None:
    """The measured work, as the job finisher does it."""
    cleaned = [clean_image(data) for data in pngs]
    for image in cleaned:
        thumbnail(image)
    grid(cleaned)


def percentile(samples: list[float], fraction: float) -> float:
    """Nearest-rank percentile."""
    ordered = sorted(samples)
    return ordered[max(0, math.ceil(fraction * len(ordered)) - 1)]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=20)
    parser.add_argument("--source", choices=("offline", "noise"), default="offline")
    args = parser.parse_args()

    if hasattr(os, "sched_setaffinity"):
        os.sched_setaffinity(0, {min(os.sched_getaffinity(0))})
    pngs = offline_pngs() if args.source == "offline" else noise_pngs()
    finish(pngs)  # warm-up: first-use costs (codec set-up, page faults) are not per-job costs

    samples = []
    for _ in range(args.repeat):
        started = time.perf_counter()
        finish(pngs)
        samples.append((time.perf_counter() - started) * 1000)
    result = {
        "finish_4x1024_ms": {
            "p50": round(percentile(samples, 0.50), 1),
            "p99": round(percentile(samples, 0.99), 1),
        },
        "target_ms": TARGET_MS,
    }
    print(json.dumps(result))


if __name__ == "__main__":
    main()
