"""Who administers a Telegram group, as Telegram reports it, cached for a while.

``getChatAdministrators`` is one request per group per expiry, not one per command. The bot's
own entry tells whether it may delete other people's messages (needed to remove pasted keys).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass

from telegram import Bot, ChatMemberAdministrator, ChatMemberOwner
from telegram.error import TelegramError

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class _Admins:
    user_ids: frozenset[int]
    bot_can_delete: bool
    expires_at: float


class AdminCache:
    """Group administrators with an expiry.

    Args:
        bot: A PTB bot.
        ttl_s: How long an answer is trusted (a demoted admin keeps their powers at most this long).
        clock: Monotonic seconds (injectable for tests).
    """

    def __init__(self, bot: Bot, *, ttl_s: float = 300.0, clock: Callable[[], float] = time.monotonic) -> None:
        self._bot = bot
        self._ttl = ttl_s
        self._clock = clock
        self._cache: dict[int, _Admins] = {}
        self._locks: dict[int, asyncio.Lock] = {}

    async def is_admin(self, chat_id: int, user_id: int) -> bool:
        """Whether ``user_id`` administers group ``chat_id`` (never, in a private chat)."""
        if chat_id > 0:
            return False
        return user_id in (await self._admins(chat_id)).user_ids

    async def bot_can_delete(self, chat_id: int) -> bool:
        """Whether the bot may delete members' messages in group ``chat_id``."""
        if chat_id > 0:
            return False
        return (await self._admins(chat_id)).bot_can_delete

    async def _admins(self, chat_id: int) -> _Admins:
        cached = self._cache.get(chat_id)
        if cached is not None and cached.expires_at > self._clock():
            return cached
        lock = self._locks.setdefault(chat_id, asyncio.Lock())
        async with lock:  # one request per group, however many commands arrive at once
            cached = self._cache.get(chat_id)
            if cached is not None and cached.expires_at > self._clock():
                return cached
            try:
                members = await self._bot.get_chat_administrators(chat_id)
            except TelegramError as error:
                # Answer "not an admin" and ask again next time rather than trust a stale list.
                log.warning("could not read the admins of Telegram chat %s: %s", chat_id, error)
                return _Admins(frozenset(), False, 0.0)
            bot_id = self._bot.id
            admins = _Admins(
                frozenset(m.user.id for m in members),
                any(
                    isinstance(m, ChatMemberOwner)
                    or (isinstance(m, ChatMemberAdministrator) and m.can_delete_messages)
                    for m in members if m.user.id == bot_id
                ),
                self._clock() + self._ttl,
            )
            if len(self._cache) > 10_000:
                self._cache.clear()
                self._locks = {chat_id: lock}
            self._cache[chat_id] = admins
            return admins
