"""Replicate adapter: create a prediction, then poll it (queue first, no ``Prefer: wait``).

Rules come from the contracts README §3 and the OpenAPI extract ``replicate-predictions.json``.
"""

from __future__ import annotations

import re
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
    Progress,
    ProviderKey,
    Submitted,
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

_RUNNING = frozenset({"starting", "processing"})
# Failure reasons that mean the safety checker refused the prompt or the output.
_SAFETY = re.compile(r"nsfw|safety|sensitive", re.IGNORECASE)
# Progress bars in model logs ("50%|#####     | 2/4"): the last one is the current step.
_PERCENT = re.compile(r"(\d{1,3})%")
# README §3 rate limits: 429 body "Request was throttled. Your rate limit resets in ~30s."
_RESETS_IN = re.compile(r"resets in ~?\s*(\d+(?:\.\d+)?)\s*s", re.IGNORECASE)
_MAX_IMAGES = 4  # flux-schnell `num_outputs` is 1-4


class ReplicateProvider:
    """Adapter for Replicate predictions (asynchronous, cancellable, webhook-capable).

    ``submit`` answers :class:`Submitted` with the prediction id; ``poll`` answers
    :class:`Progress` until the prediction ends, then :class:`Finished` with one
    ``GeneratedImage(url=...)`` per output file. Output URLs expire after an hour (README §3), so
    the finisher must download them promptly.

    Args:
        base_url: API root (README §3: ``https://api.replicate.com/v1``).
        models: ``owner/name`` (official models, e.g. ``black-forest-labs/flux-schnell``) or
            ``owner/name:<version hash>``; the first is the default. Inputs follow flux-schnell's
            schema (``prompt, aspect_ratio, num_outputs, seed, output_format``).
        credits_per_image: Platform credits per image.
        timeout: Seconds allowed per read/write; polls are quick, so this is short.
    """

    name = "replicate"

    def __init__(
        self,
        *,
        base_url: str = "https://api.replicate.com/v1",
        models: tuple[str, ...] = ("black-forest-labs/flux-schnell",),
        credits_per_image: int = 2,
        timeout: float = 30.0,
    ) -> None:
        if not models:
            raise ValueError("ReplicateProvider needs at least one model")
        self.capabilities = Capabilities(
            models=tuple(models),
            aspects=ASPECT_RATIOS,  # flux-schnell's aspect_ratio enum covers all of ours
            max_images=_MAX_IMAGES,
            is_async=True,
            can_cancel=True,
            negative_prompt=False,  # flux-schnell has no negative prompt input
            seed=True,
            webhooks=True,
        )
        self._credits_per_image = credits_per_image
        self._client = http.make_client(base_url, timeout=timeout)

    def price(self, request: ImageRequest) -> int:
        """Credits for ``request``: ``credits_per_image`` times ``count``."""
        return self._credits_per_image * request.count

    async def submit(self, request: ImageRequest, key: ProviderKey | None) -> Submitted:
        """Create a prediction and return its id without waiting for it.

        Sends ``POST /models/{owner}/{name}/predictions`` for ``owner/name`` models, or
        ``POST /predictions`` with ``version`` for ``owner/name:hash``. A webhook (``completed``
        events only) is attached when ``request.webhook_url`` is set. Even a create answer that
        already holds the output gives Submitted: the poller reads it, so there is one path.

        Raises:
            BadRequest: Unknown model, unsupported aspect/count, a negative prompt, or HTTP
                400/404/422 from Replicate.
            AuthError: No key, or HTTP 401/403.
            QuotaExhausted: HTTP 402 (no credit left).
            RateLimited: HTTP 429, ``retry_after`` from ``Retry-After`` or the throttle message.
            Unavailable: 5xx, timeout, connection error or a body without a prediction id. The
                POST is never retried here: a repeat could bill twice.
        """
        secret = http.require_secret(key, "Replicate")
        model = request.model or self.capabilities.default_model
        if model not in self.capabilities.models:
            raise BadRequest(
                f"unknown replicate model {model!r}",
                user_message="Replicate model must be one of: "
                f"{', '.join(self.capabilities.models)}.",
            )
        _check_options(request)
        url, body = _create_call(model)
        body["input"] = _input(request)
        if request.webhook_url:
            body["webhook"] = request.webhook_url
            body["webhook_events_filter"] = ["completed"]
        response = await http.send(
            self._client, "POST", url, retry_idempotent=False, json=body, headers=http.bearer(secret)
        )
        _raise_for_status(response, secret)
        prediction = http.parse_json(response)
        task_id = prediction.get("id") if isinstance(prediction, dict) else None
        if not isinstance(task_id, str) or not task_id:
            raise Unavailable("replicate create answered without a prediction id")
        return Submitted(task_id=task_id)

    async def poll(self, task_id: str, key: ProviderKey | None) -> Progress | Finished:
        """Read prediction ``task_id`` with ``GET /predictions/{id}`` (retried on 5xx/timeouts).

        Returns:
            Progress(stage="starting"|"processing", fraction from the last ``NN%`` in ``logs``)
            while running; Finished with one URL image per output when ``succeeded``.

        Raises:
            ContentRejected: ``failed`` with a reason mentioning NSFW/safety/sensitive content.
            BadRequest: ``failed`` for another reason, ``canceled``, ``aborted``, or HTTP 404
                (task not found). These are terminal.
            Unavailable: Output removed (``data_removed``) or missing, an unknown status,
                malformed JSON, 5xx or timeouts after retries.
            AuthError, QuotaExhausted, RateLimited: As for :meth:`submit`.
        """
        secret = http.require_secret(key, "Replicate")
        response = await http.send(
            self._client,
            "GET",
            f"/predictions/{_task_path(task_id)}",
            retry_idempotent=True,
            headers=http.bearer(secret),
        )
        if response.status_code == 404:
            raise BadRequest(
                f"replicate prediction {_task_path(task_id)} not found",
                user_message="The provider no longer knows this task; you were not charged.",
            )
        _raise_for_status(response, secret)
        prediction = http.parse_json(response)
        if not isinstance(prediction, dict):
            raise Unavailable("replicate prediction is not a JSON object")
        return _outcome(prediction, secret)

    async def cancel(self, task_id: str, key: ProviderKey | None) -> bool:
        """Ask Replicate to cancel with ``POST /predictions/{id}/cancel`` (safe to repeat).

        Returns:
            True on HTTP 200; False on any 4xx (404 unknown, 409 already finished, ...).

        Raises:
            AuthError: No key.
            Unavailable: 5xx or network failure after retries.
        """
        secret = http.require_secret(key, "Replicate")
        response = await http.send(
            self._client,
            "POST",
            f"/predictions/{_task_path(task_id)}/cancel",
            retry_idempotent=True,
            headers=http.bearer(secret),
        )
        if response.status_code == 200:
            return True
        if 400 <= response.status_code < 500:
            return False
        _raise_for_status(response, secret)
        return False  # another 2xx: no documented meaning, so do not claim success

    async def check_key(self, key: ProviderKey) -> None:
        """Validate ``key`` with ``GET /account`` (free, authenticated).

        Raises:
            AuthError: HTTP 401/403.
            QuotaExhausted, RateLimited, BadRequest, Unavailable: As for :meth:`submit`.
        """
        secret = http.require_secret(key, "Replicate")
        response = await http.send(
            self._client, "GET", "/account", retry_idempotent=True, headers=http.bearer(secret)
        )
        _raise_for_status(response, secret)

    async def aclose(self) -> None:
        """Close the HTTP client."""
        await self._client.aclose()




def _task_path(task_id: str) -> str:
    if not task_id:
        raise BadRequest("empty replicate prediction id")
    return quote(task_id, safe="")


def _check_options(request: ImageRequest) -> None:
    if request.negative_prompt is not None:
        raise BadRequest(
            "negative_prompt sent to replicate",
            user_message="This Replicate model does not support a negative prompt.",
        )
    if request.aspect not in ASPECT_RATIOS:
        raise BadRequest(
            f"aspect {request.aspect} unsupported",
            user_message=f"Supported aspect ratios: {', '.join(ASPECT_RATIOS)}.",
        )
    if not 1 <= request.count <= _MAX_IMAGES:
        raise BadRequest(
            f"count {request.count} unsupported",
            user_message=f"Replicate makes 1 to {_MAX_IMAGES} images per request.",
        )


def _create_call(model: str) -> tuple[str, dict[str, Any]]:
    """(path, body without input) for creating a prediction of ``model`` (README §3 create)."""
    if ":" in model:
        return "/predictions", {"version": model}
    owner, _, name = model.partition("/")
    if not owner or not name or "/" in name:
        raise BadRequest(
            f"replicate model {model!r} is not owner/name",
            user_message="This Replicate model is misconfigured; you were not charged.",
        )
    return f"/models/{quote(owner, safe='')}/{quote(name, safe='')}/predictions", {}


def _input(request: ImageRequest) -> dict[str, Any]:
    data: dict[str, Any] = {
        "prompt": request.prompt,
        "aspect_ratio": request.aspect,
        "num_outputs": request.count,
        "output_format": "png",
    }
    if request.seed is not None:
        data["seed"] = request.seed
    return data


def _outcome(prediction: dict[str, Any], secret: str) -> Progress | Finished:
    """Map a prediction object (README §3 statuses) to Progress, Finished or a terminal error."""
    status = prediction.get("status")
    if status in _RUNNING:
        return Progress(stage=status, fraction=_fraction(prediction.get("logs")))
    if status == "succeeded":
        return _finished(prediction)
    if status == "failed":
        reason = http.redact(str(prediction.get("error") or "").strip(), secret)
        reason = reason or "no reason given"
        detail = http.redact(f"replicate prediction failed: {reason}", secret)
        if _SAFETY.search(reason):
            raise ContentRejected(detail)
        short = reason.splitlines()[0][:120].rstrip(" .")
        raise TaskFailed(
            detail,
            user_message=(
                f"The provider failed to generate this image: {short}; you were not charged."
            ),
        )
    if status in ("canceled", "aborted"):
        # canceled: stopped while running; aborted: ended before it started (e.g. its deadline).
        word = "cancelled" if status == "canceled" else "aborted"
        raise TaskFailed(
            f"replicate prediction {status}",
            user_message=f"The provider {word} this image task; you were not charged.",
        )
    raise Unavailable(http.redact(f"replicate prediction has unknown status {status!r}", secret))


def _finished(prediction: dict[str, Any]) -> Finished:
    output = prediction.get("output")
    if prediction.get("data_removed") is True or output is None:
        # README §3: outputs are deleted an hour after an API prediction ends.
        raise TaskFailed(
            "replicate prediction succeeded but its output was removed or is null",
            user_message="The provider deleted this image before we could fetch it; "
            "you were not charged.",
        )
    urls = [output] if isinstance(output, str) else output
    if not isinstance(urls, list) or not urls or not all(isinstance(u, str) and u for u in urls):
        raise Unavailable("replicate prediction output is not a URL or a list of URLs")
    given = prediction.get("input")
    seed = given.get("seed") if isinstance(given, dict) else None
    seed = seed if isinstance(seed, int) and not isinstance(seed, bool) else None
    return Finished(images=tuple(GeneratedImage(url=u, seed=seed) for u in urls))


def _fraction(logs: object) -> float | None:
    if not isinstance(logs, str):
        return None
    matches = _PERCENT.findall(logs)
    if not matches:
        return None
    return min(int(matches[-1]), 100) / 100


def _raise_for_status(response: httpx.Response, secret: str) -> None:
    """Map a non-2xx answer to the error taxonomy (README §3 errors); return on 2xx."""
    status = response.status_code
    if 200 <= status < 300:
        return
    reason = _problem_detail(response)
    detail = http.redact(f"replicate HTTP {status}: {reason}", secret)
    if status in (401, 403):
        raise AuthError(detail)
    if status == 402:
        raise QuotaExhausted(detail)
    if status == 429:
        retry_after = http.retry_after_seconds(response)
        if retry_after is None:
            match = _RESETS_IN.search(reason)
            retry_after = float(match.group(1)) if match else None
        raise RateLimited(detail, retry_after=retry_after)
    if 400 <= status < 500:
        raise BadRequest(detail)
    raise Unavailable(detail)  # 5xx, or a redirect we do not follow


def _problem_detail(response: httpx.Response) -> str:
    """``detail`` (or ``title``) of a problem-details body; the raw text for any other body."""
    try:
        body = response.json()
    except ValueError:
        return response.text
    if isinstance(body, dict):
        for field in ("detail", "title"):
            if isinstance(body.get(field), str):
                return body[field]
    return response.text
