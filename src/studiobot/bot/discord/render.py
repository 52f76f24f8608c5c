"""Rendering a core Reply as a Discord message: text, embed, attachment and buttons.

Limits (discord-api-docs, reference-platform-rules.md section 3): content at most 2,000
characters, an embed description at most 4,096, one upload at most the channel's file limit
(10 MiB unless the guild is boosted; interactions state theirs as ``attachment_size_limit``).
"""

from __future__ import annotations

import asyncio
import io
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


@dataclass
class Rendered:
    """A Reply in discord.py's terms; build one per request (files are read once)."""

    content: str
    embed: discord.Embed | None = None
    files: list[discord.File] = field(default_factory=list)
    view: discord.ui.View | None = None

    def edit_kwargs(self) -> dict[str, Any]:
        """Arguments for editing a message into this one (old embeds, files and buttons go)."""
        return {
            "content": self.content,
            "embeds": [self.embed] if self.embed else [],
            "attachments": self.files,
            "view": self.view,
        }

    def send_kwargs(self) -> dict[str, Any]:
        """Arguments for sending this as a new message."""
        kwargs: dict[str, Any] = {"content": self.content, "files": self.files}
        if self.embed is not None:
            kwargs["embed"] = self.embed
        if self.view is not None:
            kwargs["view"] = self.view
        return kwargs


async def render(reply: Reply, *, upload_limit: int = DEFAULT_UPLOAD_LIMIT, mention: str | None = None) -> Rendered:
    """Turn ``reply`` into message parts.

    A finished job gets an embed (prompt, provider, model, seed, cost, job id) showing one picture:
    the grid when there are several images, else the image; a picture over ``upload_limit`` is
    replaced by a smaller JPEG preview (the full file stays in the gallery).

    Args:
        reply: What the core answered.
        upload_limit: Largest file this destination accepts, in bytes.
        mention: A user id to mention at the start (results posted into a channel).
    """
    data = reply.data
    prefix = f"<@{mention}> " if mention else ""
    picture = _picture(reply.images)
    if data.get("status") == "succeeded" and picture is not None:
        first_line = reply.text.split("\n", 1)[0]
        file = await _file(picture, upload_limit)
        embed = _result_embed(data, file.filename)
        return Rendered(_clip(prefix + first_line, _CONTENT_MAX), embed, [file], action_view(reply.buttons))
    files = [await _file(picture, upload_limit)] if picture is not None else []
    return Rendered(_clip(prefix + reply.text, _CONTENT_MAX), None, files, action_view(reply.buttons))


def _result_embed(data: Any, filename: str) -> discord.Embed:
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
    embed.set_image(url=f"attachment://{filename}")
    embed.set_footer(text=f"/job {data['job_id']} shows it again")
    return embed


def _picture(images: Any) -> ImageRef | None:
    grid = next((i for i in images if i.kind == "grid"), None)
    return grid or (images[0] if images else None)


async def _file(image: ImageRef, upload_limit: int) -> discord.File:
    size = image.path.stat().st_size
    name = f"{image.caption or 'image'}{image.path.suffix}"
    if size <= upload_limit:
        return discord.File(image.path, filename=name)
    # Decoding and re-encoding a large image takes a while: keep the event loop free.
    preview = await asyncio.to_thread(preview_within, image.path.read_bytes(), upload_limit)
    return discord.File(io.BytesIO(preview), filename=f"{image.caption or 'image'}-preview.jpg")


def _clip(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"
