"""``/imagine``: validate, route, price, then reserve and queue in one transaction."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from studiobot.commands.contract import Invocation, Param, Reply
from studiobot.commands.deps import Deps
from studiobot.commands.queueing import queue_job
from studiobot.errors import BadInput, UserError
from studiobot.providers.base import ASPECT_RATIOS, ImageRequest



def suggest_providers(typed: Mapping[str, Any], current: str, deps: Deps) -> list[str]:
    """Configured providers whose name starts with what was typed."""
    return [name for name in deps.router.names if name.startswith(current.strip().lower())]


def suggest_models(typed: Mapping[str, Any], current: str, deps: Deps) -> list[str]:
    """Models of the chosen (or default) provider matching what was typed."""
    try:
        provider = deps.router.route(typed.get("provider") or None, None).provider
    except UserError:
        return []
    return [m for m in provider.capabilities.models if current.strip().lower() in m.lower()]


def suggest_aspects(typed: Mapping[str, Any], current: str, deps: Deps) -> list[str]:
    """Aspect ratios the chosen provider and model support, matching what was typed."""
    try:
        route = deps.router.route(typed.get("provider") or None, typed.get("model") or None)
    except UserError:
        return list(ASPECT_RATIOS)
    return [a for a in route.provider.capabilities.aspects_for(route.model) if a.startswith(current.strip())]


PARAMS = (
    Param("prompt", str, "What to draw", required=True, rest=True),
    Param("aspect", str, "Aspect ratio", choices=ASPECT_RATIOS, aliases=("ar",), suggest=suggest_aspects),
    Param("count", int, "How many images (1-4)", min_value=1, max_value=4, aliases=("n",)),
    Param("provider", str, "Which image provider", suggest=suggest_providers),
    Param("model", str, "Which model of the provider", suggest=suggest_models),
    Param("negative", str, "What to avoid", aliases=("no",)),
    Param("seed", int, "Seed for repeatable results", min_value=0, max_value=2**32 - 1),
)


async def imagine(inv: Invocation, deps: Deps) -> Reply:
    """Validate the options against the provider's capabilities, then queue the job.

    Nothing is charged unless the job is stored (see :func:`~studiobot.commands.queueing.queue_job`).
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
    return await queue_job(inv, deps, route, request, {"aspect": aspect, "count": count, "seed": seed})
