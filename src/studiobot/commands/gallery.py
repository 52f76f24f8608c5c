"""``/gallery``: the caller's own images, newest first, with keyset pagination; and search."""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import select

from studiobot.commands.contract import Button, ImageRef, Invocation, Param, Reply, UserRef
from studiobot.commands.deps import Deps
from studiobot.commands.presenter import short
from studiobot.db.models import Asset, Job, PlatformFile

PARAMS = (
    Param("page", int, "Page number (1 is the newest)", positional=True, min_value=1, default=1),
    Param("before", int, "Show images older than this image number", min_value=1),
)


async def gallery(inv: Invocation, deps: Deps) -> Reply:
    """List a page of the caller's images.

    ``--before ID`` is the keyset cursor the Next button uses (an index range scan on
    ``(owner_id, id)`` however deep the page); a bare page number skips whole pages from the newest.
    """
    size = deps.settings.gallery_page_size
    user_id = await deps.users.user_id(inv.user)
    before = inv.args["before"]
    page = inv.args["page"]
    query = (
        select(Asset.id, Asset.job_id, Asset.storage_key, Asset.width, Asset.height,
               Asset.created_at, Job.prompt)
        .join(Job, Job.id == Asset.job_id)
        .where(Asset.owner_id == user_id, Asset.kind == "image")
        .order_by(Asset.id.desc())
        .limit(size + 1)
    )
    if before is not None:
        query = query.where(Asset.id < before)
    else:
        query = query.offset((page - 1) * size)
    async with deps.db.read() as conn:
        rows = (await conn.execute(query)).all()
    more, rows = len(rows) > size, rows[:size]
    if not rows:
        text = "Your gallery is empty. Make something with /imagine." if page == 1 and before is None \
            else "No more images."
        return Reply(text=text, ephemeral=True, data={"items": [], "next_before": None})
    items = [
        {"asset_id": r.id, "job_id": r.job_id, "path": str(deps.store.path_for(r.storage_key)),
         "prompt": r.prompt, "width": r.width, "height": r.height,
         "created_at": r.created_at.isoformat()}
        for r in rows
    ]
    lines = ["Your images (newest first):"]
    lines += [
        f"  #{r.id} job {r.job_id} {r.created_at:%Y-%m-%d %H:%M} {r.width}x{r.height} “{short(r.prompt, 50)}”"
        for r in rows
    ]
    next_before = rows[-1].id if more else None
    buttons = [Button("Next", f"gallery --before {next_before}")] if more else []
    return Reply(
        text="\n".join(lines),
        images=[ImageRef(deps.store.path_for(r.storage_key), "image", f"#{r.id}", r.storage_key) for r in rows],
        buttons=buttons,
        ephemeral=True,
        data={"items": items, "next_before": next_before},
    )


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
