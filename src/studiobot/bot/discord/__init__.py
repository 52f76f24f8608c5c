"""The Discord adapter: slash commands in, Replies out, with discord.py 2.x.

Interactions are translated into the core's Invocations and Replies rendered back; no command
logic lives here. :class:`~studiobot.bot.discord.client.StudioBot` holds the gateway connection;
:class:`~studiobot.bot.discord.outbox.DiscordOutbox` delivers job news over REST alone, so a
``studiobot worker`` process without a gateway connection can deliver results too.
"""
