"""Telegram updates to the core's terms: who, where, and which command line.

No command logic lives here: a message becomes a command line for the dispatcher, following
Telegram's conventions (reference-platform-rules.md section 4):

* ``/imagine@studiobot a fox`` in a group is ours; ``/imagine@otherbot`` is not.
* ``/start`` alone greets (help); ``/start keys_add`` comes from a deep link
  (``t.me/<bot>?start=keys_add``) and runs ``/keys add``.
* Plain text in a private chat means ``/imagine`` that text.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from telegram import Chat, Message, User

from studiobot.commands.contract import ChatRef, UserRef

PLATFORM = "telegram"

_COMMAND = re.compile(r"^/([A-Za-z0-9_]{1,32})(?:@([A-Za-z0-9_]{3,64}))?(?=\s|$)")
#: Deep-link payloads: 1-64 characters of A-Z, a-z, 0-9, _ and - (Bot API, "Deep linking").
_PAYLOAD = re.compile(r"^[A-Za-z0-9_-]{1,64}$")


def user_ref(user: User) -> UserRef:
    """The core's view of a Telegram account."""
    return UserRef(PLATFORM, str(user.id), user.full_name or user.username or str(user.id))


def chat_ref(chat: Chat, reply_to: int | None, thread_id: int | None = None) -> ChatRef:
    """The core's view of a chat; groups and supergroups are communities.

    Args:
        chat: Where the message or button is.
        reply_to: The message later answers reply to (the command's message, or the message
            holding the clicked button).
        thread_id: The forum topic it is in (:func:`thread_of`), so later answers and gallery
            posts land in the same topic.
    """
    private = chat.type == Chat.PRIVATE
    return ChatRef(
        PLATFORM,
        str(chat.id),
        "dm" if private else "group",
        community_id=None if private else str(chat.id),
        reply_to=str(reply_to) if reply_to is not None else None,
        thread_id=str(thread_id) if thread_id is not None else None,
        community_name=None if private else chat.title,
    )


def thread_of(message: Message) -> int | None:
    """The forum topic a message is in, or None (not a forum, or its General topic).

    Bot API: ``message_thread_id`` alone also marks a reply thread in an ordinary supergroup;
    only with ``is_topic_message`` is it a forum topic that sends must name to land in.
    """
    return message.message_thread_id if message.is_topic_message else None


@dataclass(frozen=True, slots=True)
class Line:
    """A message read as a command line.

    Attributes:
        text: The command line for the dispatcher (``/imagine a fox``), bot mention removed.
        implicit: The user typed no command (plain text in a private chat became ``/imagine``).
    """

    text: str
    implicit: bool = False


def command_line(message: Message, bot_username: str) -> Line | None:
    """The command line a message asks us to run, or None when it is not for us.

    Args:
        message: A message with text.
        bot_username: Our username, without the ``@``.
    """
    text = (message.text or "").strip()
    if not text:
        return None
    match = _COMMAND.match(text)
    private = message.chat.type == Chat.PRIVATE
    if match is None:
        return Line(f"/imagine {text}", implicit=True) if private else None
    name, mention = match.group(1).lower(), match.group(2)
    if mention is not None and mention.lower() != bot_username.lower():
        return None  # addressed to another bot in the group
    rest = text[match.end():].strip()
    if name == "start":
        return Line(_from_payload(rest))
    return Line(f"/{name} {rest}".rstrip())


def _from_payload(payload: str) -> str:
    """``keys_add_openai`` -> ``/keys add openai``; an empty or odd payload greets (``/help``)."""
    if not payload or not _PAYLOAD.match(payload):
        return "/help"
    return "/" + " ".join(word for word in payload.split("_") if word)


def deep_link(bot_username: str, command_line_text: str) -> str:
    """A ``t.me`` link that opens a private chat with us and runs ``command_line_text`` on Start.

    Words that cannot travel in a payload are dropped (the user types them in the chat).
    """
    words = [w for w in command_line_text.lstrip("/").split() if re.fullmatch(r"[A-Za-z0-9-]+", w)]
    payload = "_".join(words)[:64].rstrip("_")
    return f"https://t.me/{bot_username}?start={payload}" if payload else f"https://t.me/{bot_username}"
