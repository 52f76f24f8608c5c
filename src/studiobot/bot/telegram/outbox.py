"""Delivering job news to Telegram over the Bot API, from any process.

A job is shown in its chat by a status message (the "queued" answer, edited with a progress bar)
and then by its result. Which message shows a job is kept in the job's ``origin_message``, so a
worker process with no updates of its own can edit and tidy the same messages:

* ``status:<chat>:<message>``: the status message, edited with progress.
* ``result:<chat>:<m1>,<m2>,...``: the messages of the delivered result (deleted by ``/delete``).

The result is posted as new messages replying to the command, and the status message is deleted
(a failure instead edits the status message in place). When a group refuses for good, the result
goes to the user's private chat with a line saying why. Telegram Bot API answers meaning "for good":
403 Forbidden (bot removed or blocked, user deactivated), 400 "chat not found", and the bot lacking
rights (400 "not enough rights to send photos/text messages/documents to the chat", "have no
rights to send a message", CHAT_WRITE_FORBIDDEN). If the private chat refuses too (the user never
pressed Start, or blocked the bot), :class:`~studiobot.commands.contract.Undeliverable` is raised
so the scheduler stops retrying; the result stays in their gallery and ``/job`` shows it. Any
other error (429 RetryAfter, network errors, 5xx, other 400s) is raised as it is, to be retried.

A basic group upgraded to a supergroup gets a new id: Telegram answers 400 "group chat was upgraded
to a supergroup chat" with ``parameters.migrate_to_chat_id`` (PTB raises ``ChatMigrated``). The
result is sent again once in the supergroup, and the move is stored in ``platform_state``
(``telegram:migrated:<old id>``) so every process sends later news for the old id straight to the
new one. The service messages Telegram posts on the upgrade (``migrate_to_chat_id`` in the old
chat, ``migrate_from_chat_id`` in the new) record it too (:meth:`TelegramOutbox.remember_migration`).

A chat with a ``thread_id`` is a forum topic: everything for it is posted in that topic. Posts to
a community's gallery channel (``Reply.data["gallery_post"]``) are fresh messages that do not
become the job's messages: ``/delete`` tidies the result, not the community's post of it. A
refused gallery post, or a refused private notice (payments, keys), is logged and dropped, as
before: nobody retries those, and their callers expect no error.
"""

from __future__ import annotations

import logging
from dataclasses import replace

from telegram.error import BadRequest, ChatMigrated, Forbidden, RetryAfter, TelegramError

from studiobot.bot.telegram.limits import EditPacer
from studiobot.bot.telegram.render import Sender, Sent
from studiobot.bot.telegram.translate import PLATFORM
from studiobot.commands.contract import ChatRef, Reply, Undeliverable
from studiobot.db import platform_state
from studiobot.db.communities import move_community
from studiobot.db.engine import Database
from studiobot.scheduler import lifecycle

log = logging.getLogger(__name__)

#: Bot API 400 descriptions (lower case, PTB drops "Bad Request: ") meaning the chat will keep
#: refusing: the bot may not post there, or the chat is gone.
_NO_RIGHTS = ("not enough rights to send", "have no rights to send", "chat_write_forbidden",
              "need administrator rights")
_GONE = ("chat not found",)
#: Bot API: supergroup and channel ids are -(10**12 + n); only basic groups (above it) can migrate.
_SUPERGROUP_IDS_BELOW = -(10**12)


def status_ref(chat_id: int, message_id: int) -> str:
    """The ``origin_message`` value of a status message."""
    return f"status:{chat_id}:{message_id}"


def result_ref(chat_id: int, message_ids: list[int]) -> str:
    """The ``origin_message`` value of a delivered result."""
    return f"result:{chat_id}:{','.join(map(str, message_ids))}"


def parse_ref(value: str | None) -> tuple[str, int, list[int]] | None:
    """(``status`` or ``result``, chat id, message ids) from an ``origin_message`` value."""
    if not value:
        return None
    try:
        kind, chat, ids = value.split(":", 2)
        return kind, int(chat), [int(i) for i in ids.split(",") if i]
    except ValueError:
        return None


class TelegramOutbox:
    """The Telegram platform's Outbox.

    Args:
        sender: Sends and edits messages (its bot's rate limiter paces them).
        db: Database (which messages show which job).
        pacer: Decides when a progress edit may go out.
    """

    def __init__(self, sender: Sender, db: Database, pacer: EditPacer | None = None) -> None:
        self._sender = sender
        self._db = db
        self._pacer = pacer or EditPacer()
        self._moved: dict[int, int] = {}  # a migration is final, so what was found stays true

    async def deliver(self, chat: ChatRef, reply: Reply, *, recipient: str | None = None) -> str | None:
        """Show job news, or a post for a community's gallery channel, in ``chat`` (see the module
        docstring); ``chat.reply_to`` None posts without replying to anything.

        Returns:
            The id of the message carrying the reply's keyboard, or None.

        Raises:
            Undeliverable: Neither the chat nor the recipient's private chat will take it (see
                the module docstring); retrying cannot help.
            telegram.error.TelegramError: Anything else (flood control, network, 5xx): retry later.
        """
        if reply.private and recipient is not None and chat.kind != "dm":
            chat = ChatRef(chat.platform, recipient, "dm")  # payment news: never in a group
        # A gallery post shows the job but is the community's message, not the job's own.
        job_id = None if reply.data.get("gallery_post") else reply.data.get("job_id")
        if "progress" in reply.data:
            if job_id is not None:
                await self._progress(int(job_id), reply)
            return None
        status = None
        if job_id is not None and not reply.images:
            status = parse_ref(await lifecycle.origin_message(self._db, job_id))
        if status is not None and status[0] == "status":
            shown = await self._edit_status(status[1], status[2][0], reply)
            if shown:
                await lifecycle.set_origin_message(self._db, job_id, result_ref(status[1], status[2]))
                return str(status[2][0])
        sent, chat_id = await self._post(chat, reply, recipient)
        if sent is None:
            return None
        if job_id is not None:
            ours = result_ref(chat_id, sent.message_ids)
            current = await lifecycle.claim_origin_message(self._db, job_id, ours)
            previous = parse_ref(current)
            if previous is not None and previous[0] == "status":
                # The "queued" answer was out before the result: the result replaces it.
                await self.delete(previous[1], previous[2])
                await lifecycle.set_origin_message(self._db, job_id, ours)
        return str(sent.keyboard_message_id)

    async def delete(self, chat_id: int, message_ids: list[int]) -> None:
        """Delete messages, ignoring those already gone or too old to delete (48 hours)."""
        for message_id in message_ids:
            self._pacer.forget(chat_id, message_id)
            try:
                await self._sender.bot.delete_message(chat_id, message_id)
            except BadRequest as error:
                log.info("could not delete Telegram message %s/%s: %s", chat_id, message_id, error.message)
            except ChatMigrated as error:
                # The old group's messages now live in the supergroup under other ids.
                await self.remember_migration(chat_id, error.new_chat_id)
                return
            except Forbidden:
                return

    async def remember_migration(self, old_chat_id: int, new_chat_id: int) -> None:
        """Record that basic group ``old_chat_id`` became supergroup ``new_chat_id``, for every
        process (``platform_state`` key ``telegram:migrated:<old id>``), and move the group's
        community (settings, bans, gallery) to the new id, so its admins' choices still hold."""
        if self._moved.get(old_chat_id) == new_chat_id:
            return
        log.info("Telegram group %s is now supergroup %s", old_chat_id, new_chat_id)
        await self._db.run(move_community, PLATFORM, str(old_chat_id), str(new_chat_id))
        await platform_state.put(self._db, _migrated_key(old_chat_id), str(new_chat_id))
        self._moved[old_chat_id] = new_chat_id

    async def current_chat_id(self, chat_id: int) -> int:
        """``chat_id``, or the supergroup it became when it was a basic group since upgraded."""
        if chat_id in self._moved:
            return self._moved[chat_id]
        if not _SUPERGROUP_IDS_BELOW < chat_id < 0:
            return chat_id  # private chats, supergroups and channels never migrate
        value = await platform_state.get(self._db, _migrated_key(chat_id))
        if value is None:
            return chat_id  # not cached: another process may record a migration later
        self._moved[chat_id] = int(value)
        return self._moved[chat_id]

    async def _progress(self, job_id: int, reply: Reply) -> None:
        ref = parse_ref(await lifecycle.origin_message(self._db, job_id))
        if ref is None or ref[0] != "status":
            return  # no status message yet, or the result is already out
        chat_id, message_id = ref[1], ref[2][0]
        if not self._pacer.allow(chat_id, message_id, reply.text):
            return
        try:
            await self._sender.edit_text(chat_id, message_id, reply)
        except RetryAfter:
            return  # progress can wait for the next step; results must not wait behind it
        except ChatMigrated as error:
            await self.remember_migration(chat_id, error.new_chat_id)
        except TelegramError as error:
            log.info("progress edit for job %s skipped: %s", job_id, error)

    async def _edit_status(self, chat_id: int, message_id: int, reply: Reply) -> bool:
        self._pacer.forget(chat_id, message_id)
        try:
            await self._sender.edit_text(chat_id, message_id, reply)
            return True
        except ChatMigrated as error:
            await self.remember_migration(chat_id, error.new_chat_id)  # the result is posted there
            return False
        except TelegramError as error:
            log.info("could not edit status message %s/%s: %s", chat_id, message_id, error)
            return False

    async def _post(self, chat: ChatRef, reply: Reply, recipient: str | None) -> tuple[Sent | None, int]:
        asked = int(chat.chat_id)
        chat_id = await self.current_chat_id(asked)
        # Message ids (replies) and topics of the old group mean nothing in the supergroup.
        moved = chat_id != asked
        reply_to = int(chat.reply_to) if chat.reply_to and not moved else None
        thread_id = int(chat.thread_id) if chat.thread_id and not moved else None
        try:
            try:
                return await self._sender.send(chat_id, reply, reply_to=reply_to, thread_id=thread_id), chat_id
            except ChatMigrated as error:
                await self.remember_migration(chat_id, error.new_chat_id)
                chat_id = error.new_chat_id
                return await self._sender.send(chat_id, reply), chat_id
        except (Forbidden, BadRequest) as error:
            if not refused_for_good(error):
                raise
            if reply.data.get("gallery_post") or reply.private:
                # Not job news: nobody retries these, and their callers expect no error.
                log.warning("Telegram chat %s refused a %s: %s", chat_id,
                            "notice" if reply.private else "gallery post", error.message)
                return None, chat_id
            if recipient is None or chat.kind == "dm":
                raise Undeliverable(f"Telegram chat {chat_id} refused: {error.message}") from error
            log.info("Telegram chat %s refused the result (%s); sending it privately", chat_id, error.message)
            reason = error
        try:
            return await self._sender.send(int(recipient), privately(reply, reason)), int(recipient)
        except (Forbidden, BadRequest) as error:
            if not refused_for_good(error):
                raise
            raise Undeliverable(
                f"Telegram chat {chat_id} refused ({reason.message}) and user {recipient} cannot be "
                f"messaged privately ({error.message}); the result stays in their gallery"
            ) from error


def _migrated_key(chat_id: int) -> str:
    return f"telegram:migrated:{chat_id}"


def _lacks_rights(error: TelegramError) -> bool:
    return isinstance(error, BadRequest) and any(s in error.message.lower() for s in _NO_RIGHTS)


def refused_for_good(error: TelegramError) -> bool:
    """Whether the chat will keep refusing (Bot API: 403, or a 400 for rights or a chat gone)."""
    if isinstance(error, Forbidden):
        return True
    return _lacks_rights(error) or (isinstance(error, BadRequest)
                                    and any(s in error.message.lower() for s in _GONE))


def privately(reply: Reply, reason: TelegramError) -> Reply:
    """``reply`` for the user's private chat, opening with why it is not in the group."""
    if _lacks_rights(reason):
        why = ("I'm not allowed to post this in the group (a group admin can change my permissions), "
               "so here it is privately.")
    else:
        why = "I can't post in the group any more, so here it is privately."
    return replace(reply, text=f"{why}\n\n{reply.text}")
