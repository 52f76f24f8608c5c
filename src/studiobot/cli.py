"""Command line: ``studiobot run | shell | worker | db upgrade | admin grant|ledger|stats | keys``.

Known failures at start (malformed settings, a refused platform token, an unreachable database, a
chart path in a missing folder) print one line ``studiobot: <what to fix>`` to stderr, never a
traceback or a secret, and exit 1 (run time) or 2 (configuration or command line).
"""

from __future__ import annotations

import argparse
import asyncio
import getpass
import json
import logging
import re
import sys
from collections.abc import Coroutine
from pathlib import Path
from typing import Any, TypeVar

from pydantic import AliasChoices, ValidationError
from pydantic_settings import SettingsError

from studiobot import __version__
from studiobot.config import Settings
from studiobot.errors import UserError

T = TypeVar("T")

#: Exit statuses: 1 for a failure at run time, 2 for something to fix in the configuration or
#: the command line (as argparse does).
FAILED, MISCONFIGURED = 1, 2

#: Platform libraries' start-up errors, by qualified class name (this module must not import
#: discord or telegram: tests/unit/test_architecture.py), and what the operator should fix.
#: Discord: a refused token is HTTP 401 on login (LoginFailure), or gateway close code 4004.
_DISCORD_TOKEN = ("Discord refused the bot token: set STUDIOBOT_DISCORD_TOKEN (or DISCORD_TOKEN) to "
                  "the token on the Bot page of the Discord Developer Portal.")
_REFUSED_TOKEN = {
    "discord.errors.LoginFailure": _DISCORD_TOKEN,
    "telegram.error.InvalidToken": "Telegram refused the bot token: set STUDIOBOT_TELEGRAM_TOKEN (or "
                                   "TELEGRAM_TOKEN) to the token @BotFather gave (/mybots, API Token).",
}
_GATEWAY_CLOSE = {
    4004: _DISCORD_TOKEN,  # Authentication failed
    4010: "Discord refused a shard id: check STUDIOBOT_DISCORD_SHARD_IDS and STUDIOBOT_DISCORD_SHARD_COUNT.",
    4011: "Discord requires sharding for this bot: set STUDIOBOT_DISCORD_SHARD_COUNT.",
}


class ConfigurationError(UserError):
    """Something the operator must fix in the settings or the command line (exit status 2)."""

    exit_status = MISCONFIGURED


def env_names(field: str) -> str:
    """The environment variable(s) that set a Settings field, e.g. ``STUDIOBOT_DISCORD_TOKEN (or
    DISCORD_TOKEN)``."""
    info = Settings.model_fields.get(field)
    alias = info.validation_alias if info is not None else None
    names = [c for c in alias.choices if isinstance(c, str)] if isinstance(alias, AliasChoices) else []
    names = names or [f"STUDIOBOT_{field.upper()}"]
    return names[0] + (f" (or {', '.join(names[1:])})" if names[1:] else "")


def settings_problem(error: ValidationError | SettingsError) -> str:
    """One line naming the variable(s) to fix. Values are never shown: they may be secrets.

    pydantic-settings raises ``SettingsError`` when a complex field (a list or mapping) is not
    JSON, and ``ValidationError`` when a value has the wrong shape.
    """
    if isinstance(error, SettingsError):
        match = re.search(r'field "(\w+)" from source "(\w+)"', str(error))
        if match is None:
            return "the settings could not be read; check .env and the STUDIOBOT_ variables."
        field, source = match.groups()
        where = " (in .env)" if source.startswith("DotEnv") else ""
        cause = error.__cause__
        why = f"is not valid JSON ({cause})" if isinstance(cause, json.JSONDecodeError) else "could not be read"
        info = Settings.model_fields.get(field)
        expected = f"; expected: {info.description}" if info is not None and info.description else ""
        return f"{env_names(field)}{where} {why}{expected}"
    parts = []
    for problem in error.errors(include_input=False, include_url=False):
        loc = [str(p) for p in problem["loc"]]
        message = problem["msg"].removeprefix("Value error, ")
        if loc:
            inner = f" ({'.'.join(loc[1:])})" if loc[1:] else ""
            parts.append(f"{env_names(loc[0])}{inner}: {message}")
        else:
            parts.append(message)
    return "; ".join(parts)


def start_problem(error: BaseException) -> tuple[str, int] | None:
    """The line to print and the exit status for a known start-up failure, else None.

    Raised deep inside a platform library (a refused token), these carry no secret here: the
    library's own message is never printed (python-telegram-bot's InvalidToken quotes the token).
    """
    names = {f"{cls.__module__}.{cls.__qualname__}" for cls in type(error).__mro__}
    for name, message in _REFUSED_TOKEN.items():
        if name in names:
            return message, MISCONFIGURED
    code = getattr(error, "code", None)
    if "discord.errors.ConnectionClosed" in names and code in _GATEWAY_CLOSE:
        return _GATEWAY_CLOSE[code], MISCONFIGURED
    return None


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="studiobot", description="An AI image studio that lives in chat.")
    parser.add_argument("--version", action="version", version=f"studiobot {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)
    for name, text in (
        ("run", "Run everything configured (chat adapters or the shell, plus the job scheduler)."),
        ("shell", "Run the terminal adapter and the job scheduler."),
    ):
        p = sub.add_parser(name, help=text, description=text)
        p.add_argument("--user", default=None, help="Who is typing (default: your login name).")
        p.add_argument("--json", action="store_true", help="Print one JSON object per message.")
        p.add_argument(
            "--no-wait", dest="wait_each", action="store_false", default=None,
            help="With piped input, queue every line at once instead of one job after another.",
        )
    sub.add_parser("worker", help="Run only the job worker and poller (for scale-out).")
    db = sub.add_parser("db", help="Database maintenance.")
    db_sub = db.add_subparsers(dest="db_command", required=True)
    db_sub.add_parser("upgrade", help="Apply every pending migration.")
    keys = sub.add_parser("keys", help="Personal API keys: master key rotation.")
    keys_sub = keys.add_subparsers(dest="keys_command", required=True)
    rotate = keys_sub.add_parser(
        "rotate", help="Re-encrypt every stored key under the newest master key.",
        description="Re-encrypt every stored key under the newest master key. With --new-master-key, "
        "first put a fresh key in front of the key file's keys. Old keys can be removed afterwards.",
    )
    rotate.add_argument("--new-master-key", action="store_true",
                        help="Generate a new master key into the key file first (key file only).")
    keys_sub.add_parser("new-master-key", help="Print a fresh master key (to put first in the key list).")
    admin = sub.add_parser("admin", help="Operator tools: credits, ledgers and usage.")
    admin_sub = admin.add_subparsers(dest="admin_command", required=True)
    grant = admin_sub.add_parser(
        "grant", help="Add credits to a user (negative to remove), with a reason kept in the ledger."
    )
    grant.add_argument("user", help="platform:id, e.g. telegram:1234 or shell:alice, or #<user number>.")
    grant.add_argument("credits", type=int, help="Credits to add; negative removes.")
    grant.add_argument("--reason", required=True, help="Why (kept with the entry).")
    grant.add_argument("--by", default=None, help="Who is doing it (default: cli:<your login name>).")
    ledger = admin_sub.add_parser("ledger", help="A user's balance, passes, orders and ledger entries.")
    ledger.add_argument("user", help="platform:id or #<user number>.")
    ledger.add_argument("--limit", type=int, default=20, help="Entries to show (default 20).")
    stats = admin_sub.add_parser("stats", help="Usage of the whole bot: the figures, and a chart image.")
    stats.add_argument("--days", type=int, default=30, choices=range(1, 367), metavar="1-366",
                       help="Days to cover, ending today (UTC; default 30).")
    stats.add_argument("--chart", type=Path, default=Path("studiobot-usage.png"),
                       help="Where to write the chart (PNG; default ./studiobot-usage.png).")
    return parser


def run_async(main: Coroutine[Any, Any, T]) -> T:
    """Run ``main`` to completion on uvloop where it is installed (the faster loop asyncpg is
    built for: about +12% accepted jobs per second on PostgreSQL in bench/accept.py), else on
    asyncio's own loop."""
    try:
        import uvloop
    except ImportError:
        return asyncio.run(main)
    return uvloop.run(main)


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``studiobot`` console script.

    Returns:
        The exit status: 0, 1 for a failure at run time (a refusal, an unreachable database),
        2 for configuration or command-line errors, 130 on Ctrl-C. Unknown errors propagate
        (a traceback: a bug).
    """
    args = _parser().parse_args(argv)
    try:
        settings = Settings()
    except (ValidationError, SettingsError) as error:
        print(f"studiobot: configuration error: {settings_problem(error)}", file=sys.stderr)
        return MISCONFIGURED
    logging.basicConfig(
        level=settings.log_level.upper(),
        stream=sys.stderr,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    if logging.getLogger().level > logging.DEBUG:
        logging.getLogger("alembic").setLevel(logging.WARNING)  # one line per migration step otherwise
    from studiobot import app

    try:
        if args.command in ("run", "shell"):
            user = args.user or _login_name()
            runner = app.run if args.command == "run" else app.run_shell
            run_async(runner(settings, user=user, json_mode=args.json, wait_each=args.wait_each))
        elif args.command == "worker":
            run_async(app.run_worker(settings))
        elif args.command == "db":
            run_async(_upgrade(settings))
            print("database is up to date", file=sys.stderr)
        elif args.command == "admin":
            print(run_async(_admin(settings, args)))
        elif args.command == "keys":
            print(run_async(_keys(settings, args)))
    except KeyboardInterrupt:
        return 130
    except UserError as error:
        print(f"studiobot: {error.message}", file=sys.stderr)
        status: int = getattr(error, "exit_status", FAILED)
        return status
    except Exception as error:
        known = start_problem(error)
        if known is None:
            raise
        print(f"studiobot: {known[0]}", file=sys.stderr)
        return known[1]
    return 0


async def _admin(settings: Settings, args: argparse.Namespace) -> str:
    from studiobot.app import open_database
    from studiobot.commands import admin

    if args.admin_command == "stats" and not args.chart.parent.is_dir():
        # Checked before the report is made, so a typo costs nothing.
        raise ConfigurationError(f"--chart {args.chart}: the folder {args.chart.parent} does not exist; "
                                 "create it or choose another path.")
    db = await open_database(settings)
    try:
        if args.admin_command == "grant":
            actor = args.by or f"cli:{_login_name()}"
            return await admin.grant(db, args.user, args.credits, args.reason, actor=actor, platform="shell")
        if args.admin_command == "stats":
            from studiobot.commands.stats import usage_report

            report = await usage_report(db, None, days=args.days, title="studiobot")
            try:
                args.chart.write_bytes(report.chart)
            except OSError as error:
                raise ConfigurationError(f"--chart {args.chart}: cannot write the chart there "
                                         f"({error.strerror or type(error).__name__}).") from None
            return f"{report.text}\nchart: {args.chart}"
        return await admin.ledger_text(db, args.user, platform="shell", limit=args.limit)
    finally:
        await db.dispose()


async def _keys(settings: Settings, args: argparse.Namespace) -> str:
    from studiobot.vault import cipher, masterkeys

    if args.keys_command == "new-master-key":
        return cipher.new_master_key().decode("ascii")
    from studiobot.app import open_database, open_vault

    db = await open_database(settings)
    try:
        if args.new_master_key:
            if settings.master_keys is not None:
                raise UserError("--new-master-key writes the key file, but STUDIOBOT_MASTER_KEYS is set: "
                                "put a new key (studiobot keys new-master-key) first in it instead.")
            path = settings.resolved_master_key_file
            current = masterkeys.load(None, path, may_generate=False) or []
            masterkeys.write(path, [cipher.new_master_key(), *current])
        vault = await open_vault(settings, db)
        if vault is None:
            raise UserError("Personal API keys are disabled: no master key is configured.")
        rotated = await vault.rotate()
        note = ("" if vault.master_key_count == 1 else
                " Every key now opens with the newest master key; the older ones can be removed.")
        return f"re-encrypted {rotated} stored key{'s' if rotated != 1 else ''} under the newest master key.{note}"
    finally:
        await db.dispose()


async def _upgrade(settings: Settings) -> None:
    from studiobot.app import open_database

    db = await open_database(settings)  # upgrades the schema
    await db.dispose()


def _login_name() -> str:
    try:
        return getpass.getuser()
    except Exception:  # no login name in some containers
        return "me"
