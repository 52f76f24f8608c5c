"""Engine and transaction factories for SQLite (embedded default) and PostgreSQL.

SQLite rules (reference-platform-rules.md section 2c): WAL, foreign keys on, a busy timeout, and every
read-then-write transaction opened with ``BEGIN IMMEDIATE`` so it takes the write lock up front instead
of failing with SQLITE_BUSY half way. Within one process, writers also queue on an asyncio lock: SQLite
has one writer anyway, and waiting on a lock is far cheaper than SQLite's sleeping busy handler.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager, nullcontext
from typing import Any

from sqlalchemy import event
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, create_async_engine

_READONLY = "studiobot_readonly"


class Database:
    """One engine plus the two ways to use it: :meth:`transaction` (writes) and :meth:`read`.

    Args:
        url: SQLAlchemy async URL (``sqlite+aiosqlite:///path`` or ``postgresql+asyncpg://...``).
        sqlite_synchronous: SQLite ``synchronous`` pragma (FULL keeps every commit durable).
        echo: Log SQL (debugging only).
        connect_args: Extra driver arguments (tests pass a PostgreSQL ``search_path``).
    """

    def __init__(
        self,
        url: str,
        *,
        sqlite_synchronous: str = "FULL",
        echo: bool = False,
        connect_args: dict[str, Any] | None = None,
    ) -> None:
        parsed = make_url(url)
        self.url = url
        self.dialect = parsed.get_backend_name()
        kwargs: dict[str, Any] = {"echo": echo, "connect_args": connect_args or {}}
        if self.dialect == "postgresql":
            kwargs.update(pool_size=10, max_overflow=10, pool_pre_ping=True)
        self.engine: AsyncEngine = create_async_engine(url, **kwargs)
        self._write_lock: asyncio.Lock | None = None
        if self.dialect == "sqlite":
            self._write_lock = asyncio.Lock()
            _configure_sqlite(self.engine, sqlite_synchronous)

    @property
    def is_postgres(self) -> bool:
        """True on PostgreSQL (row locks with SKIP LOCKED are available)."""
        return self.dialect == "postgresql"

    @asynccontextmanager
    async def transaction(self) -> AsyncIterator[AsyncConnection]:
        """A read-write transaction, committed on normal exit and rolled back on an exception."""
        lock = self._write_lock if self._write_lock is not None else nullcontext()
        async with lock:
            async with self.engine.begin() as conn:
                yield conn

    @asynccontextmanager
    async def read(self) -> AsyncIterator[AsyncConnection]:
        """A read-only transaction: on SQLite a deferred one, so it never waits for the write lock."""
        async with self.engine.connect() as conn:
            conn = await conn.execution_options(**{_READONLY: True})
            async with conn.begin():
                yield conn

    async def dispose(self) -> None:
        """Close every pooled connection."""
        await self.engine.dispose()


def _configure_sqlite(engine: AsyncEngine, synchronous: str) -> None:
    sync_engine = engine.sync_engine

    @event.listens_for(sync_engine, "connect")
    def _on_connect(dbapi_connection: Any, _record: Any) -> None:
        # Take transaction control from the sqlite3 module so we can say BEGIN IMMEDIATE ourselves.
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.execute("PRAGMA busy_timeout=10000")
        cursor.execute(f"PRAGMA synchronous={synchronous}")
        cursor.close()

    @event.listens_for(sync_engine, "begin")
    def _on_begin(conn: Any) -> None:
        readonly = conn.get_execution_options().get(_READONLY, False)
        conn.exec_driver_sql("BEGIN" if readonly else "BEGIN IMMEDIATE")
