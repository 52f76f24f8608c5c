"""Loopback double of the Telegram Bot API, for the real python-telegram-bot (PTB).

PTB runs unmodified against it once pointed here::

    async with running_telegram() as tg:
        bot = telegram.Bot(tg.token, base_url=tg.base_url, base_file_url=tg.base_file_url)

Requests arrive as ``POST /bot<token>/<method>`` (method names are case-insensitive, as
Telegram's are). PTB sends parameters as form fields: strings raw, everything else JSON-encoded
(``chat_id=42``, ``reply_markup={"inline_keyboard": ...}``, ``disable_notification=true``), and
switches to ``multipart/form-data`` when it uploads files; ``sendMediaGroup`` items then point at
their file part with ``"media": "attach://<part name>"``. The double decodes all of that into
:attr:`TelegramCall.params` and answers ``{"ok": true, "result": ...}`` or
``{"ok": false, "error_code": N, "description": "...", "parameters": {...}}``, which PTB turns into
``BadRequest`` (400), ``Forbidden`` (403), ``InvalidToken`` (401, 404), ``Conflict`` (409) and
``RetryAfter`` (any error carrying ``parameters.retry_after``).

Implemented methods: getMe, getUpdates (long polling), setWebhook, deleteWebhook, getWebhookInfo,
setMyCommands, getMyCommands, deleteMyCommands, sendMessage, editMessageText, editMessageCaption,
editMessageReplyMarkup, editMessageMedia, sendPhoto, sendMediaGroup, sendDocument, sendChatAction,
answerCallbackQuery, answerInlineQuery, deleteMessage, getChatAdministrators, getChat and getFile
(files are served from ``/file/bot<token>/<path>``). Anything else answers 404 ``Not Found``, still
recorded in ``calls``.

Forum supergroups (``group_chat(..., is_forum=True)``) have topics made with :meth:`forum_topic`;
as on Telegram, a topic's ``message_thread_id`` is the id of the service message that created it,
messages in it carry ``message_thread_id`` and ``is_topic_message``, a send naming an unknown topic
(or any topic outside a forum) is a 400 "message thread not found", and a reply sent without
``message_thread_id`` lands in the topic of the message it answers. ``has_spoiler`` on a photo
(sendPhoto, a media group item, editMessageMedia) shows as the message's ``has_media_spoiler``.

Two group states answer 400 as Telegram does. :meth:`TelegramState.restrict_bot` takes rights from
the bot (ChatPermissions names): a send needing one answers ``"Bad Request: not enough rights to
send photos to the chat"`` (``text messages``, ``documents``), which PTB raises as ``BadRequest``.
:meth:`TelegramState.upgrade_to_supergroup` turns a basic group into a new ``-100...`` supergroup:
every request naming the old id then answers ``"Bad Request: group chat was upgraded to a
supergroup chat"`` with ``parameters.migrate_to_chat_id``, which PTB raises as ``ChatMigrated``
(``new_chat_id``) whatever the status; :meth:`TelegramState.migration_updates` builds the two
service messages Telegram posts (``migrate_to_chat_id`` in the old chat, ``migrate_from_chat_id``
in the new). The old group's history is not copied into the supergroup.

Tests feed updates with :meth:`TelegramState.push_update` (for getUpdates) or
:meth:`TelegramState.post_to_webhook`, built with ``message_update``, ``callback_query_update``,
``inline_query_update`` and ``my_chat_member_update``; they read what the bot did from ``calls``,
``messages``, ``sends_in`` and ``sent_texts``, and wait with ``wait_for``/``wait_until``. Note
that PTB rewrites error descriptions: it drops the ``"Bad Request: "`` prefix and
``str.capitalize()``s the rest (``BUTTON_DATA_INVALID`` becomes ``Button_data_invalid``), so match
them case-insensitively.

Deliberate simplifications: ``parse_mode="HTML"`` is parsed (tags become entities, bad markup is a
400 like Telegram's); ``MarkdownV2`` is only checked for unescaped reserved characters and stored as
sent. Photo thumbnails share the original's bytes. Webhook URLs on loopback may be plain HTTP on any
port so tests can receive them. ``state.requests`` and ``state.fail_next`` work as in
:mod:`tests.doubles.server` and apply to every request, file downloads included.
"""

from __future__ import annotations

import asyncio
import contextlib
import copy
import email.message
import html
import io
import itertools
import json
import math
import mimetypes
import re
import secrets
import time
import urllib.parse
from collections import deque
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import aiohttp
from aiohttp import web
from PIL import Image

from tests.doubles.server import (
    RecordedRequest,
    Scripted,
    Watched,
    reply,
    respond,
    scripting_middleware,
    serve,
)

Json = dict[str, Any]

DEFAULT_TOKEN = "123456:TEST-token"
DEFAULT_USERNAME = "studiobot_test_bot"
DEFAULT_BOT_ID = 123456

# Limits from the Bot API docs (and PTB's telegram.constants).
TEXT_LIMIT = 4096
CAPTION_LIMIT = 1024
CALLBACK_DATA_LIMIT = 64  # bytes of UTF-8, not characters
CALLBACK_ANSWER_LIMIT = 200
INLINE_RESULTS_LIMIT = 50
PHOTO_UPLOAD_LIMIT = 10 * 1024 * 1024
DOCUMENT_UPLOAD_LIMIT = 50 * 1024 * 1024
DOWNLOAD_LIMIT = 20 * 1024 * 1024

#: Methods that post or edit a message in a chat: what flood control and ``sends_in`` look at.
SEND_METHODS = frozenset({"sendMessage", "sendPhoto", "sendMediaGroup", "sendDocument",
                          "editMessageText", "editMessageCaption", "editMessageReplyMarkup"})
CHAT_ACTIONS = frozenset({"typing", "upload_photo", "record_video", "upload_video", "record_voice",
                          "upload_voice", "upload_document", "choose_sticker", "find_location",
                          "record_video_note", "upload_video_note"})
# Telegram leaves these out unless a bot asks for them in allowed_updates.
_OPT_IN_UPDATES = frozenset({"chat_member", "message_reaction", "message_reaction_count"})
# Parameters PTB sends as raw strings that could look like JSON ("123", "true") but must stay text.
_STRING_PARAMS = frozenset({"text", "caption", "parse_mode", "url", "secret_token", "photo",
                            "document", "callback_query_id", "inline_query_id", "inline_message_id",
                            "language_code", "next_offset", "action", "file_id", "title",
                            "description", "message_effect_id", "business_connection_id"})
_LOOPBACK = frozenset({"127.0.0.1", "localhost", "::1"})
# ChatPermissions a send needs -> how Telegram's "not enough rights" description names it.
_RIGHTS = {"can_send_messages": "text messages", "can_send_photos": "photos",
           "can_send_documents": "documents"}
_TOO_OLD = "query is too old and response timeout expired or query ID is invalid"
_UNSET: Any = object()
# Where the recording middleware leaves the call for the handler (typed keys need aiohttp 3.12+).
_CALL: Any = web.RequestKey("call", object) if hasattr(web, "RequestKey") else "call"


# -- errors ----------------------------------------------------------------------------------


class ApiError(Exception):
    """A Bot API error answer; handlers raise it and the dispatcher renders it."""

    def __init__(self, status: int, description: str, parameters: Json | None = None) -> None:
        super().__init__(description)
        self.status, self.description, self.parameters = status, description, parameters


def _bad(description: str) -> ApiError:
    return ApiError(400, f"Bad Request: {description}")


def error_body(status: int, description: str, parameters: Json | None = None) -> Json:
    """Telegram's error shape ``{"ok": false, "error_code", "description"[, "parameters"]}``."""
    body: Json = {"ok": False, "error_code": status, "description": description}
    if parameters:
        body["parameters"] = parameters
    return body


def too_many_requests(retry_after: int) -> Scripted:
    """A scripted 429 for ``state.fail_next``; PTB raises ``RetryAfter(retry_after)``."""
    return reply(429, error_body(429, f"Too Many Requests: retry after {retry_after}",
                                 {"retry_after": retry_after}))


def api_error(status: int, description: str) -> Scripted:
    """A scripted Bot API error for ``state.fail_next``, e.g. ``api_error(502, "Bad Gateway")``."""
    return reply(status, error_body(status, description))


# -- records ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class UploadedFile:
    """One file part of a multipart request."""

    filename: str
    content_type: str | None
    content: bytes


@dataclass
class TelegramCall:
    """One Bot API request, recorded when it arrives.

    Attributes:
        method: Canonical method name (``"sendMessage"``), or as requested when unknown.
        params: Decoded parameters: JSON-encoded values decoded (``chat_id`` is an int when
            numeric, ``reply_markup``/``media``/``results``/``scope`` are dicts and lists).
        files: Uploaded file contents by part name (``"photo"``, or the ``attach://`` name).
        at: ``time.monotonic()`` at arrival.
        uploads: The same files with their filename and content type.
        status: HTTP status of the answer; None while it is being handled (e.g. a long poll).
        response: The decoded JSON answer once sent.
    """

    method: str
    params: Json
    files: dict[str, bytes]
    at: float
    uploads: dict[str, UploadedFile] = field(default_factory=dict, repr=False)
    status: int | None = None
    response: Any = field(default=None, repr=False)

    @property
    def ok(self) -> bool:
        """Whether the double answered 200."""
        return self.status == 200


@dataclass
class FloodLimits:
    """Flood control for sends and edits (default off: ``state.flood_limits = None``).

    Each rule is ``(count, seconds)``: more than ``count`` accepted messages within ``seconds``
    answers 429 with ``parameters.retry_after``. None disables a rule.

    Attributes:
        private: Per private chat (Telegram: about 1 message per second).
        group: Per group, supergroup or channel (Telegram: 20 messages per minute).
        overall: Across all chats (Telegram: about 30 messages per second).
        retry_after: Fixed ``retry_after`` to answer; None computes the seconds until a slot frees
            (at least 1, as Telegram sends whole seconds).

    sendChatAction is not limited; a media group counts as one message.
    """

    private: tuple[int, float] | None = (1, 1.0)
    group: tuple[int, float] | None = (20, 60.0)
    overall: tuple[int, float] | None = (30, 1.0)
    retry_after: int | None = None


@dataclass
class FileRecord:
    """A file the double stored, by ``file_id``; ``photo_sizes`` is set for photos."""

    file_id: str
    file_unique_id: str
    content: bytes
    kind: str
    file_name: str | None = None
    mime_type: str | None = None
    photo_sizes: list[Json] | None = None
    file_path: str | None = None


# -- state -----------------------------------------------------------------------------------


@dataclass
class TelegramState(Watched):
    """What the double knows and saw, plus the test-side controls and update builders.

    Attributes:
        token: The one valid bot token; others answer 401 Unauthorized.
        username: The bot's username (getMe).
        bot_id: The bot's user id (getMe, ``from`` of its messages).
        first_name: The bot's display name.
        calls: Every API request, decoded, in arrival order (:class:`TelegramCall`).
        requests: Raw requests (see :mod:`tests.doubles.server`).
        fail_next: Scripted answers played before normal handling (:func:`too_many_requests`).
        messages: Live messages by ``(chat_id, message_id)``: the bot's, as returned, and users'
            registered by :meth:`user_message`. Deleted ones move to ``deleted_messages``.
        deleted_messages: Messages removed by deleteMessage.
        chats: Known chats by id (builders register them; unknown ids are made up on the fly
            unless ``strict_chats``, then 400 "chat not found").
        users: Known users by id.
        closed_dms: User ids that never started the bot (403 on sends to their private chat).
        blocked_users: User ids that blocked the bot (403 on sends).
        kicked_chats: Group ids the bot was removed from (403 on sends).
        restricted: Rights the bot lacks per group, as ChatPermissions names
            (:meth:`restrict_bot`; 400 "not enough rights" on sends needing them).
        migrated_chats: Basic group id -> the supergroup it became (:meth:`upgrade_to_supergroup`;
            400 with ``migrate_to_chat_id`` on any request naming the old id).
        admins: getChatAdministrators answers by chat id (:meth:`set_admins`).
        topics: Forum topics (``message_thread_id`` values) by chat id (:meth:`forum_topic`).
        commands: Bot commands by ``(scope JSON with sorted keys, language_code)``.
        webhook: The webhook as set (url, secret_token, max_connections...), or None.
        allowed_updates: Update types getUpdates delivers (None: Telegram's default).
        updates: Unconfirmed updates, oldest first.
        flood_limits: Flood control, or None (default) for none.
        files: Stored files by ``file_id``.
        callback_answers: answerCallbackQuery parameters by query id.
        inline_answers: answerInlineQuery parameters by query id.
        webhook_posts: ``(update, status)`` of each :meth:`post_to_webhook`.
        base_url: ``http://127.0.0.1:<port>/bot`` (PTB's ``base_url``) once running.
        base_file_url: ``http://127.0.0.1:<port>/file/bot`` (PTB's ``base_file_url``).
    """

    token: str = DEFAULT_TOKEN
    username: str = DEFAULT_USERNAME
    bot_id: int = DEFAULT_BOT_ID
    first_name: str = "StudioBot Test"
    calls: list[TelegramCall] = field(default_factory=list)
    requests: list[RecordedRequest] = field(default_factory=list)
    fail_next: list[Scripted] = field(default_factory=list)
    messages: dict[tuple[int, int], Json] = field(default_factory=dict)
    deleted_messages: dict[tuple[int, int], Json] = field(default_factory=dict)
    chats: dict[int, Json] = field(default_factory=dict)
    users: dict[int, Json] = field(default_factory=dict)
    strict_chats: bool = False
    closed_dms: set[int] = field(default_factory=set)
    blocked_users: set[int] = field(default_factory=set)
    kicked_chats: set[int] = field(default_factory=set)
    restricted: dict[int, set[str]] = field(default_factory=dict)
    migrated_chats: dict[int, int] = field(default_factory=dict)
    admins: dict[int, list[Json]] = field(default_factory=dict)
    topics: dict[int, set[int]] = field(default_factory=dict)
    commands: dict[tuple[str, str], list[Json]] = field(default_factory=dict)
    webhook: Json | None = None
    allowed_updates: list[str] | None = None
    updates: list[Json] = field(default_factory=list)
    flood_limits: FloodLimits | None = None
    files: dict[str, FileRecord] = field(default_factory=dict)
    callback_answers: dict[str, Json] = field(default_factory=dict)
    inline_answers: dict[str, Json] = field(default_factory=dict)
    webhook_posts: list[tuple[Json, int]] = field(default_factory=list)
    base_url: str = ""
    base_file_url: str = ""
    _next_update_id: int = field(default=10001, repr=False)
    _message_ids: dict[int, int] = field(default_factory=dict, repr=False)
    _bot_can_delete: dict[int, bool] = field(default_factory=dict, repr=False)
    _open_callbacks: set[str] = field(default_factory=set, repr=False)
    _open_inline: set[str] = field(default_factory=set, repr=False)
    _flood: dict[Any, deque[float]] = field(default_factory=dict, repr=False)
    _file_paths: dict[str, str] = field(default_factory=dict, repr=False)
    _poll_generation: int = field(default=0, repr=False)  # bumped by each getUpdates
    _polls_waiting: int = field(default=0, repr=False)
    _closing: bool = field(default=False, repr=False)
    _changed: asyncio.Event | None = field(default=None, repr=False)

    # -- inspection --------------------------------------------------------------------------

    def bot_user(self) -> Json:
        """The bot's User object as it appears in ``from`` fields."""
        return {"id": self.bot_id, "is_bot": True, "first_name": self.first_name,
                "username": self.username}

    def calls_to(self, method: str) -> list[TelegramCall]:
        """Recorded calls of one method (canonical spelling), in order."""
        return [call for call in self.calls if call.method == method]

    def sends_in(self, chat_id: int, *, ok_only: bool = False) -> list[TelegramCall]:
        """Calls that posted or edited a message in ``chat_id`` (:data:`SEND_METHODS`), rejected
        ones included unless ``ok_only`` (a 429 is still an attempt the bot made)."""
        return [c for c in self.calls if c.method in SEND_METHODS
                and c.params.get("chat_id") == chat_id and (c.ok or not ok_only)]

    def sent_texts(self) -> list[str]:
        """Every text and caption the bot sent, as sent (markup included), in call order.

        Covers message texts and edits, captions (media group items too), callback answer texts,
        and inline results' titles, descriptions, captions and message texts; rejected calls
        count, since Telegram saw them anyway.
        """
        texts: list[Any] = []
        for call in self.calls:
            params = call.params
            texts += [params.get("text"), params.get("caption")]
            media = params.get("media")
            if isinstance(media, list):
                texts += [item.get("caption") for item in media if isinstance(item, dict)]
            results = params.get("results")
            if isinstance(results, list):
                for result in (r for r in results if isinstance(r, dict)):
                    content = result.get("input_message_content") or {}
                    texts += [result.get("title"), result.get("description"),
                              result.get("caption"), content.get("message_text")]
        return [text for text in texts if isinstance(text, str) and text]

    def commands_for(self, scope: Json | None = None, language_code: str = "") -> list[Json]:
        """Commands set for exactly this scope (default ``{"type": "default"}``) and language."""
        return list(self.commands.get(_commands_key(scope, language_code), []))

    @property
    def polling(self) -> bool:
        """Whether a getUpdates long poll is waiting right now."""
        return self._polls_waiting > 0

    # -- waiting -----------------------------------------------------------------------------

    async def wait_for(self, predicate: str | Callable[[TelegramCall], bool],
                       timeout: float = 5.0, *, pending: bool = False) -> TelegramCall:
        """Wait for the first recorded call matching ``predicate`` (a method name or a function).

        Only answered calls match (so the double's state already reflects them), unless
        ``pending`` is true.

        Raises:
            TimeoutError: None matched in time (the message lists the calls seen).
        """
        matches = ((lambda c: c.method == predicate) if isinstance(predicate, str)
                   else predicate)

        def check() -> TelegramCall | None:
            return next((c for c in self.calls
                         if (pending or c.status is not None) and matches(c)), None)

        try:
            return await self.wait_until(check, timeout, "no matching call")
        except TimeoutError as exc:
            seen = [f"{c.method} {c.status}" for c in self.calls]
            raise TimeoutError(f"{exc}; calls: {seen}") from None

    # -- users, chats, admins ----------------------------------------------------------------

    def user(self, user_id: int, first_name: str = "Test", username: str | None = None, *,
             last_name: str | None = None, language_code: str | None = "en",
             is_bot: bool = False) -> Json:
        """A User object (registered in ``users``)."""
        data: Json = {"id": user_id, "is_bot": is_bot, "first_name": first_name}
        for key, value in (("last_name", last_name), ("username", username),
                           ("language_code", language_code)):
            if value is not None:
                data[key] = value
        self.users[user_id] = data
        return data

    def private_chat(self, user: Json) -> Json:
        """The private Chat with ``user`` (its id is the user's id); registered in ``chats``."""
        chat = {"id": user["id"], "type": "private", "first_name": user["first_name"]}
        chat |= {k: user[k] for k in ("last_name", "username") if k in user}
        self.chats[chat["id"]] = chat
        return chat

    def group_chat(self, chat_id: int, title: str = "Test Group", *,
                   username: str | None = None, is_forum: bool = False) -> Json:
        """A group Chat; ids starting with ``-100`` are supergroups. Registered in ``chats``.

        ``is_forum`` makes a supergroup a forum, whose topics :meth:`forum_topic` creates.
        """
        if chat_id >= 0:
            raise ValueError("group and supergroup ids are negative")
        kind = "supergroup" if str(chat_id).startswith("-100") else "group"
        if is_forum and kind != "supergroup":
            raise ValueError("only supergroups (ids starting with -100) can be forums")
        chat: Json = {"id": chat_id, "type": kind, "title": title}
        if username:
            chat["username"] = username
        if is_forum:
            chat["is_forum"] = True
        self.chats[chat_id] = chat
        return chat

    def forum_topic(self, chat: Json, name: str, creator: Json | None = None) -> int:
        """Create a topic in a forum supergroup; returns its ``message_thread_id``: the id of the
        ``forum_topic_created`` service message, as on Telegram."""
        if not chat.get("is_forum"):
            raise ValueError("topics exist only in forum supergroups")
        creator = creator or next(iter(self.users.values()), None) or self.user(1, "Creator")
        message = self._store(chat, creator, forum_topic_created={"name": name, "icon_color": 7322096})
        thread_id = int(message["message_id"])
        message |= {"message_thread_id": thread_id, "is_topic_message": True}
        self.topics.setdefault(chat["id"], set()).add(thread_id)
        return thread_id

    def chat(self, chat_id: int | str) -> Json:
        """The Chat for a ``chat_id`` parameter (made up when unknown, unless ``strict_chats``).

        Raises:
            ApiError: 400 "chat not found".
        """
        if isinstance(chat_id, str) and re.fullmatch(r"-?\d+", chat_id):
            chat_id = int(chat_id)
        if isinstance(chat_id, str):
            found = next((c for c in self.chats.values()
                          if chat_id.startswith("@") and c.get("username") == chat_id[1:]), None)
            if found is None:
                raise _bad("chat not found")
            return found
        if chat_id in self.chats:
            return self.chats[chat_id]
        if self.strict_chats or chat_id == 0:
            raise _bad("chat not found")
        if chat_id > 0:
            user = self.users.get(chat_id) or self.user(chat_id, f"User{chat_id}")
            return self.private_chat(user)
        return self.group_chat(chat_id, f"Group {chat_id}")

    def restrict_bot(self, chat_id: int, *rights: str) -> None:
        """Take rights from the bot in a group, by ChatPermissions name: ``can_send_messages``
        (text), ``can_send_photos``, ``can_send_documents``. Sends needing one answer 400 "not
        enough rights to send ... to the chat"; ``restrict_bot(chat_id)`` gives them all back."""
        unknown = set(rights) - set(_RIGHTS)
        if unknown:
            raise ValueError(f"unknown rights {sorted(unknown)}; known: {sorted(_RIGHTS)}")
        if rights:
            self.restricted[chat_id] = set(rights)
        else:
            self.restricted.pop(chat_id, None)

    def upgrade_to_supergroup(self, chat_id: int, new_chat_id: int | None = None) -> Json:
        """Upgrade basic group ``chat_id`` to a supergroup with a new ``-100...`` id, as Telegram
        does when a group grows or its history is made visible; returns the new Chat.

        Requests naming the old id then answer 400 "group chat was upgraded to a supergroup
        chat" with ``parameters.migrate_to_chat_id``. The bot's standing (kicked, restricted)
        and the admin list carry over.
        """
        old = self.chat(chat_id)
        if old["type"] != "group":
            raise ValueError("only basic groups are upgraded to supergroups")
        new_id = new_chat_id if new_chat_id is not None else -(10**12) - secrets.randbelow(10**9)
        new = self.group_chat(new_id, old.get("title", "Group"))
        if new["type"] != "supergroup":
            raise ValueError("supergroup ids start with -100")
        for standing in (self.restricted, self.admins):
            if chat_id in standing:
                standing[new_id] = copy.deepcopy(standing[chat_id])
        if chat_id in self.kicked_chats:
            self.kicked_chats.add(new_id)
        self.migrated_chats[chat_id] = new_id
        return new

    def migration_updates(self, chat_id: int, user: Json) -> list[Json]:
        """The two Updates Telegram sends when ``user`` upgraded basic group ``chat_id``: a
        service message with ``migrate_to_chat_id`` in the old chat, then one with
        ``migrate_from_chat_id`` in the supergroup (push them with :meth:`push_update`)."""
        new_id = self.migrated_chats[chat_id]
        old_message = self._store(self.chats[chat_id], user, migrate_to_chat_id=new_id)
        new_message = self._store(self.chats[new_id], user, migrate_from_chat_id=chat_id)
        return [{"message": old_message}, {"message": new_message}]

    def set_admins(self, chat_id: int, user_ids: list[int], *, bot_can_delete: bool = True) -> None:
        """Configure getChatAdministrators for a group: the first user is the owner (creator),
        the others administrators; with ``bot_can_delete`` the bot is listed too as an
        administrator with ``can_delete_messages`` (so it may delete users' messages)."""
        def known(user_id: int) -> Json:
            return self.users.get(user_id) or self.user(user_id, f"User{user_id}")

        members = [{"status": "creator", "user": known(user_ids[0]), "is_anonymous": False}
                   ] if user_ids else []
        members += [_administrator(known(u)) for u in user_ids[1:]]
        if bot_can_delete:
            members.append(_administrator(self.bot_user(), can_delete_messages=True))
        self.admins[chat_id] = members
        self._bot_can_delete[chat_id] = bot_can_delete

    # -- messages ----------------------------------------------------------------------------

    def _next_message_id(self, chat_id: int) -> int:
        self._message_ids[chat_id] = self._message_ids.get(chat_id, 0) + 1
        return self._message_ids[chat_id]

    def _store(self, chat: Json, sender: Json, message_id: int | None = None,
               **content: Any) -> Json:
        if message_id is None:
            message_id = self._next_message_id(chat["id"])
        else:
            self._message_ids[chat["id"]] = max(self._message_ids.get(chat["id"], 0), message_id)
        message: Json = {"message_id": message_id, "from": sender, "chat": chat,
                         "date": int(time.time())}
        message |= {k: v for k, v in content.items() if v is not None}
        self.messages[(chat["id"], message_id)] = message
        return message

    def user_message(self, chat: Json, user: Json, text: str | None = None, *,
                     message_id: int | None = None, reply_to: Json | int | None = None,
                     thread_id: int | None = None, **extra: Any) -> Json:
        """A user's Message, registered in ``messages`` (so the bot may reply to or delete it).

        Text gets ``bot_command`` entities for ``/commands`` (offsets in UTF-16 code units, as
        Telegram counts them). A user writing to the bot in private opens the DM: the user leaves
        ``closed_dms`` and ``blocked_users``. ``thread_id`` posts it in a forum topic made by
        :meth:`forum_topic`. ``extra`` fields (``photo``, ``caption``...) are added as given.
        """
        if chat["type"] == "private":
            self.closed_dms.discard(user["id"])
            self.blocked_users.discard(user["id"])
        if thread_id is not None and thread_id not in self.topics.get(chat["id"], set()):
            raise ValueError(f"chat {chat['id']} has no topic {thread_id}")
        target = (self.messages.get((chat["id"], reply_to)) if isinstance(reply_to, int)
                  else reply_to)
        topic = {"message_thread_id": thread_id, "is_topic_message": True} if thread_id else {}
        return self._store(chat, user, message_id, text=text,
                           entities=_command_entities(text) if text else None,
                           reply_to_message=_without_reply(target), **topic, **extra)

    def anonymous_message_update(self, chat: Json, text: str, *, sender_chat: Json | None = None) -> Json:
        """An Update with a message sent on behalf of a chat (Bot API, Message.sender_chat): by an
        anonymous admin of ``chat`` (``sender_chat`` the group itself, the default) or by a linked
        channel. ``from`` is the placeholder user Telegram puts there, GroupAnonymousBot."""
        placeholder = {"id": 1087968824, "is_bot": True, "first_name": "Group", "username": "GroupAnonymousBot"}
        return {"message": self.user_message(chat, placeholder, text, sender_chat=sender_chat or chat)}

    def message_update(self, chat: Json, user: Json, text: str, *, message_id: int | None = None,
                       reply_to: Json | int | None = None, thread_id: int | None = None) -> Json:
        """An Update carrying a new user message (see :meth:`user_message`); no ``update_id``
        until pushed."""
        return {"message": self.user_message(chat, user, text, message_id=message_id,
                                             reply_to=reply_to, thread_id=thread_id)}

    def callback_query_update(self, user: Json, message: Json, data: str, *,
                              inaccessible: bool = False) -> Json:
        """An Update for a click on an inline button of one of the bot's messages.

        Carries the message as it is now (after edits) and ``chat_instance``, as Telegram does;
        ``inaccessible`` sends an InaccessibleMessage (``date`` 0) instead, as for old messages.
        """
        chat = message["chat"]
        current = copy.deepcopy(self.messages.get((chat["id"], message["message_id"]), message))
        query_id = str(secrets.randbits(62))
        self._open_callbacks.add(query_id)
        shown = ({"chat": chat, "message_id": message["message_id"], "date": 0} if inaccessible
                 else current)
        return {"callback_query": {"id": query_id, "from": user, "message": shown,
                                   "chat_instance": str((chat["id"] * 2654435761) % 2**63),
                                   "data": data}}

    def inline_query_update(self, user: Json, query: str, offset: str = "", *,
                            chat_type: str = "private") -> Json:
        """An Update carrying an inline query."""
        query_id = str(secrets.randbits(62))
        self._open_inline.add(query_id)
        return {"inline_query": {"id": query_id, "from": user, "query": query, "offset": offset,
                                 "chat_type": chat_type}}

    def my_chat_member_update(self, chat: Json, user: Json, old_status: str = "member",
                              new_status: str = "kicked") -> Json:
        """An Update telling the bot its membership changed (in private, "kicked" means the user
        blocked the bot). Statuses: member, left, kicked, administrator."""
        def member(status: str) -> Json:
            if status == "administrator":
                return _administrator(self.bot_user(), can_delete_messages=True)
            data: Json = {"user": self.bot_user(), "status": status}
            return data | {"until_date": 0} if status == "kicked" else data

        return {"my_chat_member": {"chat": chat, "from": user, "date": int(time.time()),
                                   "old_chat_member": member(old_status),
                                   "new_chat_member": member(new_status)}}

    # -- feeding updates ---------------------------------------------------------------------

    def _with_id(self, update: Json) -> Json:
        update = dict(update)
        update.setdefault("update_id", self._next_update_id)
        self._next_update_id = max(self._next_update_id, update["update_id"] + 1)
        # Hand-made updates work too: their queries become answerable.
        if isinstance(update.get("callback_query"), dict):
            self._open_callbacks.add(str(update["callback_query"].get("id")))
        if isinstance(update.get("inline_query"), dict):
            self._open_inline.add(str(update["inline_query"].get("id")))
        return update

    def push_update(self, update: Json) -> int:
        """Queue an update for getUpdates (waking long polls); returns its ``update_id``, which is
        assigned (increasing) when absent.

        As on Telegram, getUpdates drops chat_member and message_reaction* updates unless the bot
        asked for them in ``allowed_updates``.
        """
        update = self._with_id(update)
        self.updates.append(update)
        self._notify()
        return int(update["update_id"])

    async def post_to_webhook(self, update: Json, secret_token: str | None = _UNSET,
                              timeout: float = 10.0) -> tuple[int, str]:
        """POST ``update`` as JSON to the URL last given to setWebhook, once (no retries).

        Sends ``X-Telegram-Bot-Api-Secret-Token`` with the webhook's secret, or with
        ``secret_token`` when given; ``secret_token=None`` omits the header. A non-2xx answer is
        noted in getWebhookInfo's ``last_error_*`` as Telegram does.

        Returns:
            ``(status, body)`` of the bot's answer.
        """
        if self.webhook is None:
            raise RuntimeError("no webhook is set")
        url = self.webhook["url"]
        if urllib.parse.urlsplit(url).hostname not in _LOOPBACK:
            raise ValueError(f"the double only posts to loopback, not {url}")
        update = self._with_id(update)
        token = self.webhook.get("secret_token") if secret_token is _UNSET else secret_token
        headers = {"Content-Type": "application/json"}
        if token is not None:
            headers["X-Telegram-Bot-Api-Secret-Token"] = token
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=timeout)) as session:
            async with session.post(url, data=json.dumps(update), headers=headers) as response:
                status, body = response.status, await response.text()
                reason = response.reason
        if not 200 <= status < 300:
            self.webhook |= {"last_error_date": int(time.time()),
                             "last_error_message": f"Wrong response from the webhook: {status} "
                                                   f"{reason}"}
        self.webhook_posts.append((update, status))
        self._notify()
        return status, body

    # -- flood control -----------------------------------------------------------------------

    def _take_flood_slot(self, chat: Json) -> None:
        """Count one send in ``chat``, or raise 429 if that would break ``flood_limits``."""
        limits = self.flood_limits
        if limits is None:
            return
        now = time.monotonic()
        rule = limits.private if chat["type"] == "private" else limits.group
        logs = [(self._flood.setdefault(chat["id"], deque()), rule),
                (self._flood.setdefault("overall", deque()), limits.overall)]
        for log, limit in logs:
            if limit is None:
                continue
            count, window = limit
            while log and log[0] <= now - window:
                log.popleft()
            if len(log) >= count:
                retry = limits.retry_after or max(1, math.ceil(log[0] + window - now))
                raise ApiError(429, f"Too Many Requests: retry after {retry}",
                               {"retry_after": retry})
        for log, _ in logs:
            log.append(now)


# -- helpers ---------------------------------------------------------------------------------


def _utf16_len(text: str) -> int:
    return len(text.encode("utf-16-le")) // 2


def _command_entities(text: str) -> list[Json] | None:
    entities = [{"type": "bot_command", "offset": _utf16_len(text[:m.start()]),
                 "length": _utf16_len(m.group())}
                for m in re.finditer(r"(?<!\S)/[A-Za-z0-9_]{1,64}(?:@[A-Za-z0-9_]{3,32})?", text)]
    return entities or None


def _without_reply(message: Json | None) -> Json | None:
    """A replied-to message as Telegram nests it: without its own ``reply_to_message``."""
    if message is None:
        return None
    return {k: v for k, v in copy.deepcopy(message).items() if k != "reply_to_message"}


def _administrator(user: Json, *, can_delete_messages: bool = True) -> Json:
    rights = ("can_manage_chat", "can_manage_video_chats", "can_restrict_members",
              "can_promote_members", "can_change_info", "can_invite_users", "can_post_stories",
              "can_edit_stories", "can_delete_stories", "can_pin_messages")
    return {"status": "administrator", "user": user, "can_be_edited": False,
            "is_anonymous": False, "can_delete_messages": can_delete_messages} | dict.fromkeys(
                rights, True)


def _commands_key(scope: Any, language_code: Any) -> tuple[str, str]:
    return json.dumps(scope or {"type": "default"}, sort_keys=True), str(language_code or "")


def _file_id(prefix: str) -> tuple[str, str]:
    """A fresh ``(file_id, file_unique_id)`` pair shaped like Telegram's."""
    return prefix + secrets.token_urlsafe(48), "AQAD" + secrets.token_urlsafe(9)


_HTML_ENTITIES = {"b": "bold", "strong": "bold", "i": "italic", "em": "italic",
                  "u": "underline", "ins": "underline", "s": "strikethrough",
                  "strike": "strikethrough", "del": "strikethrough", "tg-spoiler": "spoiler",
                  "span": "spoiler", "a": "text_link", "code": "code", "pre": "pre",
                  "blockquote": "blockquote", "tg-emoji": "custom_emoji"}
_HTML_TAG = re.compile(r"<(/?)([A-Za-z][A-Za-z0-9-]*)([^<>]*)>")


def parse_html(source: str) -> tuple[str, list[Json]]:
    """Telegram's HTML parse mode: the plain text and its entities (UTF-16 offsets).

    Raises:
        ApiError: 400 "can't parse entities: ..." for unsupported or unbalanced tags.
    """
    parts: list[str] = []
    entities: list[Json] = []
    stack: list[tuple[str, int, str]] = []
    offset = index = 0
    while index < len(source):
        start = source.find("<", index)
        plain = html.unescape(source[index:] if start < 0 else source[index:start])
        parts.append(plain)
        offset += _utf16_len(plain)
        if start < 0:
            break
        at = len(source[:start].encode())
        match = _HTML_TAG.match(source, start)
        if match is None:
            raise _bad(f"can't parse entities: Unexpected end of name token at byte offset {at}")
        closing, name, attrs = match.group(1), match.group(2).lower(), match.group(3)
        if name not in _HTML_ENTITIES or (name == "span" and "tg-spoiler" not in attrs):
            raise _bad(f'can\'t parse entities: Unsupported start tag "{name}" at byte offset {at}')
        if not closing:
            stack.append((name, offset, attrs))
        elif not stack or stack[-1][0] != name:
            raise _bad(f"can't parse entities: Unmatched end tag at byte offset {at}, expected "
                       f'"</{stack[-1][0] if stack else ""}>", found "</{name}>"')
        else:
            _, begin, open_attrs = stack.pop()
            entity: Json = {"type": _HTML_ENTITIES[name], "offset": begin,
                            "length": offset - begin}
            href = re.search(r"""href\s*=\s*["']([^"']*)["']""", open_attrs)
            if name == "a" and href:
                entity["url"] = html.unescape(href.group(1))
            if entity["length"] > 0:
                entities.append(entity)
        index = match.end()
    if stack:
        raise _bad(f'can\'t parse entities: Can\'t find end tag corresponding to start tag '
                   f'"{stack[-1][0]}"')
    return "".join(parts), sorted(entities, key=lambda e: (e["offset"], -e["length"]))


def _check_markdown_v2(source: str) -> None:
    """MarkdownV2 rejects reserved characters that are not escaped (outside code spans)."""
    in_code, index = False, 0
    while index < len(source):
        char = source[index]
        if char == "\\":
            index += 2
            continue
        if char == "`":
            in_code = not in_code
        elif not in_code and (char in "#+-={}." or (char == "!" and source[index + 1:index + 2]
                                                     != "[")):
            raise _bad(f"can't parse entities: Character '{char}' is reserved and must be escaped"
                       " with the preceding '\\'")
        index += 1


def _formatted(params: Json, text_key: str, entities_key: str, limit: int,
               too_long: str) -> tuple[str, list[Json] | None]:
    """A text or caption parameter as Telegram stores it: parsed, measured, with entities."""
    text = params.get(text_key)
    text = "" if text is None else str(text)
    entities = params.get(entities_key) or None
    mode = str(params.get("parse_mode") or "").lower()
    if mode == "html":
        text, parsed = parse_html(text)
        entities = parsed or None
    elif mode == "markdownv2":
        _check_markdown_v2(text)
    if len(text) > limit:
        raise _bad(too_long)
    return text, entities


def _check_markup(markup: Any) -> Json | None:
    """Validate ``reply_markup``; returns the inline keyboard a Message reflects, if any."""
    if markup is None:
        return None
    if not isinstance(markup, dict):
        raise _bad("can't parse reply keyboard markup JSON object")
    rows = markup.get("inline_keyboard")
    if rows is None:
        return None  # reply keyboards and friends are accepted but not shown in the Message
    if not isinstance(rows, list) or not all(isinstance(row, list) for row in rows):
        raise _bad("can't parse inline keyboard button: InlineKeyboardButton must be an Object")
    actions = ("callback_data", "url", "switch_inline_query", "switch_inline_query_current_chat",
               "switch_inline_query_chosen_chat", "login_url", "web_app", "pay", "callback_game",
               "copy_text")
    for button in itertools.chain.from_iterable(rows):
        if not isinstance(button, dict) or not button.get("text"):
            raise _bad("can't parse inline keyboard button: Text buttons are unallowed in the "
                       "inline keyboard")
        if not any(key in button for key in actions):
            raise _bad("can't parse inline keyboard button: Text buttons are unallowed in the "
                       "inline keyboard")
        data = button.get("callback_data")
        if data is not None and not 1 <= len(str(data).encode()) <= CALLBACK_DATA_LIMIT:
            raise _bad("BUTTON_DATA_INVALID")
        url = button.get("url")
        if url is not None and urllib.parse.urlsplit(str(url)).scheme not in ("http", "https",
                                                                               "tg"):
            raise _bad(f"inline keyboard button URL '{url}' is invalid: Wrong HTTP URL")
    return markup if any(rows) else None


def _message_key(params: Json) -> tuple[int, int]:
    chat_id, message_id = params.get("chat_id"), params.get("message_id")
    if chat_id is None:
        raise _bad("chat_id is empty")
    if not isinstance(message_id, int):
        raise _bad("message identifier is not specified")
    return int(chat_id), message_id


# -- methods ---------------------------------------------------------------------------------

ApiHandler = Callable[[TelegramState, TelegramCall], Awaitable[Any]]
_METHODS: dict[str, tuple[str, ApiHandler]] = {}


def _api(name: str) -> Callable[[ApiHandler], ApiHandler]:
    def register(handler: ApiHandler) -> ApiHandler:
        _METHODS[name.lower()] = (name, handler)
        return handler

    return register


def _target(state: TelegramState, params: Json) -> Json:
    """The chat a send goes to, after Telegram's 403 checks."""
    if params.get("chat_id") in (None, ""):
        raise _bad("chat_id is empty")
    chat = state.chat(params["chat_id"])
    if chat["type"] == "private":
        if chat["id"] in state.blocked_users:
            raise ApiError(403, "Forbidden: bot was blocked by the user")
        if chat["id"] in state.closed_dms:
            raise ApiError(403, "Forbidden: bot can't initiate conversation with a user")
    elif chat["id"] in state.kicked_chats:
        raise ApiError(403, f"Forbidden: bot was kicked from the {chat['type']} chat")
    return chat


def _check_right(state: TelegramState, chat: Json, right: str) -> None:
    """Raise Telegram's 400 when the bot lacks ``right`` (:meth:`TelegramState.restrict_bot`)."""
    if right in state.restricted.get(chat["id"], set()):
        raise _bad(f"not enough rights to send {_RIGHTS[right]} to the chat")


def _migrated(state: TelegramState, params: Json) -> None:
    """Any method naming a group upgraded to a supergroup: 400 with ``migrate_to_chat_id``."""
    chat_id = params.get("chat_id")
    if isinstance(chat_id, str) and re.fullmatch(r"-?\d+", chat_id):
        chat_id = int(chat_id)
    if isinstance(chat_id, int) and chat_id in state.migrated_chats:
        raise ApiError(400, "Bad Request: group chat was upgraded to a supergroup chat",
                       {"migrate_to_chat_id": state.migrated_chats[chat_id]})


def _reply_target(state: TelegramState, chat: Json, params: Json) -> Json | None:
    reply = params.get("reply_parameters")
    if reply is None and params.get("reply_to_message_id") is not None:
        reply = {"message_id": params["reply_to_message_id"],
                 "allow_sending_without_reply": params.get("allow_sending_without_reply")}
    if not isinstance(reply, dict):
        return None
    found = state.messages.get((chat["id"], int(reply.get("message_id") or 0)))
    if found is None and not reply.get("allow_sending_without_reply"):
        raise _bad("message to be replied not found")
    return _without_reply(found)


def _topic(state: TelegramState, chat: Json, params: Json, reply_to: Json | None) -> Json:
    """The forum-topic fields of a message sent with ``params``: the topic named by
    ``message_thread_id``, else the topic of the message it replies to, else none.

    Raises:
        ApiError: 400 "message thread not found" for a topic the chat does not have.
    """
    thread = params.get("message_thread_id")
    if thread is None:
        if reply_to is not None and reply_to.get("is_topic_message"):
            return {"message_thread_id": reply_to["message_thread_id"], "is_topic_message": True}
        return {}
    if not isinstance(thread, int) or thread not in state.topics.get(chat["id"], set()):
        raise _bad("message thread not found")
    return {"message_thread_id": thread, "is_topic_message": True}


def _editable(state: TelegramState, params: Json) -> Json | None:
    """The bot message an edit targets, or None for inline messages (which answer True)."""
    if params.get("inline_message_id"):
        return None
    message = state.messages.get(_message_key(params))
    if message is None:
        raise _bad("message to edit not found")
    if message["from"]["id"] != state.bot_id:
        raise _bad("message can't be edited")
    return message


def _not_modified() -> ApiError:
    return _bad("message is not modified: specified new message content and reply markup are "
                "exactly the same as a current content and reply markup of the message")


def _apply_edit(state: TelegramState, message: Json, changes: dict[str, Any]) -> Json:
    if all(message.get(key) == value for key, value in changes.items()):
        raise _not_modified()
    state._take_flood_slot(message["chat"])
    for key, value in changes.items():
        if value is None:
            message.pop(key, None)
        else:
            message[key] = value
    message["edit_date"] = int(time.time())
    return message


def _photo_from_upload(state: TelegramState, upload: UploadedFile) -> list[Json]:
    """Store an uploaded photo; its PhotoSize list (thumbnails first, as Telegram sends them)."""
    content = upload.content
    if not content:
        raise _bad("file must be non-empty")
    if len(content) > PHOTO_UPLOAD_LIMIT:
        raise _bad("file is too big")
    try:
        with Image.open(io.BytesIO(content)) as image:
            width, height = image.size
    except Exception:  # Pillow raises several types for non-images
        raise _bad("IMAGE_PROCESS_FAILED") from None
    if width + height > 10000 or max(width, height) > 20 * min(width, height):
        raise _bad("PHOTO_INVALID_DIMENSIONS")
    longest = max(width, height)
    sides = [side for side in (90, 320, 800, 1280) if side < longest] + [min(longest, 2560)]
    sizes: list[Json] = []
    for side in sides:
        scale = side / longest
        file_id, unique = _file_id("AgACAgIAAxkDAAI")
        sizes.append({"file_id": file_id, "file_unique_id": unique,
                      "width": max(1, round(width * scale)),
                      "height": max(1, round(height * scale)),
                      "file_size": max(1, round(len(content) * scale * scale))})
    for size in sizes:
        state.files[size["file_id"]] = FileRecord(size["file_id"], size["file_unique_id"], content,
                                                  "photo", mime_type="image/jpeg",
                                                  photo_sizes=sizes)
    return copy.deepcopy(sizes)


def _stored(state: TelegramState, value: Any, kind: str) -> FileRecord:
    """A file sent again by ``file_id`` (URLs cannot be fetched: the double is offline)."""
    if not isinstance(value, str) or not value:
        raise _bad(f"there is no {kind} in the request")
    if value.startswith(("http://", "https://")):
        raise _bad("failed to get HTTP URL content")
    record = state.files.get(value)
    if record is None:
        raise _bad("wrong file identifier/HTTP URL specified")
    if record.kind != kind:
        raise _bad("type of file mismatch")
    return record


def _photo(state: TelegramState, value: Any, upload: UploadedFile | None) -> list[Json]:
    if upload is not None:
        return _photo_from_upload(state, upload)
    return copy.deepcopy(_stored(state, value, "photo").photo_sizes or [])


def _document(state: TelegramState, value: Any, upload: UploadedFile | None) -> Json:
    if upload is None:
        record = _stored(state, value, "document")
    else:
        if not upload.content:
            raise _bad("file must be non-empty")
        if len(upload.content) > DOCUMENT_UPLOAD_LIMIT:
            raise ApiError(413, "Request Entity Too Large")
        file_id, unique = _file_id("BQACAgIAAxkDAAI")
        mime = (upload.content_type or mimetypes.guess_type(upload.filename)[0]
                or "application/octet-stream")
        record = FileRecord(file_id, unique, upload.content, "document", upload.filename, mime)
        state.files[file_id] = record
    return {"file_id": record.file_id, "file_unique_id": record.file_unique_id,
            "file_name": record.file_name, "mime_type": record.mime_type,
            "file_size": len(record.content)}


@_api("getMe")
async def _get_me(state: TelegramState, call: TelegramCall) -> Any:
    return state.bot_user() | {"can_join_groups": True, "can_read_all_group_messages": False,
                               "supports_inline_queries": True, "can_connect_to_business": False,
                               "has_main_web_app": False}


@_api("getUpdates")
async def _get_updates(state: TelegramState, call: TelegramCall) -> Any:
    if state.webhook is not None:
        raise ApiError(409, "Conflict: can't use getUpdates method while webhook is active; "
                            "use deleteWebhook to delete the webhook first")
    params = call.params
    offset = int(params.get("offset") or 0)
    limit = min(100, max(1, int(params.get("limit") or 100)))
    timeout = max(0.0, float(params.get("timeout") or 0))
    if isinstance(params.get("allowed_updates"), list):
        state.allowed_updates = params["allowed_updates"] or None
    # Confirm: a positive offset forgets older updates; a negative one keeps the last -offset.
    if offset > 0:
        state.updates = [u for u in state.updates if u["update_id"] >= offset]
    elif offset < 0:
        state.updates = state.updates[offset:]
    # A newer getUpdates ends an older one with 409, as on Telegram (two bot instances).
    state._poll_generation += 1
    generation = state._poll_generation
    state._notify()

    def deliverable() -> list[Json]:
        allowed = set(state.allowed_updates or ())
        def wanted(update: Json) -> bool:
            kind = next((k for k in update if k != "update_id"), "")
            return kind in allowed if allowed else kind not in _OPT_IN_UPDATES
        # Updates of unwanted types are never delivered, so they are dropped for good.
        state.updates = [u for u in state.updates if wanted(u)]
        return copy.deepcopy(state.updates[:limit])

    def ready() -> Any:
        return generation != state._poll_generation or state._closing or deliverable()

    if timeout and not ready():
        state._polls_waiting += 1
        state._notify()
        try:
            await state.wait_until(ready, timeout)
        except TimeoutError:
            pass
        finally:
            state._polls_waiting -= 1
    if generation != state._poll_generation:
        raise ApiError(409, "Conflict: terminated by other getUpdates request; make sure that "
                            "only one bot instance is running")
    return deliverable()


@_api("setWebhook")
async def _set_webhook(state: TelegramState, call: TelegramCall) -> Any:
    params = call.params
    url = str(params.get("url") or "")
    if not url:  # an empty URL removes the webhook, as on Telegram
        state.webhook = None
        return True
    parts = urllib.parse.urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise _bad("bad webhook: Failed to resolve host: Name or service not known")
    if parts.hostname not in _LOOPBACK:  # loopback is exempt so tests can receive webhooks
        if parts.scheme != "https":
            raise _bad("bad webhook: An HTTPS URL must be provided for webhook")
        if (parts.port or 443) not in (80, 88, 443, 8443):
            raise _bad("bad webhook: Webhook can be set up only on ports 80, 88, 443 or 8443")
    secret = params.get("secret_token")
    if secret is not None and not re.fullmatch(r"[A-Za-z0-9_-]{1,256}", str(secret)):
        raise _bad("secret token contains unallowed characters")
    max_connections = int(params.get("max_connections") or 40)
    if not 1 <= max_connections <= 100:
        raise _bad("bad webhook: max_connections must be between 1 and 100")
    if params.get("drop_pending_updates"):
        state.updates.clear()
    if isinstance(params.get("allowed_updates"), list):
        state.allowed_updates = params["allowed_updates"] or None
    state.webhook = {"url": url, "secret_token": secret, "max_connections": max_connections}
    return True


@_api("deleteWebhook")
async def _delete_webhook(state: TelegramState, call: TelegramCall) -> Any:
    if call.params.get("drop_pending_updates"):
        state.updates.clear()
    state.webhook = None
    return True


@_api("getWebhookInfo")
async def _get_webhook_info(state: TelegramState, call: TelegramCall) -> Any:
    info: Json = {"url": "", "has_custom_certificate": False,
                  "pending_update_count": len(state.updates)}
    if state.webhook is not None:
        info |= {k: v for k, v in state.webhook.items() if k != "secret_token"}
        info["ip_address"] = "127.0.0.1"
        if state.allowed_updates:
            info["allowed_updates"] = state.allowed_updates
    return info


@_api("setMyCommands")
async def _set_my_commands(state: TelegramState, call: TelegramCall) -> Any:
    commands = call.params.get("commands")
    if not isinstance(commands, list):
        raise _bad("can't parse commands JSON object")
    if len(commands) > 100:
        raise _bad("BOT_COMMANDS_TOO_MUCH")
    for command in commands:
        if not isinstance(command, dict) or not re.fullmatch(r"[a-z0-9_]{1,32}",
                                                             str(command.get("command", ""))):
            raise _bad("BOT_COMMAND_INVALID")
        if not 1 <= len(str(command.get("description", "")).strip()) <= 256:
            raise _bad("BOT_COMMAND_DESCRIPTION_INVALID")
    key = _commands_key(call.params.get("scope"), call.params.get("language_code"))
    if commands:
        state.commands[key] = [{"command": c["command"], "description": c["description"]}
                               for c in commands]
    else:
        state.commands.pop(key, None)
    return True


@_api("getMyCommands")
async def _get_my_commands(state: TelegramState, call: TelegramCall) -> Any:
    return state.commands_for(call.params.get("scope"), call.params.get("language_code") or "")


@_api("deleteMyCommands")
async def _delete_my_commands(state: TelegramState, call: TelegramCall) -> Any:
    state.commands.pop(_commands_key(call.params.get("scope"), call.params.get("language_code")),
                       None)
    return True


@_api("sendMessage")
async def _send_message(state: TelegramState, call: TelegramCall) -> Any:
    chat = _target(state, call.params)
    _check_right(state, chat, "can_send_messages")
    text, entities = _formatted(call.params, "text", "entities", TEXT_LIMIT, "message is too long")
    if not text.strip():
        raise _bad("message text is empty")
    markup = _check_markup(call.params.get("reply_markup"))
    reply_to = _reply_target(state, chat, call.params)
    topic = _topic(state, chat, call.params, reply_to)
    state._take_flood_slot(chat)
    return state._store(chat, state.bot_user(), text=text, entities=entities,
                        reply_markup=markup, reply_to_message=reply_to, **topic)


@_api("editMessageText")
async def _edit_message_text(state: TelegramState, call: TelegramCall) -> Any:
    message = _editable(state, call.params)
    text, entities = _formatted(call.params, "text", "entities", TEXT_LIMIT, "message is too long")
    if not text.strip():
        raise _bad("message text is empty")
    markup = _check_markup(call.params.get("reply_markup"))
    if message is None:
        return True
    if "text" not in message:
        raise _bad("there is no text in the message to edit")
    # An edit without reply_markup removes the inline keyboard, as on Telegram.
    return _apply_edit(state, message, {"text": text, "entities": entities,
                                        "reply_markup": markup})


@_api("editMessageCaption")
async def _edit_message_caption(state: TelegramState, call: TelegramCall) -> Any:
    message = _editable(state, call.params)
    caption, entities = _formatted(call.params, "caption", "caption_entities", CAPTION_LIMIT,
                                   "message caption is too long")
    markup = _check_markup(call.params.get("reply_markup"))
    if message is None:
        return True
    if not any(key in message for key in ("photo", "document", "video", "animation", "audio")):
        raise _bad("there is no caption in the message to edit")
    return _apply_edit(state, message, {"caption": caption or None,
                                        "caption_entities": entities, "reply_markup": markup})


@_api("editMessageReplyMarkup")
async def _edit_message_reply_markup(state: TelegramState, call: TelegramCall) -> Any:
    message = _editable(state, call.params)
    markup = _check_markup(call.params.get("reply_markup"))
    if message is None:
        return True
    return _apply_edit(state, message, {"reply_markup": markup})


@_api("editMessageMedia")
async def _edit_message_media(state: TelegramState, call: TelegramCall) -> Any:
    """Swap a photo or document message's file (an upload or a file id), caption and keyboard."""
    message = _editable(state, call.params)
    media = call.params.get("media")
    if not isinstance(media, dict) or media.get("type") not in ("photo", "document"):
        raise _bad("can't parse InputMedia: unsupported media type in the double")
    kind = str(media["type"])
    reference = str(media.get("media") or "")
    upload = None
    if reference.startswith("attach://"):
        upload = call.uploads.get(reference.removeprefix("attach://"))
        if upload is None:
            raise _bad(f"file {reference} not found in the request")
        if message is None:
            raise _bad("can't upload file for inline messages")  # Bot API: inline edits take no uploads
    caption, entities = _formatted(media, "caption", "caption_entities", CAPTION_LIMIT,
                                   "message caption is too long")
    markup = _check_markup(call.params.get("reply_markup"))
    content = _photo(state, reference, upload) if kind == "photo" else _document(state, reference, upload)
    if message is None:
        return True
    if not any(key in message for key in ("photo", "document", "video", "animation", "audio")):
        raise _bad("there is no media in the message to edit")
    if message.get("media_group_id") and kind not in message:
        raise _bad("can't change the media type of a message in a media group")
    other = "document" if kind == "photo" else "photo"
    spoiler = bool(media.get("has_spoiler")) and kind == "photo"
    return _apply_edit(state, message, {kind: content, other: None, "caption": caption or None,
                                        "caption_entities": entities, "has_media_spoiler": spoiler or None,
                                        "reply_markup": markup})


def _send_file(state: TelegramState, call: TelegramCall, kind: str,
               read: Callable[[TelegramState, Any, UploadedFile | None], Any]) -> Json:
    """sendPhoto / sendDocument: a captioned message carrying the file under ``kind``."""
    chat = _target(state, call.params)
    _check_right(state, chat, "can_send_photos" if kind == "photo" else "can_send_documents")
    caption, entities = _formatted(call.params, "caption", "caption_entities", CAPTION_LIMIT,
                                   "message caption is too long")
    markup = _check_markup(call.params.get("reply_markup"))
    reply_to = _reply_target(state, chat, call.params)
    topic = _topic(state, chat, call.params, reply_to)
    content = read(state, call.params.get(kind), call.uploads.get(kind))
    # Bot API: has_spoiler is a parameter of sendPhoto (and video/animation), not sendDocument.
    spoiler = bool(call.params.get("has_spoiler")) and kind == "photo"
    state._take_flood_slot(chat)
    return state._store(chat, state.bot_user(), caption=caption or None, caption_entities=entities,
                        reply_markup=markup, reply_to_message=reply_to,
                        has_media_spoiler=spoiler or None, **topic, **{kind: content})


@_api("sendPhoto")
async def _send_photo(state: TelegramState, call: TelegramCall) -> Any:
    return _send_file(state, call, "photo", _photo)


@_api("sendDocument")
async def _send_document(state: TelegramState, call: TelegramCall) -> Any:
    return _send_file(state, call, "document", _document)


@_api("sendMediaGroup")
async def _send_media_group(state: TelegramState, call: TelegramCall) -> Any:
    chat = _target(state, call.params)
    media = call.params.get("media")
    if not isinstance(media, list) or not all(isinstance(item, dict) for item in media):
        raise _bad("can't parse media JSON object")
    if not 2 <= len(media) <= 10:
        raise _bad("wrong number of media in the media group: must be 2-10")
    if "reply_markup" in call.params:
        raise _bad("reply markup isn't supported for media groups")
    kinds = {item.get("type") for item in media}
    if not kinds <= {"photo", "document"}:
        raise _bad(f"unsupported media type in the double: {sorted(map(str, kinds))}")
    if len(kinds) > 1:
        raise _bad("document can't be mixed with other media types")
    _check_right(state, chat, "can_send_photos" if kinds == {"photo"} else "can_send_documents")
    reply_to = _reply_target(state, chat, call.params)
    contents: list[Json] = []
    for item in media:
        reference = str(item.get("media") or "")
        upload = None
        if reference.startswith("attach://"):
            upload = call.uploads.get(reference.removeprefix("attach://"))
            if upload is None:
                raise _bad(f"file {reference} not found in the request")
        caption, entities = _formatted(item, "caption", "caption_entities", CAPTION_LIMIT,
                                       "message caption is too long")
        content: Json = {"caption": caption or None, "caption_entities": entities}
        if item["type"] == "photo":
            content["photo"] = _photo(state, reference, upload)
            content["has_media_spoiler"] = bool(item.get("has_spoiler")) or None
        else:
            content["document"] = _document(state, reference, upload)
        contents.append(content)
    topic = _topic(state, chat, call.params, reply_to)
    state._take_flood_slot(chat)
    group_id = str(secrets.randbits(60))
    return [state._store(chat, state.bot_user(), media_group_id=group_id,
                         reply_to_message=reply_to, **topic, **content) for content in contents]


@_api("sendChatAction")
async def _send_chat_action(state: TelegramState, call: TelegramCall) -> Any:
    _topic(state, _target(state, call.params), call.params, None)
    if call.params.get("action") not in CHAT_ACTIONS:
        raise _bad("wrong parameter action in request")
    return True


@_api("answerCallbackQuery")
async def _answer_callback_query(state: TelegramState, call: TelegramCall) -> Any:
    query_id = str(call.params.get("callback_query_id") or "")
    if query_id not in state._open_callbacks:
        raise _bad(_TOO_OLD)
    if len(str(call.params.get("text") or "")) > CALLBACK_ANSWER_LIMIT:
        raise _bad("MESSAGE_TOO_LONG")
    state._open_callbacks.discard(query_id)
    state.callback_answers[query_id] = dict(call.params)
    return True


@_api("answerInlineQuery")
async def _answer_inline_query(state: TelegramState, call: TelegramCall) -> Any:
    query_id = str(call.params.get("inline_query_id") or "")
    if query_id not in state._open_inline:
        raise _bad(_TOO_OLD)
    results = call.params.get("results")
    if not isinstance(results, list) or not all(isinstance(r, dict) for r in results):
        raise _bad("can't parse inline query results JSON object")
    if len(results) > INLINE_RESULTS_LIMIT:
        raise _bad("RESULTS_TOO_MUCH")
    ids = [str(r.get("id", "")) for r in results]
    if any(not 1 <= len(i.encode()) <= 64 for i in ids):
        raise _bad("RESULT_ID_INVALID")
    if len(set(ids)) != len(ids):
        raise _bad("RESULT_ID_DUPLICATE")
    state._open_inline.discard(query_id)
    state.inline_answers[query_id] = dict(call.params)
    return True


@_api("deleteMessage")
async def _delete_message(state: TelegramState, call: TelegramCall) -> Any:
    key = _message_key(call.params)
    message = state.messages.get(key)
    if message is None:
        raise _bad("message to delete not found")
    in_group = message["chat"]["type"] in ("group", "supergroup")
    if (message["from"]["id"] != state.bot_id and in_group
            and not state._bot_can_delete.get(key[0], False)):
        raise _bad("message can't be deleted")
    state.deleted_messages[key] = state.messages.pop(key)
    return True


@_api("getChatAdministrators")
async def _get_chat_administrators(state: TelegramState, call: TelegramCall) -> Any:
    chat = state.chat(call.params.get("chat_id") or 0)
    if chat["type"] == "private":
        raise _bad("there are no administrators in the private chat")
    return copy.deepcopy(state.admins.get(chat["id"], []))


@_api("getChat")
async def _get_chat(state: TelegramState, call: TelegramCall) -> Any:
    chat = state.chat(call.params.get("chat_id") or 0)
    gifts = dict.fromkeys(("unlimited_gifts", "limited_gifts", "unique_gifts",
                           "premium_subscription", "gifts_from_channels"), True)
    return chat | {"accent_color_id": 0, "max_reaction_count": 11, "accepted_gift_types": gifts}


@_api("getFile")
async def _get_file(state: TelegramState, call: TelegramCall) -> Any:
    record = state.files.get(str(call.params.get("file_id") or ""))
    if record is None:
        raise _bad("invalid file_id")
    if len(record.content) > DOWNLOAD_LIMIT:
        raise _bad("file is too big")
    if record.file_path is None:
        extension = ".jpg" if record.kind == "photo" else (
            mimetypes.guess_extension(record.mime_type or "") or "")
        record.file_path = f"{record.kind}s/file_{len(state._file_paths)}{extension}"
        state._file_paths[record.file_path] = record.file_id
    return {"file_id": record.file_id, "file_unique_id": record.file_unique_id,
            "file_size": len(record.content), "file_path": record.file_path}


# -- request decoding and the app ------------------------------------------------------------


def _decode_value(name: str, raw: str) -> Any:
    """Undo PTB's encoding: strings travel raw, everything else as JSON."""
    if name in _STRING_PARAMS:
        return raw
    try:
        return json.loads(raw)
    except ValueError:
        return raw


def _parse_multipart(content_type: str, body: bytes) -> tuple[dict[str, str],
                                                               dict[str, UploadedFile]]:
    """Split a multipart body into text fields and file parts (parsed from the raw bytes because
    the recording middleware has already consumed the stream)."""
    holder = email.message.Message()
    holder["content-type"] = content_type
    boundary = holder.get_param("boundary")
    fields: dict[str, str] = {}
    files: dict[str, UploadedFile] = {}
    if not isinstance(boundary, str):
        return fields, files
    for chunk in body.split(b"--" + boundary.encode())[1:]:
        if chunk.startswith(b"--"):
            break
        head, _, content = chunk.removeprefix(b"\r\n").removesuffix(b"\r\n").partition(b"\r\n\r\n")
        headers = email.message.Message()
        for line in head.decode("utf-8", "replace").split("\r\n"):
            key, _, value = line.partition(":")
            if value:
                headers[key.strip()] = value.strip()
        name = str(headers.get_param("name", header="content-disposition") or "")
        filename = headers.get_filename()
        if filename is None:
            fields[name] = content.decode("utf-8", "replace")
        else:
            part_type = headers.get_content_type() if "content-type" in headers else None
            files[name] = UploadedFile(filename, part_type, content)
    return fields, files


async def _decode_request(request: web.Request) -> tuple[Json, dict[str, UploadedFile]]:
    raw = await request.read()
    params: Json = {k: _decode_value(k, v) for k, v in request.query.items()}
    uploads: dict[str, UploadedFile] = {}
    if request.content_type == "application/json" and raw:
        with contextlib.suppress(ValueError):
            body = json.loads(raw)
            params.update(body if isinstance(body, dict) else {})
    elif request.content_type == "multipart/form-data":
        fields, uploads = _parse_multipart(request.headers.get("Content-Type", ""), raw)
        params.update({k: _decode_value(k, v) for k, v in fields.items()})
    elif raw:
        pairs = urllib.parse.parse_qsl(raw.decode("utf-8", "replace"), keep_blank_values=True)
        params.update({k: _decode_value(k, v) for k, v in pairs})
    return params, uploads


def make_app(state: TelegramState) -> web.Application:
    """Build the double's aiohttp application around ``state``."""

    @web.middleware
    async def record(request: web.Request, handler: Any) -> web.StreamResponse:
        if request.match_info.route.name != "api":
            return await handler(request)
        params, uploads = await _decode_request(request)
        requested = request.match_info["method"]
        name = _METHODS.get(requested.lower(), (requested, None))[0]
        call = TelegramCall(name, params, {k: u.content for k, u in uploads.items()},
                            time.monotonic(), uploads)
        request[_CALL] = call
        state.calls.append(call)
        state._notify()
        response = await handler(request)
        call.status = response.status
        if isinstance(response, web.Response) and isinstance(response.body, bytes):
            with contextlib.suppress(ValueError):
                call.response = json.loads(response.body)
        state._notify()
        return response

    async def api(request: web.Request) -> web.StreamResponse:
        call: TelegramCall = request[_CALL]
        if request.match_info["token"] != state.token:
            return respond(401, error_body(401, "Unauthorized"))
        entry = _METHODS.get(call.method.lower())
        if entry is None:
            return respond(404, error_body(404, "Not Found"))
        try:
            _migrated(state, call.params)
            result = await entry[1](state, call)
        except ApiError as exc:
            return respond(exc.status, error_body(exc.status, exc.description, exc.parameters))
        return respond(200, {"ok": True, "result": result})

    async def download(request: web.Request) -> web.StreamResponse:
        if request.match_info["token"] != state.token:
            return respond(401, error_body(401, "Unauthorized"))
        file_id = state._file_paths.get(request.match_info["path"])
        if file_id is None:
            return respond(404, error_body(404, "Not Found"))
        record = state.files[file_id]
        return web.Response(body=record.content,
                            content_type=record.mime_type or "application/octet-stream")

    # Uploads up to the 50 MB document limit must reach the handler to be judged there.
    app = web.Application(middlewares=[record, scripting_middleware(state)],
                          client_max_size=DOCUMENT_UPLOAD_LIMIT + 16 * 1024 * 1024)
    app.router.add_route("*", "/bot{token}/{method}", api, name="api")
    app.router.add_get("/file/bot{token}/{path:.+}", download)
    return app


@contextlib.asynccontextmanager
async def running_telegram(token: str = DEFAULT_TOKEN, username: str = DEFAULT_USERNAME,
                           bot_id: int = DEFAULT_BOT_ID, *, state: TelegramState | None = None
                           ) -> AsyncIterator[TelegramState]:
    """Serve the double on 127.0.0.1 (a free port) for the duration of the ``async with``.

    Yields:
        The state, with ``base_url`` and ``base_file_url`` set for PTB's ``Bot``.
    """
    state = state or TelegramState(token=token, username=username, bot_id=bot_id)
    async with serve(make_app(state)) as root:
        state.base_url, state.base_file_url = f"{root}/bot", f"{root}/file/bot"
        try:
            yield state
        finally:
            # Release pending long polls so the server shuts down at once.
            state._closing = True
            state._notify()
