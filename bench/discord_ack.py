"""Benchmark how fast the Discord adapter acknowledges interactions (Discord allows 3 s).

Run: ``python bench/discord_ack.py [--interactions 500] [--concurrency 1,25] [--postgres-url URL]``.

The real bot (``run_platforms``: discord.py, the dispatcher, the scheduler) runs against the
loopback Discord double of the tests, on a fresh SQLite database (or PostgreSQL with
``--postgres-url``), all in one process. Each interaction is an ``/imagine`` from its own user (so
per-user limits never refuse), sent on the gateway; the jobs run meanwhile (offline provider), as
in production. ``--concurrency`` lists how many interactions are in flight at once (1 = one after
another). Two latencies per interaction:

* ``wire``: from just before the double sends INTERACTION_CREATE to the arrival of the bot's
  callback (type 5, defer). It includes discord.py's parsing, both loopback hops and the double's
  own work, which shares the bot's event loop and CPU here (Discord is another machine).
* ``adapter``: from discord.py handing the interaction to the adapter (our slash command callback
  starts) to the defer's HTTP response: the budget of DESIGN.md section 9 ("from the interaction's
  arrival at the adapter").

Prints one JSON line: ``{"ack_ms": {"c1": {"wire": {p50, p99, max}, "adapter": {...}}, ...}}``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # for tests.doubles

import discord  # noqa: E402

from studiobot.app import run_platforms  # noqa: E402
from studiobot.cli import run_async  # noqa: E402
from studiobot.config import Settings  # noqa: E402
from tests.doubles.discord import API, GUILD_ID, VALID_TOKEN, DiscordState, running_discord  # noqa: E402

TARGET_P99_MS = 100


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, math.ceil(q * len(ordered)) - 1))]


def summary(values: list[float]) -> dict[str, float]:
    return {"p50": round(percentile(values, 0.5), 2), "p99": round(percentile(values, 0.99), 2),
            "max": round(max(values), 2)}


class AdapterClock:
    """Times the adapter's defer: wraps discord.py's ``InteractionResponse.defer`` (the library,
    not our code) and reads the interaction's arrival at our callback from the same call."""

    def __init__(self) -> None:
        self.samples: list[float] = []
        original = discord.InteractionResponse.defer
        clock = self

        async def timed(response: discord.InteractionResponse, *args, **kwargs):  # type: ignore[no-untyped-def]
            started = time.monotonic()
            result = await original(response, *args, **kwargs)
            clock.samples.append((time.monotonic() - started) * 1000)
            return result

        discord.InteractionResponse.defer = timed  # type: ignore[method-assign]


async def measure(total: int, concurrencies: list[int], database_url: str | None) -> dict:
    results: dict[str, dict] = {}
    clock = AdapterClock()
    with tempfile.TemporaryDirectory() as tmp:
        async with running_discord(DiscordState(callback_window_s=None)) as (state, base_url):
            settings = Settings(
                _env_file=None, data_dir=Path(tmp), database_url=database_url,
                discord_token=VALID_TOKEN, discord_api_base=base_url + API,
            )
            stop = asyncio.Event()
            bot = asyncio.create_task(run_platforms(settings, stop=stop))
            await state.wait_ready(shards=(0,), timeout=30)
            user = 10**17
            for concurrency in concurrencies:
                wire: list[float] = []
                clock.samples.clear()
                gate = asyncio.Semaphore(concurrency)

                async def one(user_id: int) -> None:
                    async with gate:
                        sent = await state.dispatch_interaction(state.slash_command(
                            "imagine", {"prompt": f"bench {user_id}"}, guild_id=GUILD_ID,
                            user_id=user_id))
                        await state.wait_until(lambda: sent.responded_at is not None, 30, "defer")
                        wire.append((sent.responded_at - sent.dispatched_at) * 1000)

                started = time.perf_counter()
                await asyncio.gather(*(one(user + i) for i in range(total)))
                elapsed = time.perf_counter() - started
                user += total
                results[f"c{concurrency}"] = {
                    "wire": summary(wire), "adapter": summary(clock.samples), "n": len(wire),
                    "per_s": round(total / elapsed, 1),
                }
                print(f"concurrency {concurrency}: {results[f'c{concurrency}']}", file=sys.stderr)
            stop.set()
            await asyncio.wait_for(bot, 30)
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--interactions", type=int, default=500)
    parser.add_argument("--concurrency", default="1,25")
    parser.add_argument("--postgres-url", default=None)
    args = parser.parse_args()
    concurrencies = [int(c) for c in args.concurrency.split(",")]
    results = run_async(measure(args.interactions, concurrencies, args.postgres_url))
    print(json.dumps({
        "ack_ms": results,
        "database": "postgresql" if args.postgres_url else "sqlite",
        "target_p99_ms": TARGET_P99_MS,
    }))


if __name__ == "__main__":
    main()
