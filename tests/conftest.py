"""Shared fixtures: real databases (SQLite and PostgreSQL) and settings for a throwaway data folder.

PostgreSQL tests run when ``STUDIOBOT_TEST_POSTGRES_URL`` is set (CI sets it); each test gets a
database of its own, created and dropped around it. When the variable is set and the server is
down, those tests fail: they never silently skip in CI.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import text
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import create_async_engine

from studiobot.config import Settings
from studiobot.db.engine import Database
from studiobot.db.migrate import upgrade

PG_URL = os.environ.get("STUDIOBOT_TEST_POSTGRES_URL")
BACKENDS = ("sqlite", "postgres")


async def create_pg_database() -> str:
    """Create an empty PostgreSQL database for one test and return its URL."""
    assert PG_URL
    name = f"sb_{uuid.uuid4().hex[:16]}"
    admin = create_async_engine(PG_URL, isolation_level="AUTOCOMMIT")
    async with admin.connect() as conn:
        await conn.execute(text(f'CREATE DATABASE "{name}"'))
    await admin.dispose()
    return make_url(PG_URL).set(database=name).render_as_string(hide_password=False)


async def drop_pg_database(url: str) -> None:
    """Drop a database made by :func:`create_pg_database` (closing leftover sessions)."""
    assert PG_URL
    name = make_url(url).database
    admin = create_async_engine(PG_URL, isolation_level="AUTOCOMMIT")
    async with admin.connect() as conn:
        await conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
    await admin.dispose()


@pytest.fixture(params=BACKENDS)
async def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[str]:
    """A fresh, empty database URL on each backend."""
    if request.param == "sqlite":
        yield f"sqlite+aiosqlite:///{tmp_path / 'studiobot.db'}"
        return
    if not PG_URL:
        pytest.skip("STUDIOBOT_TEST_POSTGRES_URL is not set; CI sets it and runs these on PostgreSQL")
    url = await create_pg_database()
    try:
        yield url
    finally:
        await drop_pg_database(url)


@pytest.fixture
async def db(database_url: str) -> AsyncIterator[Database]:
    """A migrated database on each backend."""
    database = Database(database_url)
    await upgrade(database)
    try:
        yield database
    finally:
        await database.dispose()


@pytest.fixture
def make_settings(tmp_path: Path) -> Callable[..., Settings]:
    """Settings for a throwaway data folder; keyword arguments override fields.

    ``.env`` files and the environment are ignored so a developer's own configuration never leaks
    into tests.
    """

    def make(**overrides: Any) -> Settings:
        values: dict[str, Any] = {"data_dir": tmp_path / "data", "poll_interval_s": 0.05,
                                  "worker_interval_s": 0.05,
                                  # the provider doubles serve their result files on 127.0.0.1
                                  "download_allow_networks": ("127.0.0.0/8",)}
        values.update(overrides)
        return Settings(_env_file=None, **values)

    return make
