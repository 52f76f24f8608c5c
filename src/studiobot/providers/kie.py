"""KIE.ai adapter: Midjourney, Flux Kontext and GPT-4o image behind one asynchronous API.

Rules come from the contracts README §5 and the transcription ``kie.yaml``. KIE answers every call
with HTTP 200 and a ``{code, msg, data}`` envelope, so the real status is ``code``, not the HTTP
status. Each model family has its own create and ``record-info`` endpoints; the task id we hand out
carries the family (``mj:<id>``, ``flux:<id>``, ``4o:<id>``) so :meth:`KieProvider.poll` and
:meth:`KieProvider.read_webhook` know which shape to read.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

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


@dataclass(frozen=True, slots=True)
class _Api:
    family: str  # task id prefix
    create: str
    record: str


_MJ = _Api("mj", "/api/v1/mj/generate", "/api/v1/mj/record-info")
_FLUX = _Api("flux", "/api/v1/flux/kontext/generate", "/api/v1/flux/kontext/record-info")
_4O = _Api("4o", "/api/v1/gpt4o-image/generate", "/api/v1/gpt4o-image/record-info")
_APIS = {api.family: api for api in (_MJ, _FLUX, _4O)}
_MODEL_API = {
    "midjourney": _MJ,
    "flux-kontext-pro": _FLUX,
    "flux-kontext-max": _FLUX,
    "gpt-4o-image": _4O,
}
_MODELS = tuple(_MODEL_API)  # the first is the default
CHECK_KEY_PATH = "/api/v1/chat/credit"

# Midjourney settings we fix (README §5 MJ create): text to image, fast queue, version 7.
MJ_TASK_TYPE = "mj_txt2img"
MJ_SPEED = "fast"
MJ_VERSION = "7"
#: Midjourney always renders a grid of 4; ``count`` cannot shrink it, so price and results are 4.
MJ_IMAGES = 4
# Flux Kontext aspectRatio enum is UNVERIFIED (README §5: 21:9, 16:9, 4:3, 1:1, 3:4, 9:16).
_FLUX_ASPECTS = frozenset({"1:1", "16:9", "9:16", "4:3", "3:4"})
FLUX_OUTPUT_FORMAT = "png"
# GPT-4o `size` is an aspect ratio (README §5, required); the `nVariants` enum is UNVERIFIED.
_4O_ASPECTS = frozenset({"1:1", "3:2", "2:3"})
_4O_VARIANTS = (1, 2, 4)
_ASPECTS = {
    "midjourney": frozenset(ASPECT_RATIOS),  # MJ's enum covers all of ours
    "flux-kontext-pro": _FLUX_ASPECTS,
    "flux-kontext-max": _FLUX_ASPECTS,
    "gpt-4o-image": _4O_ASPECTS,
}
_MAX_IMAGES = {"midjourney": MJ_IMAGES, "flux-kontext-pro": 1, "flux-kontext-max": 1,
               "gpt-4o-image": max(_4O_VARIANTS)}  # fmt: skip
# Platform credits per image, roughly tracking KIE's prices (MJ fast ~8 KIE credits per grid,
# Kontext Pro ~5 and Max ~10, 4o ~6 per image; third-party figures, UNVERIFIED).
_DEFAULT_CREDITS = {"midjourney": 1, "flux-kontext-pro": 3, "flux-kontext-max": 5,
                    "gpt-4o-image": 3}  # fmt: skip

#: KIE documents no Retry-After; seconds to wait after envelope code 429.
RATE_LIMIT_RETRY_SECONDS = 10.0
# Heuristic: KIE reports content-policy refusals as code 400 (or a failed task) with only a
# message to tell them apart from bad options, so these words decide ContentRejected.
_CONTENT = re.compile(r"content[ _-]?polic|sensitive|prohibited|not allowed|nsfw", re.IGNORECASE)
# record-info for an id KIE does not know: code 422 "record is null" (README §5; also "records
# within 14 days"), or a 404 about the task. A bare 404 "Not found" is a wrong path: BadRequest.
_UNKNOWN_TASK = re.compile(r"record|task\b.{0,20}\bnot (?:found|exist)", re.IGNORECASE)

# Result fields. Record-info shapes come from README §5 (Flux Kontext's are UNVERIFIED). Callback
# shapes come from docs.kie.ai's callback pages: MJ `data.resultUrls`, 4o `data.info.result_urls`,
# Kontext `data.info.resultImageUrl` (examples only, UNVERIFIED); camelCase variants are tolerated.
FLUX_RESULT_FIELD = "resultImageUrl"
_4O_URL_PLACES = (("response", "resultUrls"), ("info", "result_urls"), ("info", "resultUrls"))
_FLUX_URL_PLACES = (("response", FLUX_RESULT_FIELD), ("info", FLUX_RESULT_FIELD))


class KieProvider:
    """Adapter for KIE.ai (asynchronous, webhook-capable, not cancellable).

    Models: ``midjourney`` (default; always a grid of 4 images, whatever ``count`` asks, and priced
    as 4), ``flux-kontext-pro`` and ``flux-kontext-max`` (1 image), ``gpt-4o-image`` (1, 2 or 4
    images; aspect 1:1, 3:2 or 2:3). None takes a seed or a negative prompt. ``submit`` answers
    :class:`Submitted`; ``poll`` and ``read_webhook`` give :class:`Finished` with one
    ``GeneratedImage(url=...)`` per result. KIE keeps results 14-15 days.

    KIE advises polling ``record-info`` about every 30 s and at most 3 times a second per task
    (README §5); pacing is the scheduler's business.

    Args:
        base_url: API root (README §5: ``https://api.kie.ai``).
        credits_per_image: Platform credits per image by model, merged over the defaults
            (midjourney 1, flux-kontext-pro 3, flux-kontext-max 5, gpt-4o-image 3).
        timeout: Seconds allowed per read/write; every call returns at once, so this is short.
    """

    name = "kie"

    def __init__(
        self,
        *,
        base_url: str = "https://api.kie.ai",
        credits_per_image: dict[str, int] | None = None,
        timeout: float = 30.0,
    ) -> None:
        self.capabilities = Capabilities(
            models=_MODELS,
            aspects=ASPECT_RATIOS,
            max_images=max(_MAX_IMAGES.values()),
            is_async=True,
            can_cancel=False,  # README §5: no cancel endpoint
            negative_prompt=False,
            seed=False,
            webhooks=True,
            model_aspects={m: tuple(a for a in ASPECT_RATIOS if a in _ASPECTS[m]) for m in _MODELS},
            model_max_images=dict(_MAX_IMAGES),
        )
        self._credits = {**_DEFAULT_CREDITS, **(credits_per_image or {})}
        self._client = http.make_client(base_url, timeout=timeout)

    def price(self, request: ImageRequest) -> int:
        """Credits for ``request``: the model's per-image price times the images it makes.

        Midjourney always makes :data:`MJ_IMAGES`; the others make ``count``.

        Raises:
            BadRequest: The model is not one this adapter offers.
        """
        model = self._model(request)
        images = MJ_IMAGES if model == "midjourney" else request.count
        return self._credits[model] * images

    async def submit(self, request: ImageRequest, key: ProviderKey | None) -> Submitted:
        """Create a KIE task for the request's model and return its id without waiting.

        ``request.webhook_url``, when set, goes to KIE as ``callBackUrl``.

        Returns:
            Submitted with ``task_id`` ``"<family>:<KIE taskId>"``, family ``mj``, ``flux`` or
            ``4o``.

        Raises:
            BadRequest: Unknown model, unsupported aspect/count/operation, a seed or negative
                prompt, or envelope code 400/404/422/451/505.
            ContentRejected: Code 400 whose message is about content policy (see ``_CONTENT``).
            AuthError: No key, or code 401 (HTTP 401/403 from a proxy too).
            QuotaExhausted: Code 402 (no KIE credits left).
            RateLimited: Code 429, ``retry_after`` :data:`RATE_LIMIT_RETRY_SECONDS`.
            TaskFailed: Code 501 (generation failed).
            Unavailable: Code 455 (maintenance), 500 or unknown codes, HTTP 5xx, timeouts, or an
                answer without ``taskId``. The POST is never retried here: a repeat could bill
                twice.
        """
        secret = http.require_secret(key, "KIE")
        model = self._model(request)
        _check_options(model, request)
        api = _MODEL_API[model]
        body = _body(api.family, model, request)
        if request.webhook_url:
            body["callBackUrl"] = request.webhook_url
        response = await http.send(
            self._client, "POST", api.create, retry_idempotent=False, json=body,
            headers=http.bearer(secret),
        )  # fmt: skip
        data = _envelope(response, secret)
        remote = data.get("taskId") if isinstance(data, dict) else None
        if not isinstance(remote, str) or not remote:
            raise Unavailable(f"kie {api.family} create answered without a taskId")
        return Submitted(task_id=f"{api.family}:{remote}")

    async def poll(self, task_id: str, key: ProviderKey | None) -> Progress | Finished:
        """Read the task with ``GET <family>/record-info?taskId=`` (retried on 5xx/timeouts).

        Returns:
            Progress(stage="generating") while running (4o adds ``fraction`` from ``progress``);
            Finished with the result URLs (Midjourney 4, Flux Kontext 1, 4o ``nVariants``).

        Raises:
            ContentRejected: The task failed with a content-policy reason.
            TaskFailed: The task failed (MJ/Kontext ``successFlag`` 2/3, 4o
                ``CREATE_TASK_FAILED``/``GENERATE_FAILED``), or KIE does not know it (code 404/422
                "record is null").
            BadRequest: ``task_id`` is not one :meth:`submit` returned.
            Unavailable: Unknown state, a success without URLs, malformed JSON, 5xx or timeouts.
            AuthError, QuotaExhausted, RateLimited: As for :meth:`submit`.
        """
        secret = http.require_secret(key, "KIE")
        api, remote = _split(task_id, BadRequest)
        response = await http.send(
            self._client, "GET", api.record, retry_idempotent=True, params={"taskId": remote},
            headers=http.bearer(secret),
        )  # fmt: skip
        data = _envelope(response, secret, record_info=True)
        if not isinstance(data, dict):
            raise Unavailable(f"kie {api.family} record-info answered without a record")
        return _outcome(api.family, data, secret)

    async def read_webhook(
        self, body: bytes, headers: Mapping[str, str], task_id: str, key: ProviderKey | None
    ) -> Finished:
        """Read one KIE callback (POSTed to ``callBackUrl`` with the poll envelope).

        KIE callbacks are unsigned unless the account turns on HMAC signing, so trust comes from the
        per-job token in the URL (checked by the web layer); here we only check that the body is
        about ``task_id``. Deliveries may repeat; reading one twice gives the same answer.

        Returns:
            Finished with the result URLs (code 200).

        Raises:
            WebhookRejected: Not a JSON envelope, no ``data``, ``data.taskId`` is another task's,
                or a success without readable result URLs.
            ContentRejected, TaskFailed: A failure code; mapped like a failed task in :meth:`poll`.
        """
        api, remote = _split(task_id, WebhookRejected)
        envelope = read_json_object(body)
        code, data = envelope.get("code"), envelope.get("data")
        if not _is_int(code) or not isinstance(data, dict):
            raise WebhookRejected("kie callback is not a {code, msg, data} envelope")
        if data.get("taskId") != remote:
            raise WebhookRejected("kie callback is about another task")
        secret = key.secret if key is not None else ""
        if code != 200:
            raise _task_error(code, envelope.get("msg") or data.get("errorMessage"), secret)
        urls = _clean_urls(_result_urls(api.family, data))
        if urls is None:
            raise WebhookRejected(f"kie {api.family} success callback has no result URLs")
        return Finished(images=tuple(GeneratedImage(url=u) for u in urls))

    async def cancel(self, task_id: str, key: ProviderKey | None) -> bool:
        """Not possible: KIE has no cancel endpoint (README §5); always False, no request."""
        return False

    async def check_key(self, key: ProviderKey) -> None:
        """Validate ``key`` with ``GET /api/v1/chat/credit`` (free; answers the credit balance).

        An account with 0 credits still has a valid key, so this does not raise for it.

        Raises:
            AuthError: Code 401 (or HTTP 401/403).
            RateLimited, Unavailable, BadRequest: As for :meth:`submit`.
        """
        secret = http.require_secret(key, "KIE")
        response = await http.send(
            self._client, "GET", CHECK_KEY_PATH, retry_idempotent=True, headers=http.bearer(secret)
        )
        _envelope(response, secret)

    async def aclose(self) -> None:
        """Close the HTTP client."""
        await self._client.aclose()

    def _model(self, request: ImageRequest) -> str:
        model = request.model or _MODELS[0]
        if model not in _MODEL_API:
            raise BadRequest(
                f"unknown kie model {model!r}",
                user_message=f"KIE model must be one of: {', '.join(_MODELS)}.",
            )
        return model


def _check_options(model: str, request: ImageRequest) -> None:
    if request.operation != "generate":
        raise BadRequest(
            f"kie {request.operation} unsupported",
            user_message="KIE models here only generate new images.",
        )
    if request.seed is not None or request.negative_prompt is not None:
        raise BadRequest(
            "seed/negative_prompt sent to kie",
            user_message="KIE models do not support a seed or a negative prompt.",
        )
    if request.aspect not in _ASPECTS[model]:
        supported = ", ".join(a for a in ASPECT_RATIOS if a in _ASPECTS[model])
        raise BadRequest(
            f"aspect {request.aspect} unsupported by {model}",
            user_message=f"{model} supports only these aspect ratios: {supported}.",
        )
    allowed = _4O_VARIANTS if model == "gpt-4o-image" else range(1, _MAX_IMAGES[model] + 1)
    if request.count not in allowed:
        counts = ", ".join(map(str, allowed))
        raise BadRequest(
            f"count {request.count} unsupported by {model}",
            user_message=f"{model} makes {counts} image(s) per request.",
        )


def _body(family: str, model: str, request: ImageRequest) -> dict[str, Any]:
    """The create body for ``model`` (README §5 create columns); ``callBackUrl`` is added later."""
    if family == "mj":
        return {"taskType": MJ_TASK_TYPE, "prompt": request.prompt, "speed": MJ_SPEED,
                "aspectRatio": request.aspect, "version": MJ_VERSION}  # fmt: skip
    if family == "flux":
        return {"prompt": request.prompt, "model": model, "aspectRatio": request.aspect,
                "outputFormat": FLUX_OUTPUT_FORMAT}  # fmt: skip
    return {"prompt": request.prompt, "size": request.aspect, "nVariants": request.count}


def _split(task_id: str, error: type[Exception]) -> tuple[_Api, str]:
    """(API family, KIE taskId) of a task id :meth:`KieProvider.submit` returned."""
    family, _, remote = task_id.partition(":")
    api = _APIS.get(family)
    if api is None or not remote:
        raise error(f"not a kie task id: {task_id[:80]!r}")
    return api, remote


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _envelope(response: httpx.Response, secret: str, *, record_info: bool = False) -> Any:
    """``data`` of a ``code`` 200 envelope; any other code or HTTP status raises (README §5)."""
    if not 200 <= response.status_code < 300:
        _raise_for_http(response, secret)
    body = http.parse_json(response)
    code = body.get("code") if isinstance(body, dict) else None
    if not _is_int(code):
        raise Unavailable(f"kie {response.request.url.path} answered without an envelope code")
    if code == 200:
        return body.get("data")
    raise _code_error(code, str(body.get("msg") or ""), secret, record_info=record_info)


def _code_error(code: int, msg: str, secret: str, *, record_info: bool) -> ProviderError:
    """The error for a non-200 envelope ``code`` (README §5 code table)."""
    detail = http.redact(f"kie code {code}: {msg}", secret)
    if record_info and code in (404, 422) and _UNKNOWN_TASK.search(msg):
        return TaskFailed(
            detail, user_message="The provider no longer knows this task; you were not charged."
        )
    if code == 400:
        return ContentRejected(detail) if _CONTENT.search(msg) else BadRequest(detail)
    if code == 401:
        return AuthError(detail)
    if code == 402:
        return QuotaExhausted(
            detail, user_message="The KIE account has no credits left; you were not charged."
        )
    if code in (404, 422, 451):  # 451: KIE could not fetch an input image; we send none
        return BadRequest(detail)
    if code == 429:
        return RateLimited(detail, retry_after=RATE_LIMIT_RETRY_SECONDS)
    if code == 455:
        return Unavailable(
            detail, user_message="KIE is down for maintenance; we will retry shortly."
        )
    if code == 501:
        return TaskFailed(detail)
    if code == 505:
        return BadRequest(
            detail, user_message="KIE has disabled this feature for now; you were not charged."
        )
    return Unavailable(detail)  # 500 and codes KIE does not document


def _raise_for_http(response: httpx.Response, secret: str) -> None:
    """Map a real non-2xx HTTP status (a proxy or gateway in front of KIE) to the taxonomy."""
    status = response.status_code
    detail = http.redact(f"kie HTTP {status}: {response.text}", secret)
    if status in (401, 403):
        raise AuthError(detail)
    if status == 402:
        raise QuotaExhausted(detail)
    if status == 429:
        retry_after = http.retry_after_seconds(response)
        raise RateLimited(detail, retry_after=retry_after or RATE_LIMIT_RETRY_SECONDS)
    if 400 <= status < 500:
        raise BadRequest(detail)
    raise Unavailable(detail)  # 5xx, or a redirect we do not follow


def _task_error(code: object, message: object, secret: str) -> ProviderError:
    """The error for a task that ended without images (failed state or failure callback)."""
    reason = http.redact(str(message or "").strip(), secret) or "no reason given"
    detail = http.redact(f"kie task failed (code {code}): {reason}", secret)
    if _CONTENT.search(reason):
        return ContentRejected(detail)
    short = reason.splitlines()[0][:120].rstrip(" .")
    return TaskFailed(
        detail,
        user_message=f"The provider failed to generate this image: {short}; you were not charged.",
    )


def _clean_urls(value: object) -> tuple[str, ...] | None:
    """``value`` as a non-empty tuple of URL strings, or None when it is anything else."""
    if not isinstance(value, list) or not value:
        return None
    if not all(isinstance(u, str) and u.startswith(("http://", "https://")) for u in value):
        return None
    return tuple(value)


def _result_urls(family: str, data: dict[str, Any]) -> object:
    """Where ``family`` puts its results, in record-info or in a callback (see the constants)."""
    if family == "mj":
        info = data.get("resultInfoJson")
        if isinstance(info, str):  # tolerate a JSON-encoded string, like `paramJson`
            try:
                info = json.loads(info)
            except ValueError:
                return None
        if isinstance(info, dict) and isinstance(info.get("resultUrls"), list):
            return [i.get("resultUrl") if isinstance(i, dict) else None for i in info["resultUrls"]]
        return data.get("resultUrls")  # callback shape
    for holder, name in _FLUX_URL_PLACES if family == "flux" else _4O_URL_PLACES:
        box = data.get(holder)
        if isinstance(box, dict) and name in box:
            return [box[name]] if family == "flux" else box[name]
    return None


def _outcome(family: str, data: dict[str, Any], secret: str) -> Progress | Finished:
    """Map a record-info ``data`` to Progress, Finished or the task's error (README §5 states)."""
    if family == "4o":
        state: object = data.get("status")
        running, done = state == "GENERATING", state == "SUCCESS"
        failed = state in ("CREATE_TASK_FAILED", "GENERATE_FAILED")
    else:  # successFlag: 0 generating, 1 success, 2 failed, 3 created but generation failed
        state = data.get("successFlag")
        running, done, failed = state == 0, state == 1, state in (2, 3)
    if running:
        fraction = _fraction(data.get("progress")) if family == "4o" else None
        return Progress(stage="generating", fraction=fraction)
    if failed:
        raise _task_error(data.get("errorCode"), data.get("errorMessage"), secret)
    urls = _clean_urls(_result_urls(family, data)) if done else None
    if urls is None:
        raise Unavailable(
            f"kie {family} record: state {str(state)[:40]!r} without readable result URLs"
        )
    return Finished(images=tuple(GeneratedImage(url=u) for u in urls))


def _fraction(progress: object) -> float | None:
    """4o ``progress`` ("0.00"-"1.00") as a float in [0, 1], or None when unreadable."""
    try:
        value = float(progress)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return None
    return min(max(value, 0.0), 1.0) if value == value else None  # NaN fails the comparison
