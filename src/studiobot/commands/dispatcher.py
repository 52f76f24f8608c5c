"""The dispatcher: finds the command, checks where and who, converts arguments, refuses banned
users, runs the handler.

Every refusal is a :class:`~studiobot.errors.UserError` rendered as an ephemeral reply; nothing is
charged before a handler's own transaction commits. Any other exception is a bug: it is logged with
a short reference the user can quote, and they get an apology with that reference.
"""

from __future__ import annotations

import logging
import secrets
from collections.abc import Mapping, Sequence
from typing import Any

from studiobot.commands.contract import ChatRef, CommandSpec, Invocation, Reply, UserRef
from studiobot.commands.deps import Deps
from studiobot.commands.parsing import convert_args, parse_args, split_command
from studiobot.errors import BadInput, NotAllowed, UserError

log = logging.getLogger(__name__)

#: Commands a banned user may still run: what the bot is, and their own balance.
_UNGUARDED = frozenset({"help", "credits"})


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
            spec = self._spec(name)
            self._check_place(spec, user, chat, is_admin)
            operator = self.is_operator(user)
            if spec.name not in _UNGUARDED and not (operator or is_admin):
                community = await self.deps.communities.of_chat(chat)
                await self.deps.guards.check_user(await self.deps.users.user_id(user),
                                                  community.id if community else None)
            inv = Invocation(
                user=user,
                chat=chat,
                command=name,
                args=convert_args(spec, raw_args),
                invocation_id=invocation_id,
                is_admin=is_admin,
                is_operator=operator,
            )
            return await spec.handler(inv, self.deps)
        except UserError as error:
            return _refusal(error)
        except Exception:
            ref = secrets.token_hex(3)
            log.exception("command /%s failed (ref %s)", name, ref)
            return Reply(
                text=f"Something went wrong on our side (ref {ref}). Please try again; "
                "/credits shows anything that was charged, and failed jobs are refunded.",
                ephemeral=True,
                data={"error": "internal", "ref": ref},
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


def _refusal(error: UserError) -> Reply:
    return Reply(
        text=error.message, ephemeral=True, data={"error": type(error).__name__, "message": error.message}
    )
