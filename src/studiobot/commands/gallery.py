"""Galleries: ``/gallery`` (yours, favourites, a community's newest or top of the week), ``/show``
(any image you may see, rebuilt with its buttons), ``/visibility``, ``/vote`` and the inline search.

A page is one contact sheet (up to 9 numbered thumbnails in one picture), the list of what is on
it, Newer/Older buttons and a menu to open one image. Pages page by keyset (``--before``/``--after``
an asset id), which the buttons carry, so they keep working after a restart.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from sqlalchemy import select

from studiobot.commands.communities import CommunityPolicy
from studiobot.commands.contract import Button, ChatRef, ImageRef, Invocation, Menu, Param, Reply, UserRef
from studiobot.commands.deps import Deps
from studiobot.commands.jobs import JOB_ID, own_job
from studiobot.commands import nsfw
from studiobot.commands.nsfw import screen
from studiobot.commands.presenter import flagged, job_reply, result_buttons, short
from studiobot.db import gallery as db_gallery
from studiobot.db import users
from studiobot.db.gallery import Cursor, Item, Page
from studiobot.db.models import Asset, Job, PlatformFile, utcnow
from studiobot.errors import BadInput, NotAllowed, NotFound
from studiobot.media.sheets import contact_sheet
from studiobot.media.store import StoredObject
from studiobot.scheduler import lifecycle
from studiobot.scheduler.lifecycle import JobRow

#: "Top of the week": votes cast in the last seven days.
TOP_WINDOW = timedelta(days=7)

# Short aliases keep button actions within Telegram's 64 bytes of callback_data.
CURSOR_PARAMS = (
    Param("before", int, "Images older than this image number (the Older button)", min_value=1, aliases=("b",)),
    Param("after", int, "Images newer than this image number (the Newer button)", min_value=1, aliases=("a",)),
    Param("page", int, "Page number (1 is the newest)", min_value=1, max_value=10_000, default=1, aliases=("p",)),
)
PARAMS = (
    Param("scope", str, "Whose images: yours, your favourites, or this community's", positional=True,
          choices=("mine", "favorites", "community"), default="mine"),
    Param("sort", str, "Community gallery order: newest, or most voted this week", positional=True,
          choices=("new", "top"), default="new"),
    *CURSOR_PARAMS,
)
INDEX = Param("index", int, "Which image of the job (1-4); all when left out", positional=True,
              min_value=1, max_value=4)
SHOW_PARAMS = (JOB_ID, INDEX)
VISIBILITY_PARAMS = (
    JOB_ID,
    Param("level", str, "private (only you), community (this server's or group's gallery) or public "
          "(also the web gallery)", required=True, positional=True, choices=db_gallery.VISIBILITIES),
    INDEX,
)


def cursor_of(inv: Invocation, size: int) -> Cursor:
    """The page an invocation asks for: a button's cursor, else a typed page number."""
    args = inv.args
    return Cursor(before=args.get("before"), after=args.get("after"),
                  offset=(args.get("page", 1) - 1) * size if args.get("before") is None
                  and args.get("after") is None else 0)


async def gallery(inv: Invocation, deps: Deps) -> Reply:
    """A page of the caller's images, favourites, or this community's gallery."""
    size = deps.settings.gallery_page_size
    viewer = await deps.users.user_id(inv.user)
    community = await deps.communities.of_chat(inv.chat)
    scope, sort = inv.args["scope"], inv.args["sort"]
    cursor = cursor_of(inv, size)
    async with deps.db.read() as conn:
        if scope == "community":
            if community is None:
                raise NotAllowed("The community gallery lives in a server or group: use /gallery community there.")
            if sort == "top":
                page = await db_gallery.community_top(conn, community.id, utcnow() - TOP_WINDOW,
                                                      offset=(inv.args["page"] - 1) * size, limit=size)
            else:
                page = await db_gallery.community_new(conn, community.id, cursor, size)
        elif scope == "favorites":
            page = await db_gallery.favorites_page(conn, viewer, community.id if community else None, cursor, size)
        else:
            page = await db_gallery.own_page(conn, viewer, cursor, size)
    titles = {"mine": "Your images", "favorites": "Your favourites",
              "community": "Top of the week here" if sort == "top" else "This community's gallery"}
    empty = {
        "mine": "Your gallery is empty. Make something with /imagine.",
        "favorites": "No favourites yet: press ★ under an image to keep it here.",
        "community": "No votes this week yet. /gallery community new shows the newest images."
        if sort == "top" else "Nothing is shared here yet. Press Share under an image to add it.",
    }
    action = f"gallery {scope}" + (" top" if sort == "top" else "")
    return await page_reply(deps, inv, page, title=titles[scope], action=action, empty=empty[scope],
                            community=community, ranked=scope == "community" and sort == "top",
                            personal=scope != "community")


async def page_reply(deps: Deps, inv: Invocation, page: Page, *, title: str, action: str, empty: str,
                     community: CommunityPolicy | None, ranked: bool = False, personal: bool = True) -> Reply:
    """Render a gallery page as a contact sheet, its list, Newer/Older buttons and an open menu.

    Args:
        deps: Dependencies.
        inv: The invocation (its chat decides what flagged images do; its page number labels).
        page: The images.
        title: First line, e.g. "Your images".
        action: The command line that shows this gallery, without cursor (``gallery mine``).
        empty: What to say when there is nothing to show.
        community: The chat's community policy, None in a private chat.
        ranked: Pages by position (``--page``) rather than by cursor.
        personal: The caller's own images, favourites or collection: asked for in a group, the
            page goes to a private chat (Telegram shows an ephemeral answer to everyone there,
            and anyone could press its buttons).
    """
    private = personal and inv.chat.kind != "dm"
    number = inv.args.get("page", 1)
    turned = inv.args.get("before") is not None or inv.args.get("after") is not None or number > 1
    items, withheld = _screened(page.items, community, inv.chat)
    if not items:
        text = empty if not turned and not withheld else "No more images here."
        if withheld:
            text += f" ({withheld} flagged as NSFW are not shown here.)"
        return Reply(text=text, ephemeral=True, private=private, replaces_source=turned,
                     data={"items": [], "page": number})
    sheet = await asyncio.to_thread(_sheet, deps, items)
    lines = [f"{title}, page {number}:"]
    for n, item in enumerate(items, 1):
        votes = f" · ▲{item.votes}" if ranked else ""
        lines.append(f"{n}. job #{item.job_id} image {item.position} · {item.width}×{item.height}{votes} · "
                     f"“{short(item.prompt, 60)}”")
    if withheld:
        lines.append(f"{withheld} image{'s' if withheld != 1 else ''} flagged as NSFW "
                     f"{'are' if withheld != 1 else 'is'} not shown here.")
    buttons = []
    if page.has_newer:
        newer = f"{action} --p {number - 1}" if ranked else f"{action} --a {page.items[0].asset_id} --p {number - 1}"
        buttons.append(Button("◀ Newer", newer))
    if page.has_older:
        older = f"{action} --p {number + 1}" if ranked else f"{action} --b {page.items[-1].asset_id} --p {number + 1}"
        buttons.append(Button("Older ▶", older))
    menu = Menu("Open an image", [Button(f"{n}. {short(item.prompt, 60)}", f"show {item.job_id} {item.position}")
                                  for n, item in enumerate(items, 1)])
    spoiler = nsfw.rule(community, inv.chat) == "spoiler" and any(item.nsfw for item in items)
    data: dict[str, Any] = {
        "page": number,
        "sheet": str(sheet.path),
        "items": [{"n": n, "asset_id": i.asset_id, "job_id": i.job_id, "position": i.position,
                   "prompt": i.prompt, "width": i.width, "height": i.height, "visibility": i.visibility,
                   "path": str(deps.store.path_for(i.storage_key)), "created_at": i.created_at.isoformat()}
                  for n, i in enumerate(items, 1)],
        "next_before": page.items[-1].asset_id if page.has_older and not ranked else None,
        "prev_after": page.items[0].asset_id if page.has_newer and not ranked else None,
    }
    return Reply(
        text="\n".join(lines),
        images=[ImageRef(sheet.path, "sheet", f"{title}, page {number}", sheet.key, spoiler=spoiler)],
        buttons=buttons, menu=menu, ephemeral=True, private=private, replaces_source=turned, data=data,
    )


def _sheet(deps: Deps, items: Sequence[Item]) -> StoredObject:
    thumbs = []
    for item in items:
        try:
            thumbs.append(deps.store.path_for(item.thumbnail_key or item.storage_key).read_bytes())
        except OSError:
            thumbs.append(b"")  # a deleted file: the sheet shows a placeholder in its cell
    return deps.store.put(contact_sheet(thumbs, [str(n) for n in range(1, len(items) + 1)]), "jpg")


def _screened(items: Sequence[Item], community: CommunityPolicy | None, chat: ChatRef) -> tuple[list[Item], int]:
    """Items without the flagged ones a community's policy withholds in this chat."""
    if nsfw.rule(community, chat) != "withhold":
        return list(items), 0
    kept = [i for i in items if not i.nsfw]
    return kept, len(items) - len(kept)


async def visible_job(inv: Invocation, deps: Deps) -> tuple[JobRow, list[Item], int]:
    """The job ``inv.args["job_id"]`` with the images the caller may see here, and the caller's id.

    Raises:
        NotFound: No such job, or nothing of it the caller may see (one answer for both, so ids
            reveal nothing).
    """
    viewer = await deps.users.user_id(inv.user)
    community = await deps.communities.of_chat(inv.chat)
    job_id = inv.args["job_id"]
    async with deps.db.read() as conn:
        job = await lifecycle.get(conn, job_id)
        images = await db_gallery.job_images(conn, job_id, viewer, community.id if community else None) \
            if job is not None else []
    if job is None or (job.user_id != viewer and not images):
        raise NotFound(f"Job #{job_id} is not one you can see here.")
    return job, images, viewer


async def show(inv: Invocation, deps: Deps) -> Reply:
    """A job's result rebuilt with its buttons, anywhere: the owner's whole job, or the images
    someone else may see here (with Favorite and Vote)."""
    job, images, viewer = await visible_job(inv, deps)
    index = inv.args.get("index")
    if index is not None and not any(i.position == index for i in images):
        raise NotFound(f"Job #{job.id} has no image {index} you can see here.")
    keep = {i.asset_id for i in images if index is None or i.position == index}
    owner = job.user_id == viewer
    async with deps.db.read() as conn:
        # The grid shows every image: only for the owner looking at the whole job.
        assets = [a for a in await lifecycle.assets_of(conn, job.id)
                  if a.id in keep or (a.kind == "grid" and owner and index is None)]
        prefs = await users.preferences(conn, viewer)
        author = None if owner else await users.display_name(conn, job.user_id)
    community = await deps.communities.of_chat(inv.chat)
    reply = job_reply(job, assets, deps.store, originals=bool(prefs.get("originals")), owner=owner)
    shown = [i for i in images if i.asset_id in keep]
    if owner:
        where = ", ".join(sorted({i.visibility for i in shown})) or "private"
        hidden = " An admin hid it from the community gallery." if any(i.hidden for i in shown) else ""
        text = f"{reply.text}\nVisibility: {where}.{hidden}"
        buttons = list(reply.buttons)
        if index is not None and job.status == "succeeded":
            buttons = result_buttons(job.id, [index])
    else:
        text = f"{reply.text}\nBy {author or 'someone'}."
        suffix = f" {index}" if index is not None else ""
        buttons = [Button("★ Favorite", f"favorite {job.id}{suffix}")]
        if any(i.visibility != "private" for i in shown):
            buttons.append(Button("▲ Vote", f"vote {job.id}{suffix}"))
    reply = Reply(text=text, images=reply.images, buttons=buttons, originals=reply.originals,
                  data={**reply.data, "owner": owner, "visible": sorted(keep)})
    return screen(reply, flagged(assets), community, inv.chat)


async def visibility(inv: Invocation, deps: Deps) -> Reply:
    """Change who sees your images of a job: private, this community, or public (the web too)."""
    job = await own_job(inv, deps)
    level, index = inv.args["level"], inv.args.get("index")
    community = await deps.communities.of_chat(inv.chat)
    async with deps.db.read() as conn:
        images = [a for a in await lifecycle.assets_of(conn, job.id) if a.kind == "image"
                  and (index is None or a.position == index)]
    if not images:
        raise NotFound(f"Job #{job.id} has no image {index}." if index else f"Job #{job.id} has no images.")
    home = community.id if community is not None else job.community_id
    if level == "community" and home is None:
        raise BadInput("Community images belong to a server or group: use this command there.")
    chosen = [a for a in images if not a.hidden]
    if level == "public":
        chosen = [a for a in chosen if not a.nsfw]  # flagged images never go on the open web
    notes = []
    if len(chosen) < len(images):
        held = len(images) - len(chosen)
        notes.append(f"{held} image{'s' if held != 1 else ''} stayed as {'they were' if held != 1 else 'it was'}"
                     " (hidden by an admin, or flagged as NSFW, which is never public).")
    changed = await deps.db.run(db_gallery.set_visibility, job.id, job.user_id, [a.position for a in chosen],
                                level, None if level == "private" else home) if chosen else 0
    what = {"private": "private: only you see them",
            "community": "shared with this community's gallery",
            "public": "public"}[level]
    text = f"Job #{job.id}: {changed} image{'s are' if changed != 1 else ' is'} now {what}."
    data: dict[str, Any] = {"job_id": job.id, "visibility": level, "changed": changed}
    if level == "public" and changed and deps.settings.web_gallery:
        url = f"{deps.settings.base_url.rstrip('/')}/gallery/i/{chosen[0].id}"
        text += f" On the web: {url}"
        data["url"] = url
    return Reply(text="\n".join([text, *notes]), ephemeral=True, data=data)


async def vote(inv: Invocation, deps: Deps) -> Reply:
    """Vote for someone's shared image (or all their images of a job); again to take it back."""
    job, images, viewer = await visible_job(inv, deps)
    index = inv.args.get("index")
    chosen = [i for i in images if (index is None or i.position == index) and i.visibility != "private"]
    if job.user_id == viewer:
        raise BadInput("You cannot vote for your own images; share them and let others decide.")
    if not chosen:
        raise NotFound(f"Job #{job.id} has no shared image {index}." if index else f"Job #{job.id} has no shared images.")
    voted = await deps.db.run(db_gallery.toggle_vote, viewer, [i.asset_id for i in chosen])
    which = f"image {index} of job #{job.id}" if index else f"job #{job.id}"
    return Reply(text=f"Voted for {which}." if voted else f"Took back your vote for {which}.",
                 ephemeral=True, data={"job_id": job.id, "voted": voted})


async def post_to_gallery_channel(deps: Deps, community: CommunityPolicy, job: JobRow, author: UserRef) -> bool:
    """Post a job's shared images to the community's gallery channel, crediting their author.

    Returns:
        Whether a post was handed to the platform (False when there is no channel, or this
        process cannot post to that platform).
    """
    channel = community.channel
    outbox = deps.outboxes.get(channel.platform) if channel is not None else None
    if channel is None or outbox is None:
        return False
    async with deps.db.read() as conn:
        assets = [a for a in await lifecycle.assets_of(conn, job.id)
                  if a.kind == "image" and a.visibility != "private" and not a.hidden]
    if not assets:
        return False
    name = author.display_name or author.platform_user_id
    refs = [ImageRef(deps.store.path_for(a.storage_key), "image", f"{job.id}-{a.position}", a.storage_key)
            for a in assets]
    reply = Reply(
        text=f"{name} shared job #{job.id}: “{short(job.prompt, 200)}”",
        images=refs,
        buttons=[Button("▲ Vote", f"vote {job.id}"), Button("★ Favorite", f"favorite {job.id}")],
        data={"job_id": job.id, "author": name, "gallery_post": True},
    )
    await outbox.deliver(channel, screen(reply, flagged(assets), community, channel))
    return True


@dataclass(frozen=True, slots=True)
class Found:
    """One image of a gallery search, with the platform's file id for it when there is one."""

    asset_id: int
    job_id: int
    storage_key: str
    prompt: str
    width: int
    height: int
    file_id: str | None


async def find(
    deps: Deps, user: UserRef, text: str, *, offset: int = 0, limit: int = 20, on_platform: str | None = None
) -> list[Found]:
    """The user's images whose prompt contains ``text`` (any case), newest first.

    For pickers such as Telegram's inline mode (``@bot fox`` lists your foxes to share).

    Args:
        deps: Dependencies.
        user: Whose gallery; nobody else's image is ever returned.
        text: Words the prompt must contain; empty for all.
        offset: Images to skip (the picker's paging).
        limit: At most this many.
        on_platform: Only images the platform already holds a file id for (they can be sent
            again without uploading), with that id in :attr:`Found.file_id`.
    """
    user_id = await deps.users.user_id(user)
    query = (
        select(Asset.id, Asset.job_id, Asset.storage_key, Asset.width, Asset.height, Job.prompt)
        .join(Job, Job.id == Asset.job_id)
        .where(Asset.owner_id == user_id, Asset.kind == "image")
        .order_by(Asset.id.desc())
        .offset(offset)
        .limit(limit)
    )
    words = text.strip()
    if words:
        escaped = words.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
        query = query.where(Job.prompt.ilike(f"%{escaped}%", escape="\\"))
    if on_platform is not None:
        query = query.join(
            PlatformFile,
            (PlatformFile.storage_key == Asset.storage_key) & (PlatformFile.platform == on_platform),
        ).add_columns(PlatformFile.file_id)
    async with deps.db.read() as conn:
        rows = (await conn.execute(query)).all()
    return [
        Found(r.id, r.job_id, r.storage_key, r.prompt, r.width, r.height,
              r.file_id if on_platform is not None else None)
        for r in rows
    ]
