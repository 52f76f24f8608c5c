"""Loopback double of Discord: the REST API v10 and the gateway websocket.

The real discord.py library talks to it unmodified once :func:`use_double` has pointed it here
(``discord.http.Route.BASE``, which the webhook and interaction code share, and
``DiscordWebSocket.DEFAULT_GATEWAY``, which a plain ``Client`` and an ``AutoShardedClient`` with an
explicit ``shard_count`` connect to without asking ``/gateway/bot``).

REST, under ``/api/v10`` (bot routes need ``Authorization: Bot <token>``, else 401 code 0):

* login and startup: ``GET /users/@me``, ``GET /oauth2/applications/@me`` (discord.py's
  ``application_info``, called by ``Client.login``), ``GET /applications/@me``, ``GET /gateway``,
  ``GET /gateway/bot`` (its ``url`` points at this double);
* commands: ``GET``/``PUT /applications/{app}/commands`` and the ``/guilds/{guild}/`` variants;
* interactions (no bot auth, like Discord): ``POST /interactions/{id}/{token}/callback`` and the
  interaction webhook ``/webhooks/{app}/{token}`` (followups) and ``.../messages/@original|{id}``;
* channels: messages (create, get, edit, delete), typing, ``GET /channels/{id}``,
  ``POST /users/@me/channels`` (DMs), ``GET /users/{id}``;
* message bodies are checked as Discord does: content length, embed count, attachments (at most 10,
  within the size limit), component layout (:func:`components_problem`: rows, buttons, selects)
  and ``allowed_mentions`` (:func:`allowed_mentions_problem`); each message records the mentions
  Discord would act on (``mentions``, ``mention_roles``, ``mention_everyone``, from
  :func:`resolve_mentions`), and each call tells what it sent and pinged
  (:attr:`DiscordCall.allowed_mentions`, :attr:`DiscordCall.pings`);
* anything else answers 404 ``{"message": "404: Not Found", "code": 0}`` and is recorded as route
  ``"unknown"``, so tests can spot unexpected calls.

Every answer carries generous ``X-RateLimit-*`` headers so discord.py never sleeps. Attachments sent
to the double are served back from ``/attachments/{channel}/{id}/{filename}`` (the "CDN").

The gateway at ``/gateway`` speaks plain JSON text frames (discord.py asks for ``zlib-stream`` but
accepts uncompressed text): HELLO, HEARTBEAT_ACK, IDENTIFY -> READY + one GUILD_CREATE per guild
the shard owns, RESUME -> RESUMED, REQUEST_GUILD_MEMBERS -> one GUILD_MEMBERS_CHUNK. Tests push
events with :meth:`DiscordState.dispatch` and :meth:`DiscordState.dispatch_interaction`, building
interactions with :meth:`DiscordState.slash_command`, :meth:`~DiscordState.autocomplete`,
:meth:`~DiscordState.button_click` and :meth:`~DiscordState.modal_submit`.

Every call that reaches a route is recorded in ``state.calls`` as a :class:`DiscordCall` (decoded
JSON or ``payload_json``, uploaded files, arrival time); ``state.requests`` and ``state.fail_next``
work as in :mod:`tests.doubles.server` (the gateway upgrade is exempt from both, so scripted
failures only hit REST calls). Note that discord.py's own startup calls (``/users/@me``,
``/oauth2/applications/@me``, ``/gateway/bot``) take ``fail_next`` entries too.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import dataclasses
import email.message
import hashlib
import json
import mimetypes
import re
import secrets
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Iterator
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any

from aiohttp import WSMsgType, web

from tests.doubles.server import (
    RecordedRequest,
    Scripted,
    Watched,
    reply,
    respond,
    scripting_middleware,
    serve,
)

API = "/api/v10"
DISCORD_EPOCH_MS = 1_420_070_400_000

# Fixed, realistic snowflakes (2024-ish). For bots made since 2022 the bot user id equals the
# application id. GUILD_ID sits on shard 0 and SECOND_GUILD_ID on shard 1 of a 2-shard bot.
APPLICATION_ID = 1_234_567_890_123_456_789
BOT_USER_ID = APPLICATION_ID
OWNER_ID = 987_654_321_098_765_432
USER_ID = 1_111_111_111_111_111_111
OTHER_USER_ID = 1_222_222_222_222_222_222
GUILD_ID = 1_200_000_000_000_524_288  # (id >> 22) is even
SECOND_GUILD_ID = 1_200_000_000_100_000_000  # (id >> 22) is odd
CHANNEL_ID = 1_300_000_000_000_000_001
SECOND_CHANNEL_ID = 1_300_000_000_000_000_002

VALID_TOKEN = (
    base64.b64encode(str(BOT_USER_ID).encode()).decode().rstrip("=")
    + ".GdOubl.e_TestDoubleTokenNotARealSecret0123456"
)
DEFAULT_ATTACHMENT_LIMIT = 10 * 1024 * 1024  # 10 MiB, the limit for an unboosted guild
MAX_ATTACHMENTS = 10  # files per message
MAX_ACTION_ROWS = 5
_SELECT_TYPES = {3, 5, 6, 7, 8}  # string, user, role, mentionable and channel selects
# Permission bit sets as Discord sends them (decimal strings).
SEND_MESSAGES = 1 << 11
ADMINISTRATOR = 1 << 3
MANAGE_GUILD = 1 << 5
EVERYONE_PERMISSIONS = "104324673"  # Discord's classic @everyone default: view, send, attach...
MEMBER_PERMISSIONS = "2248473465835073"  # a typical member's resolved permissions in a channel
APP_PERMISSIONS = "2248473465835073"
# Privileged intents: GUILD_MEMBERS, GUILD_PRESENCES, MESSAGE_CONTENT.
PRIVILEGED_INTENTS = (1 << 1) | (1 << 8) | (1 << 15)

# Message flags.
EPHEMERAL = 1 << 6
LOADING = 1 << 7
# Interaction types and callback types.
PING, APPLICATION_COMMAND, MESSAGE_COMPONENT, AUTOCOMPLETE, MODAL_SUBMIT = 1, 2, 3, 4, 5
PONG, CHANNEL_MESSAGE, DEFERRED_CHANNEL_MESSAGE, DEFERRED_UPDATE, UPDATE_MESSAGE = 1, 4, 5, 6, 7
AUTOCOMPLETE_RESULT, MODAL = 8, 9
_ALLOWED_CALLBACKS = {
    PING: {PONG},
    APPLICATION_COMMAND: {CHANNEL_MESSAGE, DEFERRED_CHANNEL_MESSAGE, MODAL},
    MESSAGE_COMPONENT: {CHANNEL_MESSAGE, DEFERRED_CHANNEL_MESSAGE, DEFERRED_UPDATE, UPDATE_MESSAGE,
                        MODAL},
    AUTOCOMPLETE: {AUTOCOMPLETE_RESULT},
    MODAL_SUBMIT: {CHANNEL_MESSAGE, DEFERRED_CHANNEL_MESSAGE, DEFERRED_UPDATE, UPDATE_MESSAGE},
}  # fmt: skip
# Option types of application commands.
SUB_COMMAND, SUB_COMMAND_GROUP, STRING, INTEGER, BOOLEAN, NUMBER, ATTACHMENT = 1, 2, 3, 4, 5, 10, 11
# Modal component types whose submission carries "values" (a list) rather than "value".
_LIST_VALUED = {3, 5, 6, 7, 8, 19, 22}
_INPUT_TYPES = {3, 4, 5, 6, 7, 8, 19, 21, 22, 23}

_last_snowflake = 0


def snowflake() -> int:
    """A fresh, strictly increasing snowflake: milliseconds since the Discord epoch << 22."""
    global _last_snowflake
    candidate = (int(time.time() * 1000) - DISCORD_EPOCH_MS) << 22 | (1 << 17)
    _last_snowflake = max(candidate, _last_snowflake + 1)
    return _last_snowflake


def shard_of(guild_id: int, shard_count: int) -> int:
    """The shard that owns ``guild_id``: ``(guild_id >> 22) % shard_count``, as Discord says."""
    return (int(guild_id) >> 22) % max(1, shard_count)


def snowflake_on_shard(shard_id: int, shard_count: int) -> int:
    """A fresh snowflake (e.g. a guild id) that lands on ``shard_id`` of ``shard_count``."""
    while shard_of(candidate := snowflake(), shard_count) != shard_id:
        pass
    return candidate


def _iso(at: float | None = None) -> str:
    moment = datetime.fromtimestamp(time.time() if at is None else at, timezone.utc)
    return moment.isoformat(timespec="microseconds")


def user_object(user_id: int, username: str | None = None, *, bot: bool = False) -> dict[str, Any]:
    """A Discord user object (new-style username: discriminator ``"0"``)."""
    name = username or f"user{int(user_id) % 100000}"
    data: dict[str, Any] = {
        "id": str(user_id),
        "username": name,
        "global_name": name.title(),
        "discriminator": "0",
        "avatar": None,
        "public_flags": 0,
        "avatar_decoration_data": None,
    }
    if bot:
        data |= {"bot": True, "global_name": None}
    return data


def text_channel(channel_id: int, guild_id: int, name: str, position: int = 0) -> dict[str, Any]:
    """A guild text channel object (type 0)."""
    return {
        "id": str(channel_id),
        "type": 0,
        "guild_id": str(guild_id),
        "name": name,
        "position": position,
        "parent_id": None,
        "topic": None,
        "nsfw": False,
        "rate_limit_per_user": 0,
        "last_message_id": None,
        "permission_overwrites": [],
        "flags": 0,
    }


def make_guild(
    guild_id: int,
    *,
    name: str = "Test Guild",
    channel_ids: Iterable[int] = (),
    owner_id: int = OWNER_ID,
    everyone_permissions: str = EVERYONE_PERMISSIONS,
) -> dict[str, Any]:
    """A full guild object as GUILD_CREATE carries it (the bot's member is added on dispatch).

    Args:
        guild_id: The guild's snowflake; it decides the shard (:func:`shard_of`).
        name: Guild name.
        channel_ids: Text channels to create (named ``general``, ``channel-2``...); one fresh
            channel when empty.
        owner_id: The owner's user id.
        everyone_permissions: Permissions of the @everyone role (its id is the guild id).
    """
    ids = list(channel_ids) or [snowflake()]
    channels = [
        text_channel(cid, guild_id, "general" if n == 0 else f"channel-{n + 1}", n)
        for n, cid in enumerate(ids)
    ]
    return {
        "id": str(guild_id),
        "name": name,
        "icon": None,
        "splash": None,
        "discovery_splash": None,
        "banner": None,
        "description": None,
        "owner_id": str(owner_id),
        "region": "deprecated",
        "afk_channel_id": None,
        "afk_timeout": 300,
        "verification_level": 0,
        "default_message_notifications": 1,
        "explicit_content_filter": 0,
        "mfa_level": 0,
        "nsfw_level": 0,
        "premium_tier": 0,
        "premium_subscription_count": 0,
        "premium_progress_bar_enabled": False,
        "preferred_locale": "en-US",
        "system_channel_id": channels[0]["id"],
        "system_channel_flags": 0,
        "rules_channel_id": None,
        "public_updates_channel_id": None,
        "safety_alerts_channel_id": None,
        "vanity_url_code": None,
        "application_id": None,
        "max_members": 500000,
        "max_video_channel_users": 25,
        "max_stage_video_channel_users": 50,
        "roles": [
            {
                "id": str(guild_id),
                "name": "@everyone",
                "permissions": everyone_permissions,
                "position": 0,
                "color": 0,
                "colors": {"primary_color": 0, "secondary_color": None, "tertiary_color": None},
                "hoist": False,
                "managed": False,
                "mentionable": False,
                "icon": None,
                "unicode_emoji": None,
                "flags": 0,
            }
        ],
        "channels": channels,
        "members": [],
        "member_count": 2,
        "large": False,
        "features": [],
        "emojis": [],
        "stickers": [],
        "voice_states": [],
        "presences": [],
        "threads": [],
        "stage_instances": [],
        "guild_scheduled_events": [],
        "soundboard_sounds": [],
        "embedded_activities": [],
        "unavailable": False,
        "lazy": True,
        "nsfw": False,
        "incidents_data": None,
    }


def rate_limited(retry_after: float = 0.05, *, is_global: bool = False) -> Scripted:
    """A scripted 429 for ``state.fail_next`` that discord.py honours (sleeps, then retries).

    discord.py treats a 429 without a ``Via`` header, or with a non-JSON body, as a Cloudflare ban
    and raises ``HTTPException`` instead of retrying; this one has both.
    """
    body = {"message": "You are being rate limited.", "retry_after": retry_after,
            "global": is_global, "code": 0}
    headers = {
        "Via": "1.1 google",
        "Retry-After": str(max(1, round(retry_after))),
        "X-RateLimit-Scope": "global" if is_global else "user",
        "X-RateLimit-Limit": "5",
        "X-RateLimit-Remaining": "0",
        "X-RateLimit-Reset-After": f"{retry_after:.3f}",
        "X-RateLimit-Reset": f"{time.time() + retry_after:.3f}",
    }
    return reply(429, body, headers)


def error_body(message: str, code: int, errors: dict[str, Any] | None = None) -> dict[str, Any]:
    """Discord's JSON error shape ``{"message", "code"[, "errors"]}``."""
    body: dict[str, Any] = {"message": message, "code": code}
    if errors is not None:
        body["errors"] = errors
    return body


def _form_error(path: str, code: str, message: str) -> web.Response:
    """400 Invalid Form Body (code 50035) with one error at ``path`` (dot-separated)."""
    errors: dict[str, Any] = {"_errors": [{"code": code, "message": message}]}
    for part in reversed(path.split(".")):
        errors = {part: errors}
    return respond(400, error_body("Invalid Form Body", 50035, errors))


def _error(status: int, message: str, code: int) -> web.Response:
    return respond(status, error_body(message, code))


@dataclass(frozen=True)
class UploadedFile:
    """One file part of a multipart request (``files[n]``)."""

    field: str
    filename: str
    size: int
    content: bytes
    content_type: str | None = None


@dataclass(frozen=True)
class DiscordCall:
    """One request that reached a route of the double.

    Attributes:
        method: HTTP method.
        route: Route name, e.g. ``"interaction_callback"``, ``"edit_original"``, ``"unknown"``.
        path: The request path.
        params: Path parameters (strings), e.g. ``{"interaction_id": ..., "token": ...}``.
        query: Query parameters, e.g. ``{"with_response": "1"}``.
        payload: Decoded JSON body, or the decoded ``payload_json`` of a multipart body.
        files: Uploaded files, in request order.
        at: ``time.monotonic()`` when the request arrived.
        status: The status the double answered.
    """

    method: str
    route: str
    path: str
    params: dict[str, str]
    query: dict[str, str]
    payload: Any
    files: tuple[UploadedFile, ...]
    at: float
    status: int = 0

    @property
    def message_body(self) -> dict[str, Any] | None:
        """The message body this call carried: the payload of a create, edit, followup or
        webhook call, or an interaction callback's ``data``; None when it carried none."""
        if not isinstance(self.payload, dict):
            return None
        if self.route == "interaction_callback":
            data = self.payload.get("data")
            return data if isinstance(data, dict) else None
        return self.payload

    @property
    def allowed_mentions(self) -> dict[str, Any] | None:
        """The ``allowed_mentions`` object the call sent, or None when it sent none (then
        Discord parses every mention in the content)."""
        body = self.message_body
        value = body.get("allowed_mentions") if body is not None else None
        return value if isinstance(value, dict) else None

    @property
    def pings(self) -> Pings:
        """Whom this call's message pings, as Discord resolves it (:func:`resolve_mentions`)."""
        body = self.message_body or {}
        return resolve_mentions(body.get("content"), body.get("allowed_mentions"))


@dataclass(frozen=True)
class Pings:
    """Who a message notifies: user ids, role ids (strings), and whether @everyone/@here."""

    users: tuple[str, ...] = ()
    roles: tuple[str, ...] = ()
    everyone: bool = False


_USER_MENTION = re.compile(r"<@!?(\d+)>")
_ROLE_MENTION = re.compile(r"<@&(\d+)>")
_EVERYONE_MENTION = re.compile(r"@(?:everyone|here)\b")
_MENTION_TYPES = {"users", "roles", "everyone"}
MAX_ALLOWED_MENTION_IDS = 100


def resolve_mentions(content: Any, allowed: Any) -> Pings:
    """The mentions Discord acts on for a message with ``content`` and ``allowed_mentions``.

    Discord API (Allowed Mentions Object): without ``allowed_mentions`` every user, role and
    @everyone/@here mention in the content pings. With it, only the types in ``parse`` and the
    ids listed in ``users``/``roles`` do, and only when the content really mentions them (no
    phantom pings). Mentions inside embeds never ping. Permission checks (Mention @everyone,
    mentionable roles) are not modelled: the double counts such a mention as pinging.
    """
    text = content if isinstance(content, str) else ""
    users = list(dict.fromkeys(_USER_MENTION.findall(text)))
    roles = list(dict.fromkeys(_ROLE_MENTION.findall(text)))
    everyone = bool(_EVERYONE_MENTION.search(text))
    if not isinstance(allowed, dict):
        return Pings(tuple(users), tuple(roles), everyone)
    parse = set(allowed.get("parse") or [])
    listed_users = {str(u) for u in allowed.get("users") or []}
    listed_roles = {str(r) for r in allowed.get("roles") or []}
    return Pings(
        tuple(u for u in users if "users" in parse or u in listed_users),
        tuple(r for r in roles if "roles" in parse or r in listed_roles),
        everyone and "everyone" in parse,
    )


def allowed_mentions_problem(allowed: Any) -> tuple[str, str, str] | None:
    """Discord's checks on an ``allowed_mentions`` object, as ``(path, code, message)`` of the
    50035 Invalid Form Body error, or None when acceptable (or absent)."""
    if allowed is None:
        return None
    if not isinstance(allowed, dict):
        return "allowed_mentions", "MODEL_TYPE_CONVERT", "Only dictionaries may be used in a ModelType"
    parse = allowed.get("parse") or []
    if not isinstance(parse, list) or any(p not in _MENTION_TYPES for p in parse):
        return "allowed_mentions.parse", "ENUM_TYPE_COERCE", "Value is not a valid enum value."
    for kind in ("users", "roles"):
        listed = allowed.get(kind)
        if listed is None:
            continue
        if not isinstance(listed, list) or any(not str(i).isdigit() for i in listed):
            return f"allowed_mentions.{kind}", "NUMBER_TYPE_COERCE", "Value is not snowflake."
        if len(listed) > MAX_ALLOWED_MENTION_IDS:
            return (f"allowed_mentions.{kind}", "BASE_TYPE_MAX_LENGTH",
                    f"Must be {MAX_ALLOWED_MENTION_IDS} or fewer in length.")
        if listed and kind in parse:
            return ("allowed_mentions", "MESSAGE_ALLOWED_MENTIONS_PARSE_EXCLUSIVE",
                    f"parse:[\"{kind}\"] and {kind}: [ids...] are mutually exclusive.")
    return None


@dataclass
class SentInteraction:
    """An interaction the double dispatched, and what the bot did with it.

    Attributes:
        id: Interaction snowflake.
        token: Interaction token (the webhook token of its followups).
        payload: The INTERACTION_CREATE payload.
        dispatched_at: ``time.monotonic()`` just before it was sent on the gateway.
        shard_id: The shard it was sent to.
        response_type: Callback type of the (single) accepted response, or None.
        responded_at: ``time.monotonic()`` when that callback arrived.
        response: That callback's payload.
        original_id: Id of the "original response" message, once there is one.
        followup_ids: Ids of followup messages, in order.
    """

    id: int
    token: str
    payload: dict[str, Any]
    dispatched_at: float
    shard_id: int
    response_type: int | None = None
    responded_at: float | None = None
    response: dict[str, Any] | None = None
    original_id: int | None = None
    followup_ids: list[int] = field(default_factory=list)

    @property
    def message_ids(self) -> list[int]:
        """The original response (if any) and the followups."""
        return ([self.original_id] if self.original_id is not None else []) + self.followup_ids


@dataclass
class GatewaySession:
    """One gateway session (survives its socket so a RESUME can pick it up)."""

    session_id: str
    shard_id: int
    shard_count: int
    identify: dict[str, Any]
    ws: web.WebSocketResponse | None = None
    seq: int = 0
    resumes: int = 0

    @property
    def open(self) -> bool:
        return self.ws is not None and not self.ws.closed


@dataclass
class DiscordState(Watched):
    """What the double knows and saw, plus the test-side controls.

    Attributes:
        token: The valid bot token (REST ``Authorization: Bot <token>`` and gateway IDENTIFY).
        gateway_token: The token IDENTIFY must carry when it differs from ``token``: models a
            token reset between REST login and IDENTIFY (the gateway closes with 4004).
        application_id: Application snowflake (also in READY and interaction payloads).
        bot_user_id: The bot user's snowflake.
        bot_username: The bot user's username.
        owner_id: Application owner's user id (``application_info().owner``).
        application_flags: ``application.flags`` in READY and the application object.
        shards: Shard count recommended by ``GET /gateway/bot``.
        heartbeat_interval_ms: HELLO's heartbeat interval.
        privileged_intents: Privileged intents "enabled in the developer portal"; IDENTIFY asking
            for others is closed with 4014, as Discord does.
        guilds: Full guild objects (:func:`make_guild`) announced to the shards that own them.
        forbidden_channels: Channel ids where posting answers 403 code 50013 Missing Permissions.
        closed_dms: User ids whose DMs answer 403 code 50007.
        expired_tokens: Interaction tokens that answer 401 code 50027 on webhook routes and
            404 code 10062 on the callback route.
        callback_window_s: A callback arriving later than this after dispatch answers 404 code
            10062 Unknown interaction, as Discord does after 3 s; None disables the check.
        attachment_size_limit: Upload limit of channel routes (interactions use their own
            ``attachment_size_limit``); larger uploads answer 413 code 40005.
        requests: Every REST request received, in order (see :mod:`tests.doubles.server`).
        fail_next: Scripted REST answers played before normal handling, first first.
        calls: Every request that reached a route, decoded (:class:`DiscordCall`).
        gateway_received: Every gateway frame received from clients, decoded, in order.
        gateway_sent: Every gateway frame sent to clients, in order.
        messages: Every message the bot created, by id (deleted ones are removed).
        commands: Global application commands as last PUT (with ids).
        guild_commands: Guild application commands as last PUT, by guild id.
        command_puts: How many bulk overwrites (global or guild) were accepted.
        interactions: Dispatched interactions by id.
        sessions: Gateway sessions by session id.
        dm_channels: DM channel id by recipient user id.
        users: User objects by id (filled as builders and routes mention users).
        files: Bytes served by the fake CDN, by path.
        base_url: ``http://127.0.0.1:<port>`` once served by :func:`running_discord`.
    """

    token: str = VALID_TOKEN
    gateway_token: str | None = None
    application_id: int = APPLICATION_ID
    bot_user_id: int = BOT_USER_ID
    bot_username: str = "StudioBot"
    owner_id: int = OWNER_ID
    application_flags: int = 0
    shards: int = 1
    heartbeat_interval_ms: int = 41250
    privileged_intents: int = PRIVILEGED_INTENTS
    guilds: list[dict[str, Any]] = field(
        default_factory=lambda: [make_guild(GUILD_ID, channel_ids=(CHANNEL_ID,))]
    )
    forbidden_channels: set[int] = field(default_factory=set)
    closed_dms: set[int] = field(default_factory=set)
    expired_tokens: set[str] = field(default_factory=set)
    callback_window_s: float | None = 3.0
    attachment_size_limit: int = DEFAULT_ATTACHMENT_LIMIT
    requests: list[RecordedRequest] = field(default_factory=list)
    fail_next: list[tuple[Any, ...]] = field(default_factory=list)
    calls: list[DiscordCall] = field(default_factory=list)
    gateway_received: list[dict[str, Any]] = field(default_factory=list)
    gateway_sent: list[dict[str, Any]] = field(default_factory=list)
    messages: dict[int, dict[str, Any]] = field(default_factory=dict)
    commands: list[dict[str, Any]] = field(default_factory=list)
    guild_commands: dict[int, list[dict[str, Any]]] = field(default_factory=dict)
    command_puts: int = 0
    interactions: dict[int, SentInteraction] = field(default_factory=dict)
    sessions: dict[str, GatewaySession] = field(default_factory=dict)
    dm_channels: dict[int, int] = field(default_factory=dict)
    users: dict[int, dict[str, Any]] = field(default_factory=dict)
    files: dict[str, bytes] = field(default_factory=dict)
    base_url: str | None = None
    _changed: asyncio.Event | None = field(default=None, repr=False)
    _sockets: set[web.WebSocketResponse] = field(default_factory=set, repr=False)

    # -- lookups -----------------------------------------------------------------------------

    def bot_user(self) -> dict[str, Any]:
        """The bot's user object (what ``GET /users/@me`` answers)."""
        return user_object(self.bot_user_id, self.bot_username, bot=True) | {
            "verified": True, "mfa_enabled": False, "flags": 0, "locale": "en-US",
        }

    def user(self, user_id: int) -> dict[str, Any]:
        """The user object of ``user_id`` (made up, then remembered)."""
        user_id = int(user_id)
        if user_id == self.bot_user_id:
            return self.bot_user()
        return self.users.setdefault(user_id, user_object(user_id))

    def dm_channel_id(self, user_id: int) -> int:
        """The DM channel with ``user_id`` (the same id every time, like Discord)."""
        return self.dm_channels.setdefault(int(user_id), snowflake())

    def guild(self, guild_id: int) -> dict[str, Any] | None:
        """The guild object of ``guild_id`` from ``state.guilds``, or None."""
        return next((g for g in self.guilds if int(g["id"]) == int(guild_id)), None)

    def channel(self, channel_id: int) -> dict[str, Any] | None:
        """A channel object: a guild text channel (type 0) or a DM channel (type 1), or None."""
        channel_id = int(channel_id)
        for guild in self.guilds:
            for channel in guild.get("channels", []):
                if int(channel["id"]) == channel_id:
                    return self._with_overwrites(guild, channel)
        for user_id, dm_id in self.dm_channels.items():
            if dm_id == channel_id:
                return {"id": str(dm_id), "type": 1, "last_message_id": None, "flags": 0,
                        "recipients": [self.user(user_id)]}
        return None

    def _with_overwrites(self, guild: dict[str, Any], channel: dict[str, Any]) -> dict[str, Any]:
        """The channel, denying @everyone SEND_MESSAGES if forbidden (so local checks agree)."""
        if int(channel["id"]) not in self.forbidden_channels:
            return channel
        deny = {"id": guild["id"], "type": 0, "allow": "0", "deny": str(SEND_MESSAGES)}
        return channel | {"permission_overwrites": [*channel["permission_overwrites"], deny]}

    def _recipient_of(self, channel_id: int) -> int | None:
        return next((u for u, c in self.dm_channels.items() if c == int(channel_id)), None)

    def _first_channel(self, guild_id: int) -> int:
        guild = self.guild(guild_id)
        return int(guild["channels"][0]["id"]) if guild and guild.get("channels") else CHANNEL_ID

    def upload(self, filename: str, content: bytes, content_type: str | None = None,
               *, channel_id: int = CHANNEL_ID) -> dict[str, Any]:
        """Put a file on the fake CDN and return its attachment object (for attachment options).

        Needs ``state.base_url`` (set by :func:`running_discord`) for the URL.
        """
        attachment_id = snowflake()
        path = f"/attachments/{channel_id}/{attachment_id}/{filename}"
        self.files[path] = content
        url = f"{self.base_url or 'http://127.0.0.1'}{path}"
        return {
            "id": str(attachment_id),
            "filename": filename,
            "size": len(content),
            "url": url,
            "proxy_url": url,
            "content_type": content_type or mimetypes.guess_type(filename)[0],
            "ephemeral": True,
        }

    def calls_to(self, route: str) -> list[DiscordCall]:
        """Recorded calls of one route name, in order."""
        return [call for call in self.calls if call.route == route]

    def connected_shards(self) -> dict[int, list[GatewaySession]]:
        """Open, identified gateway sessions by shard id."""
        by_shard: dict[int, list[GatewaySession]] = {}
        for session in self.sessions.values():
            if session.open:
                by_shard.setdefault(session.shard_id, []).append(session)
        return by_shard

    # -- waiting -----------------------------------------------------------------------------

    async def wait_for(self, predicate: Callable[[DiscordCall], bool],
                       timeout: float = 5.0) -> DiscordCall:
        """Wait until a recorded call matches ``predicate``; return the first match.

        Raises:
            TimeoutError: None matched in time (the message lists the routes seen).
        """
        def check() -> DiscordCall | None:
            return next((c for c in self.calls if predicate(c)), None)

        try:
            return await self.wait_until(check, timeout, "no matching call")
        except TimeoutError as exc:
            seen = [f"{c.method} {c.route} {c.status}" for c in self.calls]
            raise TimeoutError(f"{exc}; calls: {seen}") from None

    async def wait_ready(self, shards: Iterable[int] = (0,), timeout: float = 5.0) -> None:
        """Wait until each shard id has IDENTIFYed and been sent READY and its GUILD_CREATEs."""
        wanted = set(shards)
        await self.wait_until(lambda: wanted <= set(self.connected_shards()), timeout,
                              f"shards {sorted(wanted)} not identified")

    # -- gateway controls --------------------------------------------------------------------

    def _shard_for(self, data: Any) -> int:
        guild_id = data.get("guild_id") if isinstance(data, dict) else None
        if guild_id is None:
            return 0  # DMs always arrive on shard 0
        counts = [s.shard_count for s in self.sessions.values() if s.open]
        return shard_of(int(guild_id), counts[0] if counts else 1)

    async def dispatch(self, event: str, data: Any, shard_id: int | None = None,
                       timeout: float = 5.0) -> int:
        """Send an op 0 DISPATCH to the shard that owns it; return the shard id.

        Args:
            event: Event name, e.g. ``"INTERACTION_CREATE"``, ``"MESSAGE_CREATE"``.
            data: The event's ``d``.
            shard_id: Target shard; by default the owner of ``data["guild_id"]``, or 0 without one.
            timeout: How long to wait for that shard to be connected (e.g. while it resumes).
        """
        target = self._shard_for(data) if shard_id is None else shard_id
        sessions = await self.wait_until(lambda: self.connected_shards().get(target), timeout,
                                         f"no gateway session for shard {target}")
        for session in sessions:
            await _send_dispatch(self, session, event, data)
        return target

    def register_interaction(self, payload: dict[str, Any], shard_id: int = 0
                             ) -> SentInteraction:
        """Make an interaction known to the callback and webhook routes without dispatching it
        (``dispatched_at`` is now). :meth:`dispatch_interaction` does this for you."""
        record = SentInteraction(id=int(payload["id"]), token=payload["token"], payload=payload,
                                 dispatched_at=time.monotonic(), shard_id=shard_id)
        self.interactions[record.id] = record
        return record

    async def dispatch_interaction(self, payload: dict[str, Any], shard_id: int | None = None,
                                   timeout: float = 5.0) -> SentInteraction:
        """Register an interaction (so its callback and webhook routes work) and dispatch it as
        INTERACTION_CREATE to the shard owning its guild (shard 0 for DMs)."""
        target = self._shard_for(payload) if shard_id is None else shard_id
        await self.wait_until(lambda: self.connected_shards().get(target), timeout,
                              f"no gateway session for shard {target}")
        record = self.register_interaction(payload, target)  # the 3 s clock starts here
        await self.dispatch("INTERACTION_CREATE", payload, shard_id=target)
        return record

    async def request_reconnect(self, shard_id: int = 0) -> None:
        """Send op 7 RECONNECT: discord.py closes the socket and RESUMEs."""
        for session in self.connected_shards().get(shard_id, []):
            await _send(self, session.ws, {"op": 7, "d": None, "s": None, "t": None})

    async def invalidate_session(self, shard_id: int = 0, resumable: bool = False) -> None:
        """Send op 9 INVALID_SESSION: discord.py then IDENTIFYs afresh (or RESUMEs if resumable)."""
        for session in self.connected_shards().get(shard_id, []):
            if not resumable:
                self.sessions.pop(session.session_id, None)
            await _send(self, session.ws, {"op": 9, "d": resumable, "s": None, "t": None})

    async def close_gateway(self, shard_id: int = 0, code: int = 4000) -> None:
        """Close a shard's socket with ``code`` (4000 lets discord.py resume; 4004 is fatal)."""
        for session in self.connected_shards().get(shard_id, []):
            assert session.ws is not None
            await session.ws.close(code=code)
        self._notify()

    # -- interaction builders ----------------------------------------------------------------

    def _base_interaction(self, kind: int, *, user_id: int, guild_id: int | None,
                          channel_id: int | None, permissions: str, app_permissions: str,
                          attachment_size_limit: int, locale: str) -> dict[str, Any]:
        """Fields every interaction has; guild ones carry ``member``, DM ones ``user``."""
        user = self.user(user_id)
        payload: dict[str, Any] = {
            "id": str(snowflake()),
            "application_id": str(self.application_id),
            "type": kind,
            "token": "aW50ZXJhY3Rpb246" + secrets.token_urlsafe(96),
            "version": 1,
            "locale": locale,
            "entitlements": [],
            "app_permissions": app_permissions,
            "attachment_size_limit": attachment_size_limit,
        }
        if guild_id is not None:
            channel_id = channel_id or self._first_channel(guild_id)
            channel = self.channel(channel_id) or text_channel(channel_id, guild_id, "general")
            payload |= {
                "guild_id": str(guild_id),
                "guild": {"id": str(guild_id), "locale": "en-US", "features": []},
                "guild_locale": "en-US",
                "channel_id": str(channel_id),
                "channel": channel | {"permissions": permissions},
                "member": {
                    "user": user, "roles": [], "nick": None, "avatar": None, "banner": None,
                    "premium_since": None, "joined_at": "2024-01-01T00:00:00.000000+00:00",
                    "pending": False, "mute": False, "deaf": False, "flags": 0,
                    "communication_disabled_until": None, "unusual_dm_activity_until": None,
                    "permissions": permissions,
                },
                "authorizing_integration_owners": {"0": str(guild_id)},
                "context": 0,
            }
        else:
            channel_id = channel_id or self.dm_channel_id(user_id)
            payload |= {
                "channel_id": str(channel_id),
                "channel": {"id": str(channel_id), "type": 1, "last_message_id": None,
                            "flags": 0, "recipients": [user]},
                "user": user,
                # A guild-installed app used in the bot's DM: the owner key is "0".
                "authorizing_integration_owners": {"0": "0"},
                "context": 1,
            }
        return payload

    def _registered(self, name: str, guild_id: int | None) -> dict[str, Any] | None:
        pool = list(self.guild_commands.get(int(guild_id), [])) if guild_id else []
        pool += self.commands
        return next((c for c in pool if c["name"] == name and c.get("type", 1) == 1), None)

    def _command_data(self, name: str, options: dict[str, Any] | None, guild_id: int | None,
                      command_id: int | None, focused: str | None = None) -> dict[str, Any]:
        """``data`` of a chat-input command; ``name`` may be ``"cmd sub"``/``"cmd group sub"``."""
        top, *subs = name.split()
        command = self._registered(top, guild_id)
        data: dict[str, Any] = {
            "id": str(command_id or (command and command["id"]) or snowflake()),
            "name": top,
            "type": 1,
        }
        if command is not None and command.get("guild_id"):
            data["guild_id"] = command["guild_id"]
        # Walk the registered subcommand path to the schema of the leaf options.
        path, schema = [], (command or {}).get("options", [])
        for depth, sub in enumerate(subs):
            definition = _find_option(schema, sub) or {}
            last = depth == len(subs) - 1
            path.append((sub, definition.get("type") or (SUB_COMMAND if last
                                                          else SUB_COMMAND_GROUP)))
            schema = definition.get("options", [])
        resolved: dict[str, Any] = {}
        nested = _build_options(options or {}, schema, focused, resolved)
        for sub, kind in reversed(path):
            nested = [{"name": sub, "type": kind, "options": nested}]
        data["options"] = nested
        if resolved:
            data["resolved"] = resolved
        return data

    def slash_command(
        self,
        name: str,
        options: dict[str, Any] | None = None,
        *,
        user_id: int = USER_ID,
        guild_id: int | None = None,
        channel_id: int | None = None,
        permissions: str = MEMBER_PERMISSIONS,
        command_id: int | None = None,
        app_permissions: str = APP_PERMISSIONS,
        attachment_size_limit: int = DEFAULT_ATTACHMENT_LIMIT,
        locale: str = "en-US",
    ) -> dict[str, Any]:
        """An APPLICATION_COMMAND (type 2) interaction for a chat-input command.

        Option types follow the registered command (``state.commands`` / ``guild_commands``) when
        there is one, else they are inferred: str 3, bool 5, int 4, float 10, and an attachment
        object from :meth:`upload` 11 (with ``data.resolved.attachments``).

        Args:
            name: Command name; ``"cmd sub"`` or ``"cmd group sub"`` for subcommands.
            options: Option values by name.
            user_id: The invoking user.
            guild_id: The guild, or None for the bot's DM (then ``user`` replaces ``member``).
            channel_id: The channel; defaults to the guild's first channel or the user's DM.
            permissions: The member's resolved permissions.
            command_id: ``data.id``; defaults to the registered command's id.
            app_permissions: The bot's permissions in the channel.
            attachment_size_limit: Upload limit in bytes for responses to this interaction.
            locale: The user's locale.
        """
        payload = self._base_interaction(
            APPLICATION_COMMAND, user_id=user_id, guild_id=guild_id, channel_id=channel_id,
            permissions=permissions, app_permissions=app_permissions,
            attachment_size_limit=attachment_size_limit, locale=locale)
        payload["data"] = self._command_data(name, options, guild_id, command_id)
        return payload

    def autocomplete(
        self,
        name: str,
        options: dict[str, Any] | None,
        focused: str,
        *,
        user_id: int = USER_ID,
        guild_id: int | None = None,
        channel_id: int | None = None,
        permissions: str = MEMBER_PERMISSIONS,
        app_permissions: str = APP_PERMISSIONS,
        locale: str = "en-US",
    ) -> dict[str, Any]:
        """An APPLICATION_COMMAND_AUTOCOMPLETE (type 4) interaction; ``focused`` names the option
        being typed (flagged ``"focused": true``; its value is what was typed so far)."""
        payload = self._base_interaction(
            AUTOCOMPLETE, user_id=user_id, guild_id=guild_id, channel_id=channel_id,
            permissions=permissions, app_permissions=app_permissions,
            attachment_size_limit=DEFAULT_ATTACHMENT_LIMIT, locale=locale)
        values = dict(options or {})
        values.setdefault(focused, "")
        payload["data"] = self._command_data(name, values, guild_id, None, focused=focused)
        return payload

    def button_click(
        self,
        custom_id: str,
        message: dict[str, Any] | None = None,
        *,
        user_id: int = USER_ID,
        guild_id: int | None = None,
        channel_id: int | None = None,
        component_type: int = 2,
        values: list[str] | None = None,
        permissions: str = MEMBER_PERMISSIONS,
        app_permissions: str = APP_PERMISSIONS,
        attachment_size_limit: int = DEFAULT_ATTACHMENT_LIMIT,
        locale: str = "en-US",
    ) -> dict[str, Any]:
        """A MESSAGE_COMPONENT (type 3) interaction: a button click (or a select, with ``values``).

        Args:
            custom_id: The component's custom id.
            message: The message the component is on (e.g. from ``state.messages``). By default a
                bot message with one action row holding that button; discord.py's
                ``DynamicItem`` routing only fires when the message really contains it.
            component_type: 2 button, 3 string select, 5-8 other selects.
            values: Selected values, for selects.
        """
        payload = self._base_interaction(
            MESSAGE_COMPONENT, user_id=user_id, guild_id=guild_id, channel_id=channel_id,
            permissions=permissions, app_permissions=app_permissions,
            attachment_size_limit=attachment_size_limit, locale=locale)
        if message is None:
            component: dict[str, Any] = {"type": component_type, "custom_id": custom_id}
            if component_type == 2:
                component |= {"style": 1, "label": "Click"}
            elif component_type == 3:
                component |= {"options": [{"label": v, "value": v} for v in values or ["a"]]}
            message = self._message_shell(int(payload["channel_id"]), guild_id, 0)
            message |= {"content": "", "components": [{"type": 1, "components": [component]}]}
        payload["message"] = message
        payload["data"] = {"custom_id": custom_id, "component_type": component_type}
        if values is not None:
            payload["data"]["values"] = list(values)
        return payload

    def modal_submit(
        self,
        custom_id: str,
        values: dict[str, Any],
        *,
        message: dict[str, Any] | None = None,
        user_id: int = USER_ID,
        guild_id: int | None = None,
        channel_id: int | None = None,
        permissions: str = MEMBER_PERMISSIONS,
        app_permissions: str = APP_PERMISSIONS,
        attachment_size_limit: int = DEFAULT_ATTACHMENT_LIMIT,
        locale: str = "en-US",
    ) -> dict[str, Any]:
        """A MODAL_SUBMIT (type 5) interaction.

        Its ``data.components`` mirror the modal the bot last sent with this ``custom_id`` (a
        callback of type 9), as Discord does: an Action Row (type 1) keeps wrapping its input in
        ``components``, a Label (type 18) in ``component``, each with the component ``id``. Without
        such a modal it uses Labels (Discord's recommended shape). Values: ``str`` for text inputs
        and radio groups, ``list`` for selects and checkbox groups, ``bool`` for a checkbox.
        """
        payload = self._base_interaction(
            MODAL_SUBMIT, user_id=user_id, guild_id=guild_id, channel_id=channel_id,
            permissions=permissions, app_permissions=app_permissions,
            attachment_size_limit=attachment_size_limit, locale=locale)
        sent = self._sent_modal(custom_id)
        components = (_mirror_modal(sent["components"], values) if sent
                      else _label_components(values))
        payload["data"] = {"custom_id": custom_id, "components": components}
        if message is not None:
            payload["message"] = message
        return payload

    def _sent_modal(self, custom_id: str) -> dict[str, Any] | None:
        for record in reversed(list(self.interactions.values())):
            response = record.response or {}
            data = response.get("data") or {}
            if response.get("type") == MODAL and data.get("custom_id") == custom_id:
                return data
        return None

    # -- messages ----------------------------------------------------------------------------

    def _message_shell(self, channel_id: int, guild_id: int | None, kind: int) -> dict[str, Any]:
        message: dict[str, Any] = {
            "id": str(snowflake()),
            "channel_id": str(channel_id),
            "type": kind,
            "content": "",
            "author": user_object(self.bot_user_id, self.bot_username, bot=True),
            "timestamp": _iso(),
            "edited_timestamp": None,
            "tts": False,
            "mention_everyone": False,
            "mentions": [],
            "mention_roles": [],
            "attachments": [],
            "embeds": [],
            "components": [],
            "pinned": False,
            "flags": 0,
        }
        if guild_id is not None:
            message["guild_id"] = str(guild_id)
        return message


# -- request decoding ------------------------------------------------------------------------


def _header_params(value: str, header: str) -> email.message.Message:
    """A header parsed by the email package, which handles quoting and RFC 2231 ``filename*``."""
    holder = email.message.Message()
    holder[header] = value
    return holder


def parse_multipart(content_type: str, body: bytes) -> tuple[Any, list[UploadedFile]]:
    """Split a ``multipart/form-data`` body into (decoded ``payload_json``, files).

    Parsed from the raw bytes because the recording middleware has already consumed the stream.
    """
    boundary = _header_params(content_type, "content-type").get_param("boundary")
    if not isinstance(boundary, str):
        return None, []
    payload: Any = None
    files: list[UploadedFile] = []
    for chunk in body.split(b"--" + boundary.encode())[1:]:
        if chunk.startswith(b"--"):
            break
        chunk = chunk.removeprefix(b"\r\n").removesuffix(b"\r\n")
        head, _, content = chunk.partition(b"\r\n\r\n")
        headers = {}
        for line in head.decode("utf-8", "replace").split("\r\n"):
            name, _, value = line.partition(":")
            headers[name.strip().lower()] = value.strip()
        disposition = _header_params(headers.get("content-disposition", ""), "content-disposition")
        name = disposition.get_param("name", header="content-disposition")
        filename = disposition.get_filename()
        if name == "payload_json" and filename is None:
            try:
                payload = json.loads(content)
            except ValueError:
                payload = None
        elif filename is not None:
            files.append(UploadedFile(str(name), filename, len(content), content,
                                      headers.get("content-type")))
    return payload, files


async def _decode(request: web.Request) -> tuple[Any, list[UploadedFile]]:
    raw = await request.read()  # cached by the recording middleware
    if request.content_type.startswith("multipart/"):
        return parse_multipart(request.headers.get("Content-Type", ""), raw)
    if not raw:
        return None, []
    try:
        return json.loads(raw), []
    except ValueError:
        return None, []


def _truthy(value: str | None) -> bool:
    return (value or "").lower() in ("1", "true", "yes")


# -- option helpers --------------------------------------------------------------------------


def _find_option(schema: list[dict[str, Any]], name: str) -> dict[str, Any] | None:
    return next((o for o in schema if o.get("name") == name), None)


def _infer_type(value: Any) -> int:
    if isinstance(value, bool):
        return BOOLEAN
    if isinstance(value, int):
        return INTEGER
    if isinstance(value, float):
        return NUMBER
    if isinstance(value, dict) and "filename" in value:
        return ATTACHMENT
    return STRING


def _build_options(values: dict[str, Any], schema: list[dict[str, Any]], focused: str | None,
                   resolved: dict[str, Any]) -> list[dict[str, Any]]:
    """Leaf options ``[{name, type, value}]`` typed from ``schema`` (or inferred)."""
    options = []
    for name, value in values.items():
        definition = _find_option(schema, name)
        kind = definition["type"] if definition else _infer_type(value)
        if kind == ATTACHMENT and isinstance(value, dict):
            resolved.setdefault("attachments", {})[value["id"]] = value
            value = value["id"]
        elif kind == NUMBER and isinstance(value, int) and not isinstance(value, bool):
            value = float(value)
        option: dict[str, Any] = {"name": name, "type": kind, "value": value}
        if name == focused:
            option["focused"] = True
        options.append(option)
    return options


def _input_state(kind: int, value: Any) -> dict[str, Any]:
    if kind in _LIST_VALUED:
        items = value if isinstance(value, list) else [value]
        return {"values": [v["id"] if isinstance(v, dict) else v for v in items]}
    return {"value": value}


def _mirror_modal(sent: list[dict[str, Any]], values: dict[str, Any]) -> list[dict[str, Any]]:
    """Submission components for a modal the bot sent, in its structure, with Discord's ids."""
    next_id = iter(range(1, 1000))

    def submitted(component: dict[str, Any]) -> dict[str, Any]:
        kind = component["type"]
        out: dict[str, Any] = {"type": kind, "id": component.get("id") or next(next_id)}
        if kind == 1:
            out["components"] = [submitted(c) for c in component.get("components", [])]
        elif kind == 18:
            out["component"] = submitted(component["component"])
        elif kind in _INPUT_TYPES:
            out["custom_id"] = component.get("custom_id")
            out |= _input_state(kind, values.get(component.get("custom_id"), _empty(kind)))
        return out

    return [submitted(c) for c in sent]


def _empty(kind: int) -> Any:
    return [] if kind in _LIST_VALUED else (False if kind == 23 else "")


def _label_components(values: dict[str, Any]) -> list[dict[str, Any]]:
    """Labels (type 18) around text inputs (str), string selects (list) or checkboxes (bool)."""
    components = []
    for n, (custom_id, value) in enumerate(values.items()):
        kind = 23 if isinstance(value, bool) else 3 if isinstance(value, list) else 4
        inner = {"type": kind, "id": 2 * n + 2, "custom_id": custom_id} | _input_state(kind, value)
        components.append({"type": 18, "id": 2 * n + 1, "component": inner})
    return components


# -- message building ------------------------------------------------------------------------


def _message_problem(payload: dict[str, Any], files: list[UploadedFile], limit: int, *,
                     require_body: bool) -> web.Response | None:
    """Discord's checks on a message body; None when it is acceptable."""
    content = payload.get("content")
    if isinstance(content, str) and len(content) > 2000:
        return _form_error("content", "BASE_TYPE_MAX_LENGTH", "Must be 2000 or fewer in length.")
    if len(payload.get("embeds") or []) > 10:
        return _form_error("embeds", "BASE_TYPE_MAX_LENGTH", "Must be 10 or fewer in length.")
    if sum(f.size for f in files) > limit:
        return respond(413, error_body("Request entity too large", 40005))
    if len(files) > MAX_ATTACHMENTS:
        return _form_error("attachments", "BASE_TYPE_MAX_LENGTH",
                           f"Must be {MAX_ATTACHMENTS} or fewer in length.")
    if (problem := components_problem(payload.get("components"))) is not None:
        return _form_error(*problem)
    if (problem := allowed_mentions_problem(payload.get("allowed_mentions"))) is not None:
        return _form_error(*problem)
    if require_body and not (content or payload.get("embeds") or payload.get("components")
                             or files or payload.get("sticker_ids") or payload.get("poll")):
        return _error(400, "Cannot send an empty message", 50006)
    return None


def components_problem(components: Any) -> tuple[str, str, str] | None:
    """Discord's checks on a message's legacy components (action rows of buttons or one select),
    as ``(path, code, message)`` of the 50035 Invalid Form Body error, or None when acceptable.

    The rules (discord-api-docs, Message Components): at most 5 action rows; a row holds 1-5
    buttons or exactly one select; custom ids are 1-100 characters and unique in the message;
    button labels at most 80; a string select has 1-25 options with unique values, labels and
    values 1-100 characters, a placeholder of at most 150 and 0 <= min_values <= max_values <= 25.
    """
    if not components:
        return None
    if len(components) > MAX_ACTION_ROWS:
        return "components", "BASE_TYPE_MAX_LENGTH", f"Must be {MAX_ACTION_ROWS} or fewer in length."
    seen: set[str] = set()
    for r, row in enumerate(components):
        at = f"components.{r}"
        children = row.get("components") or []
        if row.get("type") != 1 or not children:
            return at, "COMPONENT_LAYOUT_WIDTH_EXCEEDED", "An action row needs 1 to 5 components."
        selects = [c for c in children if c.get("type") in _SELECT_TYPES]
        if (selects and len(children) > 1) or len(children) > 5:
            return at, "COMPONENT_LAYOUT_WIDTH_EXCEEDED", "The specified component exceeds the maximum width"
        for c, child in enumerate(children):
            where = f"{at}.components.{c}"
            custom_id = child.get("custom_id")
            if child.get("type") == 2 and child.get("style") == 5:
                continue  # link buttons carry a url, not a custom id
            if not isinstance(custom_id, str) or not 1 <= len(custom_id) <= 100:
                return f"{where}.custom_id", "BASE_TYPE_BAD_LENGTH", "Must be between 1 and 100 in length."
            if custom_id in seen:
                return f"{where}.custom_id", "COMPONENT_CUSTOM_ID_DUPLICATED", "Component custom id cannot be duplicated"
            seen.add(custom_id)
            if child.get("type") == 2 and len(child.get("label") or "") > 80:
                return f"{where}.label", "BASE_TYPE_MAX_LENGTH", "Must be 80 or fewer in length."
            if child.get("type") == 3 and (problem := _select_problem(child, where)) is not None:
                return problem
    return None


def _select_problem(select: dict[str, Any], where: str) -> tuple[str, str, str] | None:
    options = select.get("options") or []
    if not 1 <= len(options) <= 25:
        return f"{where}.options", "BASE_TYPE_BAD_LENGTH", "Must be between 1 and 25 in length."
    if len(select.get("placeholder") or "") > 150:
        return f"{where}.placeholder", "BASE_TYPE_MAX_LENGTH", "Must be 150 or fewer in length."
    low, high = select.get("min_values", 1), select.get("max_values", 1)
    if not 0 <= low <= high <= 25:
        return f"{where}.max_values", "NUMBER_TYPE_MAX", "min_values and max_values must be 0-25, min <= max."
    values = [str(o.get("value", "")) for o in options]
    for n, option in enumerate(options):
        for key in ("label", "value"):
            if not 1 <= len(str(option.get(key) or "")) <= 100:
                return f"{where}.options.{n}.{key}", "BASE_TYPE_BAD_LENGTH", "Must be between 1 and 100 in length."
    if len(set(values)) != len(values):
        return f"{where}.options", "SELECT_COMPONENT_OPTION_VALUE_DUPLICATED", "Select option values must be unique."
    return None


def _attachments(state: DiscordState, base: str, channel_id: int, payload: dict[str, Any],
                 files: list[UploadedFile], existing: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The message's attachments after this request.

    ``payload["attachments"]`` lists what to keep: existing attachments by snowflake id and new
    uploads by the ``n`` of their ``files[n]`` part. Without that key, uploads are added.
    """
    uploads = {}
    for index, upload in enumerate(files):
        digits = "".join(ch for ch in upload.field if ch.isdigit())
        uploads[int(digits) if digits else index] = upload

    def stored(upload: UploadedFile, description: str | None) -> dict[str, Any]:
        attachment_id = snowflake()
        path = f"/attachments/{channel_id}/{attachment_id}/{upload.filename}"
        state.files[path] = upload.content
        attachment = {
            "id": str(attachment_id), "filename": upload.filename, "size": upload.size,
            "url": base + path, "proxy_url": base + path,
            "content_type": mimetypes.guess_type(upload.filename)[0] or upload.content_type,
        }
        if description:
            attachment["description"] = description
        return attachment

    if "attachments" not in payload:
        return existing + [stored(u, None) for u in uploads.values()]
    by_id = {a["id"]: a for a in existing}
    result, used = [], set()
    for entry in payload.get("attachments") or []:
        key = str(entry.get("id"))
        if key in by_id:
            result.append(by_id[key])
        elif key.isdigit() and int(key) in uploads:
            used.add(int(key))
            result.append(stored(uploads[int(key)], entry.get("description")))
    result += [stored(u, None) for n, u in uploads.items() if n not in used]
    return result


_EDITABLE = ("content", "embeds", "components", "poll")


def _apply(state: DiscordState, base: str, message: dict[str, Any], payload: dict[str, Any],
           files: list[UploadedFile], *, keep_flags: int = 0) -> dict[str, Any]:
    """Apply a create/edit body to ``message`` in place and return it."""
    for key in _EDITABLE:
        if key in payload:
            value = payload[key]
            message[key] = ("" if key == "content" else []) if value is None else value
    if "flags" in payload and payload["flags"] is not None:
        message["flags"] = (int(payload["flags"]) & ~LOADING) | keep_flags
    message["attachments"] = _attachments(
        state, base, int(message["channel_id"]), payload, files, message.get("attachments", []))
    if "content" in payload:
        # The mentions Discord resolved from this body (its allowed_mentions is not kept).
        message.pop("allowed_mentions", None)
        pings = resolve_mentions(message.get("content"), payload.get("allowed_mentions"))
        message["mentions"] = [state.user(int(u)) for u in pings.users]
        message["mention_roles"] = list(pings.roles)
        message["mention_everyone"] = pings.everyone
    return message


def _is_empty(message: dict[str, Any]) -> bool:
    return not (message.get("content") or message.get("embeds") or message.get("components")
                or message.get("attachments") or message.get("poll"))


# -- the app ---------------------------------------------------------------------------------

Handler = Callable[[web.Request, DiscordCall], Awaitable[web.StreamResponse]]


def make_app(state: DiscordState) -> web.Application:
    """Build the double's aiohttp application around ``state``."""
    scripted = scripting_middleware(state)

    @web.middleware
    async def middleware(request: web.Request, handler: Any) -> web.StreamResponse:
        if request.path == "/gateway":  # a websocket: no recording, no scripted failures
            return await handler(request)
        raw = await request.read()
        response = await scripted(request, handler)
        if request.content_type.startswith("multipart/"):
            # The shared recorder could not decode multipart; give it the payload_json.
            payload, _ = parse_multipart(request.headers.get("Content-Type", ""), raw)
            for index in range(len(state.requests) - 1, -1, -1):
                if state.requests[index].body is raw:
                    state.requests[index] = dataclasses.replace(state.requests[index], json=payload)
                    break
        if not response.prepared:
            if response.content_type == "application/json":
                # discord.py decodes a body only when Content-Type is exactly this (as Discord
                # sends it); aiohttp's "; charset=utf-8" would hand it a string instead.
                response.headers["Content-Type"] = "application/json"
            # Generous limits so discord.py never pre-emptively sleeps; scripted headers win.
            bucket = hashlib.md5(f"{request.method} {_template(request)}".encode()).hexdigest()
            for name, value in (
                ("X-RateLimit-Limit", "50"), ("X-RateLimit-Remaining", "49"),
                ("X-RateLimit-Reset", f"{time.time() + 1:.3f}"),
                ("X-RateLimit-Reset-After", "1.000"), ("X-RateLimit-Bucket", bucket),
            ):
                response.headers.setdefault(name, value)
        return response

    app = web.Application(middlewares=[middleware])
    app.on_shutdown.append(lambda _app: _close_sockets(state))

    def base_of(request: web.Request) -> str:
        return f"{request.scheme}://{request.host}"

    def route(method: str, path: str, name: str, *, auth: bool = True
              ) -> Callable[[Handler], Handler]:
        def register(handler: Handler) -> Handler:
            async def wrapped(request: web.Request) -> web.StreamResponse:
                at = time.monotonic()
                payload, files = await _decode(request)
                call = DiscordCall(request.method, name, request.path, dict(request.match_info),
                                   dict(request.query), payload, tuple(files), at)
                header = request.headers.get("Authorization", "")
                if auth and header != f"Bot {state.token}":
                    response: web.StreamResponse = _error(401, "401: Unauthorized", 0)
                else:
                    response = await handler(request, call)
                state.calls.append(dataclasses.replace(call, status=response.status))
                state._notify()
                return response

            app.router.add_route(method, path if path.startswith("/attachments") else API + path,
                                 wrapped)
            return handler

        return register

    # -- login, gateway discovery, application ---------------------------------------------

    @route("GET", "/users/@me", "get_me")
    async def get_me(request: web.Request, call: DiscordCall) -> web.Response:
        return respond(200, state.bot_user())

    def application() -> dict[str, Any]:
        return {
            "id": str(state.application_id), "name": state.bot_username, "icon": None,
            "description": "", "summary": "", "type": None, "bot_public": True,
            "bot_require_code_grant": False, "verify_key": "0" * 64,
            "flags": state.application_flags, "owner": state.user(state.owner_id), "team": None,
            "redirect_uris": [], "interactions_endpoint_url": None, "tags": [],
            "integration_types_config": {"0": {}}, "approximate_guild_count": len(state.guilds),
            "bot": state.bot_user(),
        }

    @route("GET", "/oauth2/applications/@me", "application_info")
    async def oauth_application(request: web.Request, call: DiscordCall) -> web.Response:
        return respond(200, application())

    @route("GET", "/applications/@me", "get_application")
    async def get_application(request: web.Request, call: DiscordCall) -> web.Response:
        return respond(200, application())

    @route("GET", "/gateway", "get_gateway", auth=False)
    async def get_gateway(request: web.Request, call: DiscordCall) -> web.Response:
        return respond(200, {"url": f"ws://{request.host}/gateway"})

    @route("GET", "/gateway/bot", "get_gateway_bot")
    async def get_gateway_bot(request: web.Request, call: DiscordCall) -> web.Response:
        return respond(200, {
            "url": f"ws://{request.host}/gateway",
            "shards": state.shards,
            "session_start_limit": {"total": 1000, "remaining": 999,
                                    "reset_after": 14_400_000, "max_concurrency": 1},
        })

    # -- application commands --------------------------------------------------------------

    def wrong_application(call: DiscordCall) -> web.Response | None:
        if call.params.get("application_id") != str(state.application_id):
            return _error(403, "Missing Access", 50001)
        return None

    def overwrite(payload: Any, previous: list[dict[str, Any]], guild_id: str | None
                  ) -> list[dict[str, Any]] | web.Response:
        if not isinstance(payload, list):
            return _form_error("_root", "LIST_TYPE_CONVERT", "Must be an array.")
        stored, seen = [], set()
        for index, command in enumerate(payload):
            name, kind = command.get("name"), command.get("type", 1)
            if not isinstance(name, str) or not 1 <= len(name) <= 32:
                return _form_error(f"{index}.name", "BASE_TYPE_BAD_LENGTH",
                                   "Must be between 1 and 32 in length.")
            if kind == 1 and (name != name.lower() or " " in name):
                return _form_error(f"{index}.name", "APPLICATION_COMMAND_INVALID_NAME",
                                   f"Command name is invalid: {name}")
            if kind == 1 and not command.get("description"):
                return _form_error(f"{index}.description", "BASE_TYPE_REQUIRED",
                                   "This field is required")
            if (name, kind) in seen:
                return _form_error(f"{index}.name", "APPLICATION_COMMANDS_DUPLICATE_NAME",
                                   f"Application command names must be unique: {name}")
            seen.add((name, kind))
            # Discord keeps the id of a command that already existed under this name and type.
            old = next((c for c in previous if c["name"] == name and c.get("type", 1) == kind),
                       None)
            record = {
                "type": 1, "description": "", "options": [], "default_member_permissions": None,
                "dm_permission": True, "nsfw": False, "integration_types": [0],
                "contexts": None,
            } | command | {
                "id": old["id"] if old else str(snowflake()),
                "application_id": str(state.application_id),
                "version": str(snowflake()),
            }
            if guild_id is not None:
                record["guild_id"] = guild_id
            stored.append(record)
        if sum(1 for c in stored if c["type"] == 1) > 100:
            return _error(400, "Maximum number of application commands reached (100)", 30032)
        return stored

    @route("GET", "/applications/{application_id}/commands", "get_commands")
    async def get_commands(request: web.Request, call: DiscordCall) -> web.Response:
        return wrong_application(call) or respond(200, state.commands)

    @route("PUT", "/applications/{application_id}/commands", "put_commands")
    async def put_commands(request: web.Request, call: DiscordCall) -> web.Response:
        if (problem := wrong_application(call)) is not None:
            return problem
        result = overwrite(call.payload, state.commands, None)
        if isinstance(result, web.Response):
            return result
        state.commands = result
        state.command_puts += 1
        return respond(200, result)

    guild_commands_path = "/applications/{application_id}/guilds/{guild_id}/commands"

    @route("GET", guild_commands_path, "get_guild_commands")
    async def get_guild_commands(request: web.Request, call: DiscordCall) -> web.Response:
        if (problem := wrong_application(call)) is not None:
            return problem
        return respond(200, state.guild_commands.get(int(call.params["guild_id"]), []))

    @route("PUT", guild_commands_path, "put_guild_commands")
    async def put_guild_commands(request: web.Request, call: DiscordCall) -> web.Response:
        if (problem := wrong_application(call)) is not None:
            return problem
        guild_id = int(call.params["guild_id"])
        if state.guild(guild_id) is None:
            return _error(403, "Missing Access", 50001)
        result = overwrite(call.payload, state.guild_commands.get(guild_id, []), str(guild_id))
        if isinstance(result, web.Response):
            return result
        state.guild_commands[guild_id] = result
        state.command_puts += 1
        return respond(200, result)

    # -- interaction callback --------------------------------------------------------------

    @route("POST", "/interactions/{interaction_id}/{token}/callback", "interaction_callback",
           auth=False)
    async def interaction_callback(request: web.Request, call: DiscordCall) -> web.Response:
        interaction_id = call.params["interaction_id"]
        record = state.interactions.get(int(interaction_id)) if interaction_id.isdigit() else None
        if record is None:
            return _error(404, "Unknown interaction", 10062)
        if call.params["token"] != record.token:
            return _error(401, "Invalid Webhook Token", 50027)
        late = (state.callback_window_s is not None
                and call.at - record.dispatched_at > state.callback_window_s)
        if record.token in state.expired_tokens or late:
            return _error(404, "Unknown interaction", 10062)
        if record.response_type is not None:
            return _error(400, "Interaction has already been acknowledged.", 40060)
        payload = call.payload if isinstance(call.payload, dict) else {}
        kind = payload.get("type")
        interaction_type = record.payload["type"]
        if kind not in _ALLOWED_CALLBACKS.get(interaction_type, set()):
            return _form_error("type", "INTERACTION_RESPONSE_TYPE_INVALID",
                               "Interaction response type is invalid for this interaction.")
        data = payload.get("data") or {}
        limit = int(record.payload.get("attachment_size_limit", DEFAULT_ATTACHMENT_LIMIT))
        if kind in (CHANNEL_MESSAGE, UPDATE_MESSAGE):
            problem = _message_problem(data, list(call.files), limit,
                                       require_body=kind == CHANNEL_MESSAGE)
            if problem is not None:
                return problem
        if kind == MODAL and not (data.get("custom_id") and data.get("title")
                                  and data.get("components")):
            return _form_error("data", "BASE_TYPE_REQUIRED", "This field is required")
        if kind == AUTOCOMPLETE_RESULT and len(data.get("choices") or []) > 25:
            return _form_error("data.choices", "BASE_TYPE_MAX_LENGTH",
                               "Must be 25 or fewer in length.")
        record.response_type, record.responded_at, record.response = kind, call.at, payload

        base = base_of(request)
        message = None
        channel_id = int(record.payload["channel_id"])
        guild_id = record.payload.get("guild_id")
        if kind in (CHANNEL_MESSAGE, DEFERRED_CHANNEL_MESSAGE):
            kind_of_message = 20 if interaction_type == APPLICATION_COMMAND else 0
            message = state._message_shell(channel_id, guild_id, kind_of_message)
            message["webhook_id"] = str(state.application_id)
            message["application_id"] = str(state.application_id)
            if kind == CHANNEL_MESSAGE:
                _apply(state, base, message, data, list(call.files))
                message["flags"] = int(data.get("flags") or 0) & ~LOADING
            else:  # "<bot> is thinking...": a loading message, ephemeral if the defer was
                message["flags"] = LOADING | (int(data.get("flags") or 0) & EPHEMERAL)
            state.messages[int(message["id"])] = message
            record.original_id = int(message["id"])
        elif kind in (DEFERRED_UPDATE, UPDATE_MESSAGE) and "message" in record.payload:
            # For components, the "original response" is the message holding the component.
            original = record.payload["message"]
            message = state.messages.setdefault(int(original["id"]), dict(original))
            record.original_id = int(message["id"])
            if kind == UPDATE_MESSAGE:
                _apply(state, base, message, data, list(call.files))
                message["edited_timestamp"] = _iso()
        if not _truthy(call.query.get("with_response")):
            return web.Response(status=204)
        answer: dict[str, Any] = {"interaction": {
            "id": str(record.id),
            "type": interaction_type,
            "response_message_loading": kind == DEFERRED_CHANNEL_MESSAGE,
            "response_message_ephemeral": bool(message and int(message["flags"]) & EPHEMERAL),
        }}
        if message is not None and kind != DEFERRED_UPDATE:
            answer["interaction"]["response_message_id"] = message["id"]
            answer["resource"] = {"type": kind, "message": message}
        return respond(200, answer)

    # -- interaction webhook ---------------------------------------------------------------

    def interaction_of(call: DiscordCall) -> SentInteraction | web.Response:
        if call.params["application_id"] != str(state.application_id):
            return _error(404, "Unknown Webhook", 10015)
        token = call.params["token"]
        record = next((r for r in state.interactions.values() if r.token == token), None)
        if record is None or token in state.expired_tokens:
            return _error(401, "Invalid Webhook Token", 50027)
        return record

    def owned_message(record: SentInteraction, message_id: str) -> dict[str, Any] | None:
        if message_id == "@original":
            target = record.original_id
        else:
            target = int(message_id) if message_id.isdigit() else None
            if target not in record.message_ids:
                return None
        return state.messages.get(target) if target is not None else None

    def interaction_limit(record: SentInteraction) -> int:
        return int(record.payload.get("attachment_size_limit", DEFAULT_ATTACHMENT_LIMIT))

    hook = "/webhooks/{application_id}/{token}"

    async def get_hook_message(request: web.Request, call: DiscordCall) -> web.Response:
        record = interaction_of(call)
        if isinstance(record, web.Response):
            return record
        message = owned_message(record, call.params.get("message_id", "@original"))
        if message is None:
            return _error(404, "Unknown Message", 10008)
        return respond(200, message)

    async def edit_hook_message(request: web.Request, call: DiscordCall) -> web.Response:
        record = interaction_of(call)
        if isinstance(record, web.Response):
            return record
        message = owned_message(record, call.params.get("message_id", "@original"))
        if message is None:
            return _error(404, "Unknown Message", 10008)
        payload = call.payload if isinstance(call.payload, dict) else {}
        problem = _message_problem(payload, list(call.files), interaction_limit(record),
                                   require_body=False)
        if problem is not None:
            return problem
        edited = _apply(state, base_of(request), dict(message), payload, list(call.files),
                        keep_flags=int(message["flags"]) & EPHEMERAL)
        if _is_empty(edited):
            return _error(400, "Cannot send an empty message", 50006)
        was_loading = int(message["flags"]) & LOADING
        edited["flags"] = int(edited["flags"]) & ~LOADING
        if not was_loading:
            edited["edited_timestamp"] = _iso()
        message.clear()
        message.update(edited)
        return respond(200, message)

    async def delete_hook_message(request: web.Request, call: DiscordCall) -> web.Response:
        record = interaction_of(call)
        if isinstance(record, web.Response):
            return record
        message = owned_message(record, call.params.get("message_id", "@original"))
        if message is None:
            return _error(404, "Unknown Message", 10008)
        state.messages.pop(int(message["id"]), None)
        return web.Response(status=204)

    route("GET", hook + "/messages/@original", "get_original", auth=False)(get_hook_message)
    route("PATCH", hook + "/messages/@original", "edit_original", auth=False)(edit_hook_message)
    route("DELETE", hook + "/messages/@original", "delete_original",
          auth=False)(delete_hook_message)
    route("GET", hook + "/messages/{message_id}", "get_followup", auth=False)(get_hook_message)
    route("PATCH", hook + "/messages/{message_id}", "edit_followup",
          auth=False)(edit_hook_message)
    route("DELETE", hook + "/messages/{message_id}", "delete_followup",
          auth=False)(delete_hook_message)

    @route("POST", hook, "followup", auth=False)
    async def followup(request: web.Request, call: DiscordCall) -> web.Response:
        record = interaction_of(call)
        if isinstance(record, web.Response):
            return record
        if record.response_type is None:
            # The interaction webhook only exists once the interaction was acknowledged.
            return _error(404, "Unknown Webhook", 10015)
        payload = call.payload if isinstance(call.payload, dict) else {}
        problem = _message_problem(payload, list(call.files), interaction_limit(record),
                                   require_body=True)
        if problem is not None:
            return problem
        original = state.messages.get(record.original_id) if record.original_id else None
        if original is not None and int(original["flags"]) & LOADING:
            # The first followup after a "thinking" defer replaces the loading message.
            _apply(state, base_of(request), original, payload, list(call.files),
                   keep_flags=int(original["flags"]) & EPHEMERAL)
            original["flags"] = int(original["flags"]) & ~LOADING
            message = original
        else:
            message = state._message_shell(int(record.payload["channel_id"]),
                                           record.payload.get("guild_id"), 0)
            message |= {"webhook_id": str(state.application_id),
                        "application_id": str(state.application_id)}
            _apply(state, base_of(request), message, payload, list(call.files))
            message["flags"] = int(payload.get("flags") or 0) & ~LOADING
            state.messages[int(message["id"])] = message
            record.followup_ids.append(int(message["id"]))
        if not _truthy(call.query.get("wait")):
            return web.Response(status=204)
        return respond(200, message)

    # -- channels and users ----------------------------------------------------------------

    def postable(channel_id: str) -> dict[str, Any] | web.Response:
        channel = state.channel(int(channel_id)) if channel_id.isdigit() else None
        if channel is None:
            return _error(404, "Unknown Channel", 10003)
        if int(channel_id) in state.forbidden_channels:
            return _error(403, "Missing Permissions", 50013)
        recipient = state._recipient_of(int(channel_id))
        if recipient is not None and recipient in state.closed_dms:
            return _error(403, "Cannot send messages to this user", 50007)
        return channel

    @route("POST", "/channels/{channel_id}/messages", "create_message")
    async def create_message(request: web.Request, call: DiscordCall) -> web.Response:
        channel = postable(call.params["channel_id"])
        if isinstance(channel, web.Response):
            return channel
        payload = call.payload if isinstance(call.payload, dict) else {}
        problem = _message_problem(payload, list(call.files), state.attachment_size_limit,
                                   require_body=True)
        if problem is not None:
            return problem
        reference = payload.get("message_reference")
        message = state._message_shell(int(channel["id"]), channel.get("guild_id"),
                                       19 if reference else 0)
        _apply(state, base_of(request), message, payload, list(call.files))
        message["flags"] = int(payload.get("flags") or 0) & ~(LOADING | EPHEMERAL)
        if reference:
            message["message_reference"] = reference
        state.messages[int(message["id"])] = message
        return respond(200, message)

    def channel_message(call: DiscordCall) -> dict[str, Any] | None:
        message_id = call.params["message_id"]
        message = state.messages.get(int(message_id)) if message_id.isdigit() else None
        if message is None or message["channel_id"] != call.params["channel_id"]:
            return None
        return message

    @route("GET", "/channels/{channel_id}/messages/{message_id}", "get_message")
    async def get_message(request: web.Request, call: DiscordCall) -> web.Response:
        message = channel_message(call)
        return respond(200, message) if message else _error(404, "Unknown Message", 10008)

    @route("PATCH", "/channels/{channel_id}/messages/{message_id}", "edit_message")
    async def edit_message(request: web.Request, call: DiscordCall) -> web.Response:
        message = channel_message(call)
        if message is None:
            return _error(404, "Unknown Message", 10008)
        if message["author"]["id"] != str(state.bot_user_id) or "webhook_id" in message:
            return _error(403, "Cannot edit a message authored by another user", 50005)
        payload = call.payload if isinstance(call.payload, dict) else {}
        problem = _message_problem(payload, list(call.files), state.attachment_size_limit,
                                   require_body=False)
        if problem is not None:
            return problem
        edited = _apply(state, base_of(request), dict(message), payload, list(call.files))
        if _is_empty(edited):
            return _error(400, "Cannot send an empty message", 50006)
        edited["edited_timestamp"] = _iso()
        message.clear()
        message.update(edited)
        return respond(200, message)

    @route("DELETE", "/channels/{channel_id}/messages/{message_id}", "delete_message")
    async def delete_message(request: web.Request, call: DiscordCall) -> web.Response:
        message = channel_message(call)
        if message is None:
            return _error(404, "Unknown Message", 10008)
        state.messages.pop(int(message["id"]))
        return web.Response(status=204)

    @route("POST", "/channels/{channel_id}/typing", "typing")
    async def typing(request: web.Request, call: DiscordCall) -> web.Response:
        channel = postable(call.params["channel_id"])
        return channel if isinstance(channel, web.Response) else web.Response(status=204)

    @route("GET", "/channels/{channel_id}", "get_channel")
    async def get_channel(request: web.Request, call: DiscordCall) -> web.Response:
        channel_id = call.params["channel_id"]
        channel = state.channel(int(channel_id)) if channel_id.isdigit() else None
        return respond(200, channel) if channel else _error(404, "Unknown Channel", 10003)

    @route("POST", "/users/@me/channels", "create_dm")
    async def create_dm(request: web.Request, call: DiscordCall) -> web.Response:
        recipient = (call.payload or {}).get("recipient_id") if isinstance(call.payload,
                                                                           dict) else None
        if recipient is None or not str(recipient).isdigit():
            return _form_error("recipient_id", "BASE_TYPE_REQUIRED", "This field is required")
        channel = state.channel(state.dm_channel_id(int(recipient)))
        return respond(200, channel)

    @route("GET", "/users/{user_id}", "get_user")
    async def get_user(request: web.Request, call: DiscordCall) -> web.Response:
        user_id = call.params["user_id"]
        if not user_id.isdigit():
            return _error(404, "Unknown User", 10013)
        return respond(200, state.user(int(user_id)))

    @route("GET", "/attachments/{channel_id}/{attachment_id}/{filename}", "cdn_attachment",
           auth=False)
    async def cdn(request: web.Request, call: DiscordCall) -> web.Response:
        content = state.files.get(request.path)
        if content is None:
            return respond(404, "Not Found")
        content_type = mimetypes.guess_type(request.path)[0] or "application/octet-stream"
        return web.Response(body=content, content_type=content_type)

    # -- gateway ---------------------------------------------------------------------------

    async def gateway(request: web.Request) -> web.WebSocketResponse:
        ws = web.WebSocketResponse(autoping=True)
        await ws.prepare(request)
        state._sockets.add(ws)
        session: GatewaySession | None = None
        try:
            await _send(state, ws, {"op": 10, "s": None, "t": None, "d": {
                "heartbeat_interval": state.heartbeat_interval_ms,
                "_trace": ['["gateway-double",{"micros":0}]']}})
            async for msg in ws:
                if msg.type is not WSMsgType.TEXT:
                    continue
                try:
                    frame = json.loads(msg.data)
                except ValueError:
                    await ws.close(code=4002, message=b"Error while decoding payload.")
                    break
                state.gateway_received.append(frame)
                state._notify()
                op, data = frame.get("op"), frame.get("d")
                if op == 1:
                    await _send(state, ws, {"op": 11, "s": None, "t": None, "d": None})
                elif op == 2:
                    if session is not None:
                        await ws.close(code=4005, message=b"Already authenticated.")
                        break
                    session = await _identify(state, ws, data or {}, request.host)
                elif op == 6:
                    session = await _resume(state, ws, data or {})
                elif op in (3, 4, 8):
                    if session is None:
                        await ws.close(code=4003, message=b"Not authenticated.")
                        break
                    if op == 8:
                        await _members_chunk(state, session, data or {})
                    # Presence (3) and voice state (4) updates are accepted and ignored.
                else:
                    await ws.close(code=4001, message=b"Unknown opcode.")
                    break
        finally:
            state._sockets.discard(ws)
            state._notify()
        return ws

    app.router.add_get("/gateway", gateway)

    # -- everything else -------------------------------------------------------------------

    async def unknown(request: web.Request) -> web.Response:
        payload, files = await _decode(request)
        state.calls.append(DiscordCall(request.method, "unknown", request.path, {},
                                       dict(request.query), payload, tuple(files),
                                       time.monotonic(), 404))
        state._notify()
        return _error(404, "404: Not Found", 0)

    app.router.add_route("*", "/{tail:.*}", unknown)
    return app


def _template(request: web.Request) -> str:
    resource = request.match_info.route.resource
    return resource.canonical if resource is not None else request.path


# -- gateway helpers -------------------------------------------------------------------------

async def _close_sockets(state: DiscordState) -> None:
    """On shutdown, close every socket (1001 going away) so handlers end promptly."""
    for ws in list(state._sockets):
        await ws.close(code=1001, message=b"Server shutting down.")


async def _send(state: DiscordState, ws: web.WebSocketResponse | None, frame: dict[str, Any]
                ) -> None:
    if ws is None or ws.closed:
        return
    state.gateway_sent.append(frame)
    await ws.send_str(json.dumps(frame))


async def _send_dispatch(state: DiscordState, session: GatewaySession, event: str,
                         data: Any) -> None:
    session.seq += 1
    await _send(state, session.ws, {"op": 0, "s": session.seq, "t": event, "d": data})


async def _identify(state: DiscordState, ws: web.WebSocketResponse, data: dict[str, Any],
                    host: str) -> GatewaySession | None:
    if data.get("token") != (state.gateway_token or state.token):
        await ws.close(code=4004, message=b"Authentication failed.")
        return None
    shard_id, shard_count = data.get("shard") or (0, 1)
    if not 0 <= shard_id < shard_count:
        await ws.close(code=4010, message=b"Invalid shard.")
        return None
    intents = data.get("intents")
    if not isinstance(intents, int):
        await ws.close(code=4013, message=b"Invalid intent(s).")
        return None
    if intents & PRIVILEGED_INTENTS & ~state.privileged_intents:
        await ws.close(code=4014, message=b"Disallowed intent(s).")
        return None
    session = GatewaySession(secrets.token_hex(16), shard_id, shard_count, data, ws)
    state.sessions[session.session_id] = session
    owned = [g for g in state.guilds if shard_of(int(g["id"]), shard_count) == shard_id]
    ready = {
        "v": 10,
        "user": state.bot_user(),
        "guilds": [{"id": g["id"], "unavailable": True} for g in owned],
        "session_id": session.session_id,
        "session_type": "normal",
        "resume_gateway_url": f"ws://{host}/gateway",
        "application": {"id": str(state.application_id), "flags": state.application_flags},
        "private_channels": [],
        "relationships": [],
        "presences": [],
        "guild_join_requests": [],
        "user_settings": {},
        "geo_ordered_rtc_regions": ["local"],
        "_trace": ['["gateway-double",{"micros":0}]'],
    }
    if data.get("shard") is not None:
        ready["shard"] = [shard_id, shard_count]
    await _send_dispatch(state, session, "READY", ready)
    for guild in owned:
        await _send_dispatch(state, session, "GUILD_CREATE", _guild_create(state, guild))
    state._notify()  # only now: wait_ready means READY and GUILD_CREATEs were sent
    return session


def _bot_member(state: DiscordState) -> dict[str, Any]:
    return {"user": user_object(state.bot_user_id, state.bot_username, bot=True), "roles": [], "nick": None, "avatar": None,
            "joined_at": "2024-01-01T00:00:00.000000+00:00", "premium_since": None,
            "deaf": False, "mute": False, "pending": False, "flags": 0,
            "communication_disabled_until": None}


def _guild_create(state: DiscordState, guild: dict[str, Any]) -> dict[str, Any]:
    channels = [state._with_overwrites(guild, c) for c in guild.get("channels", [])]
    members = [m for m in guild.get("members", [])
               if m["user"]["id"] != str(state.bot_user_id)] + [_bot_member(state)]
    return guild | {"channels": channels, "members": members, "unavailable": False,
                    "joined_at": "2024-01-01T00:00:00.000000+00:00"}


async def _resume(state: DiscordState, ws: web.WebSocketResponse, data: dict[str, Any]
                  ) -> GatewaySession | None:
    session = state.sessions.get(str(data.get("session_id")))
    if data.get("token") != state.token:
        await ws.close(code=4004, message=b"Authentication failed.")
        return None
    if session is None:
        # Not resumable: discord.py then IDENTIFYs afresh on a new connection.
        await _send(state, ws, {"op": 9, "d": False, "s": None, "t": None})
        return None
    if session.ws is not None and not session.ws.closed and session.ws is not ws:
        await session.ws.close(code=4000, message=b"Session resumed elsewhere.")
    session.ws, session.resumes = ws, session.resumes + 1
    await _send_dispatch(state, session, "RESUMED", {"_trace": ['["gateway-double",{}]']})
    state._notify()
    return session


async def _members_chunk(state: DiscordState, session: GatewaySession, data: dict[str, Any]
                         ) -> None:
    guild = state.guild(int(data.get("guild_id", 0)))
    if guild is None:
        return
    members = _guild_create(state, guild)["members"]
    chunk: dict[str, Any] = {"guild_id": guild["id"], "members": members, "chunk_index": 0,
                             "chunk_count": 1, "not_found": []}
    if data.get("nonce"):
        chunk["nonce"] = data["nonce"]
    await _send_dispatch(state, session, "GUILD_MEMBERS_CHUNK", chunk)


# -- running it ------------------------------------------------------------------------------


@contextlib.asynccontextmanager
async def running_discord(state: DiscordState | None = None
                          ) -> AsyncIterator[tuple[DiscordState, str]]:
    """Serve the double on 127.0.0.1 for the duration of the ``async with``.

    Yields:
        ``(state, base_url)``; ``state.base_url`` is set too. Point discord.py at it with
        :func:`use_double`.
    """
    state = state or DiscordState()
    async with serve(make_app(state)) as base_url:
        state.base_url = base_url
        yield state, base_url


@contextlib.contextmanager
def use_double(base_url: str) -> Iterator[None]:
    """Point discord.py at the double for the duration of the ``with``, then restore it.

    Sets ``discord.http.Route.BASE`` (REST; the webhook and interaction code use the same Route)
    and ``DiscordWebSocket.DEFAULT_GATEWAY``: a plain ``Client``, an ``AutoShardedClient`` given
    ``shard_count``, and any client after an INVALID_SESSION connect there without asking
    ``/gateway/bot``.
    """
    import yarl
    from discord.gateway import DiscordWebSocket
    from discord.http import Route

    old_base, old_gateway = Route.BASE, DiscordWebSocket.DEFAULT_GATEWAY
    Route.BASE = base_url + API
    DiscordWebSocket.DEFAULT_GATEWAY = yarl.URL(base_url.replace("http", "ws", 1) + "/gateway")
    try:
        yield
    finally:
        Route.BASE, DiscordWebSocket.DEFAULT_GATEWAY = old_base, old_gateway
