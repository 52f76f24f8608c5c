"""The dispatcher: finds the command, screens its text, checks where and who, converts arguments,
refuses banned users, runs the handler.

Screening happens here once for every platform and command, before anything is stored or charged:
text that holds what looks like an API key (``providers.keyshapes``), a NUL character (PostgreSQL
text cannot hold one) or a lone UTF-16 surrogate (no UTF-8 encoding exists) is refused, and the
refused text is never logged or echoed.

Every refusal is a :class:`~studiobot.errors.UserError` rendered as an ephemeral reply; nothing is
charged before a handler's own transaction commits. Any other exception is a bug: it is logged with
a short reference the user can quote, and they get an apology with that reference.
"""

from __future__ import annotations

import logging
import re
import secrets
from collections.abc import Mapping, Sequence
from dataclasses import replace
from typing import Any

from studiobot.commands.contract import ChatRef, CommandSpec, Invocation, Reply, UserRef
from studiobot.commands.deps import Deps
from studiobot.commands.parsing import convert_args, parse_args, split_command
from studiobot.errors import BadInput, NotAllowed, UserError
from studiobot.providers.keyshapes import looks_like_key

log = logging.getLogger(__name__)

#: Commands a banned user may still run: what the bot is, and their own balance.
_UNGUARDED = frozenset({"help", "credits"})
#: A lone UTF-16 surrogate: JSON (Telegram, Discord) may carry one (``"\\ud800"``), but it is no
#: character, so it has no UTF-8 form for the database, the logs or an image's caption.
_SURROGATE = re.compile(r"[\ud800-\udfff]")
#: Dashes opening a word: a key typed as an option (``--sk-proj-…``) is still a key, though the key
#: shapes want no dash before the prefix (so that ``x-sk-…`` inside a word is none).
_OPENING_DASHES = re.compile(r"(?<!\S)-+")


class Dispatcher:
    """Runs commands from the one command table.

    Args:
        commands: The command table (``studiobot.commands.COMMANDS``).
        deps: Handler dependencies.
    """

    def __init__(self, commands: Sequence[CommandSpec], deps: Deps) -> None:
        self.commands: dict[str, CommandSpec] = {spec.name: spec for spec in commands}
        self.deps = deps
        self._operators = frozenset(deps.settings.operators)

    async def dispatch_text(
        self, user: UserRef, chat: ChatRef, text: str, invocation_id: str, *, is_admin: bool = False
    ) -> tuple[str, Reply]:
        """Run a command line such as ``/imagine a fox --ar 16:9`` (or a button's action).

        Returns:
            (command name or "" when unparsable, reply).
        """
        try:
            name, rest = split_command(text)
            spec = self._spec(name)
            raw = parse_args(spec, rest)
        except UserError as error:
            # Unparsable text is screened whole: its refusal might quote part of it back.
            try:
                screen_text("Your message", text)
            except UserError as screened:
                error = screened
            return "", _refusal(error)
        return name, await self.dispatch(user, chat, name, raw, invocation_id, is_admin=is_admin)

    async def dispatch(
        self,
        user: UserRef,
        chat: ChatRef,
        name: str,
        raw_args: Mapping[str, Any],
        invocation_id: str,
        *,
        is_admin: bool = False,
    ) -> Reply:
        """Run command ``name`` with raw (text or typed) arguments; never raises for user errors."""
        try:
            spec, inv = await self._invocation(user, chat, name, raw_args, invocation_id, is_admin)
            return await spec.handler(inv, self.deps)
        except UserError as error:
            return _refusal(error)
        except Exception:
            return _internal_error(name)

    async def admit(
        self, user: UserRef, chat: ChatRef, name: str, raw_args: Mapping[str, Any], *, is_admin: bool = False
    ) -> Reply | None:
        """Check a command before its secret parameters are collected.

        Runs everything :meth:`dispatch` runs before the handler (screening, where and who, bans,
        conversion, each parameter's ``check``) on the arguments given so far. Adapters call it
        before asking for a secret, so a command that will be refused (``/keys add nosuchprovider``)
        never takes the next line or message as the key.

        Returns:
            The refusal to show, or None when the command may go on to collect its secrets.
        """
        try:
            await self._invocation(user, chat, name, raw_args, "", is_admin, secrets_pending=True)
        except UserError as error:
            return _refusal(error)
        except Exception:
            return _internal_error(name)
        return None

    async def _invocation(
        self, user: UserRef, chat: ChatRef, name: str, raw_args: Mapping[str, Any], invocation_id: str,
        is_admin: bool, *, secrets_pending: bool = False,
    ) -> tuple[CommandSpec, Invocation]:
        """The checked invocation of ``name``; with ``secrets_pending``, secret parameters not yet
        given are left out of the checks (they are collected after ``admit``)."""
        spec = self._spec(name)
        screen_args(spec, raw_args)
        self._check_place(spec, user, chat, is_admin)
        operator = self.is_operator(user)
        if spec.name not in _UNGUARDED and not (operator or is_admin):
            community = await self.deps.communities.of_chat(chat)
            await self.deps.guards.check_user(await self.deps.users.user_id(user),
                                              community.id if community else None)
        checked = spec
        if secrets_pending:
            later = {p.name for p in spec.secrets_for(raw_args)} - set(raw_args)
            checked = replace(spec, params=tuple(p for p in spec.params if p.name not in later))
        args = convert_args(checked, raw_args)
        for param in checked.params:
            if param.check is not None:
                param.check(args[param.name], args, self.deps)
        return spec, Invocation(
            user=user,
            chat=chat,
            command=name,
            args=args,
            invocation_id=invocation_id,
            is_admin=is_admin,
            is_operator=operator,
        )

    def is_operator(self, user: UserRef) -> bool:
        """Whether ``user`` is in the operators list of the settings."""
        return f"{user.platform}:{user.platform_user_id}" in self._operators

    def _spec(self, name: str) -> CommandSpec:
        spec = self.commands.get(name.lower())
        if spec is None:
            raise BadInput(f"Unknown command /{name}. Try /help.")
        return spec

    def _check_place(self, spec: CommandSpec, user: UserRef, chat: ChatRef, is_admin: bool) -> None:
        if spec.where == "dm" and chat.kind != "dm":
            raise NotAllowed(f"/{spec.name} works only in a private chat with me.")
        if spec.where == "group" and chat.kind == "dm":
            raise NotAllowed(f"/{spec.name} works only in a server or group.")
        operator = self.is_operator(user)
        if spec.who == "operator" and not operator:
            raise NotAllowed(f"/{spec.name} is for the bot's operators.")
        if spec.who == "admin" and not (is_admin or operator):
            if chat.kind == "dm":
                raise NotAllowed(f"/{spec.name} is for the admins of a server or group (run it there) "
                                 "and for the bot's operators.")
            raise NotAllowed(f"/{spec.name} is for this community's admins.")


def screen_args(spec: CommandSpec, raw: Mapping[str, Any]) -> None:
    """Refuse a command whose text arguments cannot or must not be stored.

    Secret parameters (a key given to ``/keys add``) are exempt from the key-shape check only.

    Args:
        spec: The command.
        raw: Its raw arguments by parameter name (text, or typed values, which pass).

    Raises:
        BadInput: See :func:`screen_text`.
    """
    secret = {p.name for p in spec.params if p.secret}
    for name, value in raw.items():
        if isinstance(value, str):
            screen_text(name, value, secret=name in secret)


def screen_text(what: str, text: str, *, secret: bool = False) -> None:
    """Refuse text holding a NUL, a lone surrogate, or (unless ``secret``) an API key's shape.

    The message names ``what`` (a parameter, or "Your message") but never quotes the text.

    Raises:
        BadInput: PostgreSQL rejects NUL (0x00) in text values; UTF-8 has no form for a lone
            surrogate (U+D800-U+DFFF); a key typed as a prompt would be stored in plaintext and
            drawn on the offline provider's image.
    """
    if "\x00" in text:
        raise BadInput(f"{what} contains a NUL character (\\x00), which cannot be stored. "
                       "Remove it and send the command again.")
    if _SURROGATE.search(text):
        raise BadInput(f"{what} contains a broken character (a lone UTF-16 surrogate, often left "
                       "by a bad copy and paste). Retype that part and send the command again.")
    kind = None if secret else looks_like_key(text) or looks_like_key(_OPENING_DASHES.sub(" ", text))
    if kind is not None:
        raise BadInput(f"That looks like {kind}; it was not saved. To add your own key use "
                       "/keys add <provider> — privately. If anyone else could see it, revoke it "
                       "with its provider.")


def _internal_error(name: str) -> Reply:
    """A bug: logged with a reference the user can quote (never their arguments), and an apology."""
    ref = secrets.token_hex(3)
    log.exception("command /%s failed (ref %s)", name, ref)
    return Reply(
        text=f"Something went wrong on our side (ref {ref}). Please try again; "
        "/credits shows anything that was charged, and failed jobs are refunded.",
        ephemeral=True,
        data={"error": "internal", "ref": ref},
    )


def _refusal(error: UserError) -> Reply:
    return Reply(
        text=error.message, ephemeral=True, data={"error": type(error).__name__, "message": error.message}
    )
