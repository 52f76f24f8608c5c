"""What the buttons under a result do: re-roll, upscale, variations, favourite, share, delete.

Each is an ordinary command (``/upscale 12 3``), so the buttons work the same on every platform,
survive restarts (the button only holds the command line) and can be typed in the shell.
"""

from __future__ import annotations

import secrets
from typing import Any

from sqlalchemy.engine import Connection

from studiobot.commands.contract import Invocation, Param, Reply
from studiobot.commands.deps import Deps
from studiobot.commands.gallery import post_to_gallery_channel, visible_job
from studiobot.commands.jobs import own_job, stop
from studiobot.commands.presenter import credits
from studiobot.commands.queueing import queue_job
from studiobot.db import assets as asset_store
from studiobot.db.models import ACTIVE_STATUSES
from studiobot.db.moderation import Actor, audit
from studiobot.errors import BadInput, NotAllowed, NotFound, UserError
from studiobot.providers.base import ImageRequest, Operation, SourceImage
from studiobot.scheduler import lifecycle
from studiobot.scheduler.lifecycle import JobRow

INDEX = Param("index", int, "Which image of the job (1-4)", required=True, positional=True,
              min_value=1, max_value=4)
OPTIONAL_INDEX = Param("index", int, "Which image (1-4); all when left out", positional=True,
                       min_value=1, max_value=4)


async def reroll(inv: Invocation, deps: Deps) -> Reply:
    """Queue the job's prompt and options again with a fresh seed (charged like a new job)."""
    job = await own_job(inv, deps)
    route = deps.router.route(job.provider, _model_if_offered(deps, job))
    params = dict(job.params or {})
    request = ImageRequest(
        prompt=job.prompt, aspect=params.get("aspect", "1:1"), count=int(params.get("count", 1)),
        model=route.model, negative_prompt=job.negative_prompt, seed=None,
    )
    return await queue_job(inv, deps, route, request, {**_base_params(params), "seed": None})


async def upscale(inv: Invocation, deps: Deps) -> Reply:
    """Queue a larger version of one image of a finished job (the provider's own upscaler)."""
    return await _derive(inv, deps, "upscale")


async def vary(inv: Invocation, deps: Deps) -> Reply:
    """Queue new takes on one image of a finished job (the provider's variations)."""
    return await _derive(inv, deps, "variation")


async def _derive(inv: Invocation, deps: Deps, operation: Operation) -> Reply:
    job = await own_job(inv, deps)
    index = inv.args["index"]
    route = deps.router.route(job.provider, _model_if_offered(deps, job))
    if not route.provider.capabilities.supports(operation):
        raise BadInput(
            f"{operation.capitalize()}s are not supported by {job.provider}; try /reroll {job.id} "
            "for new images instead."
        )
    image = await _image(deps, job, index)
    params = dict(job.params or {})
    source = SourceImage(task_id=job.provider_task_id, index=index, seed=image.seed,
                         storage_key=image.storage_key)
    count = 1 if operation == "upscale" else int(params.get("count", 1))
    # A variation's seed picks which takes come out, so each click gives new ones.
    seed = secrets.randbelow(2**31) if operation == "variation" else None
    request = ImageRequest(
        prompt=job.prompt, aspect=params.get("aspect", "1:1"), count=count, model=route.model,
        negative_prompt=job.negative_prompt, seed=seed, operation=operation, source=source,
    )
    stored = {
        **_base_params(params), "count": count, "seed": seed, "operation": operation,
        "source": {"job_id": job.id, "index": index, "seed": image.seed,
                   "task_id": job.provider_task_id, "storage_key": image.storage_key},
    }
    return await queue_job(inv, deps, route, request, stored)


async def favorite(inv: Invocation, deps: Deps) -> Reply:
    """Add a job's images (or one of them) to the caller's favourites, or remove them again: their
    own, or any they may see here."""
    job, images, user_id = await visible_job(inv, deps)
    index = inv.args["index"]
    chosen = [a.asset_id for a in images if index is None or a.position == index]
    if not chosen:
        raise NotFound(f"Job #{job.id} has no image {index}.")
    added = await deps.db.run(asset_store.toggle_favorites, user_id, chosen)
    which = f"image {index} of job #{job.id}" if index else f"job #{job.id}'s images"
    text = f"Added {which} to your favourites." if added else f"Removed {which} from your favourites."
    return Reply(text=text, ephemeral=True, data={"job_id": job.id, "favorite": added})


async def share(inv: Invocation, deps: Deps) -> Reply:
    """Show a job's images in this server's or group's community gallery, and post them to its
    gallery channel when it has one."""
    job = await own_job(inv, deps)
    community = await deps.communities.of_chat(inv.chat)
    if community is None:
        raise NotAllowed("Sharing puts images in a community gallery; use this in a server or group.")
    images = await _images(deps, job)
    if not images:
        raise BadInput(f"Job #{job.id} has no images to share.")
    if all(a.hidden and a.community_id == community.id for a in images):
        raise NotAllowed(f"An admin hid job #{job.id} from this community's gallery.")
    await deps.db.run(asset_store.share_job, job.id, community.id)
    posted = await post_to_gallery_channel(deps, community, job, inv.user)
    return Reply(
        text=f"Shared job #{job.id} with this community's gallery"
        + (", and posted it to the gallery channel." if posted else "."),
        ephemeral=True,
        data={"job_id": job.id, "visibility": "community", "posted": posted},
    )


async def delete(inv: Invocation, deps: Deps) -> Reply:
    """Delete a job's images for good (its owner, an admin where it was made, or an operator).

    The credits history stays; the files go unless another image has the same bytes. A job that
    has not finished is cancelled with a refund instead (its result would otherwise appear after
    "Deleted" and be charged), or refused when it cannot be stopped.
    """
    job = await _job_for_delete(inv, deps)
    if job.status in ACTIVE_STATUSES:
        return await _stop_instead(job, deps)
    by = f"{inv.user.platform}:{inv.user.platform_user_id}"
    actor = None
    if job.user_id != await deps.users.user_id(inv.user):  # an admin's or operator's deletion
        actor = Actor(by, job.community_id)
    keys = await deps.db.run(_delete, job.id, by, actor)
    await deps.db.run(asset_store.release_files, keys, deps.store.delete)
    return Reply(
        text=f"Deleted the images of job #{job.id}.",
        replaces_source=True,
        data={"job_id": job.id, "deleted": True},
    )


async def _stop_instead(job: JobRow, deps: Deps) -> Reply:
    if not await stop(job, deps):
        async with deps.db.read() as conn:
            current = await lifecycle.get(conn, job.id)
        if current is not None and current.status not in ACTIVE_STATUSES:
            raise UserError(f"Job #{job.id} has just {current.status}; send /delete {job.id} again.")
        raise UserError(
            f"Job #{job.id} is being generated right now and cannot be stopped; nothing was deleted. "
            f"Delete it with /delete {job.id} once it has finished."
        )
    refund = f" {credits(job.cost)} refunded." if job.cost else ""
    return Reply(
        text=f"Job #{job.id} had not finished, so it was cancelled and will not be made.{refund}",
        replaces_source=True,
        data={"job_id": job.id, "deleted": False, "status": "cancelled", "refunded": job.cost},
    )


def _delete(conn: Connection, job_id: int, by: str, actor: Actor | None) -> list[str]:
    """Delete a job's images, with an audit entry when someone else's were deleted; return the
    storage keys they named."""
    keys = asset_store.delete_job_assets(conn, job_id, by)
    if actor is not None:
        audit(conn, actor, "delete", f"job #{job_id}")
    return keys


async def _job_for_delete(inv: Invocation, deps: Deps) -> JobRow:
    user_id = await deps.users.user_id(inv.user)
    async with deps.db.read() as conn:
        job = await lifecycle.get(conn, inv.args["job_id"])
    if job is None:
        raise NotFound(f"There is no job #{inv.args['job_id']}.")
    made_here = (job.origin_chat or {}).get("community_id")
    admin_here = inv.is_admin and made_here is not None and made_here == inv.chat.community_id
    if job.user_id != user_id and not (admin_here or inv.is_operator):
        raise NotAllowed(f"Only the person who made job #{job.id} or an admin here can delete it.")
    return job


async def _images(deps: Deps, job: JobRow) -> list[Any]:
    async with deps.db.read() as conn:
        return [a for a in await lifecycle.assets_of(conn, job.id) if a.kind == "image"]


async def _image(deps: Deps, job: JobRow, index: int) -> Any:
    if job.status != "succeeded":
        raise BadInput(f"Job #{job.id} has not finished yet ({job.status}).")
    for image in await _images(deps, job):
        if image.position == index:
            return image
    raise NotFound(f"Job #{job.id} has no image {index}.")


def _model_if_offered(deps: Deps, job: JobRow) -> str | None:
    """The job's model, or None (the default) when the operator no longer offers it."""
    return job.model if job.model in deps.router.provider(job.provider).capabilities.models else None


def _base_params(params: dict[str, Any]) -> dict[str, Any]:
    return {"aspect": params.get("aspect", "1:1"), "count": int(params.get("count", 1))}

