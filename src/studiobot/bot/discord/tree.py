"""Slash commands generated from the one command table, and syncing them only when they change.

Each :class:`~studiobot.commands.contract.CommandSpec` becomes an ``app_commands.Command`` whose
options carry the parameter's type, range, choices and description; parameters with a ``suggest``
function get autocomplete instead of fixed choices; ``secret`` parameters are no options at all
(options show in the channel): the bot asks for them in a modal. ``who="admin"`` commands default to members
with Manage Server (``default_member_permissions``); ``where`` becomes the command's contexts
(guild, bot DM). Discord limits daily command creates, so :func:`command_set_hash` lets the bot
sync only when the generated set differs from the one it last synced.
"""

from __future__ import annotations

import hashlib
import inspect
import json
from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import Any

import discord
from discord import app_commands

from studiobot.commands.contract import CommandSpec, Param

#: Runs a slash command: (interaction, spec, typed arguments given).
CommandRunner = Callable[[discord.Interaction, CommandSpec, dict[str, Any]], Awaitable[None]]
#: Suggests values: (spec, param, arguments typed so far, current text) -> values.
Suggester = Callable[[CommandSpec, Param, Mapping[str, Any], str], Sequence[str]]

_DESCRIPTION_MAX = 100  # Discord: command and option descriptions are 1-100 characters
_MAX_CHOICES = 25  # Discord: at most 25 choices or autocomplete results


def build_tree(
    tree: app_commands.CommandTree[Any],
    commands: Sequence[CommandSpec],
    run: CommandRunner,
    suggest: Suggester,
) -> None:
    """Add one slash command per spec to ``tree``.

    Args:
        tree: The client's command tree (emptied of global commands first).
        commands: The command table.
        run: Called when a command is used.
        suggest: Called for autocomplete of parameters that have a ``suggest`` function.
    """
    tree.clear_commands(guild=None)
    for spec in commands:
        tree.add_command(_command(spec, run, suggest))


def command_set_hash(tree: app_commands.CommandTree[Any]) -> str:
    """A SHA-256 of the commands as they would be sent to Discord (stable across runs)."""
    payload = sorted((c.to_dict(tree) for c in tree.get_commands()), key=lambda c: c["name"])
    return hashlib.sha256(json.dumps(payload, sort_keys=True, default=str).encode()).hexdigest()


def _command(spec: CommandSpec, run: CommandRunner, suggest: Suggester) -> app_commands.Command[Any, ..., None]:
    async def callback(interaction: discord.Interaction, **arguments: Any) -> None:
        await run(interaction, spec, {k: v for k, v in arguments.items() if v is not None})

    callback.__signature__ = inspect.Signature(  # type: ignore[attr-defined]
        [inspect.Parameter("interaction", inspect.Parameter.POSITIONAL_OR_KEYWORD,
                           annotation=discord.Interaction)]
        + [
            inspect.Parameter(
                p.name, inspect.Parameter.KEYWORD_ONLY, annotation=_annotation(p),
                default=inspect.Parameter.empty if p.required else None,
            )
            for p in _ordered(spec.params) if not p.secret
        ]
    )
    callback.__discord_app_commands_param_description__ = {  # type: ignore[attr-defined]
        p.name: _clip(p.description or p.name) for p in spec.params if not p.secret
    }
    fixed = {
        p.name: [app_commands.Choice(name=c, value=c) for c in p.choices]
        for p in spec.params if p.choices and p.suggest is None and len(p.choices) <= _MAX_CHOICES
    }
    if fixed:
        callback.__discord_app_commands_param_choices__ = fixed  # type: ignore[attr-defined]
    if spec.who != "anyone":
        # Operators are usually the server's owners; Discord hides the command from others.
        callback.__discord_app_commands_default_permissions__ = discord.Permissions(manage_guild=True)  # type: ignore[attr-defined]
    command = app_commands.Command(
        name=spec.name,
        description=_clip(spec.summary),
        callback=callback,
        allowed_contexts=app_commands.AppCommandContext(
            guild=spec.where != "dm", dm_channel=spec.where != "group", private_channel=False
        ),
        allowed_installs=app_commands.AppInstallationType(guild=True, user=False),
    )
    for param in spec.params:
        if param.suggest is not None:
            command.autocomplete(param.name)(_autocomplete(spec, param, suggest))
    return command


def _autocomplete(spec: CommandSpec, param: Param, suggest: Suggester) -> Callable[..., Awaitable[list[Any]]]:
    async def complete(interaction: discord.Interaction, current: str) -> list[app_commands.Choice[str]]:
        typed = {k: v for k, v in interaction.namespace.__dict__.items() if v is not None}
        values = suggest(spec, param, typed, str(current or ""))
        return [app_commands.Choice(name=v, value=v) for v in list(values)[:_MAX_CHOICES]]

    return complete


def _annotation(param: Param) -> Any:
    if param.kind is int:
        if param.min_value is not None or param.max_value is not None:
            return app_commands.Range[int, param.min_value, param.max_value]
        return int
    if param.min_value is not None or param.max_value is not None:
        return app_commands.Range[str, param.min_value, param.max_value]
    return str


def _ordered(params: Sequence[Param]) -> list[Param]:
    # Discord requires required options before optional ones.
    return sorted(params, key=lambda p: not p.required)


def _clip(text: str) -> str:
    return text if len(text) <= _DESCRIPTION_MAX else text[: _DESCRIPTION_MAX - 1] + "…"
