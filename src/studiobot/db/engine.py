"""Engine and transaction factories for SQLite (embedded default) and PostgreSQL.

SQLite rules (reference-platform-rules.md section 2c): WAL, foreign keys on, a busy timeout, and every
read-then-write transaction opened with ``BEGIN IMMEDIATE`` so it takes the write lock up front instead
of failing with SQLITE_BUSY half way. Within one process all writes run on one thread, so they queue
there instead of in SQLite's sleeping busy handler; other processes still meet the busy timeout.
"""

from __future__ import annotations

import asyncio
import threading
from collections import deque
from collections.abc import AsyncIterator, Callable
from concurrent.futures import ThreadPoolExecutor
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any, Concatenate, ParamSpec, TypeVar

from sqlalchemy import create_engine, event
from sqlalchemy.engine import Connection, Engine, make_url
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, create_async_engine
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.pool import SingletonThreadPool

P = ParamSpec("P")
T = TypeVar("T")


class Database:
    """One database, used two ways: :meth:`run` for write transactions and :meth:`read` for reads.

    A write transaction is a plain synchronous function ``fn(conn, *args)`` that :meth:`run`
    executes whole, committing on return and rolling back on an exception. That keeps the hot paths
    to one hop per transaction instead of one per statement: on PostgreSQL ``fn`` runs through
    ``AsyncConnection.run_sync`` (one greenlet); on SQLite it runs on a single dedicated writer
    thread with a plain ``sqlite3`` connection, which is also SQLite's own one-writer rule.

    On SQLite the writer thread group-commits: it takes every transaction waiting for it, runs each
    in its own SAVEPOINT (one that raises is rolled back alone, exactly as if it had had its own
    transaction) and commits them together with one fsync. Each caller gets its result only after
    that COMMIT, so durability is unchanged; only the cost of the fsync is shared.

    Args:
        url: SQLAlchemy async URL (``sqlite+aiosqlite:///path`` or ``postgresql+asyncpg://...``).
        sqlite_synchronous: SQLite ``synchronous`` pragma (FULL keeps every commit durable).
        echo: Log SQL (debugging only).
    """

    def __init__(self, url: str, *, sqlite_synchronous: str = "FULL", echo: bool = False) -> None:
        parsed = make_url(url)
        self.url = url
        self.dialect = parsed.get_backend_name()
        if self.dialect == "postgresql":
            # No pre-ping: it costs a round trip per transaction. Connections are recycled instead,
            # and a connection found dead is invalidated by SQLAlchemy on first use.
            self.engine: AsyncEngine = create_async_engine(
                url, echo=echo, pool_size=10, max_overflow=10, pool_recycle=1800
            )
            self._writer: ThreadPoolExecutor | None = None
            self._sync_engine: Engine | None = None
        elif self.dialect == "sqlite":
            self.engine = create_async_engine(url, echo=echo)
            _configure_sqlite(self.engine.sync_engine, sqlite_synchronous, begin="BEGIN")
            self._sync_engine = create_engine(
                parsed.set(drivername="sqlite"), echo=echo, poolclass=SingletonThreadPool
            )
            _configure_sqlite(self._sync_engine, sqlite_synchronous, begin="BEGIN IMMEDIATE")
            self._writer = ThreadPoolExecutor(max_workers=1, thread_name_prefix="sqlite-writer")
            self._pending: deque[_Pending] = deque()
            self._draining = threading.Lock()  # held while a drain of _pending is scheduled
        else:
            raise ValueError(f"unsupported database {self.dialect!r}: use SQLite or PostgreSQL")

    @property
    def write_engine(self) -> Engine:
        """The synchronous engine write transactions run on (for instrumentation such as benchmarks)."""
        return self._sync_engine if self._sync_engine is not None else self.engine.sync_engine

    async def run(self, fn: Callable[Concatenate[Connection, P], T], *args: P.args, **kwargs: P.kwargs) -> T:
        """Run ``fn(conn, *args, **kwargs)`` as one write transaction and return its result.

        Raises:
            Whatever ``fn`` raises, after the transaction was rolled back.
        """
        if self._writer is None:
            async with self.engine.begin() as conn:
                return await conn.run_sync(fn, *args, **kwargs)
        loop = asyncio.get_running_loop()
        future: asyncio.Future[T] = loop.create_future()
        self._pending.append(_Pending(lambda conn: fn(conn, *args, **kwargs), future, loop))
        if self._draining.acquire(blocking=False):
            self._writer.submit(self._drain)
        return await future

    def _drain(self) -> None:
        """Writer thread: commit waiting transactions in batches until none is left."""
        assert self._sync_engine is not None
        while True:
            batch = [self._pending.popleft() for _ in range(min(len(self._pending), _MAX_BATCH))]
            if batch:
                self._commit_batch(batch)
                continue
            self._draining.release()
            # A transaction queued between the emptiness check and the release would be stranded.
            if not self._pending or not self._draining.acquire(blocking=False):
                return

    def _commit_batch(self, batch: list[_Pending]) -> None:
        assert self._sync_engine is not None
        outcomes: list[tuple[bool, Any]] = []
        try:
            with self._sync_engine.connect() as conn, conn.begin():
                for item in batch:
                    savepoint = conn.begin_nested()
                    try:
                        outcomes.append((True, item.work(conn)))
                        savepoint.commit()
                    except Exception as error:  # the caller gets it, as from its own transaction
                        savepoint.rollback()
                        outcomes.append((False, error))
        except Exception as error:  # BEGIN or COMMIT failed: nothing of the batch was kept
            outcomes = [(False, error)] * len(batch)
        for item, (ok, value) in zip(batch, outcomes, strict=True):
            item.loop.call_soon_threadsafe(_settle, item.future, ok, value)

    @asynccontextmanager
    async def read(self) -> AsyncIterator[AsyncConnection]:
        """A read-only transaction (on SQLite a deferred one: it never waits for the writer)."""
        async with self.engine.connect() as conn, conn.begin():
            yield conn

    async def dispose(self) -> None:
        """Close every connection and the writer thread (again: nothing happens)."""
        await self.engine.dispose()
        if self._writer is not None:
            assert self._sync_engine is not None
            writer, self._writer = self._writer, None
            await asyncio.get_running_loop().run_in_executor(writer, self._sync_engine.dispose)
            writer.shutdown(wait=True)


_MAX_BATCH = 64


def dialect_insert(conn: Connection, table: Any) -> postgresql.Insert | sqlite.Insert:
    """An INSERT into ``table`` (a table or mapped class) in the connection's dialect: the one
    that offers ``on_conflict_do_nothing`` and ``on_conflict_do_update`` (PostgreSQL and SQLite
    both have ``ON CONFLICT``; SQLAlchemy's generic insert has neither)."""
    if conn.dialect.name == "postgresql":
        return postgresql.insert(table)
    return sqlite.insert(table)


@dataclass(slots=True)
class _Pending:
    work: Callable[[Connection], Any]
    future: asyncio.Future[Any]
    loop: asyncio.AbstractEventLoop


def _settle(future: asyncio.Future[Any], ok: bool, value: Any) -> None:
    if future.cancelled():
        return
    if ok:
        future.set_result(value)
    else:
        future.set_exception(value)


def _configure_sqlite(engine: Engine, synchronous: str, *, begin: str) -> None:
    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_connection: Any, _record: Any) -> None:
        # Take transaction control from the sqlite3 module so we can say BEGIN IMMEDIATE ourselves.
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.execute("PRAGMA busy_timeout=10000")
        cursor.execute(f"PRAGMA synchronous={synchronous}")
        cursor.close()

    @event.listens_for(engine, "begin")
    def _on_begin(conn: Any) -> None:
        conn.exec_driver_sql(begin)
