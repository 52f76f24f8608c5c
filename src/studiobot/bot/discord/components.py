"""Result buttons and pick-one menus that keep working after a restart.

Every button holds its action, a core command line such as ``upscale 12 3``, in its ``custom_id``
(``sb:upscale 12 3``; at most 100 characters, Discord's limit). A menu (a string select) has the
fixed ``custom_id`` ``sbm:menu`` and holds each option's action in the option's ``value``
(``show 12 3``; at most 100 characters). discord.py routes a click or a pick on any message,
however old, to :class:`ActionButton` or :class:`ActionMenu` by matching that id, so no view needs
to be kept in memory or stored (discord.py ``DynamicItem``, which wraps any item, selects
included).
"""

from __future__ import annotations

import re
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, Protocol

import discord

from studiobot.commands.contract import Button, Menu

CUSTOM_ID_PREFIX = "sb:"
MENU_CUSTOM_ID = "sbm:menu"
_MAX_CUSTOM_ID = 100  # Discord: custom_id is 1-100 characters
# Discord (message components reference): a string select has 1-25 options, whose labels and
# values are 1-100 characters, and a placeholder of at most 150 characters.
_MAX_OPTIONS = 25
_MAX_OPTION_TEXT = 100
_MAX_PLACEHOLDER = 150
_STYLES = {
    "primary": discord.ButtonStyle.primary,
    "secondary": discord.ButtonStyle.secondary,
    "danger": discord.ButtonStyle.danger,
}
_ROW_WIDTH = 5  # Discord: at most five buttons per action row
_MAX_ROWS = 5


class ActionHandler(Protocol):
    """What a click is handed to (the bot)."""

    async def run_action(self, interaction: discord.Interaction, action: str) -> None:
        """Run ``action`` (a command line without the slash) for the user who clicked."""
        ...


class ActionButton(discord.ui.DynamicItem[discord.ui.Button[Any]], template=r"sb:(?P<action>.+)"):
    """A button whose ``custom_id`` carries the core command it runs.

    Args:
        button: The core's button (label, action, style).
    """

    def __init__(self, button: Button) -> None:
        custom_id = CUSTOM_ID_PREFIX + button.action
        if len(custom_id) > _MAX_CUSTOM_ID:
            raise ValueError(f"button action too long for a custom_id: {button.action[:40]!r}")
        super().__init__(
            discord.ui.Button(label=button.label[:80], style=_STYLES[button.style], custom_id=custom_id)
        )
        self.action = button.action

    @classmethod
    async def from_custom_id(
        cls, interaction: discord.Interaction, item: discord.ui.Item[Any], match: re.Match[str], /
    ) -> ActionButton:
        """Rebuild the button from a clicked ``custom_id`` (discord.py calls this on every click)."""
        label = getattr(item, "label", None) or "button"
        return cls(Button(label=label, action=match["action"]))

    async def callback(self, interaction: discord.Interaction) -> None:
        """Hand the click to the bot, which checks nothing itself: the core decides who may act."""
        client: Any = interaction.client
        handler: ActionHandler = client
        await handler.run_action(interaction, self.action)


class ActionMenu(discord.ui.DynamicItem[discord.ui.Select[Any]], template=re.escape(MENU_CUSTOM_ID)):
    """A pick-one menu whose options' values are the core commands they run.

    Args:
        menu: The core's menu (placeholder and options). At most 25 options are shown (Discord's
            limit); options repeating an earlier action are dropped (values must be unique).

    Raises:
        ValueError: An option's action is longer than an option value may be (100 characters).
    """

    def __init__(self, menu: Menu) -> None:
        options: list[discord.SelectOption] = []
        seen: set[str] = set()
        for option in menu.options:
            if len(option.action) > _MAX_OPTION_TEXT:
                raise ValueError(f"menu action too long for an option value: {option.action[:40]!r}")
            if option.action in seen:
                continue
            seen.add(option.action)
            label = _clip(option.label, _MAX_OPTION_TEXT) or option.action  # labels may not be empty
            options.append(discord.SelectOption(label=label, value=option.action))
        super().__init__(discord.ui.Select(
            custom_id=MENU_CUSTOM_ID, placeholder=_clip(menu.placeholder, _MAX_PLACEHOLDER) or None,
            options=options[:_MAX_OPTIONS], min_values=1, max_values=1,
        ))

    @classmethod
    async def from_custom_id(
        cls, interaction: discord.Interaction, item: discord.ui.Item[Any], match: re.Match[str], /
    ) -> ActionMenu:
        """Rebuild the menu from the picked message's component (discord.py calls this on every pick)."""
        placeholder = getattr(item, "placeholder", None) or ""
        options = getattr(item, "options", None) or []
        return cls(Menu(placeholder, [Button(o.label, o.value) for o in options]))

    async def callback(self, interaction: discord.Interaction) -> None:
        """Run the picked option's action exactly as a button click runs its own."""
        if not self.item.values:
            return  # a select always sends one value; nothing to run without it
        client: Any = interaction.client
        handler: ActionHandler = client
        await handler.run_action(interaction, self.item.values[0])


def action_view(buttons: Sequence[Button], menu: Menu | None = None) -> discord.ui.View | None:
    """A view laying out ``buttons`` in rows, then ``menu`` in a row of its own under them.

    Each command with several buttons (U1-U4, V1-V4) gets a row of its own, and single buttons
    share rows. Discord allows five rows and a select fills a whole one, so with a menu the
    buttons get four. None when there are neither buttons nor menu options.
    """
    if menu is not None and not menu.options:
        menu = None
    if not buttons and menu is None:
        return None
    rows: list[list[Button]] = []
    groups: dict[str, list[Button]] = {}
    for button in buttons:
        groups.setdefault(button.action.split(" ", 1)[0], []).append(button)
    singles: list[Button] = []
    for group in groups.values():
        if len(group) > 1:
            rows += [group[i : i + _ROW_WIDTH] for i in range(0, len(group), _ROW_WIDTH)]
        else:
            singles += group
    rows += [singles[i : i + _ROW_WIDTH] for i in range(0, len(singles), _ROW_WIDTH)]
    rows = rows[: _MAX_ROWS - 1 if menu is not None else _MAX_ROWS]
    view = discord.ui.View(timeout=None)
    for row_number, row in enumerate(rows):
        for button in row:
            item = ActionButton(button)
            item.item.row = row_number
            view.add_item(item)
    if menu is not None:
        select = ActionMenu(menu)
        select.item.row = len(rows)
        view.add_item(select)
    return view


def _clip(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


class SecretModal(discord.ui.Modal):
    """A modal asking for a command's secret parameters (an API key), so they never appear in a
    channel (Discord: modals are the way to collect private text; text inputs sit in Labels).

    Args:
        title: The modal's title (at most 45 characters).
        fields: (parameter name, label, description) for each secret, one text input each.
        submit: Called with the submit interaction and the values by parameter name.
    """

    def __init__(
        self,
        title: str,
        fields: Sequence[tuple[str, str, str]],
        submit: Callable[[discord.Interaction, dict[str, str]], Awaitable[None]],
    ) -> None:
        super().__init__(title=title[:45], timeout=600)
        self._inputs: dict[str, discord.ui.TextInput[Any]] = {}
        for name, label, description in fields:
            text_input: discord.ui.TextInput[Any] = discord.ui.TextInput(
                style=discord.TextStyle.short, required=True, max_length=4000, custom_id=f"secret:{name}"
            )
            self._inputs[name] = text_input
            self.add_item(discord.ui.Label(text=label[:45], description=description[:100] or None,
                                           component=text_input))
        self._submit = submit

    async def on_submit(self, interaction: discord.Interaction) -> None:  # type: ignore[override]
        """Hand the values to the bot; they are never logged or shown."""
        await self._submit(interaction, {name: item.value for name, item in self._inputs.items()})
