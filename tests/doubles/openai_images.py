"""Loopback double of the OpenAI Images API (contracts README §1, ``openai-images.json``).

Speaks ``POST /images/generations`` for ``gpt-image-1`` and ``dall-e-3`` plus ``GET /models``.
Images are real PNGs scaled down so the longer side is ``state.image_side`` pixels (64 by
default) to keep tests fast; their orientation matches the requested ``size``. Scripted failures
go in ``state.fail_next`` (see :mod:`tests.doubles.server`); :func:`error_body` builds the
documented ``ErrorResponse``.
"""

from __future__ import annotations

import base64
import time
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

from tests.doubles.server import RecordedRequest, png, respond, scripting_middleware

VALID_KEY = "sk-test-double-valid-0123456789"

# README §1 `size`, `n`, `prompt` limits, per model.
SIZES = {
    "gpt-image-1": ("1024x1024", "1536x1024", "1024x1536", "auto"),
    "dall-e-3": ("1024x1024", "1792x1024", "1024x1792"),
}
MAX_PROMPT = {"gpt-image-1": 32000, "dall-e-3": 4000}


@dataclass
class OpenAIState:
    """What the double knows and saw.

    Attributes:
        valid_keys: Keys accepted in ``Authorization: Bearer <key>``.
        requests: Every request received, in order.
        fail_next: Scripted answers played before normal handling, first first.
        image_side: Longer side in pixels of the PNGs returned.
        echo_keys: When True, 401 messages echo the whole key (the real API masks it), to prove
            adapters redact whatever a vendor sends back.
    """

    valid_keys: set[str] = field(default_factory=lambda: {VALID_KEY})
    requests: list[RecordedRequest] = field(default_factory=list)
    fail_next: list[tuple[Any, ...]] = field(default_factory=list)
    image_side: int = 64
    echo_keys: bool = False


def error_body(message: str, type_: str, code: str | None = None, param: str | None = None) -> dict:
    """The documented ``ErrorResponse``: all four ``Error`` keys, ``param``/``code`` nullable."""
    return {"error": {"message": message, "type": type_, "param": param, "code": code}}


def make_openai_app(state: OpenAIState) -> web.Application:
    """Build the double's aiohttp application around ``state``."""
    app = web.Application(middlewares=[scripting_middleware(state)])

    def authorized(request: web.Request) -> web.Response | None:
        scheme, _, key = request.headers.get("Authorization", "").partition(" ")
        if scheme == "Bearer" and key in state.valid_keys:
            return None
        shown = key if state.echo_keys else f"{key[:3]}***{key[-4:]}"
        return respond(
            401,
            error_body(
                f"Incorrect API key provided: {shown}. You can find your API key in your "
                "account settings.",
                "invalid_request_error",
                "invalid_api_key",
            ),
        )

    async def generations(request: web.Request) -> web.Response:
        if (refused := authorized(request)) is not None:
            return refused
        try:
            body = await request.json()
        except ValueError:
            body = None
        if not isinstance(body, dict):
            return _invalid("We could not parse the JSON body of your request.")
        problem = _validate(body)
        if problem is not None:
            return problem
        model, n = body["model"], body.get("n", 1)
        size = body.get("size", "auto")
        size = "1024x1024" if size == "auto" else size
        items = []
        for _ in range(n):
            item: dict[str, Any] = {
                "b64_json": base64.b64encode(png(size, state.image_side)).decode()
            }
            if model == "dall-e-3":
                item["revised_prompt"] = f"A detailed rendering of: {body['prompt']}"
            items.append(item)
        payload: dict[str, Any] = {"created": int(time.time()), "data": items}
        if model == "gpt-image-1":
            payload |= {"output_format": "png", "size": size, "quality": "medium"}
        return respond(200, payload)

    async def models(request: web.Request) -> web.Response:
        if (refused := authorized(request)) is not None:
            return refused
        data = [{"id": m, "object": "model", "created": 0, "owned_by": "system"} for m in SIZES]
        return respond(200, {"object": "list", "data": data})

    app.router.add_post("/images/generations", generations)
    app.router.add_get("/models", models)
    return app


def _invalid(message: str, param: str | None = None, code: str | None = None) -> web.Response:
    return respond(400, error_body(message, "invalid_request_error", code, param))


def _validate(body: dict[str, Any]) -> web.Response | None:
    """The spec subset the adapter relies on; None when ``body`` is acceptable."""
    model = body.get("model")
    if model not in SIZES:
        return _invalid(f"Invalid value for 'model' = {model}.", "model", "invalid_value")
    prompt = body.get("prompt")
    if not isinstance(prompt, str) or not prompt:
        return _invalid(
            "Missing required parameter: 'prompt'.", "prompt", "missing_required_parameter"
        )
    if len(prompt) > MAX_PROMPT[model]:
        return _invalid("Prompt is too long.", "prompt", "string_above_max_length")
    if "response_format" in body:
        if model == "gpt-image-1":  # README §1: the real 400 for GPT-image models
            return _invalid(
                "Unknown parameter: 'response_format'.", "response_format", "unknown_parameter"
            )
        if body["response_format"] not in ("url", "b64_json"):
            return _invalid(
                "Invalid value for 'response_format'.", "response_format", "invalid_value"
            )
    n = body.get("n", 1)
    if not isinstance(n, int) or isinstance(n, bool) or not 1 <= n <= 10:
        return _invalid(f"Invalid 'n': {n}. Must be between 1 and 10.", "n", "invalid_value")
    if model == "dall-e-3" and n != 1:
        return _invalid("You must provide n=1 for this model.", "n", "invalid_value")
    if body.get("size", "auto") not in SIZES[model]:
        return _invalid(
            f"Invalid value: '{body.get('size')}'. "
            f"Supported values are: {', '.join(SIZES[model])}.",
            "size",
            "invalid_value",
        )
    if model == "dall-e-3" and body.get("response_format", "url") == "url":
        # The double only serves inline images; a URL answer is outside what adapters may rely on.
        return _invalid("This double only implements response_format=b64_json.", "response_format")
    return None
