"""Benchmark: a ``/gallery`` page with a million assets in the database (DESIGN.md section 9:
under 20 ms p99, keyset pagination).

Usage::

    /work/venv/bin/python bench/gallery.py [--assets 1000000] [--queries 400]
                                           [--postgres-url URL] [--skip-sqlite] [--skip-postgres]

Prints one JSON line: per backend, per query kind, p50/p99/max in milliseconds over ``--queries``
runs, plus the time the fill took. Progress goes to stderr.

What is measured: the real read functions of ``studiobot.db.gallery`` (``own_page``,
``community_new``, ``favorites_page``), through the application's ``Database`` on a fresh database
made by our Alembic ``upgrade``, on the application's event loop. The data: ``--assets`` images, one
per job, owned by 2,000 users (so a user has about 500) plus one heavy user owning 10% of them,
40% shared with one community, the rest private; 50,000 favourites of the heavy user. Each query
starts at a random depth: a random asset id as the ``before`` cursor (what the Older button sends),
or the first page. Rows are generated in SQL (``generate_series`` / a recursive CTE) so the fill is
fast; the statistics are refreshed (``ANALYZE``) before timing, as autovacuum would.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import statistics
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

from sqlalchemy import text

from studiobot.cli import run_async
from studiobot.db import gallery
from studiobot.db.engine import Database
from studiobot.db.gallery import Cursor
from studiobot.db.migrate import upgrade

USERS = 2_000
HEAVY = 1  # user id of the heavy user
COMMUNITY = 1


def _fill_sql(dialect: str, n: int) -> list[str]:
    series = ("SELECT g AS i FROM generate_series(1, {n}) AS g" if dialect == "postgresql" else
              "WITH RECURSIVE s(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM s WHERE i < {n}) SELECT i FROM s")
    now = "now()" if dialect == "postgresql" else "'2026-11-21 12:00:00'"
    owner = f"CASE WHEN i % 10 = 0 THEN {HEAVY} ELSE 2 + (i % {USERS}) END"
    return [
        f"INSERT INTO users (id, display_name, preferences, created_at) "
        f"SELECT i, 'user' || i, '{{}}', {now} FROM ({series.format(n=USERS + 1)}) AS u",
        f"INSERT INTO communities (id, platform, platform_community_id, name, settings, created_at) "
        f"VALUES ({COMMUNITY}, 'discord', '777', 'bench', '{{}}', {now})",
        f"INSERT INTO jobs (id, user_id, kind, prompt, params, provider, model, key_source, cost, status, "
        f"attempts, polls, due_at, deadline_at, origin_platform, origin_chat, idempotency_key, created_at) "
        f"SELECT i, {owner}, 'image', 'prompt number ' || i, '{{}}', 'offline', 'offline-sketch', 'platform', "
        f"1, 'succeeded', 1, 0, {now}, {now}, 'shell', '{{}}', 'bench:' || i, {now} "
        f"FROM ({series.format(n=n)}) AS j",
        f"INSERT INTO assets (id, job_id, owner_id, kind, position, sha256, storage_key, thumbnail_key, mime, "
        f"width, height, bytes, visibility, community_id, hidden, created_at) "
        f"SELECT i, i, {owner}, 'image', 1, 'sha', 'k/' || i || '.png', 't/' || i || '.webp', 'image/png', "
        f"512, 512, 1000, CASE WHEN i % 5 < 2 THEN 'community' ELSE 'private' END, "
        f"CASE WHEN i % 5 < 2 THEN {COMMUNITY} END, {'false' if dialect == 'postgresql' else '0'}, {now} "
        f"FROM ({series.format(n=n)}) AS a",
        f"INSERT INTO favorites (user_id, asset_id, created_at) "
        f"SELECT {HEAVY}, i * 20 + 1, {now} FROM ({series.format(n=min(50_000, n // 20 - 1))}) AS f",
        "ANALYZE",
    ]


async def _measure(db: Database, n: int, queries: int, size: int) -> dict[str, Any]:
    rng = random.Random(7)
    kinds = {
        "own_page_heavy_user": lambda c: gallery.own_page(c, HEAVY, _cursor(rng, n), size),
        "own_page_typical_user": lambda c: gallery.own_page(c, 2 + rng.randrange(USERS), _cursor(rng, n), size),
        "community_new": lambda c: gallery.community_new(c, COMMUNITY, _cursor(rng, n), size),
        "favorites_page": lambda c: gallery.favorites_page(c, HEAVY, COMMUNITY, _cursor(rng, n), size),
    }
    results: dict[str, Any] = {}
    for name, query in kinds.items():
        timings = []
        for i in range(queries + 20):
            async with db.read() as conn:
                started = time.perf_counter()
                page = await query(conn)
                elapsed = (time.perf_counter() - started) * 1000
            if i >= 20:  # warm-up: the pool's connections and statement caches
                timings.append(elapsed)
            assert len(page.items) <= size
        timings.sort()
        print(f"  {name}: p99 {timings[int(len(timings) * 0.99) - 1]:.2f} ms", file=sys.stderr)
        results[name] = {"p50_ms": round(statistics.median(timings), 3),
                         "p99_ms": round(timings[int(len(timings) * 0.99) - 1], 3),
                         "max_ms": round(timings[-1], 3)}
    return results


def _cursor(rng: random.Random, n: int) -> Cursor:
    return Cursor() if rng.random() < 0.2 else Cursor(before=rng.randrange(2, n + 1))


async def _backend(url: str, n: int, queries: int) -> dict[str, Any]:
    db = Database(url)
    try:
        await upgrade(db)
        started = time.perf_counter()
        async with db.engine.begin() as conn:
            for statement in _fill_sql(db.engine.dialect.name, n):
                await conn.execute(text(statement))
        fill_s = time.perf_counter() - started
        print(f"{db.engine.dialect.name}: filled {n} assets in {fill_s:.1f} s", file=sys.stderr)
        return {"fill_s": round(fill_s, 1), **await _measure(db, n, queries, size=9)}
    finally:
        await db.dispose()


async def _postgres(admin_url: str, n: int, queries: int) -> dict[str, Any]:
    name = f"bench_gallery_{uuid.uuid4().hex[:8]}"
    admin = Database(admin_url)
    try:
        async with admin.engine.connect() as conn:
            await conn.execution_options(isolation_level="AUTOCOMMIT")
            await conn.execute(text(f'CREATE DATABASE "{name}"'))
        base = admin_url.rsplit("/", 1)[0]
        return await _backend(f"{base}/{name}", n, queries)
    finally:
        async with admin.engine.connect() as conn:
            await conn.execution_options(isolation_level="AUTOCOMMIT")
            await conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        await admin.dispose()


async def main(args: argparse.Namespace) -> dict[str, Any]:
    out: dict[str, Any] = {"assets": args.assets, "queries": args.queries, "page_size": 9, "budget_p99_ms": 20}
    if not args.skip_sqlite:
        with tempfile.TemporaryDirectory() as folder:
            out["sqlite"] = await _backend(f"sqlite+aiosqlite:///{Path(folder) / 'bench.db'}", args.assets,
                                           args.queries)
    if not args.skip_postgres:
        try:
            out["postgres"] = await _postgres(args.postgres_url, args.assets, args.queries)
        except OSError as error:
            out["postgres"] = {"error": str(error)}
    return out


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--assets", type=int, default=1_000_000)
    parser.add_argument("--queries", type=int, default=400)
    parser.add_argument("--postgres-url", default="postgresql+asyncpg://postgres@127.0.0.1:5432/test")
    parser.add_argument("--skip-sqlite", action="store_true")
    parser.add_argument("--skip-postgres", action="store_true")
    print(json.dumps(run_async(main(parser.parse_args()))))
