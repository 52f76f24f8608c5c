"""Telegram flood limits: what PTB's ``AIORateLimiter`` enforces, plus what it leaves out.

Telegram's limits (Bot FAQ; reference-platform-rules.md section 4): about 30 messages per second
overall, 20 per minute in one group, and no more than one per second in one private chat, with
short bursts tolerated. A 429 carries ``retry_after``.

``AIORateLimiter`` covers the overall and per-group limits and retries after a 429, but calls
itself a "minimal effort reference implementation": it has no per-private-chat limit.
:class:`ChatRateLimiter` adds it. :class:`EditPacer` keeps progress edits from spending a chat's
budget that results need.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Coroutine
from typing import Any

from aiolimiter import AsyncLimiter
from telegram.ext import AIORateLimiter

#: Methods that post or change a message: the ones Telegram's flood limits count.
_COUNTED_PREFIXES = ("send", "edit", "copy", "forward")
#: Chat actions ("typing...") are not messages; pacing them would delay real answers.
_UNCOUNTED = frozenset({"sendChatAction"})


class ChatRateLimiter(AIORateLimiter):
    """``AIORateLimiter`` plus a limit per private chat.

    Args:
        private_burst: Messages a private chat may receive at once.
        private_period_s: Period over which ``private_burst`` messages are allowed. The default
            is Telegram's stated rule (1 per second; it tolerates short bursts, by how much is not
            documented) with a 5% margin: requests sent exactly 1 s apart can arrive closer.
        max_retries: Retries after a 429, each waiting the ``retry_after`` Telegram gave.
        **kwargs: ``AIORateLimiter``'s overall and group limits.
    """

    def __init__(
        self, *, private_burst: int = 1, private_period_s: float = 1.05, max_retries: int = 2, **kwargs: Any
    ) -> None:
        super().__init__(max_retries=max_retries, **kwargs)
        self._private_burst = private_burst
        self._private_period = private_period_s
        self._private: dict[int, AsyncLimiter] = {}

    async def process_request(
        self,
        callback: Callable[..., Coroutine[Any, Any, bool | dict[str, Any] | list[dict[str, Any]]]],
        args: Any,
        kwargs: dict[str, Any],
        endpoint: str,
        data: dict[str, Any],
        rate_limit_args: int | None,
    ) -> bool | dict[str, Any] | list[dict[str, Any]]:
        """Apply PTB's limits, and the private chat's limit to messages sent there.

        The private limit is taken by each attempt, right before it is sent: a retry after a 429
        (when PTB pauses every request) must not go out together with the requests it held up.
        """
        if endpoint in _UNCOUNTED:
            return await callback(*args, **kwargs)
        chat = _private_chat(data.get("chat_id"))
        if chat is None or not endpoint.startswith(_COUNTED_PREFIXES):
            return await super().process_request(callback, args, kwargs, endpoint, data, rate_limit_args)
        limiter = self._private_limiter(chat)

        async def paced(*call_args: Any, **call_kwargs: Any) -> bool | dict[str, Any] | list[dict[str, Any]]:
            async with limiter:
                return await callback(*call_args, **call_kwargs)

        return await super().process_request(paced, args, kwargs, endpoint, data, rate_limit_args)

    def _private_limiter(self, chat_id: int) -> AsyncLimiter:
        if len(self._private) > 4096:
            # Drop limiters whose whole budget is unused: they hold no memory of recent sends.
            for key, limiter in list(self._private.items()):
                if limiter.has_capacity(limiter.max_rate):
                    del self._private[key]
        limiter = self._private.get(chat_id)
        if limiter is None:
            limiter = self._private[chat_id] = AsyncLimiter(self._private_burst, self._private_period)
        return limiter


def _private_chat(chat_id: Any) -> int | None:
    """The chat id when it is a private chat (a user's id: positive), else None."""
    try:
        value = int(chat_id)
    except (TypeError, ValueError):
        return None
    return value if value > 0 else None


class EditPacer:
    """Decides whether a progress edit may go out now: only on change, and not too often per chat.

    Progress is worth less than results, so an edit that comes too soon is skipped rather than
    queued (the next one carries newer news anyway).

    Args:
        group_interval_s: Least time between two progress edits in one group (20 messages per
            minute per group means one every 3 s).
        private_interval_s: The same for a private chat (1 message per second).
        clock: Monotonic seconds (injectable for tests).
    """

    def __init__(
        self,
        *,
        group_interval_s: float = 3.0,
        private_interval_s: float = 1.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._group = group_interval_s
        self._private = private_interval_s
        self._clock = clock
        self._last: dict[int, float] = {}
        self._shown: dict[tuple[int, int], str] = {}

    def allow(self, chat_id: int, message_id: int, text: str) -> bool:
        """True (and recorded) when ``text`` may replace what message ``message_id`` shows now."""
        if self._shown.get((chat_id, message_id)) == text:
            return False
        now = self._clock()
        interval = self._private if chat_id > 0 else self._group
        if now - self._last.get(chat_id, -interval) < interval:
            return False
        self._last[chat_id] = now
        self._shown[(chat_id, message_id)] = text
        if len(self._shown) > 10_000:
            self._shown.clear()
            self._last = {k: v for k, v in self._last.items() if now - v < self._group}
        return True

    def forget(self, chat_id: int, message_id: int) -> None:
        """The message is final or gone: stop remembering what it showed."""
        self._shown.pop((chat_id, message_id), None)
