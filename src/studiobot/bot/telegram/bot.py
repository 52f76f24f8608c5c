"""The Telegram bot's lifecycle: PTB's Application, polling or webhook mode, and update routing.

Polling is the default (``getUpdates`` long polling, nothing to expose). With a webhook URL the
bot registers it with a secret token, and studiobot's own web server hands it the updates
(:mod:`.webhook`); any number of processes may serve the same URL behind a balancer.

Either way, each update is recorded by ``update_id`` before it is handled, so one redelivered
(a lost webhook answer, a poller that crashed before confirming its offset) is dropped, across
processes too.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from datetime import timedelta

from telegram import Update
from telegram.ext import Application, ApplicationBuilder, ContextTypes, ExtBot, TypeHandler

from studiobot.bot.telegram.admins import AdminCache
from studiobot.bot.telegram.handlers import UpdateHandlers
from studiobot.bot.telegram.limits import ChatRateLimiter
from studiobot.bot.telegram.menu import sync_menus
from studiobot.bot.telegram.outbox import TelegramOutbox
from studiobot.bot.telegram.render import Sender
from studiobot.bot.telegram.translate import PLATFORM
from studiobot.commands.dispatcher import Dispatcher
from studiobot.db import seen_updates
from studiobot.db.engine import Database
from studiobot.db.models import utcnow

log = logging.getLogger(__name__)

#: Update kinds studiobot handles; Telegram sends no others (less traffic, and no member lists).
ALLOWED_UPDATES = ("message", "callback_query", "inline_query")
#: Redeliveries come within hours; after a week of silence Telegram's ids restart at random.
_DEDUPE_WINDOW = timedelta(days=2)
_PRUNE_EVERY_S = 3600.0

#: Loggers that would print secrets: httpx logs request URLs, which hold the bot token; PTB at
#: DEBUG logs request parameters (the webhook's secret token) and incoming updates (pasted keys).
_SECRET_LOGGERS = {"httpx": logging.WARNING, "httpcore": logging.WARNING, "telegram": logging.INFO}


def quiet_secret_loggers() -> None:
    """Cap the loggers that print tokens or message contents, even at ``LOG_LEVEL=DEBUG``."""
    for name, level in _SECRET_LOGGERS.items():
        logger = logging.getLogger(name)
        if logger.getEffectiveLevel() < level:
            logger.setLevel(level)


def build_application(token: str, api_base: str) -> Application:
    """PTB's Application, paced by :class:`ChatRateLimiter`, handling updates concurrently.

    Args:
        token: The bot token from @BotFather.
        api_base: Bot API root ending in ``/bot`` (Telegram's, a local Bot API server, or a double).
    """
    quiet_secret_loggers()
    base = api_base.rstrip("/")
    return (
        ApplicationBuilder()
        .token(token)
        .base_url(base)
        .base_file_url(base.removesuffix("/bot") + "/file/bot")
        .rate_limiter(ChatRateLimiter())
        .concurrent_updates(64)
        .media_write_timeout(60)
        .build()
    )


class TelegramBot:
    """studiobot on Telegram.

    The composition root builds it with the Application (the outbox needs the bot), then calls
    :meth:`attach` with the core, then :meth:`run`.

    Args:
        application: From :func:`build_application`.
        db: Database (dedupe, menus, status messages).
        webhook_url: Public HTTPS URL Telegram should post updates to; None polls instead.
        webhook_secret: The secret token Telegram sends back in a header (webhook mode).
        admin_cache_s: How long a group's admin list is trusted.
    """

    def __init__(
        self,
        application: Application,
        db: Database,
        *,
        webhook_url: str | None = None,
        webhook_secret: str | None = None,
        admin_cache_s: float = 300.0,
    ) -> None:
        self.application = application
        self.db = db
        self.webhook_url = webhook_url
        self.webhook_secret = webhook_secret
        self.sender = Sender(application.bot, db)
        self.outbox = TelegramOutbox(self.sender, db)
        self.admins = AdminCache(application.bot, ttl_s=admin_cache_s)
        self.handlers: UpdateHandlers | None = None
        self._dispatcher: Dispatcher | None = None
        self._stopped = asyncio.Event()
        self._last_prune = 0.0
        application.add_handler(TypeHandler(Update, self._on_update))
        application.add_error_handler(self._on_error)

    def attach(self, dispatcher: Dispatcher) -> None:
        """Connect the core."""
        self._dispatcher = dispatcher

    async def run(self) -> None:
        """Connect, upload the command menus if changed, and serve until :meth:`close`.

        Raises:
            telegram.error.InvalidToken: Telegram refused the token.
        """
        if self._dispatcher is None:
            raise RuntimeError("attach() the dispatcher before run()")
        app = self.application
        await app.initialize()
        try:
            bot = app.bot
            self.handlers = UpdateHandlers(self._dispatcher, self.sender, self.outbox, self.admins, bot.username)
            await sync_menus(bot, self.db, list(self._dispatcher.commands.values()))
            await app.start()
            if self.webhook_url:
                await bot.set_webhook(
                    self.webhook_url, secret_token=self.webhook_secret,
                    allowed_updates=list(ALLOWED_UPDATES), max_connections=40,
                )
                log.info("Telegram bot @%s receiving updates by webhook", bot.username)
            else:
                assert app.updater is not None
                # start_polling deletes any webhook first (the two modes exclude each other).
                await app.updater.start_polling(allowed_updates=list(ALLOWED_UPDATES), timeout=timedelta(seconds=20))
                log.info("Telegram bot @%s polling for updates", bot.username)
            await self._stopped.wait()
        finally:
            if app.updater is not None and app.updater.running:
                await app.updater.stop()
            if app.running:
                await app.stop()
            await app.shutdown()

    async def close(self) -> None:
        """Stop serving; :meth:`run` returns once in-flight updates are done."""
        self._stopped.set()

    async def feed(self, update: Update) -> None:
        """Queue an update received by webhook (handled like a polled one)."""
        await self.application.update_queue.put(update)

    async def _on_update(self, update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
        if self.handlers is None:
            return
        if not await self.db.run(seen_updates.first_delivery, PLATFORM, update.update_id):
            log.info("Telegram update %s already handled; dropped", update.update_id)
            return
        await self._prune()
        if update.callback_query is not None:
            await self.handlers.on_callback_query(update.callback_query)
        elif update.inline_query is not None:
            await self.handlers.on_inline_query(update.inline_query)
        elif update.message is not None:
            await self.handlers.on_message(update.message)

    async def _prune(self) -> None:
        now = time.monotonic()
        if now - self._last_prune < _PRUNE_EVERY_S:
            return
        self._last_prune = now
        dropped = await self.db.run(seen_updates.forget_before, utcnow() - _DEDUPE_WINDOW)
        log.debug("forgot %d old Telegram update ids", dropped)

    async def _on_error(self, update: object, context: ContextTypes.DEFAULT_TYPE) -> None:
        log.error("Telegram update failed", exc_info=context.error)



async def open_outbox(
    token: str, api_base: str, db: Database
) -> tuple[TelegramOutbox, Callable[[], Awaitable[None]]]:
    """An outbox for a process that receives no updates (``studiobot worker``): Bot API only.

    Returns:
        The outbox, and the coroutine function that closes its HTTP connections.

    Raises:
        telegram.error.InvalidToken: Telegram refused the token.
    """
    quiet_secret_loggers()
    base = api_base.rstrip("/")
    bot = ExtBot(
        token, base_url=base, base_file_url=base.removesuffix("/bot") + "/file/bot",
        rate_limiter=ChatRateLimiter(),
    )
    await bot.initialize()
    return TelegramOutbox(Sender(bot, db), db), bot.shutdown
