"""Queueing a job: price, reserve and store in one transaction, then answer with its place.

``/imagine`` and the result buttons (re-roll, upscale, variation) all end here, so every job is
charged, limited and deduplicated the same way.
"""

from __future__ import annotations

import secrets
from typing import Any

from sqlalchemy.exc import IntegrityError

from studiobot.commands.contract import Invocation, Reply
from studiobot.commands.deps import Deps
from studiobot.commands.presenter import Accepted, job_reply
from studiobot.errors import BadInput
from studiobot.providers.base import ImageRequest, Provider
from studiobot.providers.router import Route
from studiobot.scheduler import lifecycle
from studiobot.scheduler.lifecycle import Limits, NewJob


async def queue_job(
    inv: Invocation, deps: Deps, route: Route, request: ImageRequest, params: dict[str, Any]
) -> Reply:
    """Reserve the cost of ``request`` and queue it; reply with the job's place, cost and balance.

    Nothing is charged unless the job is stored. A repeated invocation (same invocation id, e.g. a
    retried interaction or update) returns the job it created the first time instead of a second.

    Args:
        inv: The invocation asking for the job (its user, chat and id).
        deps: Handler dependencies.
        route: Provider, model and key source the router chose.
        request: The validated provider request (its price is the job's cost).
        params: What is stored with the job to rebuild ``request`` later (see
            ``scheduler.worker.request_of``).

    Raises:
        BadInput: Neither the user nor the platform has a key for the provider (the message says
            how to add one).
        BadInput: The prompt contains a blocked term (checked before anything is charged).
        InsufficientCredits: The balance does not cover the cost.
        LimitReached: Too many active jobs (the user's or the community's), or too many this hour.
    """
    community = await deps.communities.of_chat(inv.chat)
    await deps.guards.check_prompt(request.prompt, request.negative_prompt,
                                   community_id=community.id if community else None)
    user_id = await deps.users.user_id(inv.user)
    key_source, api_key_id = await _payer(deps, user_id, route.provider)
    if community is not None and community.share_by_default:
        params = {**params, "visibility": "community"}
    # The user's own key pays the provider directly, so the platform charges nothing.
    cost = 0 if key_source == "user" else route.provider.price(request)
    new_job = NewJob(
        user_id=user_id,
        prompt=request.prompt,
        negative_prompt=request.negative_prompt,
        params=params,
        provider=route.provider.name,
        model=route.model,
        key_source=key_source,
        api_key_id=api_key_id,
        webhook_token=secrets.token_urlsafe(24) if route.provider.capabilities.webhooks else None,
        cost=cost,
        origin_platform=inv.chat.platform,
        origin_chat=inv.chat.to_dict(),
        idempotency_key=f"{inv.chat.platform}:{inv.invocation_id}",
        deadline_s=deps.settings.job_deadline_s,
        community_id=community.id if community else None,
    )
    if community is None:
        limits = Limits(max_active=deps.settings.max_active_jobs_per_user,
                        max_per_hour=deps.settings.max_jobs_per_hour)
    else:
        limits = Limits(max_active=community.max_active_per_user, max_per_hour=community.max_jobs_per_hour,
                        max_community_active=community.max_active)
    try:
        job_id, balance = await deps.db.run(lifecycle.enqueue, new_job, limits)
    except IntegrityError:
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
        id=job_id, prompt=request.prompt, params=params, provider=new_job.provider,
        model=new_job.model, cost=cost, key_source=key_source,
    )
    return job_reply(accepted, [], deps.store, balance=balance, position=position or None)


async def _payer(deps: Deps, user_id: int, provider: Provider) -> tuple[str, int | None]:
    """Who pays the provider: ``("user", key id)`` for the user's own active key, else
    ``("platform", None)`` when the operator has a key (or none is needed).

    Raises:
        BadInput: Nobody has a key for the provider; the message says how to add one.
    """
    if provider.capabilities.needs_key and deps.vault is not None:
        own = await deps.vault.active_key(user_id, provider.name)
        if own is not None:
            return "user", own.id
    if deps.router.platform_pays(provider.name):
        return "platform", None
    if deps.vault is None:
        raise BadInput(f"{provider.name} is not available here: the operator has not set a key for it.")
    raise BadInput(
        f"{provider.name} needs an API key, and this bot has none for it. Add your own with "
        f"/keys add {provider.name} in a private chat with me: your key pays {provider.name} "
        "directly, and no credits are charged."
    )
