"""The gateway side of the Discord adapter: one AutoShardedClient serving every slash command.

Per interaction (reference-platform-rules.md section 3):

1. Acknowledge at once: ``defer(thinking=True)``, ephemeral when the command's answers are
   private (Discord: 3 s to acknowledge, and ephemerality cannot change afterwards).
2. Translate to the core: user, chat (with the interaction id as ``reply_to``), admin flag
   (Manage Server in a guild), arguments; run the command.
3. Edit the original response into the Reply. A private Reply under a public defer replaces it
   with an ephemeral follow-up, so private answers never show in the channel.

Button clicks and menu picks are acknowledged as deferred updates and answered by follow-ups, or
by editing the message they are on (see :meth:`StudioBot.run_action`).

Job news arrives later through :class:`~studiobot.bot.discord.outbox.DiscordOutbox`, which edits
the same response while the token lives.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import Any

import discord
from discord import app_commands

from studiobot.bot.discord.components import ActionButton, ActionMenu, SecretModal
from studiobot.bot.discord.interactions import HeldInteraction, InteractionRegistry
from studiobot.bot.discord.outbox import quiet_payload_loggers
from studiobot.bot.discord.render import render
from studiobot.bot.discord.tree import build_tree, command_set_hash
from studiobot.commands.contract import ChatRef, CommandSpec, Param, Reply, UserRef
from studiobot.commands.dispatcher import Dispatcher
from studiobot.db import platform_state
from studiobot.db.engine import Database

log = logging.getLogger(__name__)

PLATFORM = "discord"
_DEFAULT_API_BASE = "https://discord.com/api/v10"


def use_api_base(url: str) -> None:
    """Point discord.py's REST calls (bot and interaction webhooks) at ``url``.

    For a REST proxy, or the loopback double in tests. The gateway URL is not set here: Discord
    gives it in ``GET /gateway/bot``.
    """
    discord.http.Route.BASE = url.rstrip("/")


def intents() -> discord.Intents:
    """Only the guilds intent: interactions need no privileged intent, and no message content."""
    chosen = discord.Intents.none()
    chosen.guilds = True
    return chosen


class StudioBot(discord.AutoShardedClient):
    """The Discord bot: slash commands and result buttons, all run through the core's dispatcher.

    The composition root builds the bot first (its outbox needs the client), then the core, then
    calls :meth:`attach` before starting it.

    Args:
        interactions: Shared with the outbox, so results edit the responses made here.
        shard_count: Total shards across processes; None lets Discord recommend.
        shard_ids: Shards this process runs; None runs all of them.
    """

    dispatcher: Dispatcher
    db: Database

    def __init__(
        self,
        interactions: InteractionRegistry,
        *,
        shard_count: int | None = None,
        shard_ids: Sequence[int] | None = None,
    ) -> None:
        quiet_payload_loggers()
        super().__init__(
            intents=intents(),
            shard_count=shard_count,
            shard_ids=list(shard_ids) if shard_ids is not None else None,
            # Content echoes users' text (prompts): by default Discord would ping every <@id>,
            # <@&role> and @everyone in it. Only a result's requester is ever pinged (render.py).
            allowed_mentions=discord.AllowedMentions.none(),
        )
        self.interactions = interactions
        self.tree: app_commands.CommandTree[StudioBot] = app_commands.CommandTree(self)

    def attach(self, dispatcher: Dispatcher, db: Database) -> None:
        """Connect the core: generate the slash commands from its command table.

        Args:
            dispatcher: Runs the commands.
            db: Database (the last synced command set's hash is kept there).
        """
        self.dispatcher = dispatcher
        self.db = db
        build_tree(self.tree, list(dispatcher.commands.values()), self.run_command, self._suggest)

    async def setup_hook(self) -> None:
        """Register the persistent buttons and menus, and sync commands if they changed since last time."""
        self.add_dynamic_items(ActionButton, ActionMenu)
        await self.sync_commands()

    async def sync_commands(self, *, force: bool = False) -> bool:
        """Upload the command set unless Discord already has exactly this one.

        Returns:
            True when commands were uploaded.
        """
        digest = command_set_hash(self.tree)
        key = f"discord.commands.{self.application_id}"
        if not force and await platform_state.get(self.db, key) == digest:
            log.info("Discord commands unchanged; not syncing")
            return False
        synced = await self.tree.sync()
        await platform_state.put(self.db, key, digest)
        log.info("synced %d Discord commands", len(synced))
        return True

    async def run_command(self, interaction: discord.Interaction, spec: CommandSpec, args: dict[str, Any]) -> None:
        """Run a slash command: defer, dispatch, show the Reply.

        A command with secret parameters first opens a modal for them (a modal must be the first
        response, so it replaces the defer); its submission then runs the command ephemerally. A
        command that will be refused anyway (``/keys add nosuchprovider``) is refused at once,
        without a modal asking for a key it would not use.
        """
        secrets = spec.secrets_for(args)
        if secrets:
            refusal = await self.dispatcher.admit(
                _user(interaction), _chat(interaction), spec.name, args, is_admin=_is_admin(interaction)
            )
            if refusal is not None:
                await self._serve(interaction, True, lambda: _at_once(refusal))
                return

            async def submitted(submit: discord.Interaction, values: dict[str, str]) -> None:
                await self._serve(
                    submit, True,
                    lambda: self.dispatcher.dispatch(
                        _user(submit), _chat(submit), spec.name, {**args, **values}, str(submit.id),
                        is_admin=_is_admin(submit),
                    ),
                )

            fields = [(p.name, p.name.replace("_", " ").capitalize(), p.description) for p in secrets]
            await interaction.response.send_modal(SecretModal(f"/{spec.name}", fields, submitted))
            return
        await self._serve(
            interaction, spec.ephemeral,
            lambda: self.dispatcher.dispatch(
                _user(interaction), _chat(interaction), spec.name, args, str(interaction.id),
                is_admin=_is_admin(interaction),
            ),
        )

    async def run_action(self, interaction: discord.Interaction, action: str) -> None:
        """Run a button's action, or a menu option's, for whoever clicked it (the core checks
        they may).

        The click is acknowledged without a loading message (a deferred update), then answered
        with a follow-up, public or ephemeral as the Reply says, or by editing the message the
        button is on when the Reply replaces it (delete, cancel). Both go through the
        interaction token, which works in DMs too (no bot-token message edits needed).
        """
        await interaction.response.defer()
        held = self.interactions.hold(interaction)
        reply: Reply | None = None
        try:
            _, reply = await self.dispatcher.dispatch_text(
                _user(interaction), _chat(interaction), "/" + action, str(interaction.id),
                is_admin=_is_admin(interaction),
            )
            rendered = await render(reply, upload_limit=interaction.filesize_limit)
            if reply.replaces_source:
                await interaction.edit_original_response(**rendered.edit_kwargs())
            else:
                message = await interaction.followup.send(
                    ephemeral=reply.ephemeral or reply.private, wait=True, **rendered.send_kwargs()
                )
                held.message_id = message.id
        finally:
            self._release(interaction, held, reply)

    async def _serve(
        self,
        interaction: discord.Interaction,
        ephemeral: bool,
        dispatch: Callable[[], Awaitable[Reply]],
    ) -> None:
        await interaction.response.defer(thinking=True, ephemeral=ephemeral)
        # Held before the command runs: a job may finish before its first answer is shown.
        held = self.interactions.hold(interaction)
        reply: Reply | None = None
        try:
            reply = await dispatch()
            rendered = await render(reply, upload_limit=interaction.filesize_limit)
            if (reply.ephemeral or reply.private) and not ephemeral:
                # The defer was public; a private answer must not replace it in the channel.
                await interaction.delete_original_response()
                await interaction.followup.send(ephemeral=True, **rendered.send_kwargs())
            else:
                await interaction.edit_original_response(**rendered.edit_kwargs())
        finally:
            self._release(interaction, held, reply)

    def _release(self, interaction: discord.Interaction, held: HeldInteraction, reply: Reply | None) -> None:
        """The first answer is shown: let job news through, or forget the interaction when no
        job news will follow (not a queued or running job)."""
        held.ready.set()
        if reply is None or reply.data.get("status") not in ("queued", "running"):
            self.interactions.forget(str(interaction.id))

    def _suggest(self, spec: CommandSpec, param: Param, typed: Mapping[str, Any], current: str) -> Sequence[str]:
        if param.suggest is None:
            return []
        return param.suggest(typed, current, self.dispatcher.deps)

    async def on_app_command_error(self, interaction: discord.Interaction, error: Exception) -> None:
        """Log; the user already got an answer or a defer (the dispatcher never raises for them)."""
        log.exception("Discord command failed", exc_info=error)


async def _at_once(reply: Reply) -> Reply:
    return reply


def _user(interaction: discord.Interaction) -> UserRef:
    user = interaction.user
    return UserRef(PLATFORM, str(user.id), user.display_name)


def _chat(interaction: discord.Interaction) -> ChatRef:
    # A Discord thread is a channel of its own (its id is the channel id), so thread_id stays None.
    guild_id = interaction.guild_id
    return ChatRef(
        PLATFORM,
        str(interaction.channel_id),
        "guild_channel" if guild_id else "dm",
        community_id=str(guild_id) if guild_id else None,
        reply_to=str(interaction.id),
        age_restricted=_age_restricted(interaction.channel),
        community_name=interaction.guild.name if interaction.guild is not None else None,
    )


def _age_restricted(channel: object) -> bool:
    """Whether Discord marks the channel age-restricted (the channel's ``nsfw`` flag; a thread
    follows its parent). DMs and unknown channel types are not."""
    if isinstance(channel, (discord.TextChannel, discord.VoiceChannel, discord.StageChannel,
                            discord.ForumChannel, discord.CategoryChannel, discord.Thread)):
        return channel.is_nsfw()
    return False


def _is_admin(interaction: discord.Interaction) -> bool:
    """Administrator or Manage Server in this guild (Discord resolves the member's permissions in
    the payload; discord.py reads each bit as sent, so Administrator is checked on its own)."""
    permissions = interaction.permissions
    return interaction.guild_id is not None and (permissions.administrator or permissions.manage_guild)
