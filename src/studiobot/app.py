"""The composition root: the only place that builds engines, clients, providers and adapters.

``build_app`` wires everything from :class:`~studiobot.config.Settings`; ``run`` starts what a
process needs: the scheduler always, the chat platforms with a token in the settings (Discord,
Telegram) and the web server when one needs it, or the shell adapter when there is none.
``run_worker`` delivers to platforms over REST only.
"""

from __future__ import annotations

import asyncio
import logging
import os
import secrets
import signal
import socket
import sys
from collections.abc import Awaitable, Callable, Mapping
from contextlib import AsyncExitStack, suppress
from dataclasses import dataclass
from typing import TextIO
from urllib.parse import urlsplit

import httpx
from PIL import Image
from sqlalchemy.engine import make_url
from sqlalchemy.exc import SQLAlchemyError

from studiobot.billing.catalogue import Catalogue
from studiobot.billing.gateway import PaymentsUnavailable, StripeGateway
from studiobot.billing.service import Billing, Notify
from studiobot.commands import COMMANDS
from studiobot.commands.communities import Communities
from studiobot.commands.contract import Outbox, UserRef
from studiobot.commands.guards import Guards
from studiobot.commands.deps import Deps
from studiobot.commands.dispatcher import Dispatcher
from studiobot.commands.notices import KeyNotices, PaymentNotices
from studiobot.commands.presenter import JobPresenter
from studiobot.commands.users import UserDirectory
from studiobot.config import Settings
from studiobot.db.engine import Database
from studiobot.db.migrate import upgrade
from studiobot.errors import UserError
from studiobot.media.download import safe_client
from studiobot.media.store import LocalStore
from studiobot.providers.base import Provider
from studiobot.providers.offline import OfflineProvider
from studiobot.providers.router import Router
from studiobot.scheduler.finisher import Finisher
from studiobot.scheduler.keys import Keyring
from studiobot.scheduler.notify import Notifier
from studiobot.scheduler.poller import Poller
from studiobot.scheduler.recovery import Recovery
from studiobot.scheduler.runner import SchedulerRunner
from studiobot.scheduler.webhooks import WebhookReceiver
from studiobot.scheduler.worker import Worker
from studiobot.vault import masterkeys
from studiobot.vault.cipher import KeyCipher
from studiobot.vault.store import Vault
from studiobot.web.gallery import add_gallery_routes
from studiobot.web.server import WebServer
from studiobot.web.providers import add_provider_webhook_routes
from studiobot.web.stripe import add_stripe_routes

log = logging.getLogger("studiobot")


@dataclass
class App:
    """Everything one process runs, built by :func:`build_app`."""

    settings: Settings
    db: Database
    store: LocalStore
    router: Router
    http: httpx.AsyncClient
    dispatcher: Dispatcher
    runner: SchedulerRunner
    worker: Worker
    poller: Poller
    recovery: Recovery
    notifier: Notifier
    billing: Billing
    webhooks: WebhookReceiver

    async def aclose(self) -> None:
        """Stop the scheduler and release connections and clients."""
        await self.runner.shutdown()
        await self.webhooks.drain()
        await self.billing.aclose()
        await self.router.aclose()
        await self.http.aclose()
        await self.db.dispose()


def build_providers(settings: Settings) -> tuple[dict[str, Provider], dict[str, str]]:
    """The providers this configuration offers (``STUDIOBOT_PROVIDERS``), and the platform key of
    each that has one. A provider without a platform key runs only on users' own keys.
    """
    prices = settings.prices
    built: dict[str, Provider] = {}
    keys: dict[str, str] = {}
    for name in settings.providers:
        if name == "offline":
            built[name] = OfflineProvider(
                delay=settings.offline_delay_s, credits_per_image=prices.get("offline", 1),
                base_size=settings.offline_size,
            )
        elif name == "openai":
            from studiobot.providers.openai import OpenAIProvider

            built[name] = OpenAIProvider(
                base_url=settings.openai_base_url, credits_per_image=_model_prices(prices, name),
                timeout=settings.openai_timeout_s,
            )
        elif name == "replicate":
            from studiobot.providers.replicate import ReplicateProvider

            built[name] = ReplicateProvider(
                base_url=settings.replicate_base_url, models=settings.replicate_models,
                credits_per_image=prices.get(name, 2), timeout=settings.replicate_timeout_s,
            )
        elif name == "stability":
            from studiobot.providers.stability import StabilityProvider

            built[name] = StabilityProvider(
                base_url=settings.stability_base_url, credits_per_image=_model_prices(prices, name),
            )
        elif name == "kie":
            from studiobot.providers.kie import KieProvider

            built[name] = KieProvider(base_url=settings.kie_base_url, credits_per_image=_model_prices(prices, name))
        elif name == "huggingface":
            from studiobot.providers.huggingface import HuggingFaceProvider

            built[name] = HuggingFaceProvider(
                base_url=settings.huggingface_base_url, hub_url=settings.huggingface_hub_url,
                models=settings.huggingface_models, credits_per_image=prices.get(name, 1),
            )
    platform_keys = {
        "openai": settings.openai_api_key, "replicate": settings.replicate_api_token,
        "stability": settings.stability_api_key, "kie": settings.kie_api_key,
        "huggingface": settings.huggingface_token,
    }
    for name, secret in platform_keys.items():
        if name in built and secret is not None:
            keys[name] = secret.get_secret_value()
    return built, keys


def _model_prices(prices: Mapping[str, int], provider: str) -> dict[str, int] | None:
    """Per-model prices from ``{"<provider>:<model>": credits}`` entries, or None for the defaults."""
    found = {k.split(":", 1)[1]: v for k, v in prices.items() if k.startswith(provider + ":")}
    return found or None


async def open_vault(settings: Settings, db: Database) -> Vault | None:
    """Users' key vault under the configured master keys, or None when personal keys are disabled.

    On the embedded default (SQLite) a missing master key is generated into the data folder; on
    PostgreSQL it must be configured, since every process must share it.

    Raises:
        MasterKeyError: The master keys are malformed, or do not open the keys already stored.
    """
    master = masterkeys.load(
        settings.master_keys.get_secret_value() if settings.master_keys else None,
        settings.resolved_master_key_file,
        may_generate=db.engine.dialect.name == "sqlite",
    )
    if master is None:
        return None
    vault = Vault(db, KeyCipher(master))
    await vault.verify_master_keys()
    return vault


class DatabaseUnavailable(UserError):
    """The configured database cannot be opened: unreachable, refusing us, or no such file.

    The message names ``STUDIOBOT_DATABASE_URL`` and shows the URL with its password hidden.

    Attributes:
        exit_status: For the command line: 2 when the URL itself is malformed, else 1.
    """

    def __init__(self, message: str, *, exit_status: int = 1) -> None:
        super().__init__(message)
        self.exit_status = exit_status


async def open_database(settings: Settings) -> Database:
    """The configured database, its schema upgraded to the latest migration.

    Raises:
        DatabaseUnavailable: The URL is malformed or the first connection fails (refused,
            unreachable, wrong password, missing database or folder).
    """
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    url = settings.resolved_database_url
    try:
        db = Database(url, sqlite_synchronous=settings.sqlite_synchronous)
    except (SQLAlchemyError, ValueError) as error:
        raise DatabaseUnavailable(f"STUDIOBOT_DATABASE_URL is not a usable database URL ({type(error).__name__}); "
                                  "e.g. postgresql+asyncpg://user:password@host:5432/studiobot",
                                  exit_status=2) from None
    try:
        # One connection first, so a connection failure is told as such, never as a migration's.
        async with db.engine.connect():
            pass
    except (OSError, SQLAlchemyError) as error:
        await db.dispose()
        check = "its folder exists" if db.engine.dialect.name == "sqlite" else "the server is running"
        raise DatabaseUnavailable(
            f"cannot open the database {_redacted(url)}: {_reason(error, url)}. "
            f"Check STUDIOBOT_DATABASE_URL and that {check}."
        ) from None
    await upgrade(db)
    return db


def _redacted(url: str) -> str:
    """``url`` with its password shown as ``***``."""
    try:
        return make_url(url).render_as_string(hide_password=True)
    except SQLAlchemyError:
        return "(unparsable URL)"


def _reason(error: BaseException, url: str) -> str:
    """The driver's one-line reason for a failed connection, with the URL's password removed
    (drivers' messages should not carry it; this makes sure)."""
    cause = getattr(error, "orig", None) or error
    text = (getattr(cause, "strerror", None) or str(cause) or type(cause).__name__).splitlines()[0]
    try:
        password = make_url(url).password
    except SQLAlchemyError:
        password = None
    return text.replace(str(password), "***") if password else text


async def build_app(settings: Settings, outboxes: Mapping[str, Outbox], *, db: Database | None = None) -> App:
    """Build and wire every component.

    Args:
        settings: Configuration.
        outboxes: One Outbox per platform this process can deliver to.
        db: The database from :func:`open_database`, when outboxes needed it first; opened
            here otherwise.
    """
    db = db or await open_database(settings)
    store = LocalStore(settings.media_dir)
    providers, platform_keys = build_providers(settings)
    router = Router(providers, default=settings.default_provider, platform_keys=platform_keys,
                    fallbacks=settings.fallbacks)
    vault = await open_vault(settings, db)
    keys = Keyring(router, vault, KeyNotices(db, outboxes))
    # Pillow's own decompression-bomb limit, for every image opened in this process.
    Image.MAX_IMAGE_PIXELS = settings.max_image_pixels
    http = safe_client(allow=settings.download_allow_networks, timeout=settings.download_timeout_s)
    communities = Communities(db, settings)
    presenter = JobPresenter(db, store, outboxes, communities)
    notifier = Notifier(db, presenter, presenter.platforms, max_delivery_attempts=settings.delivery_attempts,
                        delivery_backoff_s=settings.delivery_backoff_s)
    finisher = Finisher(
        db, store, http, notifier,
        max_bytes=settings.download_max_bytes,
        download_timeout_s=settings.download_timeout_s,
        max_pixels=settings.max_image_pixels,
    )
    worker_id = f"{socket.gethostname()}:{os.getpid()}:{secrets.token_hex(3)}"
    worker = Worker(
        db, router, finisher, keys,
        worker_id=worker_id, concurrency=settings.worker_concurrency, lease_s=settings.lease_s,
        max_attempts=settings.max_attempts, poll_cap_s=settings.poll_backoff_max_s,
        retry_cap_s=settings.retry_backoff_max_s, webhook_base=settings.public_url,
    )
    poller = Poller(
        db, router, finisher, notifier, keys,
        worker_id=worker_id, lease_s=settings.lease_s, concurrency=settings.poll_concurrency,
        poll_cap_s=settings.poll_backoff_max_s,
    )
    minutes = max(1, round(settings.job_deadline_s / 60))
    recovery = Recovery(
        db, router, finisher, notifier, keys,
        max_attempts=settings.max_attempts,
        deadline_message=f"This took longer than {minutes} minute{'s' if minutes != 1 else ''}, "
        "so we stopped waiting.",
    )
    runner = SchedulerRunner(
        worker, poller, recovery,
        worker_interval_s=settings.worker_interval_s, poll_interval_s=settings.poll_interval_s,
    )
    billing = build_billing(settings, db, PaymentNotices(db, outboxes))
    if billing.selling:
        runner.add_interval(
            "reconcile", lambda: _reconcile(billing, settings.reconcile_window_s),
            seconds=settings.reconcile_interval_s, first_after_s=5.0,
        )
    if billing.receiving:
        # Events stored but never handled (the process stopped right after answering Stripe).
        runner.add_interval("stripe-inbox", billing.process_pending, seconds=30.0, first_after_s=30.0)
    users = UserDirectory(db, welcome_credits=settings.welcome_credits)
    deps = Deps(db=db, router=router, settings=settings, store=store, users=users, keys=keys,
                communities=communities, guards=Guards(db), job_queued=runner.nudge,
                billing=billing, vault=vault, outboxes=outboxes)
    dispatcher = Dispatcher(COMMANDS, deps)
    webhooks = WebhookReceiver(db, router, keys, finisher, notifier, owner=f"{worker_id}:webhook",
                               lease_s=settings.lease_s)
    return App(settings, db, store, router, http, dispatcher, runner, worker, poller, recovery, notifier,
               billing, webhooks)


def build_billing(settings: Settings, db: Database, notify: Notify | None = None) -> Billing:
    """The billing service: the catalogue, and Stripe when a secret key is configured."""
    gateway = None
    if settings.stripe_secret_key is not None:
        gateway = StripeGateway(settings.stripe_secret_key.get_secret_value(), api_base=settings.stripe_api_base)
    return Billing(
        db, gateway, Catalogue.from_settings(settings.credit_packs, settings.passes),
        webhook_secret=(settings.stripe_webhook_secret.get_secret_value()
                        if settings.stripe_webhook_secret else None),
        base_url=settings.base_url, checkout_expires_s=settings.checkout_expires_s,
        clawback_policy=settings.clawback_policy, notify=notify,
    )


async def _reconcile(billing: Billing, window_s: float) -> None:
    try:
        await billing.reconcile(window_s=window_s)
    except PaymentsUnavailable as error:
        log.warning("reconciliation skipped this time: %s", error.reason)


def needs_web_server(settings: Settings, app: App) -> bool:
    """Whether something calls in: Stripe, providers' webhooks (``STUDIOBOT_PUBLIC_URL`` set), or
    visitors of the web gallery (``STUDIOBOT_WEB_GALLERY``)."""
    return app.billing.selling or app.billing.receiving or settings.public_url is not None or settings.web_gallery


def web_server(settings: Settings, app: App) -> WebServer:
    """The web server with the routes every process serves: Stripe's when it is configured,
    providers' webhooks when there is a public URL to give them, and the public web gallery when
    it is switched on."""
    server = WebServer(
        settings.web_host, settings.web_port, header_timeout_s=settings.web_header_timeout_s,
        body_timeout_s=settings.web_body_timeout_s, max_connections=settings.web_max_connections,
    )
    if app.billing.selling or app.billing.receiving:
        add_stripe_routes(server, app.billing)
    if settings.public_url is not None:
        add_provider_webhook_routes(server, app.webhooks)
    if settings.web_gallery:
        add_gallery_routes(server, app.db, app.store)
    return server


async def run_shell(
    settings: Settings,
    *,
    user: str,
    json_mode: bool,
    wait_each: bool | None = None,
    stdin: TextIO = sys.stdin,
    stdout: TextIO = sys.stdout,
) -> None:
    """Run the scheduler and the shell adapter until input ends and every shell job is delivered."""
    from studiobot.bot.shell.adapter import PLATFORM, ShellAdapter, ShellConsole

    console = ShellConsole(stdout, json_mode=json_mode)
    app = await build_app(settings, {PLATFORM: console})
    me = UserRef(PLATFORM, user, user)
    # Other people's shells may share the database: this terminal prints only this user's jobs.
    app.notifier.deliver_only_to(await app.dispatcher.deps.users.user_id(me))
    web = web_server(settings, app) if app.billing.receiving or settings.public_url or settings.web_gallery else None
    try:
        if web is not None:
            await web.start()  # Stripe's and providers' webhooks reach the shell's jobs too
        app.runner.start()
        adapter = ShellAdapter(
            app.dispatcher, app.db, console, user=me, stdin=stdin,
            wait_each=wait_each,
        )
        await adapter.run()
    finally:
        if web is not None:
            await web.stop()
        await app.aclose()


def _stop_on_signals() -> asyncio.Event:
    """An event set by SIGINT or SIGTERM."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        with suppress(NotImplementedError):
            loop.add_signal_handler(sig, stop.set)
    return stop


async def _rest_outboxes(settings: Settings, db: Database, stack: AsyncExitStack) -> dict[str, Outbox]:
    """Outboxes that need no gateway: for processes that deliver results but serve no commands."""
    outboxes: dict[str, Outbox] = {}
    if settings.discord_token is not None:
        from studiobot.bot.discord.client import PLATFORM, use_api_base
        from studiobot.bot.discord.outbox import DiscordOutbox

        use_api_base(settings.discord_api_base)
        outbox = await DiscordOutbox.over_rest(settings.discord_token.get_secret_value())
        stack.push_async_callback(outbox.aclose)
        outboxes[PLATFORM] = outbox
    if settings.telegram_token is not None:
        from studiobot.bot.telegram.bot import open_outbox
        from studiobot.bot.telegram.translate import PLATFORM as TELEGRAM

        telegram, close = await open_outbox(
            settings.telegram_token.get_secret_value(), settings.telegram_api_base, db
        )
        stack.push_async_callback(close)
        outboxes[TELEGRAM] = telegram
    return outboxes


async def run_worker(settings: Settings, *, stop: asyncio.Event | None = None) -> None:
    """Run only the worker, poller and recovery until SIGINT or SIGTERM (scale-out processes).

    Results are delivered over REST to every platform with a token in the settings.
    """
    stop = stop or _stop_on_signals()
    async with AsyncExitStack() as stack:
        db = await open_database(settings)
        stack.push_async_callback(db.dispose)
        app = await build_app(settings, await _rest_outboxes(settings, db, stack), db=db)
        stack.push_async_callback(app.aclose)
        app.runner.start()
        log.info("worker %s running; Ctrl-C to stop", app.worker.worker_id)
        await stop.wait()


async def run_platforms(settings: Settings, *, stop: asyncio.Event | None = None) -> None:
    """Serve the chat platforms with a token in the settings, plus the scheduler and the web
    server (when something needs it), until stopped.

    Raises:
        discord.LoginFailure: The Discord token was refused.
        telegram.error.InvalidToken: The Telegram token was refused.
    """
    stop = stop or _stop_on_signals()
    db = await open_database(settings)
    try:
        await _serve(settings, db, stop)
    finally:
        await db.dispose()


async def _serve(settings: Settings, db: Database, stop: asyncio.Event) -> None:
    outboxes: dict[str, Outbox] = {}
    services: list[tuple[str, Callable[[], Awaitable[None]], Callable[[], Awaitable[None]]]] = []
    attach: list[Callable[[App], None]] = []
    routes: list[Callable[[WebServer], None]] = []
    if settings.discord_token is not None:
        from studiobot.bot.discord.client import PLATFORM, StudioBot, use_api_base
        from studiobot.bot.discord.interactions import InteractionRegistry
        from studiobot.bot.discord.outbox import DiscordOutbox

        use_api_base(settings.discord_api_base)
        interactions = InteractionRegistry()
        bot = StudioBot(interactions, shard_count=settings.discord_shard_count,
                        shard_ids=settings.discord_shard_ids)
        outboxes[PLATFORM] = DiscordOutbox(bot, interactions)
        attach.append(lambda app: bot.attach(app.dispatcher, app.db))
        token = settings.discord_token.get_secret_value()
        services.append(("Discord", lambda: bot.start(token), bot.close))
    if settings.telegram_token is not None:
        from studiobot.bot.telegram.bot import TelegramBot, build_application
        from studiobot.bot.telegram.translate import PLATFORM as TELEGRAM
        from studiobot.bot.telegram.webhook import derive_secret, webhook_handler

        telegram_token = settings.telegram_token.get_secret_value()
        secret = (settings.telegram_webhook_secret.get_secret_value() if settings.telegram_webhook_secret
                  else derive_secret(telegram_token))
        telegram = TelegramBot(
            build_application(telegram_token, settings.telegram_api_base), db,
            webhook_url=settings.telegram_webhook_url, webhook_secret=secret,
            admin_cache_s=settings.telegram_admin_cache_s,
        )
        outboxes[TELEGRAM] = telegram.outbox
        attach.append(lambda app: telegram.attach(app.dispatcher))
        services.append(("Telegram", telegram.run, telegram.close))
        if settings.telegram_webhook_url:
            path = urlsplit(settings.telegram_webhook_url).path or "/"
            routes.append(lambda web: web.add_route("POST", path, webhook_handler(telegram, secret)))
    app = await build_app(settings, outboxes, db=db)
    if routes or needs_web_server(settings, app):
        web = web_server(settings, app)
        for add in routes:
            add(web)
        services.insert(0, ("web server", web.serve, web.close))
    try:
        for step in attach:
            step(app)
        app.runner.start()
        tasks = {asyncio.create_task(start(), name=name): (name, close) for name, start, close in services}
        waiter = asyncio.create_task(stop.wait())
        try:
            done, _ = await asyncio.wait({waiter, *tasks}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            waiter.cancel()
            for _, close in tasks.values():
                await close()
            if tasks:
                await asyncio.wait(tasks, timeout=10)
        for task in done - {waiter}:
            task.result()  # a platform that stopped by itself: raise its error
            log.error("%s stopped unexpectedly", tasks[task][0])
    finally:
        await app.aclose()


async def run(settings: Settings, *, user: str, json_mode: bool, wait_each: bool | None = None) -> None:
    """``studiobot run``: the chat platforms configured, or the shell when there is none."""
    if settings.discord_token is not None or settings.telegram_token is not None:
        await run_platforms(settings)
        return
    await run_shell(settings, user=user, json_mode=json_mode, wait_each=wait_each)
