"""Slash commands generated from command specs: types, ranges, choices, permissions, contexts."""

from __future__ import annotations

from typing import Any

import discord
from discord import app_commands

from studiobot.bot.discord.tree import build_tree, command_set_hash
from studiobot.commands import COMMANDS
from studiobot.commands.contract import CommandSpec, Invocation, Param, Reply


async def _noop(inv: Invocation, deps: Any) -> Reply:
    return Reply(text="")


async def _run(interaction: discord.Interaction, spec: CommandSpec, args: dict[str, Any]) -> None:
    return None


def _tree(commands: tuple[CommandSpec, ...]) -> app_commands.CommandTree[Any]:
    tree = app_commands.CommandTree(discord.Client(intents=discord.Intents.none()))
    build_tree(tree, commands, _run, lambda *args: [])
    return tree


def _payload(tree: app_commands.CommandTree[Any], name: str) -> dict[str, Any]:
    return next(c.to_dict(tree) for c in tree.get_commands() if c.name == name)


def test_admin_commands_default_to_manage_server_and_where_maps_to_contexts() -> None:
    specs = (
        CommandSpec("ban", "Ban someone.", _noop, (Param("who", str, "Whom", required=True),),
                    where="group", who="admin"),
        CommandSpec("mykeys", "Your keys.", _noop, where="dm"),
    )
    tree = _tree(specs)
    ban = _payload(tree, "ban")
    assert ban["default_member_permissions"] == discord.Permissions(manage_guild=True).value
    assert ban["contexts"] == [0]
    assert _payload(tree, "mykeys")["contexts"] == [1]
    assert _payload(tree, "mykeys")["default_member_permissions"] is None


def test_fixed_choices_ranges_and_required_options_come_first() -> None:
    spec = CommandSpec("pick", "Pick.", _noop, (
        Param("size", str, "Size", choices=("s", "m", "l")),
        Param("n", int, "How many", min_value=1, max_value=9),
        Param("name", str, "Name", required=True),
    ))
    options = _payload(_tree((spec,)), "pick")["options"]
    assert [o["name"] for o in options] == ["name", "size", "n"]
    assert [c["value"] for c in options[1]["choices"]] == ["s", "m", "l"]
    assert (options[2]["type"], options[2]["min_value"], options[2]["max_value"]) == (4, 1, 9)


def test_the_hash_is_stable_and_changes_with_the_command_set() -> None:
    assert command_set_hash(_tree(COMMANDS)) == command_set_hash(_tree(COMMANDS))
    assert command_set_hash(_tree(COMMANDS)) != command_set_hash(_tree(COMMANDS[:-1]))
