"""How jobs look to users: one rendering of a job in every state, and the scheduler's listener.

``/job``, ``/imagine`` (queued), results delivered later and failures all come from here, so a
job reads the same wherever it is shown.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from sqlalchemy.engine import Row

from studiobot.commands.communities import Communities
from studiobot.commands.contract import Button, ChatRef, ImageRef, Outbox, Reply
from studiobot.commands.nsfw import screen
from studiobot.db import users
from studiobot.db.engine import Database
from studiobot.media.store import LocalStore
from studiobot.providers.base import Progress
from studiobot.scheduler import lifecycle
from studiobot.scheduler.lifecycle import JobRow


def credits(n: int) -> str:
    """``1 credit`` / ``3 credits``."""
    return f"{n} credit{'' if n == 1 else 's'}"


def short(prompt: str, limit: int = 80) -> str:
    """A prompt cut to ``limit`` characters for one-line displays."""
    return prompt if len(prompt) <= limit else prompt[: limit - 1] + "…"


def progress_bar(fraction: float | None, width: int = 10) -> str:
    """``[####------] 40%`` for a known fraction, ``[working]`` otherwise."""
    if fraction is None:
        return "[working]"
    fraction = min(1.0, max(0.0, fraction))
    filled = round(fraction * width)
    return f"[{'#' * filled}{'-' * (width - filled)}] {round(fraction * 100)}%"


class JobLike(Protocol):
    """What rendering needs of a job: a database row, or :class:`Accepted` before one is read."""

    id: int
    status: str
    prompt: str
    params: Mapping[str, Any]
    provider: str
    model: str
    cost: int
    key_source: str
    progress: float | None
    error_code: str | None
    error_message: str | None


@dataclass(frozen=True, slots=True)
class Accepted:
    """A job as it was when ``/imagine`` accepted it (the worker may already have moved it on)."""

    id: int
    prompt: str
    params: Mapping[str, Any]
    provider: str
    model: str
    cost: int
    key_source: str = "platform"
    status: str = "queued"
    progress: float | None = None
    error_code: str | None = None
    error_message: str | None = None


def _payment(job: JobLike) -> str:
    """``cost 4 credits``, or who pays when the user's own key does."""
    if job.key_source == "user":
        return f"paid by your own {job.provider} key, no credits"
    return f"cost {credits(job.cost)}"


def _made(params: Mapping[str, Any]) -> str:
    """What a job makes: ``2 × 16:9``, ``Upscale of job #3 image 2``, ``4 variations of ...``."""
    source = params.get("source")
    operation = params.get("operation", "generate")
    if source and operation == "upscale":
        return f"Upscale of job #{source['job_id']} image {source['index']}"
    if source and operation == "variation":
        count = params.get("count", 1)
        noun = "variation" if count == 1 else "variations"
        return f"{count} {noun} of job #{source['job_id']} image {source['index']}"
    return f"{params.get('count', 1)} × {params.get('aspect', '1:1')}"


def job_reply(
    job: JobLike, assets: Sequence[Row[Any]], store: LocalStore, *, originals: bool = False,
    owner: bool = True, **extra: Any
) -> Reply:
    """Render ``job`` (any state) with its assets as a Reply.

    ``originals`` is the user's preference for original files (see :class:`Reply`); ``owner``
    False renders it for someone else (``/show`` of a shared image): no cost and no buttons;
    ``extra`` is merged into ``Reply.data`` (e.g. ``balance`` or ``position``).
    """
    params = job.params or {}
    head = f"Job #{job.id}: “{short(job.prompt)}”"
    what = f"{_made(params)} with {job.provider} ({job.model})"
    images = [a for a in assets if a.kind == "image"]
    grid = next((a for a in assets if a.kind == "grid"), None)
    data: dict[str, Any] = {
        "job_id": job.id,
        "status": job.status,
        "prompt": job.prompt,
        "provider": job.provider,
        "model": job.model,
        "cost": job.cost,
        "key_source": job.key_source,
        **extra,
    }
    buttons: list[Button] = []
    refs: list[ImageRef] = []
    if job.status == "succeeded" and not images:
        lines = [f"{head}: its images were deleted."]
    elif job.status == "succeeded":
        seeds = [a.seed for a in images if a.seed is not None]
        seed_text = ", ".join(str(seed) for seed in seeds)
        lines = [f"{head} is ready.", what + (f", seed {seed_text}" if seeds else ""),
                 _payment(job).capitalize() + "." if owner else ""]
        refs = [ImageRef(store.path_for(a.storage_key), "image", f"{job.id}-{a.position}", a.storage_key) for a in images]
        if grid is not None:
            refs.insert(0, ImageRef(store.path_for(grid.storage_key), "grid", f"{job.id}-grid", grid.storage_key))
        data["images"] = [str(r.path) for r in refs if r.kind == "image"]
        data["grid"] = str(store.path_for(grid.storage_key)) if grid is not None else None
        data["seeds"] = seeds
        buttons = result_buttons(job.id, [a.position for a in images]) if owner else []
    elif job.status in ("failed", "cancelled"):
        verb = "failed" if job.status == "failed" else "was cancelled"
        refund = f" {credits(job.cost)} refunded." if job.cost else ""
        lines = [f"{head} {verb}.", f"{job.error_message or ''}{refund}".strip()]
        data["error_code"] = job.error_code
        data["error_message"] = job.error_message
    elif job.status == "queued":
        position = extra.get("position")
        lines = [f"{head} is queued" + (f" (position {position})." if position else "."),
                 what + f", {_payment(job)}."]
        buttons.append(Button("Cancel", f"cancel {job.id}", "danger"))
    else:
        lines = [f"{head} is being made {progress_bar(job.progress)}.", what + "."]
        buttons.append(Button("Cancel", f"cancel {job.id}", "danger"))
    if "balance" in extra:
        lines.append(f"Balance: {credits(extra['balance'])}.")
    return Reply(
        text="\n".join(line for line in lines if line), images=refs, buttons=buttons, originals=originals,
        data=data,
    )


def result_buttons(job_id: int, positions: Sequence[int]) -> list[Button]:
    """The buttons under a finished job: U1-U4 and V1-V4 (one per image), re-roll, favourite,
    share and delete, in the order platforms lay them out (rows of at most five)."""
    buttons = [Button(f"U{n}", f"upscale {job_id} {n}") for n in positions]
    buttons += [Button(f"V{n}", f"vary {job_id} {n}") for n in positions]
    buttons += [
        Button("🔄 Re-roll", f"reroll {job_id}", "primary"),
        Button("★ Favorite", f"favorite {job_id}"),
        Button("Share", f"share {job_id}"),
        Button("Delete", f"delete {job_id}", "danger"),
    ]
    return buttons


def flagged(assets: Sequence[Row[Any]]) -> set[str]:
    """Store keys of the assets a provider flagged as NSFW (for :func:`studiobot.commands.nsfw.screen`)."""
    return {a.storage_key for a in assets if a.nsfw}


class JobPresenter:
    """The scheduler's :class:`~studiobot.scheduler.notify.JobListener`: renders and delivers.

    Args:
        db: Database, to read the finished job.
        store: Image store.
        outboxes: Outbox per platform name.
        communities: Community policies (NSFW) for jobs made in a community.
    """

    def __init__(self, db: Database, store: LocalStore, outboxes: Mapping[str, Outbox],
                 communities: Communities) -> None:
        self._db = db
        self._store = store
        self._outboxes = dict(outboxes)
        self._communities = communities
        self._recipients: dict[tuple[int, str], str | None] = {}

    @property
    def platforms(self) -> tuple[str, ...]:
        """Platforms this presenter can deliver to."""
        return tuple(self._outboxes)

    async def job_progress(self, job: JobRow, progress: Progress) -> None:
        """Tell the user how far a running job is."""
        stage = f" ({progress.stage})" if progress.stage else ""
        reply = Reply(
            text=f"Job #{job.id}: “{short(job.prompt)}” {progress_bar(progress.fraction)}{stage}",
            buttons=[Button("Cancel", f"cancel {job.id}", "danger")],
            data={"job_id": job.id, "status": "running", "progress": progress.fraction},
        )
        await self._outboxes[job.origin_platform].deliver(
            ChatRef.from_dict(job.origin_chat), reply, recipient=await self._recipient(job)
        )

    async def job_finished(self, job_id: int) -> None:
        """Deliver a terminal job's result (or failure) to the chat it came from."""
        async with self._db.read() as conn:
            job = await lifecycle.get(conn, job_id)
            if job is None:
                return
            assets = await lifecycle.assets_of(conn, job_id)
            prefs = await users.preferences(conn, job.user_id)
        chat = ChatRef.from_dict(job.origin_chat)
        reply = job_reply(job, assets, self._store, originals=bool(prefs.get("originals")))
        policy = await self._communities.get(job.community_id) if job.community_id is not None else None
        reply = screen(reply, flagged(assets), policy, chat)
        await self._outboxes[job.origin_platform].deliver(chat, reply, recipient=await self._recipient(job))

    async def _recipient(self, job: JobRow) -> str | None:
        # Identities never change once made, so one cached read per user and platform.
        key = (job.user_id, job.origin_platform)
        if key not in self._recipients:
            async with self._db.read() as conn:
                self._recipients[key] = await users.platform_user_id(conn, *key)
            if len(self._recipients) > 100_000:
                self._recipients.clear()
        return self._recipients[key]
