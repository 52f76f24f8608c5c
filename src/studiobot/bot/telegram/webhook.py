"""Webhook mode: studiobot's web server receives Telegram's updates and hands them to the bot.

Telegram sends the secret token given to ``setWebhook`` in ``X-Telegram-Bot-Api-Secret-Token``
on every request; anything without it is refused with 403 (compared in constant time, as PTB's
own webhook handler does). Telegram retries non-2xx answers, so a malformed body gets a 400 it
will give up on, and a good update is queued and answered 200 at once; redeliveries are dropped
by ``update_id`` when handled (:mod:`.bot`).
"""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
from collections.abc import Awaitable, Callable

from aiohttp import web
from telegram import Update

from studiobot.bot.telegram.bot import TelegramBot

log = logging.getLogger(__name__)

SECRET_HEADER = "X-Telegram-Bot-Api-Secret-Token"


def derive_secret(bot_token: str) -> str:
    """A webhook secret token derived from the bot token (the same in every process).

    Used when none is configured: 64 hex characters, within Telegram's 1-256 of ``[A-Za-z0-9_-]``,
    and revealing nothing of the token.
    """
    return hmac.new(bot_token.encode(), b"studiobot telegram webhook", hashlib.sha256).hexdigest()


def webhook_handler(bot: TelegramBot, secret: str) -> Callable[[web.Request], Awaitable[web.Response]]:
    """An aiohttp handler for ``POST <webhook path>``."""
    expected = secret.encode()

    async def handle(request: web.Request) -> web.Response:
        given = request.headers.get(SECRET_HEADER, "").encode()
        if not hmac.compare_digest(given, expected):
            log.warning("Telegram webhook call without the right secret token from %s", request.remote)
            return web.Response(status=403, text="forbidden")
        try:
            data = json.loads(await request.read())
        except (ValueError, UnicodeDecodeError):
            log.warning("Telegram webhook body is not JSON")
            return web.Response(status=400, text="body is not JSON")
        if not isinstance(data, dict) or not isinstance(data.get("update_id"), int):
            return web.Response(status=400, text="not a Telegram update")
        try:
            update = Update.de_json(data, bot.application.bot)
        except (KeyError, TypeError, ValueError) as error:
            log.warning("Telegram webhook body is not a valid update: %s", type(error).__name__)
            return web.Response(status=400, text="not a Telegram update")
        await bot.feed(update)
        return web.Response(text="ok")

    return handle
