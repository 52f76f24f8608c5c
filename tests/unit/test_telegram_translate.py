"""Telegram's conventions, translated: command lines, deep links, menus, edit pacing, key shapes."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st
from telegram import Chat, Message, User

from studiobot.bot.telegram.limits import EditPacer
from studiobot.bot.telegram.menu import menus, menus_hash
from studiobot.bot.telegram.render import keyboard
from studiobot.bot.telegram.translate import chat_ref, command_line, deep_link
from studiobot.commands import COMMANDS
from studiobot.commands.contract import Button
from studiobot.commands.presenter import result_buttons
from studiobot.providers.keyshapes import looks_like_key

BOT = "studiobot_test_bot"


def message(text: str, chat_type: str = Chat.PRIVATE) -> Message:
    chat = Chat(1 if chat_type == Chat.PRIVATE else -100, chat_type)
    return Message(1, None, chat, from_user=User(1, "Ada", False), text=text)  # type: ignore[arg-type]


@pytest.mark.parametrize(("text", "chat_type", "expected"), [
    ("/imagine a fox", Chat.PRIVATE, "/imagine a fox"),
    ("/imagine@studiobot_test_bot a fox", Chat.SUPERGROUP, "/imagine a fox"),
    ("/IMAGINE@StudioBot_Test_Bot a fox", Chat.GROUP, "/imagine a fox"),
    ("/imagine@otherbot a fox", Chat.SUPERGROUP, None),
    ("a fox in the snow", Chat.PRIVATE, "/imagine a fox in the snow"),
    ("a fox in the snow", Chat.SUPERGROUP, None),
    ("/start", Chat.PRIVATE, "/help"),
    ("/start keys_add_openai", Chat.PRIVATE, "/keys add openai"),
    ("/start <script>", Chat.PRIVATE, "/help"),
    ("/credits", Chat.PRIVATE, "/credits"),
])
def test_command_lines(text: str, chat_type: str, expected: str | None) -> None:
    line = command_line(message(text, chat_type), BOT)
    assert (line.text if line else None) == expected


def test_chat_refs_make_groups_communities() -> None:
    assert chat_ref(Chat(-1001, Chat.SUPERGROUP), 7).to_dict() == {
        "platform": "telegram", "chat_id": "-1001", "kind": "group", "community_id": "-1001", "reply_to": "7"}
    assert chat_ref(Chat(42, Chat.PRIVATE), None).kind == "dm"


def test_deep_links_carry_only_payload_safe_words() -> None:
    assert deep_link(BOT, "/keys add openai") == f"https://t.me/{BOT}?start=keys_add_openai"
    assert deep_link(BOT, "/keys add sk-a+b") == f"https://t.me/{BOT}?start=keys_add"
    assert deep_link(BOT, "") == f"https://t.me/{BOT}"


def test_menus_follow_where_and_who() -> None:
    private, groups, admins = (dict((c.command, c.description) for c in cmds) for _, cmds in menus(COMMANDS))
    assert "share" not in private and "share" in groups  # group-only
    assert all(1 <= len(d) <= 256 for d in {**private, **groups, **admins}.values())
    assert menus_hash(COMMANDS) == menus_hash(list(COMMANDS))
    assert menus_hash(COMMANDS) != menus_hash(COMMANDS[:-1])


def test_the_result_keyboard_has_rows_per_family_and_fits_callback_data() -> None:
    markup = keyboard(result_buttons(123456789, [1, 2, 3, 4]))
    assert markup is not None
    rows = [[b.text for b in row] for row in markup.inline_keyboard]
    assert rows == [["U1", "U2", "U3", "U4"], ["V1", "V2", "V3", "V4"],
                    ["🔄 Re-roll", "★ Favorite"], ["Share", "Delete"]]
    too_long = keyboard([Button("X", "gallery " + "é" * 40)])  # 88 bytes: left out
    assert too_long is None


def test_progress_edits_are_paced_per_chat_and_only_on_change() -> None:
    now = [0.0]
    pacer = EditPacer(clock=lambda: now[0])
    assert pacer.allow(-100, 5, "10%")
    now[0] = 1.0
    assert not pacer.allow(-100, 5, "20%")  # a group: 3 s apart
    now[0] = 3.0
    assert not pacer.allow(-100, 5, "10%")  # what it shows already: never sent again
    assert pacer.allow(-100, 5, "30%")
    now[0] = 7.0
    assert not pacer.allow(-100, 5, "30%")  # unchanged
    assert pacer.allow(42, 9, "10%")
    now[0] = 8.1
    assert pacer.allow(42, 9, "20%")  # a private chat: 1 s apart


@pytest.mark.parametrize("text", [
    "sk-proj-Abc123Def456Ghi789Jkl012", "r8_" + "a1B2" * 10, "hf_" + "Zz9" * 12,
    "my key is sk-" + "x" * 48 + " ok", "123456789:AA" + "b" * 33,
])
def test_keys_are_recognised(text: str) -> None:
    assert looks_like_key(text) is not None


@given(st.text(alphabet=st.characters(categories=("L", "Zs", "P")), max_size=200))
def test_ordinary_prompts_are_not_keys(text: str) -> None:
    assert looks_like_key(text) is None
