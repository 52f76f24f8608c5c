"""Resolving platform identities to users, creating new users with their welcome credits."""

from __future__ import annotations

from sqlalchemy.engine import Connection
from sqlalchemy.exc import IntegrityError

from studiobot.billing import ledger
from studiobot.commands.contract import UserRef
from studiobot.db import users
from studiobot.db.engine import Database


class UserDirectory:
    """Maps (platform, platform user id) to a user id, creating the user on first sight.

    The mapping never changes once made, so it is cached in memory: the hot path (every command)
    then costs no query for returning users.

    Args:
        db: Database.
        welcome_credits: Credits granted to each new user.
        cache_size: Identities kept in memory.
    """

    def __init__(self, db: Database, *, welcome_credits: int, cache_size: int = 100_000) -> None:
        self._db = db
        self._welcome = welcome_credits
        self._cache: dict[tuple[str, str], int] = {}
        self._cache_size = cache_size

    async def user_id(self, ref: UserRef) -> int:
        """The user behind ``ref``, created (with welcome credits) if new."""
        key = (ref.platform, ref.platform_user_id)
        cached = self._cache.get(key)
        if cached is not None:
            return cached
        async with self._db.read() as conn:
            user_id = await users.find_user_id(conn, *key)
        if user_id is None:
            try:
                user_id = await self._db.run(
                    _create, key, ref.display_name or ref.platform_user_id, self._welcome
                )
            except IntegrityError:
                # Created concurrently by another request of the same person: use theirs.
                async with self._db.read() as conn:
                    user_id = await users.find_user_id(conn, *key)
                if user_id is None:
                    raise
        if len(self._cache) >= self._cache_size:
            self._cache.clear()
        self._cache[key] = user_id
        return user_id


def _create(conn: Connection, key: tuple[str, str], display_name: str, welcome: int) -> int:
    user_id = users.create_user(conn, *key, display_name)
    ledger.open_account(conn, user_id, welcome=welcome)
    return user_id
