"""Hugging Face Inference Providers adapter (the ``hf-inference`` provider), synchronous.

Rules come from the contracts README §6 and the task schema ``hf-text-to-image-input.json``:
``POST {router}/hf-inference/models/{model_id}`` with ``{"inputs": prompt, "parameters": {...}}``
answers the raw image bytes. The token is checked against the Hub (``GET /api/whoami-v2``), which
lives on another host than the router.
"""

from __future__ import annotations

import math
from typing import Any
from urllib.parse import quote

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
    QuotaExhausted,
    RateLimited,
    Unavailable,
)

# Aspect ratio -> (width, height): about one megapixel, both sides multiples of 64, the buckets
# SDXL and FLUX were trained on.
SIZES: dict[str, tuple[int, int]] = {
    "1:1": (1024, 1024),
    "16:9": (1344, 768),
    "9:16": (768, 1344),
    "4:3": (1152, 896),
    "3:4": (896, 1152),
    "3:2": (1216, 832),
    "2:3": (832, 1216),
}

# UNVERIFIED (README §6, open item 6): the router may expect the task spec's camelCase names
# (negativePrompt as a list, targetSize {width, height}). We follow the official Python client,
# which sends these snake_case names; change them here only.
PARAM_NEGATIVE_PROMPT = "negative_prompt"
PARAM_WIDTH = "width"
PARAM_HEIGHT = "height"
PARAM_SEED = "seed"

# One POST per job keeps billing simple: a job of N images would otherwise be N paid calls that
# can half-fail.
_MAX_IMAGES = 1
# Key checks are a small Hub call; they should not inherit the long generation timeout.
_CHECK_TIMEOUT_SECONDS = 30.0

_DEFAULT_MODELS = ("black-forest-labs/FLUX.1-schnell", "stabilityai/stable-diffusion-xl-base-1.0")

_PERMISSION_MESSAGE = (
    "Hugging Face refused this token for image generation: it lacks the \"Make calls to "
    "Inference Providers\" permission. Create a fine-grained token with it and update /keys."
)
_CREDITS_MESSAGE = (
    "The Hugging Face account has used up its monthly Inference Providers credits; "
    "you were not charged."
)
_NOT_SERVED_MESSAGE = (
    "Hugging Face does not serve this model through its HF Inference provider right now; "
    "you were not charged."
)


class HuggingFaceProvider(Synchronous):
    """Adapter for Hugging Face Inference Providers, ``hf-inference`` text-to-image models.

    ``submit`` answers :class:`Finished` with one inline image (PNG asked for, JPEG accepted);
    there is nothing to poll or cancel. A model that is still loading answers HTTP 503 with an
    ``estimated_time``: that becomes :class:`RateLimited` with ``retry_after`` set to it, because
    RateLimited is the retryable error whose wait the scheduler honours.

    Args:
        base_url: Router root for the provider (README §6:
            ``https://router.huggingface.co/hf-inference``); requests go to
            ``{base_url}/models/{model_id}``.
        hub_url: Hub root for the token check (``{hub_url}/api/whoami-v2``).
        models: Model ids (``owner/name``); the first is the default.
        credits_per_image: Platform credits per image.
        timeout: Seconds allowed per read/write; a cold model can take a minute or more.
    """

    name = "huggingface"

    def __init__(
        self,
        *,
        base_url: str = "https://router.huggingface.co/hf-inference",
        hub_url: str = "https://huggingface.co",
        models: tuple[str, ...] = _DEFAULT_MODELS,
        credits_per_image: int = 1,
        timeout: float = 120.0,
    ) -> None:
        if not models:
            raise ValueError("HuggingFaceProvider needs at least one model")
        self.capabilities = Capabilities(
            models=tuple(models),
            aspects=tuple(a for a in ASPECT_RATIOS if a in SIZES),
            max_images=_MAX_IMAGES,
            is_async=False,
            can_cancel=False,
            # SDXL honours both; FLUX.1-schnell ignores a negative prompt (no per-model flag).
            negative_prompt=True,
            seed=True,
            webhooks=False,
        )
        self._credits_per_image = credits_per_image
        self._whoami_url = f"{hub_url.rstrip('/')}/api/whoami-v2"
        self._check_timeout = min(timeout, _CHECK_TIMEOUT_SECONDS)
        # One client for both hosts: the whoami call uses an absolute URL.
        self._client = http.make_client(base_url, timeout=timeout)

    def price(self, request: ImageRequest) -> int:
        """Credits for ``request``: ``credits_per_image`` times ``count``."""
        return self._credits_per_image * request.count

    async def submit(self, request: ImageRequest, key: ProviderKey | None) -> Finished:
        """Generate one image synchronously with ``POST /models/{model_id}``.

        Returns:
            Finished with one ``GeneratedImage(data=...)`` (PNG or JPEG bytes), carrying the
            request's seed when one was given.

        Raises:
            BadRequest: Unknown model, unsupported aspect, ``count`` other than 1, or HTTP
                400/404/422 (404: the model is not served by this provider).
            AuthError: No key, HTTP 401, or HTTP 403 (token without the Inference Providers
                permission).
            QuotaExhausted: HTTP 402 (monthly included credits used up).
            RateLimited: HTTP 429 (``Retry-After`` when sent), or HTTP 503 "model is currently
                loading" with ``retry_after`` = the body's ``estimated_time`` seconds.
            Unavailable: Other 5xx, timeout, connection error, or a 2xx that is not an image
                (e.g. a JSON body). The POST is never retried here: a repeat could bill twice.
        """
        secret = http.require_secret(key, "Hugging Face")
        model = request.model or self.capabilities.default_model
        if model not in self.capabilities.models:
            raise BadRequest(
                f"unknown huggingface model {model!r}",
                user_message="Hugging Face model must be one of: "
                f"{', '.join(self.capabilities.models)}.",
            )
        path = f"/models/{_model_path(model)}"
        response = await http.send(
            self._client,
            "POST",
            path,
            retry_idempotent=False,
            json={"inputs": request.prompt, "parameters": _parameters(request)},
            headers={**http.bearer(secret), "Accept": "image/png"},
        )
        _raise_for_status(response, secret)
        image = GeneratedImage(data=_image_bytes(response, secret), seed=request.seed)
        return Finished(images=(image,))

    async def check_key(self, key: ProviderKey) -> None:
        """Validate ``key`` with the Hub's ``GET /api/whoami-v2`` (free, authenticated).

        A token can pass this check and still lack the Inference Providers permission; that
        shows only on a generation (HTTP 403, AuthError from :meth:`submit`).

        Raises:
            AuthError: No key, or HTTP 401/403.
            RateLimited, BadRequest, Unavailable: As for :meth:`submit`; also Unavailable when
                the answer is not a JSON object.
        """
        secret = http.require_secret(key, "Hugging Face")
        response = await http.send(
            self._client,
            "GET",
            self._whoami_url,
            retry_idempotent=True,
            headers=http.bearer(secret),
            timeout=self._check_timeout,
        )
        _raise_for_status(response, secret)
        if not isinstance(http.parse_json(response), dict):
            raise Unavailable("huggingface whoami-v2 answered 2xx without a JSON object")

    async def aclose(self) -> None:
        """Close the HTTP client."""
        await self._client.aclose()


def _model_path(model: str) -> str:
    """``owner/name`` with each segment percent-encoded and the separating slash kept."""
    segments = model.split("/")
    if any(s in ("", ".", "..") for s in segments):
        raise BadRequest(
            f"huggingface model id {model!r} is malformed",
            user_message="This Hugging Face model is misconfigured; you were not charged.",
        )
    return "/".join(quote(s, safe="") for s in segments)


def _parameters(request: ImageRequest) -> dict[str, Any]:
    """The ``parameters`` object for ``request``, after checking what this provider supports."""
    size = SIZES.get(request.aspect)
    if size is None:
        raise BadRequest(
            f"aspect {request.aspect} unsupported",
            user_message=f"Supported aspect ratios: {', '.join(SIZES)}.",
        )
    if request.count != _MAX_IMAGES:
        raise BadRequest(
            f"count {request.count} unsupported",
            user_message="Hugging Face makes one image per request.",
        )
    width, height = size
    params: dict[str, Any] = {PARAM_WIDTH: width, PARAM_HEIGHT: height}
    if request.negative_prompt is not None:
        params[PARAM_NEGATIVE_PROMPT] = request.negative_prompt
    if request.seed is not None:
        params[PARAM_SEED] = request.seed
    return params


def _image_bytes(response: httpx.Response, secret: str) -> bytes:
    """The image body of a 2xx answer; anything else is Unavailable (README §6 response)."""
    media_type = response.headers.get("Content-Type", "").split(";")[0].strip().lower()
    if not media_type.startswith("image/"):
        what = media_type or "no content type"
        if media_type == "application/json":
            # A 2xx JSON body is an error the router passed on oddly; keep its reason for logs.
            what = f"JSON: {_error_text(response)}"
        raise Unavailable(http.redact(f"huggingface answered 2xx with {what}", secret))
    if not response.content:
        raise Unavailable(f"huggingface answered an empty {media_type} body")
    return response.content


def _raise_for_status(response: httpx.Response, secret: str) -> None:
    """Map a non-2xx answer to the error taxonomy (README §6 errors); return on 2xx."""
    status = response.status_code
    if 200 <= status < 300:
        return
    reason = _error_text(response)
    detail = http.redact(f"huggingface HTTP {status}: {reason}", secret)
    if status == 503 and _is_loading(response, reason):
        raise _warming_up(response, detail)
    if status == 401:
        raise AuthError(detail)
    if status == 403:
        raise AuthError(detail, user_message=_PERMISSION_MESSAGE)
    if status == 402:
        raise QuotaExhausted(detail, user_message=_CREDITS_MESSAGE)
    if status == 429:
        raise RateLimited(detail, retry_after=http.retry_after_seconds(response))
    if status == 404:
        raise BadRequest(detail, user_message=_NOT_SERVED_MESSAGE)
    if 400 <= status < 500:
        raise BadRequest(detail)
    raise Unavailable(detail)  # 5xx, or a redirect we do not follow


def _is_loading(response: httpx.Response, reason: str) -> bool:
    return _estimated_time(response) is not None or "currently loading" in reason.lower()


def _warming_up(response: httpx.Response, detail: str) -> RateLimited:
    """The 503 "Model X is currently loading" answer as a retryable wait."""
    wait = _estimated_time(response)
    if wait is None:
        wait = http.retry_after_seconds(response)
    if wait is None:
        message = "The model is warming up; we will retry shortly."
    else:
        message = f"The model is warming up; we will retry in about {max(1, math.ceil(wait))} s."
    return RateLimited(detail, retry_after=wait, user_message=message)


def _estimated_time(response: httpx.Response) -> float | None:
    """``estimated_time`` seconds from a loading body, when it is a finite number >= 0."""
    body = _json_object(response)
    value = body.get("estimated_time") if body else None
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    return float(value) if math.isfinite(value) and value >= 0 else None


def _error_text(response: httpx.Response) -> str:
    """``error`` of a ``{"error": ...}`` body (a string or a list of them), else the raw text."""
    body = _json_object(response)
    error = body.get("error") if body else None
    if isinstance(error, str):
        return error
    if isinstance(error, list) and error:
        return "; ".join(str(item) for item in error)
    return response.text


def _json_object(response: httpx.Response) -> dict[str, Any] | None:
    try:
        body = response.json()
    except ValueError:
        return None
    return body if isinstance(body, dict) else None
