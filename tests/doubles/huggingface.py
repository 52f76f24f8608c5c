"""Loopback double of Hugging Face Inference Providers, ``hf-inference`` (contracts README §6).

One server plays both hosts: the router's ``POST /hf-inference/models/{owner}/{name}`` and the
Hub's ``GET /api/whoami-v2``, so tests use ``base_url=f"{url}/hf-inference"`` and ``hub_url=url``.
A generation answers the raw image bytes (PNG, or JPEG when ``state.image_format`` says so) sized
like the requested ``width``/``height`` but scaled so the longer side is ``state.image_side``
pixels. A model listed in ``state.loading`` answers the documented HTTP 503 "currently loading"
body that many times first. Errors use the vendor's ``{"error": "..."}`` shape. Scripted failures
go in ``state.fail_next`` (see :mod:`tests.doubles.server`).
"""

from __future__ import annotations

import io
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web
from PIL import Image

from tests.doubles.server import RecordedRequest, png, respond, scripting_middleware

VALID_TOKEN = "hf_TestDoubleValidToken0123456789abcd"
FLUX_SCHNELL = "black-forest-labs/FLUX.1-schnell"
SDXL = "stabilityai/stable-diffusion-xl-base-1.0"

# The snake_case parameters the official Python client sends (README §6) and their JSON types.
# The live server's treatment of unknown names is UNVERIFIED; the double refuses them so that a
# drift to another naming (e.g. the task spec's camelCase) fails loudly.
PARAMETER_TYPES: dict[str, tuple[type, ...]] = {
    "negative_prompt": (str,),
    "width": (int,),
    "height": (int,),
    "seed": (int,),
    "num_inference_steps": (int,),
    "guidance_scale": (int, float),
    "scheduler": (str,),
}
# The double's own bounds for a side (UNVERIFIED for the live models): multiples of 8.
MIN_SIDE, MAX_SIDE = 256, 2048
DEFAULT_SIDE = 1024
INVALID_CREDENTIALS = "Invalid credentials in Authorization header"


@dataclass
class HuggingFaceState:
    """What the double knows and saw.

    Attributes:
        valid_tokens: Tokens accepted in ``Authorization: Bearer <token>``.
        models: Model ids the provider serves; any other answers 404.
        loading: Model id -> how many more generations answer 503 "currently loading".
        estimated_time: Seconds given as ``estimated_time`` in those 503 answers.
        requests: Every request received, in order.
        fail_next: Scripted answers played before normal handling, first first.
        image_side: Longer side in pixels of the images returned.
        image_format: ``png`` or ``jpeg``: what a generation answers, whatever ``Accept`` says.
        echo_tokens: When True, 401 messages quote the refused token, to prove adapters redact
            whatever a vendor sends back.
    """

    valid_tokens: set[str] = field(default_factory=lambda: {VALID_TOKEN})
    models: set[str] = field(default_factory=lambda: {FLUX_SCHNELL, SDXL})
    loading: dict[str, int] = field(default_factory=dict)
    estimated_time: float = 20.0
    requests: list[RecordedRequest] = field(default_factory=list)
    fail_next: list[tuple[Any, ...]] = field(default_factory=list)
    image_side: int = 64
    image_format: str = "png"
    echo_tokens: bool = False


def error(message: str | list[str], **extra: Any) -> dict[str, Any]:
    """The vendor's error body: ``{"error": message}`` plus any extra keys."""
    return {"error": message, **extra}


def loading_body(model: str, estimated_time: float) -> dict[str, Any]:
    """The documented 503 body of a model that is still loading (README §6)."""
    return error(f"Model {model} is currently loading", estimated_time=estimated_time)


def huggingface_app(state: HuggingFaceState) -> web.Application:
    """Build the double's aiohttp application around ``state``."""
    app = web.Application(middlewares=[scripting_middleware(state)])

    def refused(request: web.Request) -> web.Response | None:
        scheme, _, token = request.headers.get("Authorization", "").partition(" ")
        if scheme == "Bearer" and token in state.valid_tokens:
            return None
        message = f"{INVALID_CREDENTIALS}: {token}" if state.echo_tokens else INVALID_CREDENTIALS
        return respond(401, error(message))

    async def generate(request: web.Request) -> web.Response:
        if (answer := refused(request)) is not None:
            return answer
        model = f"{request.match_info['owner']}/{request.match_info['name']}"
        if model not in state.models:
            return respond(404, error(f"Model {model} not found"))
        try:
            body = await request.json()
        except ValueError:
            return respond(400, error("Request body is not valid JSON"))
        problem = _validate(body)
        if problem is not None:
            return respond(400, error(problem))
        if state.loading.get(model, 0) > 0:
            state.loading[model] -= 1
            return respond(503, loading_body(model, state.estimated_time))
        params = body.get("parameters") or {}
        size = f"{params.get('width', DEFAULT_SIDE)}x{params.get('height', DEFAULT_SIDE)}"
        if state.image_format == "jpeg":
            return web.Response(body=_jpeg(size, state.image_side), content_type="image/jpeg")
        return web.Response(body=png(size, state.image_side), content_type="image/png")

    async def whoami(request: web.Request) -> web.Response:
        if (answer := refused(request)) is not None:
            return answer
        return respond(
            200,
            {
                "type": "user",
                "id": "0123456789abcdef01234567",
                "name": "studiobot-test",
                "fullname": "Studiobot Test",
                "auth": {
                    "type": "access_token",
                    "accessToken": {"displayName": "studiobot", "role": "fineGrained"},
                },
            },
        )

    app.router.add_post("/hf-inference/models/{owner}/{name}", generate)
    app.router.add_get("/api/whoami-v2", whoami)
    return app


def _validate(body: Any) -> str | None:
    """Why ``body`` is not a text-to-image input (``hf-text-to-image-input.json``), or None."""
    if not isinstance(body, dict):
        return "Request body must be a JSON object"
    inputs = body.get("inputs")
    if not isinstance(inputs, str) or not inputs.strip():
        return "Input should be a valid string: inputs"
    params = body.get("parameters", {})
    if not isinstance(params, dict):
        return "Input should be a valid dictionary: parameters"
    unknown = sorted(set(params) - set(PARAMETER_TYPES))
    if unknown:
        return f"Unexpected parameter(s): {', '.join(unknown)}"
    for name, value in params.items():
        if isinstance(value, bool) or not isinstance(value, PARAMETER_TYPES[name]):
            return f"Parameter {name} has the wrong type"
    for side in ("width", "height"):
        value = params.get(side, DEFAULT_SIDE)
        if not MIN_SIDE <= value <= MAX_SIDE or value % 8:
            return f"{side} must be a multiple of 8 between {MIN_SIDE} and {MAX_SIDE}"
    return None


def _jpeg(size: str, longest_side: int) -> bytes:
    """Real JPEG bytes, shaped like :func:`tests.doubles.server.png`."""
    buffer = io.BytesIO()
    with Image.open(io.BytesIO(png(size, longest_side))) as image:
        image.convert("RGB").save(buffer, format="JPEG")
    return buffer.getvalue()
