"""The command menus Telegram shows, generated from the core's command table.

Three scopes (Bot API ``setMyCommands``; a more specific scope wins): private chats, groups,
and group administrators (who also see admin commands). Operators' commands are typed, not listed.
Names are 1-32 characters of a-z, 0-9 and _; descriptions 1-256 characters.
"""

from __future__ import annotations

import hashlib
import json
import logging
import re
from collections.abc import Sequence

from telegram import (
    Bot,
    BotCommand,
    BotCommandScope,
    BotCommandScopeAllChatAdministrators,
    BotCommandScopeAllGroupChats,
    BotCommandScopeAllPrivateChats,
)

from studiobot.commands.contract import CommandSpec
from studiobot.db import platform_state
from studiobot.db.engine import Database

log = logging.getLogger(__name__)

_NAME = re.compile(r"[a-z0-9_]{1,32}")


def menus(specs: Sequence[CommandSpec]) -> list[tuple[BotCommandScope, list[BotCommand]]]:
    """The command list of each scope, in table order."""

    def listed(spec: CommandSpec, *, private: bool, admin: bool) -> bool:
        if not _NAME.fullmatch(spec.name) or spec.who == "operator":
            return False
        if spec.who == "admin" and not admin:
            return False
        return spec.where != ("group" if private else "dm")

    def commands(private: bool, admin: bool) -> list[BotCommand]:
        return [
            BotCommand(spec.name, spec.summary[:256])
            for spec in specs
            if listed(spec, private=private, admin=admin)
        ]

    return [
        (BotCommandScopeAllPrivateChats(), commands(private=True, admin=False)),
        (BotCommandScopeAllGroupChats(), commands(private=False, admin=False)),
        (BotCommandScopeAllChatAdministrators(), commands(private=False, admin=True)),
    ]


def menus_hash(specs: Sequence[CommandSpec]) -> str:
    """SHA-256 of every scope's list: equal hashes mean Telegram already shows these menus."""
    data = [
        [scope.type, [[c.command, c.description] for c in commands]] for scope, commands in menus(specs)
    ]
    return hashlib.sha256(json.dumps(data, sort_keys=True).encode()).hexdigest()


async def sync_menus(bot: Bot, db: Database, specs: Sequence[CommandSpec], *, force: bool = False) -> bool:
    """Upload the menus unless the ones last uploaded for this bot are the same.

    Returns:
        True when they were uploaded.
    """
    digest = menus_hash(specs)
    key = f"telegram.commands.{bot.id}"
    if not force and await platform_state.get(db, key) == digest:
        log.info("Telegram command menus unchanged; not uploading")
        return False
    scopes = menus(specs)
    for scope, commands in scopes:
        await bot.set_my_commands(commands, scope=scope)
    await platform_state.put(db, key, digest)
    log.info("uploaded Telegram command menus (%d scopes)", len(scopes))
    return True
