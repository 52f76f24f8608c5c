"""Rendering a core Reply as a Discord message: text, embed, attachments, buttons and a menu.

Limits (discord-api-docs, reference-platform-rules.md section 3): content at most 2,000
characters, an embed description at most 4,096, one upload at most the channel's file limit
(10 MiB unless the guild is boosted; interactions state theirs as ``attachment_size_limit``).
"""

from __future__ import annotations

import asyncio
import io
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import discord

from studiobot.bot.discord.components import action_view
from studiobot.commands.contract import ImageRef, Reply
from studiobot.media.images import preview_within

DEFAULT_UPLOAD_LIMIT = 10 * 2**20  # Discord: 10 MiB per file without boosts (since 2025-01-16)
_CONTENT_MAX = 2000
_DESCRIPTION_MAX = 4096
_EMBED_COLOUR = discord.Colour(0x5865F2)
_MAX_FILES = 10  # Discord: at most 10 attachments per message
_STEM_MAX = 60


@dataclass
class Rendered:
    """A Reply in discord.py's terms; build one per request (files are read once).

    ``mentions`` goes with every send and edit: text from users (prompts, names) is echoed in
    content, so Discord must parse no mention from it; only the requester named by
    :func:`render`'s ``mention`` may be pinged (Discord API: Allowed Mentions Object; an empty
    ``parse`` with a ``users`` list pings exactly those users, if the content mentions them).
    """

    content: str
    embed: discord.Embed | None = None
    files: list[discord.File] = field(default_factory=list)
    view: discord.ui.View | None = None
    mentions: discord.AllowedMentions = field(default_factory=discord.AllowedMentions.none)

    def edit_kwargs(self) -> dict[str, Any]:
        """Arguments for editing a message into this one (old embeds, files and buttons go)."""
        return {
            "content": self.content,
            "embeds": [self.embed] if self.embed else [],
            "attachments": self.files,
            "view": self.view,
            "allowed_mentions": self.mentions,
        }

    def send_kwargs(self) -> dict[str, Any]:
        """Arguments for sending this as a new message."""
        kwargs: dict[str, Any] = {"content": self.content, "files": self.files,
                                  "allowed_mentions": self.mentions}
        if self.embed is not None:
            kwargs["embed"] = self.embed
        if self.view is not None:
            kwargs["view"] = self.view
        return kwargs


async def render(reply: Reply, *, upload_limit: int = DEFAULT_UPLOAD_LIMIT, mention: str | None = None) -> Rendered:
    """Turn ``reply`` into message parts.

    The pictures are the grid when there is one (it shows every image), else each image, sheet
    or chart (at most 10, Discord's attachments per message). Images marked ``spoiler`` are
    spoiler attachments (``SPOILER_`` file names, which Discord blurs until clicked). A finished
    job gets an embed (prompt, provider, model, seed, cost, job id) showing its first picture,
    unless that is a spoiler: Discord shows an embed's image unblurred, so it stays a plain
    attachment. A picture over its share of ``upload_limit`` is replaced by a smaller JPEG
    preview (the full file stays in the gallery). The menu, if any, is a select under the buttons.

    Args:
        reply: What the core answered.
        upload_limit: Largest upload this destination accepts, in bytes, shared by the files.
        mention: A user id to mention at the start (results posted into a channel); the
            only mention the message may ping.
    """
    data = reply.data
    prefix = f"<@{mention}> " if mention else ""
    mentions = (discord.AllowedMentions(everyone=False, roles=False, replied_user=False,
                                        users=[discord.Object(int(mention))])
                if mention else discord.AllowedMentions.none())
    pictures = _pictures(reply.images)
    share = upload_limit // max(1, len(pictures))
    files = [await _file(picture, share) for picture in pictures]
    view = action_view(reply.buttons, reply.menu)
    if data.get("status") == "succeeded" and files:
        shown = None if pictures[0].spoiler else files[0].filename
        embed = _result_embed(data, shown)
        content = "\n".join(_beyond_embed(reply.text, owner=bool(data.get("owner", True))))
        return Rendered(_clip(prefix + content, _CONTENT_MAX), embed, files, view, mentions)
    return Rendered(_clip(prefix + reply.text, _CONTENT_MAX), None, files, view, mentions)


def _beyond_embed(text: str, *, owner: bool) -> list[str]:
    """The lines of a finished job's text the embed does not show: the first one, and what
    follows the "made with" line and, for the owner, the cost line (the presenter's layout),
    such as who made it or which images were withheld."""
    first, *rest = text.split("\n")
    return [first, *rest[2 if owner else 1 :]]


def _result_embed(data: Any, filename: str | None) -> discord.Embed:
    embed = discord.Embed(
        title=f"Job #{data['job_id']}",
        description=_clip(str(data.get("prompt", "")), _DESCRIPTION_MAX),
        colour=_EMBED_COLOUR,
    )
    embed.add_field(name="Provider", value=str(data.get("provider", "?")))
    embed.add_field(name="Model", value=str(data.get("model", "?")))
    seeds = data.get("seeds") or []
    embed.add_field(name="Seed" if len(seeds) <= 1 else "Seeds",
                    value=", ".join(str(s) for s in seeds) or "n/a")
    cost = data.get("cost", 0)
    embed.add_field(name="Cost", value=f"{cost} credit{'' if cost == 1 else 's'}")
    if filename is not None:
        embed.set_image(url=f"attachment://{filename}")
    embed.set_footer(text=f"/job {data['job_id']} shows it again")
    return embed


def _pictures(images: Sequence[ImageRef]) -> list[ImageRef]:
    grid = next((i for i in images if i.kind == "grid"), None)
    return [grid] if grid is not None else list(images[:_MAX_FILES])


async def _file(image: ImageRef, upload_limit: int) -> discord.File:
    size = image.path.stat().st_size
    stem = _stem(image.caption)
    if size <= upload_limit:
        return discord.File(image.path, filename=f"{stem}{image.path.suffix}", spoiler=image.spoiler)
    # Decoding and re-encoding a large image takes a while: keep the event loop free.
    preview = await asyncio.to_thread(preview_within, image.path.read_bytes(), upload_limit)
    return discord.File(io.BytesIO(preview), filename=f"{stem}-preview.jpg", spoiler=image.spoiler)


def _stem(caption: str) -> str:
    """A file name stem from a caption ("Your images, page 2" -> "your-images-page-2"): an embed
    finds its picture through ``attachment://<file name>``, which wants plain characters."""
    return re.sub(r"[^a-z0-9]+", "-", caption.lower()).strip("-")[:_STEM_MAX] or "image"


def _clip(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"
