"""``/imagine``: validate, route, price, then reserve and queue in one transaction."""

from __future__ import annotations

from sqlalchemy.exc import IntegrityError

from studiobot.commands.contract import Invocation, Param, Reply
from studiobot.commands.deps import Deps
from studiobot.commands.presenter import Accepted, job_reply
from studiobot.errors import BadInput
from studiobot.providers.base import ASPECT_RATIOS, ImageRequest
from studiobot.scheduler import lifecycle
from studiobot.scheduler.lifecycle import Limits, NewJob

PARAMS = (
    Param("prompt", str, "What to draw", required=True, rest=True),
    Param("aspect", str, "Aspect ratio", choices=ASPECT_RATIOS, aliases=("ar",)),
    Param("count", int, "How many images (1-4)", min_value=1, max_value=4, aliases=("n",)),
    Param("provider", str, "Which image provider"),
    Param("model", str, "Which model of the provider"),
    Param("negative", str, "What to avoid", aliases=("no",)),
    Param("seed", int, "Seed for repeatable results", min_value=0, max_value=2**32 - 1),
)


async def imagine(inv: Invocation, deps: Deps) -> Reply:
    """Queue an image job and reply with its place, cost and balance.

    Nothing is charged unless the job is stored; a repeated invocation (same invocation id) returns
    the job it created the first time instead of a second one.
    """
    settings = deps.settings
    prompt = " ".join(inv.args["prompt"].split())
    if not prompt:
        raise BadInput("Tell me what to draw, e.g. /imagine a lighthouse at dusk, oil painting.")
    if len(prompt) > settings.prompt_max_chars:
        raise BadInput(
            f"Your prompt is {len(prompt):,} characters; the limit is {settings.prompt_max_chars:,}. "
            "Please shorten it."
        )
    route = deps.router.route(inv.args["provider"], inv.args["model"])
    caps = route.provider.capabilities
    aspect = inv.args["aspect"] or "1:1"
    supported = caps.aspects_for(route.model)
    if aspect not in supported:
        raise BadInput(
            f"{route.provider.name} ({route.model}) cannot make {aspect} images. "
            f"Choose one of: {', '.join(supported)}."
        )
    count = inv.args["count"] or settings.default_count
    most = caps.max_images_for(route.model)
    if count > most:
        raise BadInput(
            f"{route.provider.name} ({route.model}) makes at most {most} image"
            f"{'s' if most != 1 else ''} per request; you asked for {count}."
        )
    negative = inv.args["negative"] or None
    if negative and not caps.negative_prompt:
        raise BadInput(f"{route.provider.name} does not support negative prompts; remove --negative.")
    seed = inv.args["seed"]
    if seed is not None and not caps.seed:
        raise BadInput(f"{route.provider.name} does not support seeds; remove --seed.")
    request = ImageRequest(
        prompt=prompt, aspect=aspect, count=count, model=route.model, negative_prompt=negative, seed=seed
    )
    cost = route.provider.price(request)
    user_id = await deps.users.user_id(inv.user)
    new_job = NewJob(
        user_id=user_id,
        prompt=prompt,
        negative_prompt=negative,
        params={"aspect": aspect, "count": count, "seed": seed},
        provider=route.provider.name,
        model=route.model,
        key_source=route.key_source,
        cost=cost,
        origin_platform=inv.chat.platform,
        origin_chat=inv.chat.to_dict(),
        idempotency_key=f"{inv.chat.platform}:{inv.invocation_id}",
        deadline_s=settings.job_deadline_s,
    )
    limits = Limits(max_active=settings.max_active_jobs_per_user, max_per_hour=settings.max_jobs_per_hour)
    try:
        job_id, balance = await deps.db.run(lifecycle.enqueue, new_job, limits)
    except IntegrityError:
        # The same invocation arrived again (a retried interaction or update): show the first job.
        async with deps.db.read() as conn:
            job = await lifecycle.get_by_key(conn, new_job.idempotency_key)
            if job is None:
                raise
            assets = await lifecycle.assets_of(conn, job.id)
        return job_reply(job, assets, deps.store)
    deps.job_queued()
    async with deps.db.read() as conn:
        position = await lifecycle.queue_position(conn, job_id)  # 0 once a worker has taken it
    accepted = Accepted(
        id=job_id, prompt=prompt, params=new_job.params, provider=new_job.provider,
        model=new_job.model, cost=cost,
    )
    return job_reply(accepted, [], deps.store, balance=balance, position=position or None)
