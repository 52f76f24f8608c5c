"""The neutral contract between chat platforms and the core (DESIGN.md section 2).

Adapters turn platform events into an :class:`Invocation` and render the :class:`Reply` the core
returns; handlers never build platform objects. Buttons carry an ``action``: a command line without
the slash (``"cancel 12"``), short enough for Discord custom ids and Telegram's 64-byte
callback_data, and meaningful after a restart because it holds no in-memory state.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, Protocol

from studiobot.scheduler.notify import Undeliverable  # noqa: F401  (re-exported: Outbox.deliver raises it)

if TYPE_CHECKING:
    from studiobot.commands.deps import Deps

ChatKind = Literal["dm", "group", "guild_channel"]


@dataclass(frozen=True, slots=True)
class UserRef:
    """Who: a platform account. ``platform_user_id`` is the platform's stable id, as a string."""

    platform: str
    platform_user_id: str
    display_name: str = ""


@dataclass(frozen=True, slots=True)
class ChatRef:
    """Where: a conversation.

    Attributes:
        platform: ``discord``, ``telegram`` or ``shell``.
        chat_id: The platform's channel or chat id.
        kind: Private chat, group, or a server's channel.
        community_id: The guild or group id when there is one.
        reply_to: The platform's id of what later answers belong to (a Discord interaction, a
            Telegram message), so a result can land in place; no secret is ever stored here.
        thread_id: A topic inside the chat (Telegram forum topic ``message_thread_id``).
        age_restricted: The platform marks this channel as for adults (Discord's age-restricted
            channels); a community's NSFW policy may allow flagged images only there.
        community_name: The guild's or group's name as the platform shows it now, when known;
            kept in ``communities.name`` for the web gallery, never stored with a job.
    """

    platform: str
    chat_id: str
    kind: ChatKind = "dm"
    community_id: str | None = None
    reply_to: str | None = None
    thread_id: str | None = None
    age_restricted: bool = False
    community_name: str | None = field(default=None, compare=False)

    def to_dict(self) -> dict[str, Any]:
        """JSON-safe form, stored as a job's origin."""
        data: dict[str, Any] = {
            "platform": self.platform,
            "chat_id": self.chat_id,
            "kind": self.kind,
            "community_id": self.community_id,
            "reply_to": self.reply_to,
        }
        if self.thread_id is not None:
            data["thread_id"] = self.thread_id
        if self.age_restricted:
            data["age_restricted"] = True
        return data

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> ChatRef:
        """Inverse of :meth:`to_dict`."""
        return cls(
            data["platform"], data["chat_id"], data.get("kind", "dm"), data.get("community_id"),
            data.get("reply_to"), data.get("thread_id"), bool(data.get("age_restricted", False)),
        )


@dataclass(frozen=True, slots=True)
class Invocation:
    """One command run by one person somewhere.

    Attributes:
        user: Who ran it.
        chat: Where.
        command: Command name without the slash.
        args: Parsed, validated arguments by parameter name.
        invocation_id: Platform-unique id of this invocation (interaction id, update id...), used as
            the idempotency key of whatever the command creates.
        is_admin: The platform says the user administers this community.
        is_operator: The user is one of the bot's operators (settings).
    """

    user: UserRef
    chat: ChatRef
    command: str
    args: Mapping[str, Any]
    invocation_id: str
    is_admin: bool = False
    is_operator: bool = False


@dataclass(frozen=True, slots=True)
class Button:
    """A button: ``action`` is a command line without the slash, e.g. ``"cancel 12"``."""

    label: str
    action: str
    style: Literal["primary", "secondary", "danger"] = "secondary"


@dataclass(frozen=True, slots=True)
class Menu:
    """A pick-one list under a message (Discord: a select menu; Telegram: a row of buttons).

    Attributes:
        placeholder: What the closed menu says, e.g. "Open an image".
        options: One per choice; each option's ``action`` runs when it is picked.
    """

    placeholder: str
    options: Sequence[Button]


@dataclass(frozen=True, slots=True)
class ImageRef:
    """An image to show: a stored file, its kind (image, grid or sheet), a short caption, and the
    store's key for it (platforms that keep their own copy, like Telegram's file ids, remember it
    by key). ``spoiler`` hides it behind a click (Discord spoiler, Telegram ``has_spoiler``): a
    community's NSFW policy for flagged images."""

    path: Path
    kind: str = "image"
    caption: str = ""
    key: str | None = None
    spoiler: bool = False


@dataclass(frozen=True, slots=True)
class Reply:
    """What the core answers. Each platform has one renderer from this to its messages.

    Attributes:
        text: Message text (plain; renderers may add formatting).
        images: Images to attach.
        buttons: Buttons under the message.
        ephemeral: Only the caller should see it (Discord ephemeral; elsewhere a DM or as is).
        private: Deliver only in a private chat (keys, payment links).
        replaces_source: When the command came from a button, this reply takes the place of the
            message holding the button (e.g. after the images were deleted).
        originals: Send the images as original files, not as the platform's recompressed photos
            (the user's ``/settings``; Telegram sends documents, Discord attachments already are).
        menu: A pick-one list (a gallery page's "open an image").
        data: Machine-readable facts (job id, status, balance...) for scripts and the JSON shell.
    """

    text: str
    images: Sequence[ImageRef] = ()
    buttons: Sequence[Button] = ()
    menu: Menu | None = None
    ephemeral: bool = False
    private: bool = False
    replaces_source: bool = False
    originals: bool = False
    data: Mapping[str, Any] = field(default_factory=dict)


class Outbox(Protocol):
    """Delivers Replies when work finishes later (job results). One per platform.

    Must work from a process with no gateway connection (DESIGN.md section 2). Any exception
    leaves the delivery to be retried (a bounded number of times); :class:`Undeliverable` ends
    it at once.
    """

    async def deliver(self, chat: ChatRef, reply: Reply, *, recipient: str | None = None) -> str | None:
        """Send ``reply`` to ``chat``; returns a message reference for later updates, if any.

        Args:
            chat: Where the work was asked for (a job's origin).
            reply: What to show.
            recipient: The platform user id of the person it is for: mentioned in a shared
                channel, and the fallback for a direct message when the channel refuses.
        """
        ...


Handler = Callable[[Invocation, "Deps"], Awaitable[Reply]]


def _default(spec: CommandSpec, name: str) -> str:
    return str(next((p.default for p in spec.params if p.name == name), "") or "")
#: Suggests values for a parameter as the user types (Discord autocomplete), given the arguments
#: typed so far (raw text, possibly partial) and the text of the parameter being typed.
Suggest = Callable[[Mapping[str, Any], str, "Deps"], Sequence[str]]
#: Validates a parameter's converted value against the configuration, given every converted
#: argument and the handler dependencies; raises ``BadInput`` (e.g. ``/keys add`` names a provider
#: that takes personal keys).
Check = Callable[[Any, Mapping[str, Any], "Deps"], None]
Where = Literal["anywhere", "dm", "group"]
Who = Literal["anyone", "admin", "operator"]


@dataclass(frozen=True, slots=True)
class Param:
    """A typed command parameter.

    Attributes:
        name: Argument name (also the ``--name`` flag in text form).
        kind: ``str`` or ``int``.
        description: One line shown in help and as the platform's option description.
        required: Must be given.
        default: Value when absent.
        choices: Allowed values (validated), when fixed.
        min_value / max_value: Inclusive range for ints, or length range for strings.
        rest: Takes the free text after the command (at most one per command).
        positional: May be given by position (``/job 12``) rather than as a flag.
        aliases: Other flag names (``ar`` for ``aspect``).
        suggest: Offers values as the user types, where the platform supports it; the values
            come from the configuration (e.g. the providers and their aspect ratios).
        secret: A credential (an API key): platforms collect it privately (Discord: a modal,
            never a slash option that would show in the channel) and never echo it.
        ask_when: For a secret needed only by one form of the command, ``(parameter, value)``:
            it is collected only when that argument has that value (``("action", "add")``).
        check: Further validation against the configuration, run by the dispatcher after
            conversion (also when the value is absent) and before any secret is collected
            (``Dispatcher.admit``), so a command that will be refused never asks for a key.
    """

    name: str
    kind: type = str
    description: str = ""
    required: bool = False
    default: Any = None
    choices: tuple[str, ...] = ()
    min_value: int | None = None
    max_value: int | None = None
    rest: bool = False
    positional: bool = False
    aliases: tuple[str, ...] = ()
    suggest: Suggest | None = None
    secret: bool = False
    ask_when: tuple[str, str] | None = None
    check: Check | None = None


@dataclass(frozen=True, slots=True)
class CommandSpec:
    """A command: the one table every platform's command list is generated from.

    Attributes:
        name: Command name without the slash.
        summary: One line for help and the platform's command list.
        handler: The function that runs it.
        params: Its parameters, in order.
        where: Where it may run: anywhere, only in a private chat, or only in a group.
        who: Who may run it: anyone, the community's admins, or the bot's operators.
        ephemeral: Its answers are for the caller only (balances, personal lists); platforms that
            must choose before the answer exists (a Discord defer) use this.
    """

    name: str
    summary: str
    handler: Handler
    params: tuple[Param, ...] = ()
    where: Where = "anywhere"
    who: Who = "anyone"
    ephemeral: bool = False

    def secrets_for(self, args: Mapping[str, Any]) -> list[Param]:
        """The secret parameters to collect privately for a call with ``args`` (raw or parsed)."""
        return [
            p for p in self.params
            if p.secret and (p.ask_when is None
                             or str(args.get(p.ask_when[0]) or _default(self, p.ask_when[0])) == p.ask_when[1])
        ]

    def usage(self) -> str:
        """One-line usage, e.g. ``/job <job_id>`` or ``/imagine <prompt> [--aspect ...]``."""
        parts = [f"/{self.name}"]
        for p in self.params:
            if p.rest or p.positional:
                parts.append(f"<{p.name}>" if p.required else f"[{p.name}]")
            else:
                parts.append(f"[--{p.name} {p.name.upper()}]")
        return " ".join(parts)
