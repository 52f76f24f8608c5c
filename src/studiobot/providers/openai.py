"""OpenAI Images API adapter (``POST /images/generations``), synchronous.

Rules come from the contracts README §1 and the OpenAPI extract ``openai-images.json``.
"""

from __future__ import annotations

import base64
import binascii
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
    Unavailable,
)

# Aspect ratio -> `size` per model (README §1 `size`); gpt-image-1's fixed sizes give only these.
_SIZES: dict[str, dict[str, str]] = {
    "gpt-image-1": {"1:1": "1024x1024", "3:2": "1536x1024", "2:3": "1024x1536"},
    "dall-e-3": {"1:1": "1024x1024", "16:9": "1792x1024", "9:16": "1024x1792"},
}
# README §1 `n`: dall-e-3 takes only n=1. gpt-image-1 allows 10; we cap at 4 to bound the bill.
_MAX_IMAGES = {"gpt-image-1": 4, "dall-e-3": 1}
_DEFAULT_CREDITS = {"gpt-image-1": 4, "dall-e-3": 4}
_MODELS = tuple(_SIZES)  # the first is the default

# README §1 errors: content policy is an HTTP 400 carrying one of these codes.
_CONTENT_CODES = frozenset({"moderation_blocked", "content_policy_violation"})


def _aspects(model: str) -> tuple[str, ...]:
    """Aspect ratios ``model`` supports, in :data:`ASPECT_RATIOS` order."""
    return tuple(a for a in ASPECT_RATIOS if a in _SIZES[model])


class OpenAIProvider(Synchronous):
    """Adapter for the OpenAI Images API, models ``gpt-image-1`` (default) and ``dall-e-3``.

    ``submit`` answers :class:`Finished` with inline PNG bytes; there is nothing to poll or cancel.
    ``capabilities`` describes each model's aspect ratios and image limit
    (``Capabilities.aspects_for``/``max_images_for``); ``submit`` checks again and raises BadRequest.

    Args:
        base_url: API root (README §1: ``https://api.openai.com/v1``).
        credits_per_image: Platform credits per image by model; merged over the defaults
            (4 for each model).
        timeout: Seconds allowed per read/write; generations take tens of seconds.
    """

    name = "openai"

    def __init__(
        self,
        *,
        base_url: str = "https://api.openai.com/v1",
        credits_per_image: dict[str, int] | None = None,
        timeout: float = 120.0,
    ) -> None:
        self.capabilities = Capabilities(
            models=_MODELS,
            aspects=tuple(a for a in ASPECT_RATIOS if any(a in s for s in _SIZES.values())),
            max_images=_MAX_IMAGES[_MODELS[0]],
            is_async=False,
            can_cancel=False,
            negative_prompt=False,  # README §1: no negative prompt parameter
            seed=False,  # README §1: no seed parameter
            webhooks=False,
            model_aspects={m: _aspects(m) for m in _MODELS},
            model_max_images=dict(_MAX_IMAGES),
        )
        self._credits = {**_DEFAULT_CREDITS, **(credits_per_image or {})}
        self._client = http.make_client(base_url, timeout=timeout)

    def price(self, request: ImageRequest) -> int:
        """Credits for ``request``: the model's per-image price times ``count``.

        Raises:
            BadRequest: The model is not one this adapter offers.
        """
        model = self._model(request)
        return self._credits[model] * request.count

    async def submit(self, request: ImageRequest, key: ProviderKey | None) -> Finished:
        """Generate images synchronously.

        Returns:
            Finished with one PNG ``GeneratedImage(data=...)`` per image (dall-e-3 also gives a
            ``revised_prompt``).

        Raises:
            BadRequest: Unsupported model/aspect/count, seed or negative prompt given, or OpenAI
                rejected the options (HTTP 400/404/422).
            ContentRejected: HTTP 400 ``moderation_blocked`` / ``content_policy_violation``.
            AuthError: No key, HTTP 401, or HTTP 403 (region or project permissions).
            QuotaExhausted: HTTP 429 ``insufficient_quota``.
            RateLimited: Other HTTP 429, with ``Retry-After`` when sent.
            Unavailable: 5xx, timeout, connection error or a body that is not an ImagesResponse.
                The POST is never retried here: a repeat could bill twice.
        """
        secret = http.require_secret(key, "OpenAI")
        model = self._model(request)
        size = _SIZES[model].get(request.aspect)
        if size is None:
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
        if request.seed is not None or request.negative_prompt is not None:
            raise BadRequest(
                "seed/negative_prompt sent to openai",
                user_message="OpenAI image models do not support a seed or a negative prompt.",
            )
        body: dict[str, Any] = {
            "model": model,
            "prompt": request.prompt,
            "n": request.count,
            "size": size,
        }
        if model == "dall-e-3":
            # README §1: DALL-E defaults to short-lived URLs; gpt-image-1 answers 400 "Unknown
            # parameter: 'response_format'" if this is sent, and always returns base64.
            body["response_format"] = "b64_json"
        response = await http.send(
            self._client,
            "POST",
            "/images/generations",
            retry_idempotent=False,
            json=body,
            headers=http.bearer(secret),
        )
        _raise_for_status(response, secret)
        return _parse_images(http.parse_json(response))

    async def check_key(self, key: ProviderKey) -> None:
        """Validate ``key`` with ``GET /models``, a cheap authenticated call that bills nothing.

        Raises:
            AuthError: HTTP 401/403.
            QuotaExhausted, RateLimited, BadRequest, Unavailable: As for :meth:`submit`.
        """
        secret = http.require_secret(key, "OpenAI")
        response = await http.send(
            self._client, "GET", "/models", retry_idempotent=True, headers=http.bearer(secret)
        )
        _raise_for_status(response, secret)

    async def aclose(self) -> None:
        """Close the HTTP client."""
        await self._client.aclose()

    def _model(self, request: ImageRequest) -> str:
        model = request.model or _MODELS[0]
        if model not in _SIZES:
            raise BadRequest(
                f"unknown openai model {model!r}",
                user_message=f"OpenAI model must be one of: {', '.join(_MODELS)}.",
            )
        return model




def _raise_for_status(response: httpx.Response, secret: str) -> None:
    """Map a non-2xx answer to the error taxonomy (README §1 errors); return on 2xx."""
    status = response.status_code
    if 200 <= status < 300:
        return
    code, kind, message = _error_fields(response)
    detail = http.redact(f"openai HTTP {status} {code or kind or ''}: {message}", secret)
    if status == 400 and code in _CONTENT_CODES:
        raise ContentRejected(detail)
    if status == 401:
        raise AuthError(detail)
    if status == 403:
        raise AuthError(
            detail,
            user_message=(
                "OpenAI refused this key for image generation: its region, organisation or "
                "project permissions do not allow it. Check the key with /keys."
            ),
        )
    if status == 429:
        if "insufficient_quota" in (code, kind):
            raise QuotaExhausted(detail)
        raise RateLimited(detail, retry_after=http.retry_after_seconds(response))
    if 400 <= status < 500:
        raise BadRequest(detail)
    raise Unavailable(detail)  # 5xx, or a redirect we do not follow


def _error_fields(response: httpx.Response) -> tuple[str | None, str | None, str]:
    """(code, type, message) from an ``ErrorResponse`` body, tolerating any other body."""
    try:
        error = response.json().get("error")
    except (ValueError, AttributeError):
        error = None
    if not isinstance(error, dict):
        return None, None, response.text
    code, kind = error.get("code"), error.get("type")
    return (
        code if isinstance(code, str) else None,
        kind if isinstance(kind, str) else None,
        str(error.get("message") or ""),
    )


def _parse_images(payload: Any) -> Finished:
    """Turn an ``ImagesResponse`` into Finished; anything else is Unavailable (malformed)."""
    data = payload.get("data") if isinstance(payload, dict) else None
    if not isinstance(data, list) or not data:
        raise Unavailable("openai answered 2xx without an ImagesResponse `data` list")
    images = []
    revised = None
    for item in data:
        encoded = item.get("b64_json") if isinstance(item, dict) else None
        if not isinstance(encoded, str) or not encoded:
            raise Unavailable("openai ImagesResponse item has no b64_json")
        try:
            raw = base64.b64decode(encoded, validate=True)
        except (binascii.Error, ValueError):
            raise Unavailable("openai ImagesResponse b64_json is not valid base64") from None
        if not raw:
            raise Unavailable("openai ImagesResponse b64_json is empty")
        images.append(GeneratedImage(data=raw))
        if revised is None and isinstance(item.get("revised_prompt"), str):
            revised = item["revised_prompt"]
    return Finished(images=tuple(images), revised_prompt=revised)
