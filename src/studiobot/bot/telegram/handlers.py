"""What the Telegram bot does with each kind of update: translate, dispatch, show the Reply.

Messages become command lines (see :mod:`.translate`); button presses (callback queries) carry
the core's action as callback_data; inline queries list the user's own images. In a forum, every
answer goes to the topic the command or button was in. Secrets get special care (issue 4,
reference-platform-rules.md section 5):

* A message that looks like a credential is deleted (in a group only when the bot is an admin
  allowed to) and the user is warned; it is never run as a command or used as a prompt.
* A command with a secret parameter (``Param.secret``, e.g. ``/keys add``) runs only in a private
  chat; in a group the answer is a deep link to one. In private, the bot asks for the secret in a
  message of its own when it was not typed with the command, and deletes the user's message
  holding it once the command has run.
"""

from __future__ import annotations

import contextlib
import json
import logging
import time
from dataclasses import replace
from typing import Any

from telegram import (
    CallbackQuery,
    Chat,
    InlineQuery,
    InlineQueryResultCachedPhoto,
    InlineQueryResultsButton,
    Message,
)
from telegram.constants import ChatAction
from telegram.error import BadRequest, Forbidden, TelegramError

from studiobot.bot.telegram.admins import AdminCache
from studiobot.bot.telegram.outbox import TelegramOutbox, parse_ref, privately, refused_for_good, status_ref
from studiobot.bot.telegram.render import Sender, cut, picture_above
from studiobot.bot.telegram.translate import PLATFORM, chat_ref, command_line, deep_link, thread_of, user_ref
from studiobot.commands import gallery
from studiobot.commands.contract import CommandSpec, Param, Reply
from studiobot.commands.dispatcher import Dispatcher
from studiobot.commands.parsing import parse_args, split_command
from studiobot.db import platform_state
from studiobot.errors import UserError
from studiobot.providers.keyshapes import looks_like_key
from studiobot.scheduler import lifecycle

log = logging.getLogger(__name__)

_ALERT_MAX = 200  # answerCallbackQuery text
_INLINE_PAGE = 20
_PENDING_TTL_S = 600


class UpdateHandlers:
    """Handles messages, callback queries and inline queries for one bot.

    Args:
        dispatcher: Runs commands.
        sender: Sends and edits messages.
        outbox: Tidies the messages that show a job.
        admins: Group administrators.
        username: The bot's username, without ``@``.
    """

    def __init__(
        self, dispatcher: Dispatcher, sender: Sender, outbox: TelegramOutbox, admins: AdminCache, username: str
    ) -> None:
        self.dispatcher = dispatcher
        self.sender = sender
        self.outbox = outbox
        self.admins = admins
        self.username = username
        self._db = dispatcher.deps.db

    # Messages ---------------------------------------------------------------------------------

    async def on_message(self, message: Message) -> None:
        """A text message in a private chat or group, or the service message of a group upgrade."""
        if message.migrate_to_chat_id or message.migrate_from_chat_id:
            await self._migrated(message)
            return
        user = message.from_user
        if user is None or message.chat.type == Chat.CHANNEL or not message.text:
            return
        if message.sender_chat is not None:
            await self._on_behalf_of_chat(message)
            return
        if user.is_bot:
            return
        private = message.chat.type == Chat.PRIVATE
        pending = await self._pending(message.chat.id) if private else None
        if pending is not None:
            if not message.text.startswith("/"):
                await self._answer_pending(message, pending)
                return
            await platform_state.delete(self._db, _pending_key(message.chat.id))  # a command: give up
        line = command_line(message, self.username)
        spec, raw = self._parse(line.text) if line is not None else (None, None)
        secret_params = spec.secrets_for(raw) if spec is not None and raw is not None else []
        pasted = looks_like_key(message.text)
        if pasted is not None and not (private and secret_params):
            await self._refuse_pasted_key(message, pasted)
            return
        if line is None:
            return
        if secret_params and spec is not None and raw is not None:
            await self._secret_command(message, spec, raw, secret_params)
            return
        if spec is not None and raw is not None:
            await self._run(message, spec.name, raw)
        else:
            await self._run(message, line.text)  # the dispatcher explains what is wrong with it

    async def _on_behalf_of_chat(self, message: Message) -> None:
        """A message sent on behalf of a chat: an anonymous admin (``sender_chat`` is the group
        itself) or a linked channel. Bot API, Message.sender_chat: ``from`` then holds a fake
        user (GroupAnonymousBot, shared by every anonymous admin everywhere), so nobody can be
        charged or checked as an admin. A key is still deleted; a command for us gets a way out.
        """
        pasted = looks_like_key(message.text or "")
        if pasted is not None:
            await self._refuse_pasted_key(message, pasted)
            return
        line = command_line(message, self.username)
        if line is None:
            return
        name = line.text.split(maxsplit=1)[0]
        sender = message.sender_chat.title if message.sender_chat is not None else None
        await self.sender.send(message.chat.id, Reply(
            f"I can't tell who sent {name}: it was posted on behalf of {sender or 'a chat'}. "
            "Post as yourself to use me (admins: turn off \"Remain anonymous\" in your admin rights)."
        ), reply_to=message.message_id, thread_id=thread_of(message))

    async def _migrated(self, message: Message) -> None:
        """Telegram Bot API: a basic group upgraded to a supergroup posts ``migrate_to_chat_id`` in
        the old chat and ``migrate_from_chat_id`` in the new one; either records the move and
        carries the group's community over (a move found by a refused send is seen by the caches
        within their few seconds)."""
        if message.migrate_to_chat_id:
            await self.outbox.remember_migration(message.chat.id, message.migrate_to_chat_id)
        elif message.migrate_from_chat_id:
            await self.outbox.remember_migration(message.migrate_from_chat_id, message.chat.id)
        # The group's settings, bans and terms now belong to the supergroup's community row.
        self.dispatcher.deps.communities.forget()
        self.dispatcher.deps.guards.forget()

    async def _run(self, message: Message, text: str, raw: dict[str, Any] | None = None) -> None:
        """Run command line ``text``, or command ``text`` with arguments ``raw`` when given."""
        chat = message.chat
        user = message.from_user
        assert user is not None
        await self._typing(chat.id, thread_of(message))
        is_admin = await self.admins.is_admin(chat.id, user.id)
        ref = chat_ref(chat, message.message_id, thread_of(message))
        invocation = f"{chat.id}:{message.message_id}"
        if raw is not None:
            reply = await self.dispatcher.dispatch(user_ref(user), ref, text, raw, invocation, is_admin=is_admin)
        else:
            _, reply = await self.dispatcher.dispatch_text(user_ref(user), ref, text, invocation, is_admin=is_admin)
        await self.show(chat, user.id, reply, reply_to=message.message_id, thread_id=thread_of(message))

    async def show(
        self, chat: Chat, user_id: int, reply: Reply, *, reply_to: int | None, thread_id: int | None = None
    ) -> None:
        """Show a command's Reply where it was asked for (private Replies in the private chat).

        Args:
            chat: Where the command or button was.
            user_id: Who ran it (private Replies go to them).
            reply: What to show.
            reply_to: The message it answers.
            thread_id: The forum topic it was asked in, if any.
        """
        if reply.private and chat.type != Chat.PRIVATE:
            try:
                await self.sender.send(user_id, reply)
            except Forbidden:
                link = deep_link(self.username, "help")
                await self.sender.send(chat.id, Reply(
                    f"I can't message you privately yet. Open {link}, press Start, then try again here."
                ), reply_to=reply_to, thread_id=thread_id)
                return
            await self.sender.send(chat.id, Reply("I sent you the details in a private chat."), reply_to=reply_to,
                                   thread_id=thread_id)
            return
        job_id = reply.data.get("job_id")
        if reply.replaces_source and job_id is not None:
            # Typed /cancel or /delete: the job's own messages change too, as after a button.
            ref = parse_ref(await lifecycle.origin_message(self._db, int(job_id)))
            if ref is not None and ref[0] == "status" and ref[1] == chat.id:
                with contextlib.suppress(BadRequest):
                    await self.sender.edit_text(chat.id, ref[2][0], replace(reply, buttons=()))
            await self._tidy_result(chat.id, int(job_id))
        try:
            sent = await self.sender.send(chat.id, reply, reply_to=reply_to, thread_id=thread_id)
        except (Forbidden, BadRequest) as error:
            if chat.type == Chat.PRIVATE or not refused_for_good(error):
                raise
            await self._answer_privately(chat.id, user_id, reply, error)
            return
        await self._track_status(reply, chat.id, sent.keyboard_message_id)

    async def _answer_privately(self, chat_id: int, user_id: int, reply: Reply, refusal: TelegramError) -> None:
        """The group refuses the bot's answer for good (no right to post, as a results' delivery
        finds too): the answer goes to the user's private chat, with why; if that is closed too,
        there is nobody to tell."""
        log.info("Telegram chat %s refused a command's answer (%s); sending it privately", chat_id, refusal.message)
        try:
            sent = await self.sender.send(user_id, privately(reply, refusal))
        except (Forbidden, BadRequest) as error:
            if not refused_for_good(error):
                raise
            log.info("user %s cannot be messaged privately either (%s); the answer is dropped", user_id, error.message)
            return
        await self._track_status(reply, user_id, sent.keyboard_message_id)

    async def _track_status(self, reply: Reply, chat_id: int, message_id: int | None) -> None:
        """A "queued" answer becomes the job's status message, unless its result is already out."""
        job_id = reply.data.get("job_id")
        if job_id is None or message_id is None or reply.data.get("status") not in ("queued", "running"):
            return
        ours = status_ref(chat_id, message_id)
        current = parse_ref(await lifecycle.claim_origin_message(self._db, int(job_id), ours))
        if current is not None and current[0] == "result":
            await self.outbox.delete(chat_id, [message_id])  # the job finished first: stale

    async def _typing(self, chat_id: int, thread_id: int | None) -> None:
        # Telegram's acknowledgement: "typing..." until the answer arrives (DESIGN.md section 3).
        try:
            await self.sender.bot.send_chat_action(chat_id, ChatAction.TYPING, message_thread_id=thread_id)
        except TelegramError as error:
            log.debug("chat action refused in %s: %s", chat_id, error)

    def _parse(self, text: str) -> tuple[CommandSpec | None, dict[str, Any] | None]:
        try:
            name, rest = split_command(text)
            spec = self.dispatcher.commands.get(name)
            return (spec, parse_args(spec, rest)) if spec is not None else (None, None)
        except UserError:
            return None, None

    # Secrets ----------------------------------------------------------------------------------

    async def _refuse_pasted_key(self, message: Message, kind: str) -> None:
        chat = message.chat
        private = chat.type == Chat.PRIVATE
        deleted = False
        if private or await self.admins.bot_can_delete(chat.id):
            try:
                await self.sender.bot.delete_message(chat.id, message.message_id)
                deleted = True
            except TelegramError as error:
                log.info("could not delete a pasted key in %s: %s", chat.id, error)
        who = message.from_user.first_name if message.from_user and not message.sender_chat else "Someone"
        done = "so I deleted it" if deleted else "please delete it now (I may not delete messages here)"
        where = "Keys are only ever added in a private chat with me"
        if "keys" in self.dispatcher.commands:
            where += f": {deep_link(self.username, '/keys add')}"
        text = (f"{who}, that message looked like {kind}, {done}. Treat the key as leaked and revoke "
                f"it with its provider. {where}.")
        await self.sender.send(chat.id, Reply(text), reply_to=None if deleted else message.message_id,
                               thread_id=thread_of(message))

    async def _secret_command(
        self, message: Message, spec: CommandSpec, raw: dict[str, Any], secrets: list[Param]
    ) -> None:
        if message.chat.type != Chat.PRIVATE:
            public = {k: v for k, v in raw.items() if k not in {p.name for p in secrets}}
            line = " ".join([f"/{spec.name}", *(str(v) for v in public.values())])
            link = deep_link(self.username, line)
            await self.sender.send(message.chat.id, Reply(
                f"/{spec.name} works only in private: send it to me in a private chat ({link}). "
                "Never post keys here."
            ), reply_to=message.message_id, thread_id=thread_of(message))
            return
        missing = [p for p in secrets if p.name not in raw]
        if missing:
            # A command that will be refused anyway must not take the next message as its key.
            assert message.from_user is not None
            refusal = await self.dispatcher.admit(
                user_ref(message.from_user), chat_ref(message.chat, message.message_id, thread_of(message)),
                spec.name, raw,
            )
            if refusal is not None:
                await self.sender.send(message.chat.id, refusal)
                return
            # No secret in it: what was typed so far, to complete with the next message.
            await platform_state.put(self._db, _pending_key(message.chat.id), json.dumps(
                {"command": spec.name, "raw": raw, "param": missing[0].name,
                 "expires": time.time() + _PENDING_TTL_S}
            ))
            label = missing[0].description or missing[0].name
            await self.sender.send(message.chat.id, Reply(
                f"Send me {label} in your next message. I'll delete that message as soon as it is "
                "stored. Send /help to stop."
            ))
            return
        try:
            await self._run(message, message.text or "")
        finally:
            await self._delete_secret(message)

    async def _answer_pending(self, message: Message, pending: dict[str, Any]) -> None:
        await platform_state.delete(self._db, _pending_key(message.chat.id))
        try:
            raw = {**pending["raw"], pending["param"]: (message.text or "").strip()}
            await self._run(message, pending["command"], raw)
        finally:
            await self._delete_secret(message)

    async def _delete_secret(self, message: Message) -> None:
        try:
            await self.sender.bot.delete_message(message.chat.id, message.message_id)
        except TelegramError as error:
            log.warning("could not delete the message holding a key in %s: %s", message.chat.id, error)
            await self.sender.send(message.chat.id, Reply(
                "I could not delete your message holding the key; please delete it yourself."
            ))

    async def _pending(self, chat_id: int) -> dict[str, Any] | None:
        value = await platform_state.get(self._db, _pending_key(chat_id))
        if value is None:
            return None
        pending: dict[str, Any] = json.loads(value)
        if pending.get("expires", 0) < time.time():
            await platform_state.delete(self._db, _pending_key(chat_id))
            return None
        return pending

    # Buttons ----------------------------------------------------------------------------------

    async def on_callback_query(self, query: CallbackQuery) -> None:
        """A button press: run its action for whoever pressed it (the core checks they may).

        Private answers (a refusal, "added to favourites") appear as an alert only the presser
        sees: Telegram's counterpart of an ephemeral message. Every query is answered, or the
        user's client keeps spinning (Bot API, answerCallbackQuery).
        """
        message = query.message
        if not isinstance(message, Message) or not query.data:
            await query.answer("This button no longer works here; type the command instead.", show_alert=True)
            return
        chat = message.chat
        user = query.from_user
        thread_id = thread_of(message)
        is_admin = await self.admins.is_admin(chat.id, user.id)
        _, reply = await self.dispatcher.dispatch_text(
            user_ref(user), chat_ref(chat, message.message_id, thread_id), "/" + query.data, f"cb:{query.id}",
            is_admin=is_admin,
        )
        if reply.replaces_source:
            await query.answer()
            await self._replace_source(message, reply)
        elif (reply.ephemeral or reply.private) and not reply.images and len(reply.text) <= _ALERT_MAX:
            await query.answer(reply.text, show_alert=True)
        elif reply.ephemeral or reply.private:
            await query.answer()
            await self.show(chat, user.id, replace(reply, private=True), reply_to=None)
        else:
            await query.answer()
            await self.show(chat, user.id, reply, reply_to=message.message_id, thread_id=thread_id)

    async def _replace_source(self, source: Message, reply: Reply) -> None:
        """Put ``reply`` in place of the message holding the button.

        A job's messages (delete, cancel) are tidied and the text message edited. A reply with
        an image (the next gallery page) swaps the picture in place (:meth:`Sender.edit_in_place`).
        Otherwise a text message is edited; what cannot be edited (a photo cannot become text) is
        deleted, with the picture it belongs to, and the reply posted instead.
        """
        chat_id = source.chat.id
        job_id = reply.data.get("job_id")
        gone = await self._tidy_result(chat_id, int(job_id), keep=source.message_id) if job_id is not None else []
        # Without a job, the picture above a text keyboard is part of what is replaced.
        above = picture_above(source, self.sender.bot.id) if job_id is None else None
        try:
            if reply.images and await self.sender.edit_in_place(source, reply):
                return
            if source.text is not None and source.message_id not in gone and not reply.images:
                await self.sender.edit_text(chat_id, source.message_id, reply)
                if above is not None:
                    await self.outbox.delete(chat_id, [above.message_id])
                return
        except BadRequest as error:
            log.info("could not edit %s/%s: %s", chat_id, source.message_id, error.message)
        await self.outbox.delete(chat_id, [source.message_id, *([above.message_id] if above else [])])
        await self.sender.send(chat_id, reply, thread_id=thread_of(source))

    async def _tidy_result(self, chat_id: int, job_id: int, *, keep: int | None = None) -> list[int]:
        """Delete the messages that showed job ``job_id``'s result in this chat, except ``keep``
        when it is a text message we can edit instead. Returns the ids deleted."""
        ref = parse_ref(await lifecycle.origin_message(self._db, job_id))
        if ref is None or ref[0] != "result" or ref[1] != chat_id:
            return []
        doomed = [m for m in ref[2] if m != keep]
        await self.outbox.delete(chat_id, doomed)
        return doomed

    # Inline mode ------------------------------------------------------------------------------

    async def on_inline_query(self, query: InlineQuery) -> None:
        """``@bot fox``: the user's own images whose prompt mentions "fox", to share anywhere.

        Only images Telegram already holds (sent to the user before) can be offered, as cached
        photos; paging follows Telegram's ``offset``/``next_offset``.
        """
        try:
            offset = max(0, int(query.offset or 0))
        except ValueError:
            offset = 0
        found = await gallery.find(
            self.dispatcher.deps, user_ref(query.from_user), query.query, offset=offset, limit=_INLINE_PAGE,
            on_platform=PLATFORM,
        )
        results = [
            InlineQueryResultCachedPhoto(
                id=str(item.asset_id), photo_file_id=item.file_id or "", title=cut(item.prompt, 64),
                caption=cut(f"{item.prompt}\nMade with @{self.username} (job #{item.job_id})", 1024),
            )
            for item in found
            if item.file_id
        ]
        button = None
        if not results and offset == 0:
            button = InlineQueryResultsButton("No images yet: make one", start_parameter="help")
        await query.answer(
            results, cache_time=10, is_personal=True,
            next_offset=str(offset + len(found)) if len(found) == _INLINE_PAGE else "",
            button=button,
        )


def _pending_key(chat_id: int) -> str:
    return f"telegram.pending.{chat_id}"
