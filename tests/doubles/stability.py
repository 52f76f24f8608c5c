"""Loopback double of the Stability AI REST API (contracts README §2).

Speaks v2beta Stable Image generate (``POST /v2beta/stable-image/generate/{core,ultra,sd3}``,
multipart/form-data only, README §2a), v1 text-to-image for the SDXL engine
(``POST /v1/generation/{engine}/text-to-image``, JSON, README §2b) and ``GET /v1/user/balance``.
Both ``Accept`` forms are served: v2beta ``image/*`` (raw bytes, ``finish-reason``/``seed``
headers) or ``application/json`` (``{image, finish_reason, seed}``); v1 ``application/json``
(artifacts) or ``image/png``. Images are real PNGs whose longer side is ``state.image_side`` pixels
and whose orientation follows the requested aspect or size.

Per-call outcomes go in ``state.outcomes`` (:data:`SUCCESS`, :data:`FILTERED`, :data:`ERROR` or
:data:`MODERATED`); a prompt containing ``state.forbidden_word`` is refused by moderation. Scripted
HTTP answers go in ``state.fail_next`` (see :mod:`tests.doubles.server`); :func:`v2_error` and
:func:`v1_error` build the documented error bodies.
"""

from __future__ import annotations

import base64
import contextlib
import email.policy
import io
import random
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from email.parser import BytesParser
from typing import Any

from aiohttp import web
from PIL import Image

from tests.doubles.server import RecordedRequest, png, respond, scripting_middleware, serve

VALID_KEY = "sk-TestDoubleStabilityKey0123456789abcdef"
SDXL_ENGINE = "stable-diffusion-xl-1024-v1-0"

# README §2a / stability-v2beta.yaml.
V2_ASPECTS = ("16:9", "1:1", "21:9", "2:3", "3:2", "4:5", "5:4", "9:16", "9:21")
V2_FORMATS = {
    "core": ("jpeg", "png", "webp"),
    "ultra": ("jpeg", "png", "webp"),
    "sd3": ("jpeg", "png"),  # README §2a: the npm SDK types say jpeg|png only
}
SD3_MODELS = (
    "sd3.5-large", "sd3.5-large-turbo", "sd3.5-medium", "sd3-large", "sd3-large-turbo", "sd3-medium"
)  # fmt: skip
V2_MAX_SEED = 4294967294
V2_MAX_PROMPT = 10000
# README §2b / stability-v1.json.
SDXL_SIZES = frozenset({
    (1024, 1024), (1152, 896), (896, 1152), (1216, 832), (832, 1216),
    (1344, 768), (768, 1344), (1536, 640), (640, 1536),
})  # fmt: skip
V1_MAX_SEED = 4294967295
V1_MAX_PROMPT = 2000

# Outcomes for state.outcomes: a finish reason, or MODERATED for the moderation refusal.
SUCCESS, FILTERED, ERROR, MODERATED = "SUCCESS", "CONTENT_FILTERED", "ERROR", "moderated"
# Wording of the moderation refusal (MCP copy of the Stability reference; exact text UNVERIFIED).
MODERATION_MESSAGE = (
    "Your request was flagged by our content moderation system, as a result your request was "
    "denied and you were not charged."
)


@dataclass
class StabilityState:
    """What the double knows and saw.

    Attributes:
        valid_keys: Keys accepted in ``Authorization: Bearer <key>``.
        requests: Every request received, in order.
        fail_next: Scripted answers played before normal handling, first first.
        outcomes: Outcomes taken by successive generations, first first; empty means SUCCESS.
            On v1 a finish reason applies to the last artifact only (the others succeed).
        forbidden_word: Prompts containing it (any case) are refused by moderation.
        image_side: Longer side in pixels of the images returned.
        echo_keys: When True, 401 messages echo the whole key, to prove adapters redact it.
        v1_bare_list: Answer v1 JSON as the 2023 spec's bare list instead of ``{"artifacts"}``.
        balance: Credits reported by ``GET /v1/user/balance``.
    """

    valid_keys: set[str] = field(default_factory=lambda: {VALID_KEY})
    requests: list[RecordedRequest] = field(default_factory=list)
    fail_next: list[tuple[Any, ...]] = field(default_factory=list)
    outcomes: list[str] = field(default_factory=list)
    forbidden_word: str = "forbidden"
    image_side: int = 64
    echo_keys: bool = False
    v1_bare_list: bool = False
    balance: float = 25.0

    def next_outcome(self) -> str:
        """The scripted outcome of the next generation."""
        return self.outcomes.pop(0) if self.outcomes else SUCCESS


def v2_error(status: int, name: str, *errors: str) -> web.Response:
    """A v2beta error answer: ``{"id", "name", "errors": [...]}``."""
    return respond(status, v2_error_body(name, *errors))


def v2_error_body(name: str, *errors: str) -> dict[str, Any]:
    """The v2beta error body (README §2a errors)."""
    return {"id": uuid.uuid4().hex, "name": name, "errors": list(errors)}


def v1_error_body(name: str, message: str) -> dict[str, Any]:
    """The v1 error body (stability-v1.json ``Error``)."""
    return {"id": str(uuid.uuid4()), "name": name, "message": message}


def v1_error(status: int, name: str, message: str) -> web.Response:
    """A v1 error answer: ``{"id", "name", "message"}``."""
    return respond(status, v1_error_body(name, message))


def parse_form(content_type: str, body: bytes) -> tuple[dict[str, str], dict[str, bytes]]:
    """Split a multipart/form-data body into text fields and file parts (those with a filename).

    Raises:
        ValueError: The body is not multipart.
    """
    message = BytesParser(policy=email.policy.HTTP).parsebytes(
        b"Content-Type: " + content_type.encode("latin-1") + b"\r\n\r\n" + body
    )
    if not message.is_multipart():
        raise ValueError("not multipart")
    fields: dict[str, str] = {}
    files: dict[str, bytes] = {}
    for part in message.iter_parts():
        name = part.get_param("name", header="content-disposition")
        payload = part.get_payload(decode=True) or b""
        if part.get_filename() is not None:
            files[str(name)] = payload
        else:
            fields[str(name)] = payload.decode()
    return fields, files


def form_fields(recorded: RecordedRequest) -> dict[str, str]:
    """The text fields of a recorded multipart request."""
    return parse_form(recorded.headers["Content-Type"], recorded.body)[0]


def stability_app(state: StabilityState) -> web.Application:
    """Build the double's aiohttp application around ``state``."""
    app = web.Application(middlewares=[scripting_middleware(state)])

    def unauthorized(request: web.Request) -> str | None:
        """The 401 message, or None when the key is valid."""
        scheme, _, key = request.headers.get("Authorization", "").partition(" ")
        if not key:
            return "authorization: missing authorization header"
        if scheme == "Bearer" and key in state.valid_keys:
            return None
        shown = key if state.echo_keys else f"{key[:3]}***"
        return f"Incorrect API key provided: {shown}"

    async def generate_v2(request: web.Request) -> web.Response:
        endpoint = request.match_info["endpoint"]
        if (refused := unauthorized(request)) is not None:
            return v2_error(401, "unauthorized", refused)
        accept = request.headers.get("Accept", "")
        if accept not in ("image/*", "application/json"):
            return v2_error(400, "bad_request", "accept: must be image/* or application/json")
        if request.content_type != "multipart/form-data":
            return v2_error(400, "bad_request", "content-type: must be multipart/form-data")
        try:
            fields, files = parse_form(request.headers["Content-Type"], await request.read())
        except ValueError:
            return v2_error(400, "bad_request", "body: malformed multipart/form-data")
        problems = _validate_v2(endpoint, fields, files)
        if problems:
            return v2_error(400, "bad_request", *problems)
        outcome = state.next_outcome()
        if outcome == MODERATED or state.forbidden_word.lower() in fields["prompt"].lower():
            return v2_error(403, "content_moderation", MODERATION_MESSAGE)
        seed = int(fields.get("seed", "0")) or random.randint(1, V2_MAX_SEED)
        fmt = fields.get("output_format", "png")
        width, height = fields.get("aspect_ratio", "1:1").split(":")
        image = _image(f"{width}x{height}", state.image_side, fmt)
        if accept == "application/json":
            encoded = base64.b64encode(image).decode()
            return respond(200, {"image": encoded, "finish_reason": outcome, "seed": seed})
        return web.Response(
            body=image,
            content_type=f"image/{fmt}",
            headers={"finish-reason": outcome, "seed": str(seed), "x-request-id": uuid.uuid4().hex},
        )

    async def text_to_image(request: web.Request) -> web.Response:
        if (refused := unauthorized(request)) is not None:
            return v1_error(401, "unauthorized", refused)
        engine = request.match_info["engine"]
        if engine != SDXL_ENGINE:
            return v1_error(404, "not_found", f"The specified engine (ID {engine}) was not found.")
        accept = request.headers.get("Accept") or "application/json"
        if accept not in ("application/json", "image/png"):
            return v1_error(400, "bad_request", "accept: must be application/json or image/png")
        try:
            body = await request.json() if request.content_type == "application/json" else None
        except ValueError:
            body = None
        if not isinstance(body, dict):
            return v1_error(400, "bad_request", "body: must be a JSON object")
        problem = _validate_v1(body, accept)
        if problem is not None:
            return v1_error(400, *problem)
        outcome = state.next_outcome()
        texts = [p["text"] for p in body["text_prompts"] if p.get("weight", 1) > 0]
        if outcome == MODERATED or any(state.forbidden_word.lower() in t.lower() for t in texts):
            return v1_error(400, "invalid_prompts", "One or more prompts contains filtered words.")
        samples, seed = body.get("samples", 1), body.get("seed", 0)
        size = f"{body['width']}x{body['height']}"
        artifacts = []
        for index in range(samples):
            # A given seed numbers the samples seed, seed+1...; 0 asks for random ones.
            artifact_seed = (seed + index) % (V1_MAX_SEED + 1)
            if seed == 0:
                artifact_seed = random.randint(1, V1_MAX_SEED)
            artifacts.append({
                "base64": base64.b64encode(png(size, state.image_side)).decode(),
                "finishReason": outcome if index == samples - 1 else SUCCESS,
                "seed": artifact_seed,
            })  # fmt: skip
        if accept == "image/png":
            [only] = artifacts
            return web.Response(
                body=base64.b64decode(only["base64"]),
                content_type="image/png",
                headers={"Finish-Reason": only["finishReason"], "Seed": str(only["seed"])},
            )
        return respond(200, artifacts if state.v1_bare_list else {"artifacts": artifacts})

    async def balance(request: web.Request) -> web.Response:
        if (refused := unauthorized(request)) is not None:
            return v1_error(401, "unauthorized", refused)
        return respond(200, {"credits": state.balance})

    app.router.add_post("/v2beta/stable-image/generate/{endpoint:core|ultra|sd3}", generate_v2)
    app.router.add_post("/v1/generation/{engine}/text-to-image", text_to_image)
    app.router.add_get("/v1/user/balance", balance)
    return app


@contextlib.asynccontextmanager
async def running_stability(
    state: StabilityState | None = None,
) -> AsyncIterator[tuple[str, StabilityState]]:
    """Serve the double on 127.0.0.1 for the duration of the ``async with``.

    Yields:
        ``(base_url, state)``.
    """
    state = state or StabilityState()
    async with serve(stability_app(state)) as base_url:
        yield base_url, state


def _image(size: str, side: int, fmt: str) -> bytes:
    """Real image bytes in ``fmt`` (png, jpeg or webp) with the orientation of ``size``."""
    if fmt == "png":
        return png(size, side)
    with Image.open(io.BytesIO(png(size, side))) as image:
        buffer = io.BytesIO()
        image.save(buffer, format=fmt.upper())
    return buffer.getvalue()


def _int(value: Any) -> int | None:
    try:
        return int(value)
    except (TypeError, ValueError):
        return None


def _validate_v2(endpoint: str, fields: dict[str, str], files: dict[str, bytes]) -> list[str]:
    """README §2a field rules; the list of problems (empty when acceptable)."""
    problems = []
    prompt = fields.get("prompt", "")
    if not 1 <= len(prompt) <= V2_MAX_PROMPT:
        problems.append(f"prompt: must be between 1 and {V2_MAX_PROMPT} characters")
    if len(fields.get("negative_prompt", "")) > V2_MAX_PROMPT:
        problems.append(f"negative_prompt: must be at most {V2_MAX_PROMPT} characters")
    if fields.get("aspect_ratio", "1:1") not in V2_ASPECTS:
        problems.append(f"aspect_ratio: must be one of {', '.join(V2_ASPECTS)}")
    seed = _int(fields.get("seed", "0"))
    if seed is None or not 0 <= seed <= V2_MAX_SEED:
        problems.append(f"seed: must be an integer between 0 and {V2_MAX_SEED}")
    formats = V2_FORMATS[endpoint]
    if fields.get("output_format", "png") not in formats:
        problems.append(f"output_format: must be one of {', '.join(formats)}")
    if endpoint == "sd3":
        if fields.get("model", SD3_MODELS[0]) not in SD3_MODELS:
            problems.append(f"model: must be one of {', '.join(SD3_MODELS)}")
        mode = fields.get("mode", "text-to-image")
        if mode not in ("text-to-image", "image-to-image"):
            problems.append("mode: must be text-to-image or image-to-image")
        elif mode == "image-to-image" and ("image" not in files or "strength" not in fields):
            problems.append("image, strength: required when mode is image-to-image")
    elif "model" in fields:
        problems.append(f"model: not accepted by the {endpoint} endpoint")
    return problems


def _validate_v1(body: dict[str, Any], accept: str) -> tuple[str, str] | None:
    """stability-v1.json text-to-image rules for the SDXL engine; (name, message) or None."""
    prompts = body.get("text_prompts")
    if not isinstance(prompts, list) or not prompts:
        return "bad_request", "text_prompts: must contain at least one prompt"
    for prompt in prompts:
        text = prompt.get("text") if isinstance(prompt, dict) else None
        weight = prompt.get("weight", 1) if isinstance(prompt, dict) else None
        if not isinstance(text, str) or not 1 <= len(text) <= V1_MAX_PROMPT:
            return "bad_request", f"text_prompts: text must be 1 to {V1_MAX_PROMPT} characters"
        if isinstance(weight, bool) or not isinstance(weight, (int, float)):
            return "bad_request", "text_prompts: weight must be a number"
    size = (body.get("width", 512), body.get("height", 512))
    if size not in SDXL_SIZES:
        allowed = ", ".join(f"{w}x{h}" for w, h in sorted(SDXL_SIZES))
        return (
            "invalid_height_or_width",
            f"for stable-diffusion-xl-1024-v1-0 the allowed dimensions are {allowed}, "
            f"but we received {size[0]}x{size[1]}",
        )
    samples = body.get("samples", 1)
    if isinstance(samples, bool) or not isinstance(samples, int) or not 1 <= samples <= 10:
        return "bad_request", "samples: must be an integer between 1 and 10"
    if accept == "image/png" and samples != 1:
        return (
            "invalid_samples",
            "Sample count may only be greater than 1 when the accept header is set to "
            "application/json",
        )
    seed = body.get("seed", 0)
    if isinstance(seed, bool) or not isinstance(seed, int) or not 0 <= seed <= V1_MAX_SEED:
        return "bad_request", f"seed: must be an integer between 0 and {V1_MAX_SEED}"
    return None
