"""Interactions whose token can still edit their response, so results land where they were asked.

Discord: "Interaction tokens are valid for 15 minutes" (reference-platform-rules.md section 3).
Tokens are credentials, so they stay in this process's memory and are never stored; a job's
origin only records the interaction id (``ChatRef.reply_to``). A process that did not receive the
interaction, or a result later than 15 minutes, goes through the channel instead (see the outbox).
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

import discord

TOKEN_LIFETIME = timedelta(minutes=15)
# Stop using a token a little early: a request sent at 14:59 can arrive after it expired.
_MARGIN = timedelta(seconds=30)


@dataclass
class HeldInteraction:
    """An interaction whose original response later job news edits.

    Attributes:
        interaction: The discord.py interaction (holds the token).
        ready: Set once the command's own first answer is shown, so news never lands before it
            and is then overwritten by it.
        lock: Serialises edits of the one message.
        finished: A final result was shown; later progress is dropped.
        message_id: The follow-up message news goes to, or None for the original response.
    """

    interaction: discord.Interaction
    message_id: int | None = None

    async def edit(self, **kwargs: object) -> None:
        """Edit the message this interaction answers with (its original response or follow-up)."""
        if self.message_id is None:
            await self.interaction.edit_original_response(**kwargs)  # type: ignore[arg-type]
        else:
            await self.interaction.followup.edit_message(self.message_id, **kwargs)  # type: ignore[arg-type]
    ready: asyncio.Event = field(default_factory=asyncio.Event)
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    finished: bool = False


class InteractionRegistry:
    """Interactions by id while their tokens live (at most 15 minutes).

    Args:
        lifetime: How long a token may be used after the interaction was created.
    """

    def __init__(self, *, lifetime: timedelta = TOKEN_LIFETIME - _MARGIN) -> None:
        self._lifetime = lifetime
        self._held: dict[str, HeldInteraction] = {}

    def hold(self, interaction: discord.Interaction) -> HeldInteraction:
        """Remember ``interaction`` (call before the command runs, so fast results find it)."""
        self._prune()
        held = HeldInteraction(interaction)
        self._held[str(interaction.id)] = held
        return held

    def live(self, interaction_id: str | None) -> HeldInteraction | None:
        """The held interaction ``interaction_id`` if its token is still usable, else None."""
        if interaction_id is None:
            return None
        held = self._held.get(interaction_id)
        if held is None:
            return None
        if self._expired(held):
            del self._held[interaction_id]
            return None
        return held

    def forget(self, interaction_id: str) -> None:
        """Drop an interaction (its token was refused, or nothing will follow)."""
        self._held.pop(interaction_id, None)

    def __len__(self) -> int:
        return len(self._held)

    def _expired(self, held: HeldInteraction) -> bool:
        return datetime.now(UTC) - held.interaction.created_at >= self._lifetime

    def _prune(self) -> None:
        # Held in arrival order, so the expired ones are at the front.
        while self._held:
            key, held = next(iter(self._held.items()))
            if not self._expired(held):
                return
            del self._held[key]
