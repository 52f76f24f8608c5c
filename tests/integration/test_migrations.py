"""Alembic is the only way the schema is made: the migrations must produce exactly the models."""

from __future__ import annotations

from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import inspect

from studiobot.db.engine import Database
from studiobot.db.migrate import upgrade
from studiobot.db.models import Base


async def test_migrations_match_the_models(db: Database) -> None:
    async with db.engine.connect() as conn:
        diff = await conn.run_sync(
            lambda sync: compare_metadata(MigrationContext.configure(sync), Base.metadata)
        )
    assert diff == []


async def test_upgrade_is_idempotent(db: Database) -> None:
    await upgrade(db)  # already at head: nothing to do, nothing broken
    async with db.engine.connect() as conn:
        tables = await conn.run_sync(lambda sync: set(inspect(sync).get_table_names()))
    assert {"users", "credit_entries", "jobs", "assets", "alembic_version"} <= tables
