"""A community's NSFW policy applied to the images of a reply.

Providers flag images they judge NSFW where their API says so (``GeneratedImage.nsfw``; stored as
``assets.nsfw``). What a flagged image does depends on where it is shown:

- a private chat: behind a spoiler (it is the person's own, or one they may see);
- a community with policy ``spoiler``: behind a spoiler (Discord spoiler attachment, Telegram
  ``has_spoiler``);
- ``block``: withheld, with a note;
- ``age_restricted``: shown in channels the platform marks age-restricted, withheld elsewhere.

A withheld image also takes the grid with it (the grid shows every image).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Collection
from typing import Literal

from studiobot.commands.communities import CommunityPolicy
from studiobot.commands.contract import ChatRef, Reply


def rule(policy: CommunityPolicy | None, chat: ChatRef) -> Literal["show", "spoiler", "withhold"]:
    """What flagged images do in ``chat``, under its community's ``policy`` (None: a private chat)."""
    if policy is None or chat.community_id is None:
        return "spoiler"
    if policy.nsfw == "age_restricted":
        return "show" if chat.age_restricted else "withhold"
    return "spoiler" if policy.nsfw == "spoiler" else "withhold"


def screen(reply: Reply, flagged: Collection[str], policy: CommunityPolicy | None, chat: ChatRef) -> Reply:
    """``reply`` with its flagged images (by store key) hidden behind a spoiler or withheld.

    Args:
        reply: A rendered reply whose ``images`` carry store keys.
        flagged: Store keys of the images a provider flagged as NSFW.
        policy: The community's policy, None in a private chat.
        chat: Where the reply is shown (its ``age_restricted`` flag).

    Returns:
        The reply unchanged when nothing is flagged; otherwise a copy whose text says what was
        withheld and why (``data["withheld"]`` counts them).
    """
    hits = [ref for ref in reply.images if ref.key in flagged]
    if not hits:
        return reply
    here = rule(policy, chat)
    if here == "show":
        return reply
    if here == "spoiler":
        images = [dataclasses.replace(ref, spoiler=True) if ref.key in flagged or ref.kind == "grid" else ref
                  for ref in reply.images]
        return dataclasses.replace(reply, images=images)
    kept = [ref for ref in reply.images if ref.key not in flagged and ref.kind != "grid"]
    n = sum(1 for ref in hits if ref.kind != "grid") or len(hits)
    why = ("this community withholds them" if policy is not None and policy.nsfw == "block"
           else "this community shows them only in age-restricted channels")
    note = (f"{n} image{'s were' if n != 1 else ' was'} flagged as NSFW by the provider and "
            f"{'are' if n != 1 else 'is'} not shown here: {why}.")
    return dataclasses.replace(
        reply, images=kept, text=f"{reply.text}\n{note}", data={**reply.data, "withheld": n}
    )
