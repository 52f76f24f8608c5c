"""Delivering job news to Discord over REST: in place while the interaction lives, else by post.

Order of routes for one piece of news (issue 3, reference-platform-rules.md section 3):

1. The interaction's original response, edited through its token, while this process holds the
   interaction and the token is younger than 15 minutes. Progress only ever goes this way.
2. A new message in the channel, through the bot token, mentioning the user.
3. A direct message to the user, when the channel refuses (missing permissions, channel gone).

If even the DM is refused (the user closed DMs), the result is still in their gallery and ``/job``
shows it, so nothing is lost; the refusal is logged.

A chat without ``reply_to`` and without a recipient, such as a community's gallery channel (set
with ``/mod channel set``), always gets a new message, mentioning nobody.

Every message goes out with Discord's ``allowed_mentions`` parsing nothing from the content (which
echoes prompts), listing at most the recipient in a channel post (see ``render.Rendered``).
"""

from __future__ import annotations

import asyncio
import logging

import discord

from studiobot.bot.discord.interactions import HeldInteraction, InteractionRegistry
from studiobot.bot.discord.render import DEFAULT_UPLOAD_LIMIT, render
from studiobot.commands.contract import ChatRef, Reply

log = logging.getLogger(__name__)

#: Discord JSON error codes meaning the interaction token can no longer be used.
_DEAD_TOKEN_CODES = frozenset({10015, 10062, 50027})  # unknown webhook/interaction, invalid token
_READY_WAIT_S = 10.0

#: discord.py loggers that print whole payloads and URLs at DEBUG: gateway events carry modal
#: values (users' API keys), and webhook URLs carry interaction tokens.
_PAYLOAD_LOGGERS = ("discord.gateway", "discord.webhook.async_", "discord.http")


def quiet_payload_loggers() -> None:
    """Keep secrets out of logs even at ``LOG_LEVEL=DEBUG``: cap discord.py's payload loggers at
    INFO (their INFO and above never print payloads)."""
    for name in _PAYLOAD_LOGGERS:
        logger = logging.getLogger(name)
        if logger.getEffectiveLevel() < logging.INFO:
            logger.setLevel(logging.INFO)


class DiscordOutbox:
    """The Discord platform's Outbox.

    Args:
        client: A logged-in discord.py client. It needs no gateway connection: only its HTTP
            client is used (``studiobot worker`` logs in without connecting).
        interactions: Interactions this process received, whose tokens may edit responses.
    """

    def __init__(self, client: discord.Client, interactions: InteractionRegistry) -> None:
        self._client = client
        self._interactions = interactions

    async def deliver(self, chat: ChatRef, reply: Reply, *, recipient: str | None = None) -> str | None:
        """Show ``reply`` for ``chat`` (see the module docstring for the route taken).

        Returns:
            The id of a message posted in a channel or DM, else None.
        """
        if reply.private and recipient is not None and chat.kind != "dm":
            return await self._direct_message(recipient, reply)  # payment news: never in a channel
        progress = "progress" in reply.data
        held = self._interactions.live(chat.reply_to)
        if held is not None and await self._edit_original(held, reply, progress=progress):
            return None
        if progress:
            return None  # a progress post per step would flood the channel; results follow
        return await self._post(chat, reply, recipient)

    async def _edit_original(self, held: HeldInteraction, reply: Reply, *, progress: bool) -> bool:
        async with held.lock:
            try:
                async with asyncio.timeout(_READY_WAIT_S):
                    await held.ready.wait()
            except TimeoutError:
                log.warning("interaction %s never showed its first answer", held.interaction.id)
            if held.finished:
                return True  # the result is already there; late progress must not cover it
            rendered = await render(reply, upload_limit=held.interaction.filesize_limit)
            try:
                await held.edit(**rendered.edit_kwargs())
            except discord.HTTPException as error:
                if error.code in _DEAD_TOKEN_CODES or error.status in (401, 404):
                    self._interactions.forget(str(held.interaction.id))
                    return False
                raise
            if not progress:
                held.finished = True
                self._interactions.forget(str(held.interaction.id))
            return True

    async def _post(self, chat: ChatRef, reply: Reply, recipient: str | None) -> str | None:
        in_channel = chat.kind != "dm"
        upload_limit = self._upload_limit(chat)
        rendered = await render(reply, upload_limit=upload_limit, mention=recipient if in_channel else None)
        channel = self._client.get_partial_messageable(
            int(chat.chat_id), guild_id=int(chat.community_id) if chat.community_id else None
        )
        try:
            # send_kwargs' allowed_mentions pings the recipient alone, never a prompt's mentions.
            message = await channel.send(**rendered.send_kwargs())
            return str(message.id)
        except (discord.Forbidden, discord.NotFound) as error:
            if recipient is None or not in_channel:
                log.warning("could not deliver to Discord channel %s: %s", chat.chat_id, error.text)
                return None
            log.info("channel %s refused the result (%s); sending it by DM", chat.chat_id, error.code)
        return await self._direct_message(recipient, reply)

    async def _direct_message(self, recipient: str, reply: Reply) -> str | None:
        rendered = await render(reply, upload_limit=DEFAULT_UPLOAD_LIMIT)
        try:
            data = await self._client.http.start_private_message(int(recipient))
            dm = self._client.get_partial_messageable(int(data["id"]), type=discord.ChannelType.private)
            message = await dm.send(**rendered.send_kwargs())
            return str(message.id)
        except (discord.Forbidden, discord.NotFound) as error:
            # 50007: the user accepts no DMs from us. The result stays in their gallery (/job).
            log.warning("could not DM Discord user %s (%s); the result stays in their gallery",
                        recipient, error.code)
            return None

    @classmethod
    async def over_rest(cls, token: str) -> DiscordOutbox:
        """An outbox with a client that logs in (REST) but never opens a gateway connection.

        Close it with :meth:`aclose`.

        Raises:
            discord.LoginFailure: The token was refused.
        """
        quiet_payload_loggers()
        client = discord.Client(intents=discord.Intents.none(), allowed_mentions=discord.AllowedMentions.none())
        await client.login(token)
        return cls(client, InteractionRegistry())

    async def aclose(self) -> None:
        """Close the client's HTTP session."""
        await self._client.close()

    def _upload_limit(self, chat: ChatRef) -> int:
        guild = self._client.get_guild(int(chat.community_id)) if chat.community_id else None
        return guild.filesize_limit if guild is not None else DEFAULT_UPLOAD_LIMIT
