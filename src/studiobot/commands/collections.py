"""``/collection``: named sets of images (yours or any you may see), shown as gallery pages."""

from __future__ import annotations

import re

from sqlalchemy.exc import IntegrityError

from studiobot.commands.contract import Invocation, Param, Reply
from studiobot.commands.deps import Deps
from studiobot.commands.gallery import CURSOR_PARAMS, cursor_of, page_reply, visible_job
from studiobot.db import gallery as db_gallery
from studiobot.errors import BadInput, NotFound

MAX_COLLECTIONS = 100
# One word, so the name fits in button actions (``collection show cats --b 120``).
_NAME = re.compile(r"[\w-]{1,24}")

PARAMS = (
    Param("action", str, "create, add, remove, show, list or delete", required=True, positional=True,
          choices=("create", "add", "remove", "show", "list", "delete")),
    Param("name", str, "The collection's name (one word: letters, digits, - and _)", positional=True,
          min_value=1, max_value=24),
    Param("job_id", int, "The job whose images to add or remove", positional=True, min_value=1),
    Param("index", int, "Which image of the job (1-4); all when left out", positional=True,
          min_value=1, max_value=4),
    *CURSOR_PARAMS,
)


async def collection(inv: Invocation, deps: Deps) -> Reply:
    """Create, fill, empty, show, list and delete your collections."""
    action, name = inv.args["action"], (inv.args.get("name") or "").strip()
    owner = await deps.users.user_id(inv.user)
    if action == "list":
        async with deps.db.read() as conn:
            mine = await db_gallery.collections_of(conn, owner)
        if not mine:
            return Reply(text="You have no collections. Start one with /collection create <name>.",
                         ephemeral=True, data={"collections": []})
        lines = ["Your collections:"] + [f"  {n} ({count} image{'s' if count != 1 else ''})" for n, count in mine]
        return Reply(text="\n".join(lines), ephemeral=True,
                     data={"collections": [{"name": n, "images": c} for n, c in mine]})
    if not name:
        raise BadInput(f"Name the collection: /collection {action} <name>.")
    if action == "create":
        if not _NAME.fullmatch(name):
            raise BadInput("A collection's name is one word of letters, digits, - and _ (up to 24), e.g. cats.")
        async with deps.db.read() as conn:
            if len(await db_gallery.collections_of(conn, owner)) >= MAX_COLLECTIONS:
                raise BadInput(f"You have {MAX_COLLECTIONS} collections, the most there can be; delete one first.")
            if await db_gallery.collection_id(conn, owner, name) is not None:
                raise BadInput(f"You already have a collection called “{name}”.")
        try:
            await deps.db.run(db_gallery.create_collection, owner, name)
        except IntegrityError:
            raise BadInput(f"You already have a collection called “{name}”.") from None
        return Reply(text=f"Created the collection “{name}”. Add images with /collection add {name} <job>.",
                     ephemeral=True, data={"collection": name})
    async with deps.db.read() as conn:
        found = await db_gallery.collection_id(conn, owner, name)
    if found is None:
        raise NotFound(f"You have no collection called “{name}”. /collection list shows yours.")
    if action == "delete":
        await deps.db.run(db_gallery.delete_collection, found)
        return Reply(text=f"Deleted the collection “{name}” (its images stay where they were).", ephemeral=True,
                     data={"collection": name, "deleted": True})
    if action == "show":
        community = await deps.communities.of_chat(inv.chat)
        size = deps.settings.gallery_page_size
        async with deps.db.read() as conn:
            page = await db_gallery.collection_page(conn, found, owner, community.id if community else None,
                                                    cursor_of(inv, size), size)
        return await page_reply(deps, inv, page, title=f"Collection “{name}”", action=f"collection show {name}",
                                empty=f"“{name}” is empty. Add images with /collection add {name} <job>.",
                                community=community)
    if inv.args.get("job_id") is None:
        raise BadInput(f"Say which job: /collection {action} {name} <job> [image].")
    job, images, _ = await visible_job(inv, deps)
    index = inv.args.get("index")
    chosen = [i.asset_id for i in images if index is None or i.position == index]
    if not chosen:
        raise NotFound(f"Job #{job.id} has no image {index} you can see here.")
    if action == "add":
        n = await deps.db.run(db_gallery.add_to_collection, found, chosen)
        if n is None:
            raise NotFound(f"You have no collection called “{name}” any more. /collection list shows yours.")
        text = f"Added {n} image{'s' if n != 1 else ''} to “{name}”." if n else f"Already in “{name}”."
    else:
        n = await deps.db.run(db_gallery.remove_from_collection, found, chosen)
        text = f"Removed {n} image{'s' if n != 1 else ''} from “{name}”." if n else f"Not in “{name}”."
    return Reply(text=text, ephemeral=True, data={"collection": name, "changed": n})
