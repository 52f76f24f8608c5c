"""Replicate adapter: create a prediction, then poll it (queue first, no ``Prefer: wait``).

Rules come from the contracts README §3 and the OpenAPI extract ``replicate-predictions.json``.
Webhook deliveries (README §3 webhooks) are signed per Standard Webhooks
(replicate.com/docs/topics/webhooks/verify-webhook) and checked with the ``standardwebhooks``
package against the account's secret from ``GET /webhooks/default/secret``.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import re
from collections.abc import Mapping
from typing import Any
from urllib.parse import quote

import httpx
from standardwebhooks.webhooks import Webhook, WebhookVerificationError

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
    read_json_object,
)
from studiobot.providers.errors import (
    AuthError,
    BadRequest,
    ContentRejected,
    ProviderError,
    QuotaExhausted,
    RateLimited,
    TaskFailed,
    Unavailable,
    WebhookRejected,
)

_RUNNING = frozenset({"starting", "processing"})
# Failure reasons that mean the safety checker refused the prompt or the output.
_SAFETY = re.compile(r"nsfw|safety|sensitive", re.IGNORECASE)
# Progress bars in model logs ("50%|#####     | 2/4"): the last one is the current step.
_PERCENT = re.compile(r"(\d{1,3})%")
# README §3 rate limits: 429 body "Request was throttled. Your rate limit resets in ~30s."
_RESETS_IN = re.compile(r"resets in ~?\s*(\d+(?:\.\d+)?)\s*s", re.IGNORECASE)
_MAX_IMAGES = 4  # flux-schnell `num_outputs` is 1-4
# README §3 marks the signature scheme UNVERIFIED; these names follow Replicate's verify-webhook
# page and the Standard Webhooks spec, which the ``standardwebhooks`` package also hard-codes.
_SIGNATURE_HEADERS = ("webhook-id", "webhook-timestamp", "webhook-signature")
_SECRET_PATH = "/webhooks/default/secret"
_SECRET_PREFIX = "whsec_"
# The library's tolerance (5 minutes) is fixed; this only words the rejection.
_STALE = "timestamp outside the 5-minute tolerance"
_MISMATCH = "signature does not match"


class ReplicateProvider:
    """Adapter for Replicate predictions (asynchronous, cancellable, webhook-capable).

    ``submit`` answers :class:`Submitted` with the prediction id; ``poll`` answers
    :class:`Progress` until the prediction ends, then :class:`Finished` with one
    ``GeneratedImage(url=...)`` per output file. Output URLs expire after an hour (README §3), so
    the finisher must download them promptly. ``read_webhook`` (a
    :class:`~studiobot.providers.base.WebhookProvider`) verifies a signed delivery and reads it
    like ``poll``; each account's signing secret is fetched once and kept in memory.

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
        # sha256(API key) -> verifier for that account's webhook secret; hashing keeps raw keys
        # out of the dict's keys (secrets are per account, README §3 webhooks).
        self._signers: dict[str, Webhook] = {}

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

    async def read_webhook(
        self, body: bytes, headers: Mapping[str, str], task_id: str, key: ProviderKey | None
    ) -> Progress | Finished:
        """Verify one signed delivery about prediction ``task_id`` and read it like :meth:`poll`.

        The signature (Standard Webhooks: HMAC-SHA256 over ``"{webhook-id}.{webhook-timestamp}.
        {body}"``, timestamp within 5 minutes) is checked with the ``standardwebhooks`` package
        against the signing secret of ``key``'s account, fetched once per process from
        ``GET /webhooks/default/secret``. When a cached secret does not match, it is fetched once
        more in case the account rotated it. The body is the prediction object (README §3).

        Args:
            body: The raw request body, exactly as received.
            headers: The request headers; ``webhook-id``, ``webhook-timestamp`` (unix seconds) and
                ``webhook-signature`` (space-separated ``v1,<base64>``) are read, any case.
            task_id: The prediction id :meth:`submit` returned for this job.
            key: The key the prediction was created with (its account signs the delivery).

        Returns:
            Progress for ``starting``/``processing`` (``start`` or ``logs`` events), Finished with
            one URL image per output for ``succeeded``.

        Raises:
            WebhookRejected: A missing or malformed signature header, a stale timestamp, a
                signature that matches neither the cached nor a freshly fetched secret, a body
                that is not a JSON object, a prediction other than ``task_id``, or a secret fetch
                refused for good (401/402/403/404...; polling still reports the prediction).
            ContentRejected, TaskFailed, Unavailable: The delivery reports an ended prediction,
                mapped exactly as :meth:`poll` maps it.
            AuthError: No key.
            RateLimited, Unavailable: The secret fetch was throttled, or failed with 5xx,
                timeouts (after retries) or an unusable answer; retryable, and they say nothing
                about the prediction.
        """
        secret = http.require_secret(key, "Replicate")
        signed = {name.lower(): value for name, value in headers.items()}
        for name in _SIGNATURE_HEADERS:
            if not signed.get(name):
                raise WebhookRejected(f"missing {name} header")
        if not re.fullmatch(r"\d{1,12}", signed["webhook-timestamp"], re.ASCII):
            raise WebhookRejected("webhook-timestamp is not unix seconds")
        if not any(_V1_SIGNATURE.fullmatch(entry) for entry in signed["webhook-signature"].split(" ")):
            # standardwebhooks 1.3 reports junk as a plain mismatch; naming it costs no secret fetch.
            raise WebhookRejected("malformed webhook-signature header (no v1,<base64> entry)")
        account = hashlib.sha256(secret.encode()).hexdigest()
        signer = self._signers.get(account)
        cached = signer is not None
        if signer is None:
            signer = await self._fetch_signer(secret, account)
        problem = _signature_problem(signer, body, signed)
        if problem == _MISMATCH and cached:
            problem = _signature_problem(await self._fetch_signer(secret, account), body, signed)
        if problem:
            raise WebhookRejected(problem)
        prediction = read_json_object(body)
        if prediction.get("id") != task_id:
            raise WebhookRejected("delivery is about another prediction")
        return _outcome(prediction, secret)

    async def _fetch_signer(self, secret: str, account: str) -> Webhook:
        """Fetch the account's webhook secret, cache a verifier for it and return it."""
        response = await http.send(
            self._client, "GET", _SECRET_PATH, retry_idempotent=True, headers=http.bearer(secret)
        )
        try:
            _raise_for_status(response, secret)
        except ProviderError as error:
            if error.retryable:
                raise
            # A final ProviderError from read_webhook means "the task ended"; a refused secret
            # fetch says nothing about the task, so the delivery is dropped and polls decide.
            raise WebhookRejected(
                f"signing secret unavailable (HTTP {response.status_code})"
            ) from None
        answer = http.parse_json(response)
        signing_key = answer.get("key") if isinstance(answer, dict) else None
        signer = _signer(signing_key)
        if signer is None:
            # Never echo the answer: a malformed secret is still a secret.
            raise Unavailable("replicate webhook secret answer has no usable key")
        self._signers[account] = signer
        return signer

    async def aclose(self) -> None:
        """Close the HTTP client."""
        await self._client.aclose()


def _signer(signing_key: object) -> Webhook | None:
    """A verifier for ``whsec_<base64>``, or None when the value is not such a secret."""
    if not isinstance(signing_key, str) or not signing_key.startswith(_SECRET_PREFIX):
        return None
    encoded = signing_key.removeprefix(_SECRET_PREFIX)
    try:
        # Padding is optional in secrets (the library pads too); other junk is refused here
        # rather than silently skipped by a lenient decode.
        if not base64.b64decode(encoded + "=" * (-len(encoded) % 4), validate=True):
            return None
    except (binascii.Error, ValueError):
        return None
    return Webhook(signing_key)


#: Standard Webhooks: ``webhook-signature`` is space-separated ``<version>,<base64 HMAC>`` entries.
_V1_SIGNATURE = re.compile(r"v1,[A-Za-z0-9+/]+={0,2}", re.ASCII)


def _signature_problem(signer: Webhook, body: bytes, headers: dict[str, str]) -> str | None:
    """Why the delivery fails verification (a short reason), or None when it verifies."""
    try:
        signer.verify(body, headers, json_parse=False)
    except WebhookVerificationError as exc:
        # The library words its reasons; only a mismatch is worth a secret refetch.
        return _STALE if "timestamp" in str(exc).lower() else _MISMATCH
    except ValueError:
        # Releases before 1.3 raised UnicodeDecodeError or binascii.Error for undecodable input.
        return "malformed signature header or body"
    return None


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
