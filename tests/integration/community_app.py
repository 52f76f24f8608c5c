"""A real app (dispatcher, scheduler, database) reached as Discord-like users in one server, for
the gallery and moderation tests; a RecordingOutbox stands in for the platform."""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

from sqlalchemy import update

from studiobot.app import App, build_app
from studiobot.commands.contract import ChatRef, Reply, UserRef
from studiobot.config import Settings
from studiobot.db.models import Asset
from studiobot.scheduler import lifecycle
from tests.doubles.platform import RecordingOutbox

ADA = UserRef("discord", "100", "ada")
BOB = UserRef("discord", "200", "bob")
CY = UserRef("discord", "300", "cy")
MOD = UserRef("discord", "400", "mod")
OPS = UserRef("discord", "900", "ops")
GUILD = ChatRef("discord", "555", "guild_channel", community_id="777")
GALLERY_CHANNEL = ChatRef("discord", "556", "guild_channel", community_id="777")
OTHER_GUILD = ChatRef("discord", "655", "guild_channel", community_id="888")
_ids = itertools.count(1)


def dm(user: UserRef) -> ChatRef:
    """The user's private chat with the bot."""
    return ChatRef(user.platform, f"dm-{user.platform_user_id}", "dm")


@dataclass
class Community:
    """The app, its outbox, and helpers to act in it."""

    app: App
    outbox: RecordingOutbox

    async def run(self, line: str, *, user: UserRef = ADA, chat: ChatRef = GUILD, admin: bool = False) -> Reply:
        _, reply = await self.app.dispatcher.dispatch_text(user, chat, line, str(next(_ids)), is_admin=admin)
        return reply

    async def make(self, prompt: str, *, user: UserRef = ADA, chat: ChatRef = GUILD, n: int = 1) -> int:
        """Run /imagine and wait until its result was delivered; returns the job id."""
        reply = await self.run(f"/imagine {prompt} --n {n}", user=user, chat=chat)
        job_id = reply.data.get("job_id")
        assert job_id is not None, reply.text
        async with asyncio.timeout(15):
            while not await lifecycle.is_notified(self.app.db, job_id):
                await asyncio.sleep(0.02)
        return job_id

    async def flag_nsfw(self, job_id: int) -> None:
        """Mark a job's images as a provider's safety checker would (``GeneratedImage.nsfw``): the
        offline provider never flags anything, so tests set the stored flag directly."""
        await self.app.db.run(lambda conn: conn.execute(update(Asset).where(Asset.job_id == job_id).values(nsfw=True)))

    async def balance(self, user: UserRef) -> int:
        return (await self.run("/credits", user=user, chat=dm(user))).data["balance"]

    async def scalar(self, query: Any) -> Any:
        async with self.app.db.read() as conn:
            return (await conn.execute(query)).scalar_one()


@asynccontextmanager
async def community_app(make_settings: Callable[..., Settings], database_url: str, **overrides: Any
                        ) -> AsyncIterator[Community]:
    """Build and start the app; close it on leaving."""
    outbox = RecordingOutbox()
    settings = make_settings(database_url=database_url, operators=("discord:900",), **overrides)
    app = await build_app(settings, {"discord": outbox})
    app.runner.start()
    try:
        yield Community(app, outbox)
    finally:
        await app.aclose()
