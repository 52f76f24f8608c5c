"""Alembic, driven from code: the only way the schema is made or changed (DESIGN.md section 4).

``studiobot db upgrade`` and ``studiobot run`` call :func:`upgrade`. Migrations live in
``db/migrations/versions``; ``alembic`` itself needs no ini file.
"""

from __future__ import annotations

from alembic import command
from alembic.config import Config
from sqlalchemy.engine import Connection

from studiobot.db.engine import Database


def alembic_config(url: str) -> Config:
    """An Alembic config pointing at the packaged migrations and ``url``."""
    config = Config()
    config.set_main_option("script_location", "studiobot.db:migrations")
    config.set_main_option("sqlalchemy.url", url.replace("%", "%%"))
    return config


async def upgrade(db: Database, revision: str = "head") -> None:
    """Bring the schema to ``revision`` on ``db``'s own connection (works inside a running loop).

    Raises:
        alembic.util.CommandError: When the database holds a revision these migrations do not know.
    """
    config = alembic_config(db.url)

    def run(connection: Connection) -> None:
        config.attributes["connection"] = connection
        command.upgrade(config, revision)

    async with db.engine.begin() as conn:
        await conn.run_sync(run)
