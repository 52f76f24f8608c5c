"""Benchmark: accepting an ``/imagine`` (guards + reserve + insert), ours against the raw driver.

DESIGN.md section 9 budgets the accept path at *at least half* the transactions per second that the
raw database reaches with the same statements, measured in the same run:

* PostgreSQL: ours versus ``pgbench`` (``-M prepared``, the fast baseline) running the same statements.
* SQLite: ours versus Python's stdlib ``sqlite3`` running the same statements in one thread.

Usage::

    /work/venv/bin/python bench/accept.py [--seconds 5] [--warmup 1] [--concurrency 8]
                                          [--postgres-url URL] [--skip-sqlite] [--skip-postgres]
                                          [--profile]

It prints exactly one JSON line on stdout::

    {"sqlite": {"ours_per_s": N, "raw_per_s": N, "ratio": R, ...},
     "postgres": {"ours_per_s": N, "raw_per_s": N, "ratio": R, ...}}

(``"postgres": {"error": "..."}`` when the server cannot be reached). Progress goes to stderr.

What "ours" is
    The real code path. ``--concurrency`` asyncio tasks, each one simulated user, repeatedly resolve
    their identity with ``UserDirectory.user_id`` (cached after the first call, as in production) and
    then run ``await db.run(lifecycle.enqueue, NewJob(...), Limits(...))``
    with a unique idempotency key, limits that never refuse, and a balance (granted up front with
    ``ledger.grant``) that never runs out. The ``Database`` is built with the application's defaults
    (SQLite: WAL, foreign keys, busy timeout, ``synchronous=FULL``, ``BEGIN IMMEDIATE`` plus the
    in-process write lock; PostgreSQL: asyncpg pool with pre-ping). Each backend gets a fresh
    database made by our Alembic ``upgrade``.

Why the comparison is fair
    The raw side does not run statements we *think* ``enqueue`` runs: the script records what our
    code actually sends to the driver (a ``before_cursor_execute`` hook around one real ``enqueue``),
    classifies every bound parameter (user id, the job id returned by the INSERT, the balance returned
    by the UPDATE, the idempotency keys, "now"/"deadline"/"an hour ago" timestamps, or a constant),
    checks that classification against a second, independent capture, and then replays exactly
    those SQL texts:

    * SQLite: a separate fresh file, schema made by the same Alembic ``upgrade``, users and balances
      made by the same code, then stdlib ``sqlite3`` with the same pragmas, the same statements in the
      same order inside ``BEGIN IMMEDIATE ... COMMIT``, ``?`` parameters, one thread (SQLite has
      one writer, so one thread is the honest raw ceiling; ours is serialised by the same fact).
    * PostgreSQL: a second fresh database made the same way, and a generated pgbench script with the
      same statement texts (``$N`` replaced by pgbench variables, so in ``-M prepared`` mode they are
      bound parameters again; the RETURNING values our code feeds forward are carried with ``\\gset``)
      in one ``BEGIN; ... COMMIT;``, ``-c <concurrency> -j 2 -n -M prepared``. Timestamps are the
      server's ``now()`` expressions (pgbench has no timestamp variables); idempotency keys are unique
      per run, client and transaction.

    Both sides run for the same duration after the same warm-up on databases of the same initial
    content, with one simulated user per client. Every transaction appends a queued job for its user,
    so the per-user limit counts scan a growing index range: the faster side pays a little more for
    that, which slightly favours the slower side (``jobs_per_user_at_end`` is reported so this can be
    judged). ``ratio = ours_per_s / raw_per_s``.

Cleanup: temporary SQLite files live in a ``TemporaryDirectory``; the PostgreSQL databases are
dropped ``WITH (FORCE)`` at the end, also on errors.
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import io
import json
import logging
import os
import pstats
import re
import sqlite3
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from sqlalchemy import event, text
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import create_async_engine

from studiobot.billing import ledger
from studiobot.cli import run_async
from studiobot.commands.contract import UserRef
from studiobot.commands.users import UserDirectory
from studiobot.db.engine import Database
from studiobot.db.migrate import upgrade
from studiobot.scheduler import lifecycle
from studiobot.scheduler.lifecycle import Limits, NewJob

log = logging.getLogger("bench.accept")

DEFAULT_PG_URL = "postgresql+asyncpg://postgres@127.0.0.1:5432/test"
PGBENCH = "/usr/bin/pgbench"

COST = 5
DEADLINE_S = 900.0
GRANT = 10**15
LIMITS = Limits(max_active=10**9, max_per_hour=10**9)
# What studiobot.db.engine sets on every SQLite connection; the raw side sets the same, and the values
# read back from both connections must agree (checked).
SQLITE_PRAGMAS = ("journal_mode=WAL", "foreign_keys=ON", "busy_timeout=10000", "synchronous=FULL")
_PRAGMA_NAMES = tuple(p.split("=")[0] for p in SQLITE_PRAGMAS)
_SQLITE_TS = re.compile(r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d(\.\d+)?$")

# Parameter roles: values that change per acceptance. Everything else is a constant.
UID, JOB_ID, BALANCE, JOB_KEY, RESERVE_KEY = "uid", "job_id", "balance", "job_key", "reserve_key"
NOW, DEADLINE, HOUR_AGO = "now", "deadline", "hour_ago"
_TIME_OFFSETS = {NOW: 0.0, DEADLINE: DEADLINE_S, HOUR_AGO: -3600.0}


# --------------------------------------------------------------------------------------------------
# The workload


def make_job(user_id: int, key: str) -> NewJob:
    """The ``/imagine`` every simulated user submits (what the command handler would decide).

    Args:
        user_id: Our user id.
        key: A unique idempotency key.

    Returns:
        The job to enqueue.
    """
    return NewJob(
        user_id=user_id,
        prompt="a lighthouse on a cliff at dusk, volumetric light, 35mm film, highly detailed",
        negative_prompt="blurry, low quality, watermark",
        params={"size": "1024x1024", "steps": 30, "guidance": 7.0, "n": 4},
        provider="fake",
        model="sdxl-1.0",
        key_source="platform",
        cost=COST,
        origin_platform="discord",
        origin_chat={"platform": "discord", "chat_id": "1183726410", "kind": "guild", "community_id": "98765"},
        idempotency_key=key,
        deadline_s=DEADLINE_S,
    )


def bench_refs(count: int, prefix: str) -> list[UserRef]:
    """Platform identities of the simulated users.

    Args:
        count: How many users.
        prefix: Makes the identities distinct from other users in the same database.

    Returns:
        One ``UserRef`` per user.
    """
    return [UserRef("discord", f"{prefix}{i}", f"Bench user {i}") for i in range(count)]


async def create_users(db: Database, refs: list[UserRef]) -> tuple[UserDirectory, list[int]]:
    """Create users through our own code and grant each a balance that never runs out.

    Args:
        db: A migrated database.
        refs: The identities to create, in order.

    Returns:
        The directory (its cache now holds every identity) and the user ids, in ``refs`` order.
    """
    directory = UserDirectory(db, welcome_credits=0)
    ids = []
    for ref in refs:
        user_id = await directory.user_id(ref)
        await db.run(ledger.grant, user_id, GRANT, key=f"bench-grant:{user_id}", note="bench")
        ids.append(user_id)
    return directory, ids


# --------------------------------------------------------------------------------------------------
# Capturing what enqueue() sends, and classifying its parameters


@dataclass
class Capture:
    """The statements of one real ``enqueue`` and what we know about that call.

    Attributes:
        statements: ``(sql, params)`` as handed to the DB-API cursor, in order (BEGIN excluded).
        begin: The statement that opened the transaction, if the driver saw one (SQLite).
        uid: The user id passed in.
        job_id: The job id ``enqueue`` returned.
        balance: The balance ``enqueue`` returned.
        job_key: The idempotency key passed in.
        started: Wall clock (UTC) just before the transaction.
        ended: Wall clock (UTC) just after it.
    """

    statements: list[tuple[str, tuple[Any, ...]]] = field(default_factory=list)
    begin: str | None = None
    uid: int = 0
    job_id: int = 0
    balance: int = 0
    job_key: str = ""
    started: datetime = field(default_factory=lambda: datetime.now(UTC))
    ended: datetime = field(default_factory=lambda: datetime.now(UTC))


async def capture_enqueue(db: Database, uid: int, key: str) -> Capture:
    """Run one real acceptance and record every statement our code sends to the driver.

    Args:
        db: The database (its engine gets a temporary ``before_cursor_execute`` hook).
        uid: The user to enqueue for.
        key: The job's idempotency key.

    Returns:
        The capture.
    """
    cap = Capture(uid=uid, job_key=key)

    def hook(_conn: Any, _cursor: Any, statement: str, parameters: Any, _ctx: Any, _many: bool) -> None:
        if statement.strip().upper().startswith("BEGIN"):
            cap.begin = statement
        else:
            cap.statements.append((statement, tuple(parameters or ())))

    sync_engine = db.write_engine
    event.listen(sync_engine, "before_cursor_execute", hook)
    try:
        cap.started = datetime.now(UTC)
        cap.job_id, cap.balance = await db.run(lifecycle.enqueue, make_job(uid, key), LIMITS)
        cap.ended = datetime.now(UTC)
    finally:
        event.remove(sync_engine, "before_cursor_execute", hook)
    return cap


def _as_utc(value: Any) -> datetime | None:
    """A bound timestamp parameter as an aware UTC datetime, or None if it is not one."""
    if isinstance(value, datetime):
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)
    if isinstance(value, str) and _SQLITE_TS.match(value):
        return datetime.fromisoformat(value).replace(tzinfo=UTC)
    return None


Role = tuple[str, Any]  # ("role", name) or ("const", value)


def classify(cap: Capture) -> list[list[Role]]:
    """Say, for every bound parameter of every captured statement, where its value comes from.

    Args:
        cap: A capture whose user id, job id and balance are all different numbers.

    Returns:
        Per statement, per parameter: ``("role", name)`` or ``("const", value)``.

    Raises:
        RuntimeError: When a value is ambiguous or a timestamp matches no known offset.
    """
    ints = {cap.uid: UID, cap.job_id: JOB_ID, cap.balance: BALANCE}
    if len(ints) != 3:
        raise RuntimeError(f"capture needs distinct uid/job id/balance, got {cap}")
    strings = {cap.job_key: JOB_KEY, f"reserve:job:{cap.job_id}": RESERVE_KEY}
    slack = timedelta(milliseconds=5)
    out: list[list[Role]] = []
    for sql, params in cap.statements:
        roles: list[Role] = []
        for value in params:
            when = _as_utc(value)
            if when is not None:
                names = [
                    name
                    for name, offset in _TIME_OFFSETS.items()
                    if cap.started + timedelta(seconds=offset) - slack
                    <= when
                    <= cap.ended + timedelta(seconds=offset) + slack
                ]
                if len(names) != 1:
                    raise RuntimeError(f"timestamp {value!r} in {sql[:60]!r} matches {names}")
                roles.append(("role", names[0]))
            elif isinstance(value, int) and not isinstance(value, bool) and value in ints:
                roles.append(("role", ints[value]))
            elif isinstance(value, str) and value in strings:
                roles.append(("role", strings[value]))
            else:
                roles.append(("const", value))
        out.append(roles)
    return out


async def capture_and_classify(db: Database, tag: str) -> tuple[Capture, list[list[Role]]]:
    """Capture ``enqueue`` twice with different ids and check both captures classify the same way.

    User A gets two jobs first, so the first capture (user B) has uid 2 / job 3 and the second
    (user A) uid 1 / job 4 on a fresh database: a constant that merely happens to equal an id would
    classify differently in the two captures and is caught.

    Args:
        db: A migrated, empty database (a few capture rows are left in it).
        tag: Makes identities and keys unique.

    Returns:
        The first capture and its classification.

    Raises:
        RuntimeError: When the two captures disagree (statements or parameter roles).
    """
    _, (uid_a,) = await create_users(db, bench_refs(1, f"capture-a-{tag}-"))
    for n in range(2):
        await db.run(lifecycle.enqueue, make_job(uid_a, f"capture:{tag}:pre{n}"), LIMITS)
    _, (uid_b,) = await create_users(db, bench_refs(1, f"capture-b-{tag}-"))
    first = await capture_enqueue(db, uid_b, f"capture:{tag}:b")
    second = await capture_enqueue(db, uid_a, f"capture:{tag}:a")
    roles = classify(first)
    if [s for s, _ in first.statements] != [s for s, _ in second.statements] or roles != classify(second):
        raise RuntimeError("two captures of enqueue() disagree; the parameter classification is unsafe")
    # The job id is a parameter only where a later statement is fed from the job INSERT (SQLite);
    # PostgreSQL's single CTE statement uses it inside the statement.
    needed = (UID, JOB_KEY, JOB_ID) if JOB_ID in returning_roles(first.statements) else (UID, JOB_KEY)
    for role in needed:
        if not any(("role", role) in r for r in roles):
            raise RuntimeError(f"no parameter carries the {role}; enqueue() changed shape?")
    return first, roles


def returning_roles(statements: list[tuple[str, tuple[Any, ...]]]) -> list[str | None]:
    """Which statement's single result value our code feeds forward (the job id, the balance).

    Args:
        statements: Captured ``(sql, params)``.

    Returns:
        Per statement: ``"job_id"``, ``"balance"`` or None.

    Raises:
        RuntimeError: When only one of the INSERT INTO jobs and the credit UPDATE with RETURNING is
            there, or either is there twice.
    """
    out: list[str | None] = []
    for sql, _ in statements:
        head = " ".join(sql.split()).upper()
        if head.startswith("INSERT INTO JOBS ") and " RETURNING " in head:
            out.append(JOB_ID)
        elif head.startswith("UPDATE CREDIT_ACCOUNTS ") and " RETURNING " in head:
            out.append(BALANCE)
        else:
            out.append(None)
    if out.count(JOB_ID) > 1 or out.count(BALANCE) > 1 or (JOB_ID in out) != (BALANCE in out):
        raise RuntimeError(
            "expected one INSERT INTO jobs ... RETURNING and one UPDATE credit_accounts ... RETURNING, "
            "or neither (one WITH statement doing both)"
        )
    return out


def returns_rows(sql: str) -> bool:
    """Whether a statement produces rows (SELECT or RETURNING) that our code fetches."""
    head = " ".join(sql.split()).upper()
    return head.startswith("SELECT") or " RETURNING " in head


# --------------------------------------------------------------------------------------------------
# Driving "ours"


@dataclass
class RunStats:
    """Throughput and latency of one timed run.

    Attributes:
        per_s: Completed acceptances per second in the measured window.
        count: Completed acceptances in the measured window.
        seconds: Length of the measured window.
        p50_ms: Median latency.
        p99_ms: 99th percentile latency.
        per_second: Completions in each whole second of the window (drift check).
    """

    per_s: float
    count: int
    seconds: float
    p50_ms: float
    p99_ms: float
    per_second: list[int]

    def as_dict(self, prefix: str) -> dict[str, Any]:
        """The stats as JSON fields named ``<prefix>_...``."""
        return {
            f"{prefix}_count": self.count,
            f"{prefix}_p50_ms": round(self.p50_ms, 3),
            f"{prefix}_p99_ms": round(self.p99_ms, 3),
            f"{prefix}_per_second": self.per_second,
        }


def summarize(samples: list[tuple[float, float]], start: float, end: float) -> RunStats:
    """Turn ``(finished_at, latency_s)`` samples into stats for the window ``[start, end)``.

    Args:
        samples: One per completed acceptance (``time.perf_counter`` clock).
        start: Window start.
        end: Window end.

    Returns:
        The stats.
    """
    inside = [(t, lat) for t, lat in samples if start <= t < end]
    latencies = sorted(lat for _, lat in inside)
    seconds = end - start
    buckets = [0] * max(1, int(seconds))
    for t, _ in inside:
        slot = int(t - start)
        if slot < len(buckets):
            buckets[slot] += 1

    def pct(p: float) -> float:
        if not latencies:
            return 0.0
        return latencies[min(len(latencies) - 1, int(p * len(latencies)))] * 1000

    return RunStats(len(inside) / seconds, len(inside), seconds, pct(0.5), pct(0.99), buckets)


@contextmanager
def maybe_profile(enabled: bool, label: str) -> Iterator[None]:
    """Profile the block with cProfile and print the top functions to stderr when ``enabled``.

    Args:
        enabled: Whether to profile.
        label: Heading for the printed report.
    """
    if not enabled:
        yield
        return
    profiler = cProfile.Profile()
    profiler.enable()
    try:
        yield
    finally:
        profiler.disable()
        out = io.StringIO()
        stats = pstats.Stats(profiler, stream=out).strip_dirs()
        stats.sort_stats("tottime").print_stats(30)
        stats.sort_stats("cumulative").print_stats(40)
        print(f"===== cProfile: {label} =====\n{out.getvalue()}", file=sys.stderr)


async def run_ours(
    db: Database,
    directory: UserDirectory,
    refs: list[UserRef],
    *,
    warmup: float,
    seconds: float,
    tag: str,
    profile: bool,
) -> RunStats:
    """Drive the real accept path with one asyncio task per simulated user.

    Args:
        db: The database, migrated, with the users of ``refs`` created and funded.
        directory: The user directory (identities are resolved through it every time).
        refs: One identity per concurrent task.
        warmup: Seconds run before the measured window.
        seconds: Length of the measured window.
        tag: Makes idempotency keys unique.
        profile: Profile the measured window with cProfile.

    Returns:
        The stats of the measured window.
    """
    samples: list[tuple[float, float]] = []
    stop = False

    async def user(index: int, ref: UserRef) -> None:
        n = 0
        while not stop:
            n += 1
            began = time.perf_counter()
            user_id = await directory.user_id(ref)
            job = make_job(user_id, f"bench:{tag}:{index}:{n}")
            await db.run(lifecycle.enqueue, job, LIMITS)
            done = time.perf_counter()
            samples.append((done, done - began))

    tasks = [asyncio.create_task(user(i, ref)) for i, ref in enumerate(refs)]
    try:
        await asyncio.sleep(warmup)
        with maybe_profile(profile, f"ours {db.dialect}"):
            start = time.perf_counter()
            await asyncio.sleep(seconds)
            end = time.perf_counter()
        stop = True
        await asyncio.gather(*tasks)
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
    return summarize(samples, start, end)


async def jobs_per_user(db: Database, user_ids: list[int]) -> int:
    """Largest number of jobs any bench user has (how far the limit counts have to scan)."""
    async with db.read() as conn:
        rows = await conn.execute(
            text("SELECT max(c) FROM (SELECT count(*) AS c FROM jobs WHERE user_id IN ("
                 + ",".join(str(int(u)) for u in user_ids) + ") GROUP BY user_id) AS t")
        )
        return int(rows.scalar() or 0)


# --------------------------------------------------------------------------------------------------
# SQLite


def sqlite_url(path: Path) -> str:
    """The aiosqlite URL of a file."""
    return f"sqlite+aiosqlite:///{path}"


def run_raw_sqlite(
    path: Path,
    statements: list[tuple[str, tuple[Any, ...]]],
    roles: list[list[Role]],
    user_ids: list[int],
    *,
    warmup: float,
    seconds: float,
) -> tuple[RunStats, dict[str, Any]]:
    """Replay the captured statements with stdlib ``sqlite3`` in one thread.

    Args:
        path: A migrated database file with ``user_ids`` created and funded.
        statements: The captured ``(sql, params)`` of one ``enqueue``.
        roles: Their parameter classification (see :func:`classify`).
        user_ids: Users to rotate through, one acceptance each in turn.
        warmup: Seconds run before the measured window.
        seconds: Length of the measured window.

    Returns:
        The stats, and the pragmas as read back from the connection.
    """
    conn = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
    try:
        for pragma in SQLITE_PRAGMAS:
            conn.execute(f"PRAGMA {pragma}")
        pragmas = {name: conn.execute(f"PRAGMA {name}").fetchone()[0] for name in _PRAGMA_NAMES}
        feeds = returning_roles(statements)
        plan = [
            (sql, [(r[1], None) if r[0] == "role" else (None, r[1]) for r in spec], feed, returns_rows(sql))
            for (sql, _), spec, feed in zip(statements, roles, feeds, strict=True)
        ]
        cur = conn.cursor()
        samples: list[tuple[float, float]] = []
        hour = timedelta(hours=1)
        deadline = timedelta(seconds=DEADLINE_S)
        n = 0
        start = time.perf_counter() + warmup
        end = start + seconds
        while True:
            began = time.perf_counter()
            if began >= end:
                break
            uid = user_ids[n % len(user_ids)]
            n += 1
            now = datetime.now(UTC).replace(tzinfo=None)
            ctx: dict[str, Any] = {
                UID: uid,
                JOB_KEY: f"raw:{n}",
                NOW: now.isoformat(" ", "microseconds"),
                DEADLINE: (now + deadline).isoformat(" ", "microseconds"),
                HOUR_AGO: (now - hour).isoformat(" ", "microseconds"),
            }
            cur.execute("BEGIN IMMEDIATE")
            for sql, spec, feed, fetch in plan:
                cur.execute(sql, tuple(ctx[k] if k is not None else v for k, v in spec))
                if fetch:
                    rows = cur.fetchall()
                    if feed is not None:
                        ctx[feed] = rows[0][0]
                        if feed == JOB_ID:
                            ctx[RESERVE_KEY] = f"reserve:job:{rows[0][0]}"
            cur.execute("COMMIT")
            done = time.perf_counter()
            samples.append((done, done - began))
        return summarize(samples, start, end), pragmas
    finally:
        conn.close()


async def bench_sqlite(args: argparse.Namespace) -> dict[str, Any]:
    """Ours and raw ``sqlite3`` on two fresh files in a temporary directory.

    Args:
        args: Command-line options.

    Returns:
        The ``"sqlite"`` JSON object.
    """
    tag = uuid.uuid4().hex[:8]
    with tempfile.TemporaryDirectory(prefix="studiobot-bench-") as tmp:
        ours_path, raw_path = Path(tmp) / "ours.db", Path(tmp) / "raw.db"

        log.info("sqlite: migrating %s", ours_path)
        db = Database(sqlite_url(ours_path))  # the application's defaults: synchronous=FULL
        try:
            await upgrade(db)
            cap, roles = await capture_and_classify(db, tag)
            refs = bench_refs(args.concurrency, f"bench-{tag}-")
            directory, user_ids = await create_users(db, refs)
            async with db.read() as conn:
                ours_pragmas = {
                    name: (await conn.exec_driver_sql(f"PRAGMA {name}")).scalar() for name in _PRAGMA_NAMES
                }
            log.info("sqlite: ours, %d tasks, %.1fs warm-up + %.1fs", args.concurrency, args.warmup, args.seconds)
            ours = await run_ours(
                db, directory, refs, warmup=args.warmup, seconds=args.seconds, tag=tag,
                profile=args.profile,
            )
            ours_depth = await jobs_per_user(db, user_ids)
        finally:
            await db.dispose()
        log.info("sqlite: ours %.0f/s", ours.per_s)

        log.info("sqlite: migrating %s", raw_path)
        raw_db = Database(sqlite_url(raw_path))
        try:
            await upgrade(raw_db)
            _, raw_users = await create_users(raw_db, bench_refs(args.concurrency, f"bench-{tag}-"))
        finally:
            await raw_db.dispose()
        log.info("sqlite: raw sqlite3, 1 thread, %.1fs warm-up + %.1fs", args.warmup, args.seconds)
        raw, raw_pragmas = await asyncio.to_thread(
            run_raw_sqlite, raw_path, cap.statements, roles, raw_users,
            warmup=args.warmup, seconds=args.seconds,
        )
        check = Database(sqlite_url(raw_path))
        try:
            raw_depth = await jobs_per_user(check, raw_users)
        finally:
            await check.dispose()
        log.info("sqlite: raw %.0f/s", raw.per_s)
        if raw_pragmas != ours_pragmas:
            raise RuntimeError(f"pragmas differ: ours {ours_pragmas}, raw {raw_pragmas}")

    return {
        "ours_per_s": round(ours.per_s, 1),
        "raw_per_s": round(raw.per_s, 1),
        "ratio": round(ours.per_s / raw.per_s, 2) if raw.per_s else None,
        "concurrency": args.concurrency,
        "raw_threads": 1,
        "seconds": args.seconds,
        "warmup_s": args.warmup,
        "begin": cap.begin,
        "statement_count": len(cap.statements),
        "statements": [sql for sql, _ in cap.statements],
        "ours_pragmas": ours_pragmas,
        "raw_pragmas": raw_pragmas,
        "sqlite_version": sqlite3.sqlite_version,
        **ours.as_dict("ours"),
        **raw.as_dict("raw"),
        "jobs_per_user_at_end": {"ours": ours_depth, "raw": raw_depth},
    }


# --------------------------------------------------------------------------------------------------
# PostgreSQL


def pgbench_script(statements: list[tuple[str, tuple[Any, ...]]], roles: list[list[Role]], base_uid: int) -> tuple[str, dict[str, str]]:
    """Turn the captured asyncpg statements into a pgbench script plus ``-D`` constants.

    ``$N`` becomes a pgbench variable (a bound parameter again under ``-M prepared``): constants
    become ``-D`` variables, the user id is per client, the job id and balance come from the
    RETURNING rows via ``\\gset``, the job key is unique per run/client/transaction, the reserve key
    is ``'reserve:job:' || job id`` (prefix as a ``-D`` constant) and timestamps are ``now()``-based expressions.

    Args:
        statements: Captured ``(sql, params)`` (asyncpg, ``$N`` placeholders).
        roles: Their parameter classification.
        base_uid: The user id of client 0 (clients map to consecutive user ids).

    Returns:
        The script text and the ``-D`` definitions.
    """
    feeds = returning_roles(statements)
    defines: dict[str, str] = {"n": "0", "rkey_prefix": "reserve:job:"}
    role_sql = {
        UID: ":uid",
        JOB_ID: ":j_id",
        BALANCE: ":a_balance",
        JOB_KEY: ":jkey",
        # pgbench would take ":job" inside a string literal for a variable: the prefix is a -D constant.
        RESERVE_KEY: "(:rkey_prefix::text || :j_id::text)",
        NOW: "(now())",
        DEADLINE: f"(now() + interval '{DEADLINE_S:g} seconds')",
        HOUR_AGO: "(now() - interval '1 hour')",
    }
    lines = [
        "\\set n :n + 1",
        "\\set jkey :run * 100000000000 + :client_id * 1000000000 + :n",
        f"\\set uid :client_id + {base_uid}",
        "BEGIN;",
    ]
    for index, ((sql, _), spec, feed) in enumerate(zip(statements, roles, feeds, strict=True)):

        def sub(match: re.Match[str], spec: list[Role] = spec, index: int = index) -> str:
            pos = int(match.group(1))
            kind, value = spec[pos - 1]
            if kind == "role":
                return role_sql[value]
            if value is None:
                return "NULL"
            if value == "":
                return "''"  # pgbench refuses an empty -D value
            name = f"c{index}_{pos}"
            defines[name] = json.dumps(value) if isinstance(value, dict | list) else str(value)
            return f":{name}"

        body = re.sub(r"\$(\d+)", sub, sql).strip()
        if feed == JOB_ID:
            lines.append(f"{body} \\gset j_")
        elif feed == BALANCE:
            lines.append(f"{body} \\gset a_")
        else:
            lines.append(f"{body};")
    lines.append("COMMIT;")
    return "\n".join(lines) + "\n", defines


def pg_conninfo(url: str) -> tuple[list[str], dict[str, str]]:
    """pgbench connection arguments (and environment, for a password) for a SQLAlchemy URL."""
    parsed = make_url(url)
    argv = ["-h", parsed.host or "127.0.0.1", "-p", str(parsed.port or 5432),
            "-U", parsed.username or "postgres", parsed.database or "postgres"]  # pgbench's -d is --debug
    env = dict(os.environ)
    if parsed.password:
        env["PGPASSWORD"] = parsed.password
    return argv, env


def run_pgbench(
    url: str, script: str, defines: dict[str, str], *, clients: int, seconds: float, run: int, workdir: Path
) -> dict[str, Any]:
    """Run pgbench once with the custom script and parse its report.

    Args:
        url: The database (SQLAlchemy URL).
        script: The pgbench script.
        defines: ``-D`` constants.
        clients: ``-c``.
        seconds: ``-T`` (whole seconds, at least 1).
        run: Distinguishes the idempotency keys of successive runs.
        workdir: Where the script file is written.

    Returns:
        ``tps``, ``latency_avg_ms``, ``transactions``, ``per_second`` (progress) and the command.

    Raises:
        RuntimeError: When pgbench fails or prints no tps.
    """
    path = workdir / "accept.pgbench"
    path.write_text(script)
    conn_argv, env = pg_conninfo(url)
    options = ["-n", "-M", "prepared", "-c", str(clients), "-j", str(min(2, clients)),
               "-T", str(max(1, round(seconds))), "-P", "1", "-f", str(path), "-D", f"run={run}"]
    constants = [arg for name, value in defines.items() for arg in ("-D", f"{name}={value}")]
    argv = [PGBENCH, *options, *constants, *conn_argv]
    proc = subprocess.run(argv, capture_output=True, text=True, env=env, timeout=seconds + 60)
    out = proc.stdout + proc.stderr
    match = re.search(r"^tps = ([\d.]+)", proc.stdout, re.M)
    if proc.returncode != 0 or match is None:
        raise RuntimeError(f"pgbench failed (exit {proc.returncode}): {out[-1500:]}\nscript:\n{script}")
    latency = re.search(r"^latency average = ([\d.]+) ms", proc.stdout, re.M)
    done = re.search(r"^number of transactions actually processed: (\d+)", proc.stdout, re.M)
    failed = re.search(r"^number of failed transactions: (\d+)", proc.stdout, re.M)
    progress = [float(x) for x in re.findall(r"^progress: [\d.]+ s, ([\d.]+) tps", proc.stderr, re.M)]
    return {
        "tps": float(match.group(1)),
        "latency_avg_ms": float(latency.group(1)) if latency else None,
        "transactions": int(done.group(1)) if done else None,
        "failed": int(failed.group(1)) if failed else 0,
        "per_second": progress,
        "command": " ".join([PGBENCH, *options, f"-D <{len(defines)} constants>", *conn_argv]),
    }


async def create_pg_database(admin_url: str, name: str) -> str:
    """CREATE DATABASE through an AUTOCOMMIT engine on the admin URL; returns the new URL."""
    admin = create_async_engine(admin_url, isolation_level="AUTOCOMMIT", connect_args={"timeout": 5})
    try:
        async with admin.connect() as conn:
            await conn.execute(text(f'CREATE DATABASE "{name}"'))
    finally:
        await admin.dispose()
    return make_url(admin_url).set(database=name).render_as_string(hide_password=False)


async def drop_pg_database(admin_url: str, name: str) -> None:
    """DROP DATABASE ... WITH (FORCE); logs instead of raising."""
    admin = create_async_engine(admin_url, isolation_level="AUTOCOMMIT", connect_args={"timeout": 5})
    try:
        async with admin.connect() as conn:
            await conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
    except Exception as exc:  # noqa: BLE001 - cleanup must not hide the result
        log.warning("could not drop database %s: %s", name, exc)
    finally:
        await admin.dispose()


async def bench_postgres(args: argparse.Namespace) -> dict[str, Any]:
    """Ours and pgbench on two fresh databases, dropped at the end.

    Args:
        args: Command-line options.

    Returns:
        The ``"postgres"`` JSON object (with ``"error"`` if the server is unreachable).
    """
    admin_url = args.postgres_url
    tag = uuid.uuid4().hex[:8]
    names = {"ours": f"sb_bench_accept_{tag}_ours", "raw": f"sb_bench_accept_{tag}_raw"}
    created: list[str] = []
    try:
        try:
            ours_url = await create_pg_database(admin_url, names["ours"])
        except Exception as exc:  # noqa: BLE001 - any connection problem means "no PostgreSQL"
            return {"error": f"PostgreSQL unreachable at {make_url(admin_url).render_as_string()}: "
                             f"{type(exc).__name__}: {exc}"}
        created.append(names["ours"])
        raw_url = await create_pg_database(admin_url, names["raw"])
        created.append(names["raw"])

        log.info("postgres: migrating %s", names["ours"])
        db = Database(ours_url)  # the application's defaults (pool 10+10, pre-ping)
        try:
            await upgrade(db)
            cap, roles = await capture_and_classify(db, tag)
            refs = bench_refs(args.concurrency, f"bench-{tag}-")
            directory, user_ids = await create_users(db, refs)
            log.info("postgres: ours, %d tasks, %.1fs warm-up + %.1fs", args.concurrency, args.warmup, args.seconds)
            ours = await run_ours(
                db, directory, refs, warmup=args.warmup, seconds=args.seconds, tag=tag,
                profile=args.profile,
            )
            ours_depth = await jobs_per_user(db, user_ids)
        finally:
            await db.dispose()
        log.info("postgres: ours %.0f/s", ours.per_s)

        result: dict[str, Any] = {
            "ours_per_s": round(ours.per_s, 1),
            "concurrency": args.concurrency,
            "seconds": args.seconds,
            "warmup_s": args.warmup,
            "statement_count": len(cap.statements),
            "statements": [sql for sql, _ in cap.statements],
            **ours.as_dict("ours"),
        }

        log.info("postgres: migrating %s", names["raw"])
        raw_db = Database(raw_url)
        try:
            await upgrade(raw_db)
            _, raw_users = await create_users(raw_db, bench_refs(args.concurrency, f"bench-{tag}-"))
            if raw_users != list(range(raw_users[0], raw_users[0] + len(raw_users))):
                raise RuntimeError(f"pgbench needs consecutive user ids, got {raw_users}")
            async with raw_db.read() as conn:
                server = {
                    name: (await conn.exec_driver_sql(f"SHOW {name}")).scalar()
                    for name in ("server_version", "synchronous_commit", "fsync", "shared_buffers")
                }
        finally:
            await raw_db.dispose()
        script, defines = pgbench_script(cap.statements, roles, raw_users[0])
        if not Path(PGBENCH).exists():
            result["error"] = f"{PGBENCH} not found"
            return result
        with tempfile.TemporaryDirectory(prefix="studiobot-pgbench-") as tmp:
            log.info("postgres: pgbench -c %d -j 2 -M prepared, warm-up", args.concurrency)
            await asyncio.to_thread(
                run_pgbench, raw_url, script, defines, clients=args.concurrency,
                seconds=args.warmup, run=1, workdir=Path(tmp),
            )
            log.info("postgres: pgbench measured run, %.0fs", args.seconds)
            raw = await asyncio.to_thread(
                run_pgbench, raw_url, script, defines, clients=args.concurrency,
                seconds=args.seconds, run=2, workdir=Path(tmp),
            )
        check = Database(raw_url)
        try:
            raw_depth = await jobs_per_user(check, raw_users)
        finally:
            await check.dispose()
        log.info("postgres: pgbench %.0f tps", raw["tps"])
        result.update(
            raw_per_s=round(raw["tps"], 1),
            ratio=round(ours.per_s / raw["tps"], 2) if raw["tps"] else None,
            pgbench=raw,
            pgbench_script=script,
            server=server,
            jobs_per_user_at_end={"ours": ours_depth, "raw": raw_depth},
        )
        # Keep the required keys first for readability.
        return {k: result[k] for k in ("ours_per_s", "raw_per_s", "ratio")} | result
    except Exception as exc:  # noqa: BLE001 - report, never crash without the JSON line
        log.exception("postgres benchmark failed")
        return {"error": f"{type(exc).__name__}: {exc}"}
    finally:
        for name in created:
            await drop_pg_database(admin_url, name)


# --------------------------------------------------------------------------------------------------


def _positive_int(value: str) -> int:
    """argparse type: an integer >= 1."""
    number = int(value)
    if number < 1:
        raise argparse.ArgumentTypeError("must be at least 1")
    return number


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """Command-line options."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    # Whole seconds: pgbench's -T takes nothing else, and both sides must run equally long.
    parser.add_argument("--seconds", type=_positive_int, default=5, help="measured seconds per side (default 5)")
    parser.add_argument("--warmup", type=_positive_int, default=1, help="warm-up seconds per side (default 1)")
    parser.add_argument("--concurrency", type=_positive_int, default=8, help="simulated users / pgbench clients")
    parser.add_argument(
        "--postgres-url",
        default=os.environ.get("STUDIOBOT_TEST_POSTGRES_URL", DEFAULT_PG_URL),
        help="admin URL used to create and drop the bench databases",
    )
    parser.add_argument("--skip-sqlite", action="store_true")
    parser.add_argument("--skip-postgres", action="store_true")
    parser.add_argument("--profile", action="store_true", help="cProfile ours' measured windows (stderr)")
    return parser.parse_args(argv)


async def main(argv: list[str] | None = None) -> dict[str, Any]:
    """Run both backends and return the result object.

    Args:
        argv: Command-line arguments (``sys.argv[1:]`` when None).

    Returns:
        ``{"sqlite": {...}, "postgres": {...}}``.
    """
    args = parse_args(argv)
    started = time.perf_counter()
    result: dict[str, Any] = {}
    if not args.skip_sqlite:
        try:
            result["sqlite"] = await bench_sqlite(args)
        except Exception as exc:  # noqa: BLE001 - report, never crash without the JSON line
            log.exception("sqlite benchmark failed")
            result["sqlite"] = {"error": f"{type(exc).__name__}: {exc}"}
    if not args.skip_postgres:
        result["postgres"] = await bench_postgres(args)
    log.info("done in %.1fs", time.perf_counter() - started)
    return result


if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO, stream=sys.stderr, format="%(asctime)s %(message)s")
    # Alembic configures its own logging on upgrade; keep it quiet on stderr.
    logging.getLogger("alembic").setLevel(logging.WARNING)
    print(json.dumps(run_async(main())), flush=True)
