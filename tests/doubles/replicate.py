"""Loopback double of the Replicate predictions API (contracts README §3).

Speaks create (``POST /models/{owner}/{name}/predictions`` and ``POST /predictions`` with
``version``), ``GET /predictions/{id}``, ``POST /predictions/{id}/cancel``, ``GET /account`` and
``GET /webhooks/default/secret``.
A prediction answers ``starting`` on its first poll, ``processing`` (with a ``NN%`` progress bar in
``logs``) until ``state.steps`` polls have passed, then its scripted :class:`Outcome`. Output URLs
point at the double itself (``/files/<id>/<n>.png``) and serve real PNGs whose longer side is 64
pixels, to keep tests fast. Scripted HTTP failures go in ``state.fail_next`` (see
:mod:`tests.doubles.server`).

Webhooks (README §3; replicate.com/docs/topics/webhooks): a prediction created with ``webhook``
gets the prediction object POSTed there, signed per Standard Webhooks (``webhook-id``,
``webhook-timestamp``, ``webhook-signature: v1,<base64>``) with its account's secret. With
``state.auto_webhooks`` the double sends the events its ``webhook_events_filter`` asks for (default
``output`` + ``completed``) as they happen: ``start`` on create, ``logs`` on each ``processing``
poll, ``output`` and then ``completed`` on the poll or cancel that ends it. These run in the
background; ``await settle_webhooks(state)`` waits for them. :func:`deliver_webhook` sends one
delivery on demand (tampered or back-dated if asked) and :func:`signed_delivery` builds
``(body, headers)`` without sending. Replicate only calls HTTPS URLs; tests whose receiver is
plain loopback HTTP set ``state.require_https_webhooks = False``. Replicate's retries of failed
deliveries are not modelled: the receiver's answer is recorded in ``state.deliveries``.
"""

from __future__ import annotations

import asyncio
import base64
import json
import secrets
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any

import httpx
from aiohttp import web
from standardwebhooks.webhooks import Webhook

from tests.doubles.server import RecordedRequest, png, respond, scripting_middleware

VALID_TOKEN = "r8_TestDoubleValidToken0123456789"
FLUX_SCHNELL = "black-forest-labs/flux-schnell"
FLUX_VERSION = "f" * 64

# flux-schnell input schema (the subset adapters use).
ASPECTS = ("1:1", "16:9", "21:9", "3:2", "2:3", "4:5", "5:4", "3:4", "4:3", "9:16", "9:21")
SIZES = {  # aspect -> WxH of the megapixel image flux-schnell renders
    "1:1": "1024x1024", "16:9": "1344x768", "21:9": "1536x640", "3:2": "1216x832",
    "2:3": "832x1216", "4:5": "896x1088", "5:4": "1088x896", "3:4": "896x1152",
    "4:3": "1152x896", "9:16": "768x1344", "9:21": "640x1536",
}  # fmt: skip
WEBHOOK_EVENTS = frozenset({"start", "output", "logs", "completed"})
DEFAULT_WEBHOOK_EVENTS = ("output", "completed")  # README §3: when no filter is given
TERMINAL = frozenset({"succeeded", "failed", "canceled", "aborted"})
_ID_ALPHABET = "abcdefghijklmnopqrstuvwxyz0123456789"  # ids look like "gm3qorzdhgbfurvjtvhg6dckhu"


@dataclass(frozen=True)
class Outcome:
    """How one prediction ends.

    Attributes:
        status: Terminal status: ``succeeded``, ``failed``, ``canceled`` or ``aborted``.
        error: The ``error`` string of a failed prediction.
        data_removed: Succeed, but with output null and ``data_removed`` true (past 1 hour).
        output_as_string: Give ``output`` as one URL string instead of a list.
        missing_files: The output URLs answer 404.
    """

    status: str = "succeeded"
    error: str | None = None
    data_removed: bool = False
    output_as_string: bool = False
    missing_files: bool = False


def new_signing_secret() -> str:
    """A fresh secret shaped like Replicate's: ``whsec_`` + base64 of 32 random bytes."""
    return "whsec_" + base64.b64encode(secrets.token_bytes(32)).decode()


@dataclass(frozen=True)
class Delivery:
    """One webhook the double sent; ``status`` is the receiver's answer (None: unreachable)."""

    prediction_id: str
    event: str
    status: int | None


@dataclass
class ReplicateState:
    """What the double knows and saw.

    Attributes:
        valid_tokens: Tokens accepted in ``Authorization: Bearer <token>``.
        models: ``owner/name`` models that exist, with the version hash ``owner/name:hash`` uses.
        steps: Polls answered ``starting``/``processing`` before the outcome shows.
        outcomes: Outcomes taken by successive creates, first first; empty means ``succeeded``.
        requests: Every request received, in order.
        fail_next: Scripted answers played before normal handling, first first.
        predictions: Prediction objects by id (tests may inspect or edit them).
        signing_secret: The webhook secret of every account not in ``account_secrets``.
        account_secrets: Per-token webhook secrets (each Replicate account has its own).
        auto_webhooks: Send deliveries by themselves as predictions move (see the module doc).
        require_https_webhooks: Refuse non-HTTPS ``webhook`` URLs with 422, as Replicate does.
        deliveries: Every webhook sent, in order.
    """

    valid_tokens: set[str] = field(default_factory=lambda: {VALID_TOKEN})
    models: dict[str, str] = field(default_factory=lambda: {FLUX_SCHNELL: FLUX_VERSION})
    steps: int = 2
    outcomes: list[Outcome] = field(default_factory=list)
    requests: list[RecordedRequest] = field(default_factory=list)
    fail_next: list[tuple[Any, ...]] = field(default_factory=list)
    predictions: dict[str, dict[str, Any]] = field(default_factory=dict)
    signing_secret: str = field(default_factory=new_signing_secret)
    account_secrets: dict[str, str] = field(default_factory=dict)
    auto_webhooks: bool = False
    require_https_webhooks: bool = True
    deliveries: list[Delivery] = field(default_factory=list)
    _polls: dict[str, int] = field(default_factory=dict)
    _outcome_of: dict[str, Outcome] = field(default_factory=dict)
    _owner: dict[str, str] = field(default_factory=dict)  # prediction id -> token that made it
    _hooks: dict[str, tuple[str, frozenset[str]]] = field(default_factory=dict)  # url, events
    _base: dict[str, str] = field(default_factory=dict)  # prediction id -> double's base URL
    _sending: set[asyncio.Task[None]] = field(default_factory=set)

    def secret_for(self, token: str) -> str:
        """The webhook signing secret of the account behind ``token``."""
        return self.account_secrets.get(token, self.signing_secret)


def problem(status: int, detail: str, title: str = "") -> dict[str, Any]:
    """A problem-details body ``{title, detail, status}`` (README §3: assumed shape)."""
    return {"title": title or detail, "detail": detail, "status": status}


def make_replicate_app(state: ReplicateState) -> web.Application:
    """Build the double's aiohttp application around ``state``."""
    app = web.Application(middlewares=[scripting_middleware(state)])

    def refused(request: web.Request) -> web.Response | None:
        scheme, _, token = request.headers.get("Authorization", "").partition(" ")
        if scheme == "Bearer" and token in state.valid_tokens:
            return None
        return respond(401, problem(401, "You did not pass a valid authentication token"))

    async def create(request: web.Request, model: str, version: str) -> web.Response:
        try:
            body = await request.json()
        except ValueError:
            body = None
        problem_ = _validate(body, https_only=state.require_https_webhooks)
        if problem_ is not None:
            return problem_
        prediction_id = "".join(secrets.choice(_ID_ALPHABET) for _ in range(26))
        base = f"{request.scheme}://{request.host}"
        prediction = {
            "id": prediction_id,
            "model": model,
            "version": version,
            "input": body["input"],
            "logs": "",
            "output": None,
            "data_removed": False,
            "error": None,
            "status": "starting",
            "created_at": _now(),
            "source": "api",
            "urls": {
                "get": f"{base}/predictions/{prediction_id}",
                "cancel": f"{base}/predictions/{prediction_id}/cancel",
                "web": f"{base}/p/{prediction_id}",
            },
        }
        state.predictions[prediction_id] = prediction
        state._polls[prediction_id] = 0
        state._outcome_of[prediction_id] = state.outcomes.pop(0) if state.outcomes else Outcome()
        state._owner[prediction_id] = request.headers["Authorization"].partition(" ")[2]
        state._base[prediction_id] = base
        if "webhook" in body:
            events = body.get("webhook_events_filter") or DEFAULT_WEBHOOK_EVENTS
            state._hooks[prediction_id] = (body["webhook"], frozenset(events))
        _emit(state, prediction_id, "start")
        return respond(201, prediction)

    async def create_for_model(request: web.Request) -> web.Response:
        if (answer := refused(request)) is not None:
            return answer
        model = f"{request.match_info['owner']}/{request.match_info['name']}"
        if model not in state.models:
            return respond(404, problem(404, "The requested resource could not be found."))
        return await create(request, model, "hidden")

    async def create_for_version(request: web.Request) -> web.Response:
        if (answer := refused(request)) is not None:
            return answer
        try:
            body = await request.json()
        except ValueError:
            body = None
        model, _, version = str((body or {}).get("version", "")).partition(":")
        if state.models.get(model) != version:
            return respond(422, problem(422, "- version: Invalid version or not permitted"))
        return await create(request, model, version)

    async def get(request: web.Request) -> web.Response:
        if (answer := refused(request)) is not None:
            return answer
        prediction_id = request.match_info["id"]
        if prediction_id not in state.predictions:
            return respond(404, problem(404, "Not found."))
        state._polls[prediction_id] += 1
        _advance(state, prediction_id, f"{request.scheme}://{request.host}")
        return respond(200, state.predictions[prediction_id])

    async def webhook_secret(request: web.Request) -> web.Response:
        if (answer := refused(request)) is not None:
            return answer
        token = request.headers["Authorization"].partition(" ")[2]
        return respond(200, {"key": state.secret_for(token)})

    async def cancel(request: web.Request) -> web.Response:
        if (answer := refused(request)) is not None:
            return answer
        prediction = state.predictions.get(request.match_info["id"])
        if prediction is None:
            return respond(404, problem(404, "Not found."))
        if prediction["status"] not in TERMINAL:
            prediction |= {"status": "canceled", "completed_at": _now()}
            state._outcome_of[prediction["id"]] = Outcome(status="canceled")
            _emit(state, prediction["id"], "completed")
        return respond(200, prediction)

    async def account(request: web.Request) -> web.Response:
        if (answer := refused(request)) is not None:
            return answer
        return respond(200, {"type": "user", "username": "studiobot-test", "name": "Test"})

    async def files(request: web.Request) -> web.Response:
        outcome = state._outcome_of.get(request.match_info["id"])
        prediction = state.predictions.get(request.match_info["id"])
        if outcome is None or prediction is None or outcome.missing_files:
            return respond(404, "Not Found")
        size = SIZES[prediction["input"].get("aspect_ratio", "1:1")]
        return web.Response(body=png(size, 64), content_type="image/png")

    app.router.add_post("/models/{owner}/{name}/predictions", create_for_model)
    app.router.add_post("/predictions", create_for_version)
    app.router.add_get("/predictions/{id}", get)
    app.router.add_post("/predictions/{id}/cancel", cancel)
    app.router.add_get("/account", account)
    app.router.add_get("/webhooks/default/secret", webhook_secret)
    app.router.add_get("/files/{id}/{n}.png", files)
    return app


def _now() -> str:
    return datetime.now(timezone.utc).isoformat().replace("+00:00", "Z")


def _advance(state: ReplicateState, prediction_id: str, base: str) -> None:
    """Move a prediction along its script on each poll, sending the webhooks that move earns."""
    prediction = state.predictions[prediction_id]
    if prediction["status"] in TERMINAL:
        return
    polls = state._polls[prediction_id]
    if polls <= 1 and state.steps >= 1:
        prediction["status"] = "starting"
        return
    if polls <= state.steps:
        percent = int(100 * (polls - 1) / state.steps)
        prediction |= {"status": "processing", "started_at": _now()}
        prediction["logs"] = f"Using seed: 42\n{percent}%|{'#' * (percent // 10)}| {polls - 1}/4"
        _emit(state, prediction_id, "logs")
        return
    _finish(state, prediction_id, base)
    if prediction["status"] == "succeeded" and prediction["output"] is not None:
        _emit(state, prediction_id, "output")
    _emit(state, prediction_id, "completed")


def _finish(state: ReplicateState, prediction_id: str, base: str) -> None:
    """Give a prediction its scripted terminal state."""
    prediction = state.predictions[prediction_id]
    outcome = state._outcome_of[prediction_id]
    prediction |= {"status": outcome.status, "completed_at": _now()}
    prediction["metrics"] = {"predict_time": 0.5, "total_time": 0.6}
    if outcome.status == "failed":
        prediction["error"] = outcome.error
    elif outcome.status == "succeeded":
        if outcome.data_removed:
            prediction |= {"output": None, "data_removed": True, "input": {}}
            return
        urls = [
            f"{base}/files/{prediction_id}/{n}.png"
            for n in range(prediction["input"].get("num_outputs", 1))
        ]
        prediction["output"] = urls[0] if outcome.output_as_string else urls


def _validate(body: Any, *, https_only: bool) -> web.Response | None:
    """flux-schnell input checks; None when ``body`` is acceptable."""
    def invalid(detail: str) -> web.Response:
        return respond(422, problem(422, detail, "Input validation failed"))

    if not isinstance(body, dict) or not isinstance(body.get("input"), dict):
        return invalid("- input: input is required")
    data = body["input"]
    if not isinstance(data.get("prompt"), str) or not data["prompt"]:
        return invalid("- input: prompt is required")
    if data.get("aspect_ratio", "1:1") not in ASPECTS:
        return invalid(f"- input.aspect_ratio: must be one of {', '.join(ASPECTS)}")
    if data.get("num_outputs", 1) not in (1, 2, 3, 4):
        return invalid("- input.num_outputs: must be between 1 and 4")
    if data.get("output_format", "webp") not in ("webp", "jpg", "png"):
        return invalid("- input.output_format: must be one of webp, jpg, png")
    if "seed" in data and not isinstance(data["seed"], int):
        return invalid("- input.seed: must be an integer")
    events = body.get("webhook_events_filter")
    if events is not None and not (isinstance(events, list) and set(events) <= WEBHOOK_EVENTS):
        return invalid("- webhook_events_filter: invalid event")
    if "webhook" in body and not (
        str(body["webhook"]).startswith("https://")
        or (not https_only and str(body["webhook"]).startswith("http://"))
    ):
        return invalid("- webhook: must be an HTTPS URL")
    return None


def signed_delivery(
    state: ReplicateState,
    prediction: dict[str, Any],
    *,
    secret: str | None = None,
    timestamp: int | None = None,
    tamper: bool = False,
) -> tuple[bytes, dict[str, str]]:
    """The ``(body, headers)`` Replicate would POST about ``prediction``.

    Args:
        state: The double (its owner's secret signs by default).
        prediction: The prediction object to send (the body is its compact JSON).
        secret: Sign with this ``whsec_`` secret instead of the owning account's.
        timestamp: ``webhook-timestamp`` in unix seconds (default now); outside 5 minutes of now,
            Standard Webhooks receivers must refuse it.
        tamper: Sign the real body, then send one whose output points elsewhere.

    Returns:
        The raw body and the ``webhook-id``/``webhook-timestamp``/``webhook-signature`` headers.
    """
    owner = state._owner.get(str(prediction.get("id")))
    signer = Webhook(secret or (state.secret_for(owner) if owner else state.signing_secret))
    when = datetime.now(timezone.utc) if timestamp is None else datetime.fromtimestamp(
        timestamp, timezone.utc
    )
    body = json.dumps(prediction, separators=(",", ":"))
    msg_id = "msg_" + secrets.token_urlsafe(18)
    headers = {
        "webhook-id": msg_id,
        "webhook-timestamp": str(int(when.timestamp())),
        "webhook-signature": signer.sign(msg_id, when, body),
        "content-type": "application/json",
    }
    if tamper:
        body = json.dumps(prediction | {"output": ["https://attacker.test/x.png"]})
    return body.encode(), headers


async def deliver_webhook(
    state: ReplicateState,
    prediction_id: str,
    *,
    event: str = "completed",
    tamper: bool = False,
    timestamp: int | None = None,
) -> int | None:
    """POST one signed delivery of ``prediction_id`` to its ``webhook``, as Replicate would.

    A ``completed`` event first ends the prediction with its scripted outcome if it is running.

    Returns:
        The receiver's HTTP status; None when the prediction's ``webhook_events_filter`` leaves
        ``event`` out (nothing is sent).

    Raises:
        KeyError: The prediction does not exist or was created without a webhook.
        httpx.HTTPError: The receiver could not be reached.
    """
    url, events = state._hooks[prediction_id]
    if event not in events:
        return None
    prediction = state.predictions[prediction_id]
    if event == "completed" and prediction["status"] not in TERMINAL:
        _finish(state, prediction_id, state._base[prediction_id])
    body, headers = signed_delivery(state, prediction, tamper=tamper, timestamp=timestamp)
    async with httpx.AsyncClient(timeout=5.0, follow_redirects=False) as client:
        response = await client.post(url, content=body, headers=headers)
    state.deliveries.append(Delivery(prediction_id, event, response.status_code))
    return response.status_code


async def settle_webhooks(state: ReplicateState) -> list[Delivery]:
    """Wait for the background deliveries ``auto_webhooks`` started; return all deliveries."""
    while state._sending:
        await asyncio.gather(*state._sending)
    return state.deliveries


def _emit(state: ReplicateState, prediction_id: str, event: str) -> None:
    """Start a background delivery of ``event`` when auto webhooks are on and the filter asks."""
    hook = state._hooks.get(prediction_id)
    if not state.auto_webhooks or hook is None or event not in hook[1]:
        return
    # The body is fixed now: later polls must not change what this event reported.
    snapshot = json.loads(json.dumps(state.predictions[prediction_id]))

    async def send() -> None:
        body, headers = signed_delivery(state, snapshot)
        try:
            async with httpx.AsyncClient(timeout=5.0, follow_redirects=False) as client:
                status: int | None = (
                    await client.post(hook[0], content=body, headers=headers)
                ).status_code
        except httpx.HTTPError:
            status = None
        state.deliveries.append(Delivery(prediction_id, event, status))

    task = asyncio.get_running_loop().create_task(send())
    state._sending.add(task)
    task.add_done_callback(state._sending.discard)
