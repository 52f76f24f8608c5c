"""Stability AI adapter (synchronous): v2beta Stable Image (core, ultra, sd3) and v1 SDXL.

Rules come from the contracts README §2 (§2a v2beta Stable Image, §2b v1 SDXL) and the data files
``stability-v2beta.yaml`` and ``stability-v1.json``.
"""

from __future__ import annotations

import base64
import binascii
import math
from typing import Any

import httpx

from studiobot.providers import http
from studiobot.providers.base import (
    ASPECT_RATIOS,
    Capabilities,
    Finished,
    GeneratedImage,
    ImageRequest,
    ProviderKey,
    Synchronous,
)
from studiobot.providers.errors import (
    AuthError,
    BadRequest,
    ContentRejected,
    QuotaExhausted,
    RateLimited,
    TaskFailed,
    Unavailable,
)

# README §2a endpoints: model -> (path, value of the sd3 `model` form field or None).
_V2_ROUTES: dict[str, tuple[str, str | None]] = {
    "core": ("/v2beta/stable-image/generate/core", None),
    "ultra": ("/v2beta/stable-image/generate/ultra", None),
    "sd3.5-large": ("/v2beta/stable-image/generate/sd3", "sd3.5-large"),
    "sd3.5-large-turbo": ("/v2beta/stable-image/generate/sd3", "sd3.5-large-turbo"),
    "sd3.5-medium": ("/v2beta/stable-image/generate/sd3", "sd3.5-medium"),
}
# README §2a: turbo models ignore `negative_prompt`, so a user's negative prompt would silently do
# nothing; submit refuses it instead.
_NO_NEGATIVE = frozenset({"sd3.5-large-turbo"})
_V2_ASPECTS = frozenset({"16:9", "1:1", "21:9", "2:3", "3:2", "4:5", "5:4", "9:16", "9:21"})
_V2_MAX_SEED = 4294967294  # README §2a `seed` 0-4294967294 (0 = random)
_V2_MAX_PROMPT = 10000

_SDXL = "sdxl-1.0"
_SDXL_PATH = "/v1/generation/stable-diffusion-xl-1024-v1-0/text-to-image"
# README §2b: the only sizes the SDXL engine accepts (UNVERIFIED: the public v1 spec predates SDXL).
_SDXL_SIZES: tuple[tuple[int, int], ...] = (
    (1024, 1024), (1152, 896), (896, 1152), (1216, 832), (832, 1216),
    (1344, 768), (768, 1344), (1536, 640), (640, 1536),
)  # fmt: skip
# An aspect is offered on SDXL only when its closest allowed size is within this relative error of
# its ratio (4:3 -> 1152x896 is 3.6% off; anything looser would visibly distort the request).
_SDXL_ASPECT_TOLERANCE = 0.05
_V1_MAX_SEED = 4294967295  # stability-v1.json `Seed` (uint32)
_V1_MAX_PROMPT = 2000  # stability-v1.json `TextPrompt.text`
_SDXL_MAX_IMAGES = 4  # v1 `samples` allows 10; capped at 4 to bound the bill

_MODELS = (*_V2_ROUTES, _SDXL)  # the first is the default
_MAX_IMAGES = {**{m: 1 for m in _V2_ROUTES}, _SDXL: _SDXL_MAX_IMAGES}  # README §2a: one per call
# Platform credits per image, 1 credit ~ $0.01 like Stability's own credit (README §2a pricing:
# ultra 8, core 3, sd3.5-large 6.5, rounded up). UNVERIFIED: turbo 4, medium 3.5 and SDXL ~0.9 are
# from memory of Stability's price list, not from the contract.
_DEFAULT_CREDITS = {
    "core": 3,
    "ultra": 8,
    "sd3.5-large": 7,
    "sd3.5-large-turbo": 4,
    "sd3.5-medium": 4,
    _SDXL: 1,
}

# README §2a/§2b errors: names that mean the moderation system refused the prompt
# (v2beta 403 content_moderation; v1 400 invalid_prompts, "contains filtered words").
_CONTENT_NAMES = frozenset({"content_moderation", "invalid_prompts"})
_PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
_FILTERED_MESSAGE = (
    "The provider's content filter blocked the finished image. Try rewording the prompt; "
    "you were not charged."
)


def _ratio(aspect: str) -> float:
    width, height = aspect.split(":")
    return int(width) / int(height)


def _sdxl_size(aspect: str) -> tuple[int, int] | None:
    """The allowed SDXL size closest to ``aspect``, or None when none is close enough."""
    target = math.log(_ratio(aspect))
    best = min(_SDXL_SIZES, key=lambda size: abs(math.log(size[0] / size[1]) - target))
    error = abs(best[0] / best[1] / _ratio(aspect) - 1)
    return best if error <= _SDXL_ASPECT_TOLERANCE else None


_SDXL_FOR_ASPECT = {a: s for a in ASPECT_RATIOS if (s := _sdxl_size(a)) is not None}


def _aspects(model: str) -> tuple[str, ...]:
    """Aspect ratios ``model`` supports, in :data:`ASPECT_RATIOS` order."""
    allowed = _SDXL_FOR_ASPECT if model == _SDXL else _V2_ASPECTS
    return tuple(a for a in ASPECT_RATIOS if a in allowed)


class StabilityProvider(Synchronous):
    """Adapter for Stability AI: Stable Image ``core`` (default), ``ultra``, SD 3.5 and SDXL 1.0.

    ``submit`` answers :class:`Finished` with inline PNG bytes and the seed used; there is nothing
    to poll or cancel. v2beta models make one image per call and offer the aspects in the v2beta
    ``aspect_ratio`` enum (not 4:3 or 3:4); SDXL makes up to 4 and maps each aspect to its closest
    fixed size. Outputs the vendor marks ``CONTENT_FILTERED`` (blurred) are never delivered.

    Args:
        base_url: API root (README §2: ``https://api.stability.ai``).
        credits_per_image: Platform credits per image by model; merged over the defaults
            (core 3, ultra 8, sd3.5-large 7, sd3.5-large-turbo 4, sd3.5-medium 4, sdxl-1.0 1).
        timeout: Seconds allowed per read/write; generations take tens of seconds.
        accept_json: Ask v2beta for ``Accept: application/json`` (base64 in a JSON body) instead
            of ``image/*`` (raw bytes, seed and finish reason in headers). Either answer is read
            whatever was asked.
    """

    name = "stability"

    def __init__(
        self,
        *,
        base_url: str = "https://api.stability.ai",
        credits_per_image: dict[str, int] | None = None,
        timeout: float = 120.0,
        accept_json: bool = False,
    ) -> None:
        self.capabilities = Capabilities(
            models=_MODELS,
            aspects=tuple(a for a in ASPECT_RATIOS if any(a in _aspects(m) for m in _MODELS)),
            max_images=max(_MAX_IMAGES.values()),
            is_async=False,
            can_cancel=False,
            negative_prompt=True,  # all models but *-turbo, which submit refuses
            seed=True,
            webhooks=False,
            model_aspects={m: _aspects(m) for m in _MODELS},
            model_max_images=dict(_MAX_IMAGES),
        )
        self._credits = {**_DEFAULT_CREDITS, **(credits_per_image or {})}
        self._accept = "application/json" if accept_json else "image/*"
        self._client = http.make_client(base_url, timeout=timeout)

    def price(self, request: ImageRequest) -> int:
        """Credits for ``request``: the model's per-image price times ``count``.

        Raises:
            BadRequest: The model is not one this adapter offers.
        """
        return self._credits[self._model(request)] * request.count

    async def submit(self, request: ImageRequest, key: ProviderKey | None) -> Finished:
        """Generate images synchronously (v2beta multipart for core/ultra/sd3.5, v1 JSON for SDXL).

        Returns:
            Finished with one PNG ``GeneratedImage(data=..., seed=...)`` per image.

        Raises:
            BadRequest: Unknown model, unsupported operation/aspect/count, seed out of range,
                prompt too long, a negative prompt for a turbo model, or HTTP 400/404/413/422.
            ContentRejected: HTTP 403 ``content_moderation`` (v2beta), HTTP 400 ``invalid_prompts``
                (v1), or an output whose finish reason is ``CONTENT_FILTERED``.
            TaskFailed: A v1 artifact with finish reason ``ERROR``.
            AuthError: No key, HTTP 401, or another HTTP 403.
            QuotaExhausted: HTTP 402 (no credits left).
            RateLimited: HTTP 429, with ``Retry-After`` when sent.
            Unavailable: 5xx, timeout, connection error, or a 2xx body that holds no PNG. The POST
                is never retried here: a repeat could bill twice.
        """
        secret = http.require_secret(key, "Stability AI")
        model = self._model(request)
        self._check_options(model, request)
        if model == _SDXL:
            return await self._submit_v1(request, secret)
        return await self._submit_v2(model, request, secret)

    async def check_key(self, key: ProviderKey) -> None:
        """Validate ``key`` with ``GET /v1/user/balance`` (stability-v1.json), which bills nothing.

        Raises:
            AuthError: HTTP 401/403.
            QuotaExhausted, RateLimited, BadRequest, Unavailable: As for :meth:`submit`.
        """
        secret = http.require_secret(key, "Stability AI")
        response = await http.send(
            self._client,
            "GET",
            "/v1/user/balance",
            retry_idempotent=True,
            headers={**http.bearer(secret), "Accept": "application/json"},
        )
        _raise_for_status(response, secret)

    async def aclose(self) -> None:
        """Close the HTTP client."""
        await self._client.aclose()

    def _model(self, request: ImageRequest) -> str:
        model = request.model or _MODELS[0]
        if model not in _MAX_IMAGES:
            raise BadRequest(
                f"unknown stability model {model!r}",
                user_message=f"Stability AI model must be one of: {', '.join(_MODELS)}.",
            )
        return model

    def _check_options(self, model: str, request: ImageRequest) -> None:
        """Refuse what the vendor would refuse, before any paid request is sent."""
        if request.operation != "generate":
            raise BadRequest(
                f"stability {request.operation} unsupported",
                user_message="Stability AI here only makes new images from a prompt.",
            )
        if request.aspect not in self.capabilities.aspects_for(model):
            supported = ", ".join(self.capabilities.aspects_for(model))
            raise BadRequest(
                f"aspect {request.aspect} unsupported by {model}",
                user_message=f"{model} supports only these aspect ratios: {supported}.",
            )
        if not 1 <= request.count <= _MAX_IMAGES[model]:
            raise BadRequest(
                f"count {request.count} unsupported by {model}",
                user_message=f"{model} makes 1 to {_MAX_IMAGES[model]} images per request.",
            )
        if request.negative_prompt and model in _NO_NEGATIVE:
            raise BadRequest(
                f"negative_prompt sent to {model}",
                user_message=f"{model} ignores negative prompts; remove it or pick another model.",
            )
        max_seed = _V1_MAX_SEED if model == _SDXL else _V2_MAX_SEED
        if request.seed is not None and not 0 <= request.seed <= max_seed:
            raise BadRequest(
                f"seed {request.seed} out of range for {model}",
                user_message=f"The seed must be between 0 and {max_seed}.",
            )
        max_prompt = _V1_MAX_PROMPT if model == _SDXL else _V2_MAX_PROMPT
        for text in (request.prompt, request.negative_prompt or ""):
            if len(text) > max_prompt:
                raise BadRequest(
                    f"prompt longer than {max_prompt} characters for {model}",
                    user_message=f"{model} accepts prompts of up to {max_prompt} characters.",
                )

    async def _submit_v2(self, model: str, request: ImageRequest, secret: str) -> Finished:
        """``POST /v2beta/stable-image/generate/{core|ultra|sd3}`` (README §2a)."""
        path, sd3_model = _V2_ROUTES[model]
        fields = {"prompt": request.prompt, "aspect_ratio": request.aspect, "output_format": "png"}
        if sd3_model is not None:
            fields["model"] = sd3_model
        if request.negative_prompt:
            fields["negative_prompt"] = request.negative_prompt
        if request.seed is not None:
            fields["seed"] = str(request.seed)
        response = await http.send(
            self._client,
            "POST",
            path,
            retry_idempotent=False,
            data=fields,
            # README §2a: the API takes multipart/form-data only; an empty file part makes httpx
            # encode text-only fields as multipart instead of urlencoded.
            files={"none": b""},
            headers={**http.bearer(secret), "Accept": self._accept},
        )
        _raise_for_status(response, secret)
        return Finished(images=(_read_v2(response, secret),))

    async def _submit_v1(self, request: ImageRequest, secret: str) -> Finished:
        """``POST /v1/generation/stable-diffusion-xl-1024-v1-0/text-to-image`` (README §2b)."""
        width, height = _SDXL_FOR_ASPECT[request.aspect]
        prompts: list[dict[str, Any]] = [{"text": request.prompt, "weight": 1}]
        if request.negative_prompt:
            prompts.append({"text": request.negative_prompt, "weight": -1})
        body: dict[str, Any] = {
            "text_prompts": prompts,
            "width": width,
            "height": height,
            "samples": request.count,
        }
        if request.seed is not None:
            body["seed"] = request.seed
        response = await http.send(
            self._client,
            "POST",
            _SDXL_PATH,
            retry_idempotent=False,
            json=body,
            # README §2b: `samples` > 1 needs JSON; image/png allows one image only.
            headers={**http.bearer(secret), "Accept": "application/json"},
        )
        _raise_for_status(response, secret)
        return _read_v1(http.parse_json(response), secret)


def _raise_for_status(response: httpx.Response, secret: str) -> None:
    """Map a non-2xx answer to the error taxonomy (README §2a/§2b errors); return on 2xx."""
    status = response.status_code
    if 200 <= status < 300:
        return
    name, message = _error_fields(response)
    detail = http.redact(f"stability HTTP {status} {name or ''}: {message}", secret)
    if status in (400, 403) and name in _CONTENT_NAMES:
        raise ContentRejected(detail)
    if status == 401:
        raise AuthError(detail)
    if status == 402:  # README §2a: 402 is UNVERIFIED but documented as "insufficient credits"
        raise QuotaExhausted(
            detail,
            user_message="The Stability AI account has run out of credits; you were not charged.",
        )
    if status == 403:
        raise AuthError(
            detail,
            user_message=(
                "Stability AI refused this key for this request (permission denied). "
                "Check the key with /keys."
            ),
        )
    if status == 429:
        raise RateLimited(detail, retry_after=http.retry_after_seconds(response))
    if status == 422:
        raise BadRequest(
            detail,
            user_message=(
                "Stability AI rejected this prompt (for example, a language it does not "
                "support). Try rewording it; you were not charged."
            ),
        )
    if 400 <= status < 500:
        raise BadRequest(detail)
    raise Unavailable(detail)  # 5xx, or a redirect we do not follow


def _error_fields(response: httpx.Response) -> tuple[str | None, str]:
    """(name, message) from a v2beta ``{id, name, errors[]}`` or v1 ``{id, name, message}`` body.

    Any other body gives (None, its raw text).
    """
    try:
        body = response.json()
    except ValueError:
        return None, response.text
    if not isinstance(body, dict):
        return None, response.text
    name = body.get("name") if isinstance(body.get("name"), str) else None
    errors, message = body.get("errors"), body.get("message")
    if isinstance(errors, list):
        return name, "; ".join(str(e) for e in errors)
    if isinstance(message, str):
        return name, message
    return name, response.text


def _check_finish(reason: Any, secret: str) -> None:
    """Raise for a finish reason other than SUCCESS; a missing one counts as success."""
    if reason is None or reason == "SUCCESS":
        return
    if reason == "CONTENT_FILTERED":
        # The vendor sends a blurred image; delivering it would bill the user for nothing.
        raise ContentRejected(
            "stability finish reason CONTENT_FILTERED", user_message=_FILTERED_MESSAGE
        )
    raise TaskFailed(http.redact(f"stability finish reason {reason!r}", secret))


def _read_v2(response: httpx.Response, secret: str) -> GeneratedImage:
    """One image from a v2beta answer: raw bytes + headers, or ``{image, finish_reason, seed}``."""
    if response.headers.get("content-type", "").startswith("application/json"):
        payload = http.parse_json(response)
        if not isinstance(payload, dict):
            raise Unavailable("stability v2beta JSON answer is not an object")
        _check_finish(payload.get("finish_reason"), secret)
        data = _decode_base64(payload.get("image"))
        seed = payload.get("seed")
    else:
        _check_finish(response.headers.get("finish-reason"), secret)
        data = response.content
        seed = response.headers.get("seed")
    return GeneratedImage(data=_require_png(data), seed=_seed(seed))


def _read_v1(payload: Any, secret: str) -> Finished:
    """Images from a v1 answer: a list of artifacts, or ``{"artifacts": [...]}`` (README §2b).

    A single filtered or failed artifact fails the whole request: the job is priced and refunded
    as a whole, so delivering a partial set would charge for images never made.
    """
    artifacts = payload.get("artifacts") if isinstance(payload, dict) else payload
    if not isinstance(artifacts, list) or not artifacts:
        raise Unavailable("stability v1 answered 2xx without artifacts")
    if not all(isinstance(a, dict) for a in artifacts):
        raise Unavailable("stability v1 artifact is not an object")
    reasons = [a.get("finishReason") for a in artifacts]
    if "CONTENT_FILTERED" in reasons:  # checked first: it outranks ERROR (refund + reword advice)
        _check_finish("CONTENT_FILTERED", secret)
    for reason in reasons:
        _check_finish(reason, secret)
    images = tuple(
        GeneratedImage(
            data=_require_png(_decode_base64(a.get("base64"))), seed=_seed(a.get("seed"))
        )
        for a in artifacts
    )
    return Finished(images=images)


def _decode_base64(encoded: Any) -> bytes:
    if not isinstance(encoded, str) or not encoded:
        raise Unavailable("stability answer has no base64 image")
    try:
        return base64.b64decode(encoded, validate=True)
    except (binascii.Error, ValueError):
        raise Unavailable("stability answer image is not valid base64") from None


def _require_png(data: bytes) -> bytes:
    # We always ask for PNG; anything else (an HTML error page with a 200, an empty body) is a
    # broken answer, not an image to hand to users.
    if not data.startswith(_PNG_MAGIC):
        raise Unavailable("stability answered 2xx without PNG image data")
    return data


def _seed(value: Any) -> int | None:
    """A seed from a header string or a JSON number; None when absent or unreadable."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, float) and value.is_integer():  # stability-v1.json types it `number`
        return int(value)
    if isinstance(value, str) and value.strip().isdigit():
        return int(value.strip())
    return None
