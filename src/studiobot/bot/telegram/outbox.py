"""Delivering job news to Telegram over the Bot API, from any process.

A job is shown in its chat by a status message (the "queued" answer, edited with a progress bar)
and then by its result. Which message shows a job is kept in the job's ``origin_message``, so a
worker process with no updates of its own can edit and tidy the same messages:

* ``status:<chat>:<message>``: the status message, edited with progress.
* ``result:<chat>:<m1>,<m2>,...``: the messages of the delivered result (deleted by ``/delete``).

The result is posted as new messages replying to the command, and the status message is deleted
(a failure instead edits the status message in place). When the chat refuses (the bot was
removed or blocked), the result goes to the user's private chat; if that is refused too, it stays
in their gallery and ``/job`` shows it.

A chat with a ``thread_id`` is a forum topic: everything for it is posted in that topic. Posts to
a community's gallery channel (``Reply.data["gallery_post"]``) are fresh messages that do not
become the job's messages: ``/delete`` tidies the result, not the community's post of it.
"""

from __future__ import annotations

import logging

from telegram.error import BadRequest, Forbidden, RetryAfter, TelegramError

from studiobot.bot.telegram.limits import EditPacer
from studiobot.bot.telegram.render import Sender, Sent
from studiobot.commands.contract import ChatRef, Reply
from studiobot.db.engine import Database
from studiobot.scheduler import lifecycle

log = logging.getLogger(__name__)


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

    async def deliver(self, chat: ChatRef, reply: Reply, *, recipient: str | None = None) -> str | None:
        """Show job news, or a post for a community's gallery channel, in ``chat`` (see the module
        docstring); ``chat.reply_to`` None posts without replying to anything.

        Returns:
            The id of the message carrying the reply's keyboard, or None.
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
            except Forbidden:
                return

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
        except TelegramError as error:
            log.info("progress edit for job %s skipped: %s", job_id, error)

    async def _edit_status(self, chat_id: int, message_id: int, reply: Reply) -> bool:
        self._pacer.forget(chat_id, message_id)
        try:
            await self._sender.edit_text(chat_id, message_id, reply)
            return True
        except TelegramError as error:
            log.info("could not edit status message %s/%s: %s", chat_id, message_id, error)
            return False

    async def _post(self, chat: ChatRef, reply: Reply, recipient: str | None) -> tuple[Sent | None, int]:
        chat_id = int(chat.chat_id)
        reply_to = int(chat.reply_to) if chat.reply_to else None
        thread_id = int(chat.thread_id) if chat.thread_id else None
        try:
            return await self._sender.send(chat_id, reply, reply_to=reply_to, thread_id=thread_id), chat_id
        except Forbidden as error:
            if recipient is None or chat.kind == "dm":
                log.warning("Telegram chat %s refused the result (%s); it stays in the gallery",
                            chat_id, error.message)
                return None, chat_id
            log.info("Telegram chat %s refused the result (%s); sending it privately", chat_id, error.message)
        try:
            return await self._sender.send(int(recipient), reply), int(recipient)
        except Forbidden as error:
            log.warning("could not reach Telegram user %s privately (%s); the result stays in the gallery",
                        recipient, error.message)
            return None, int(recipient)
