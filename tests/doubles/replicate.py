"""Loopback double of the Replicate predictions API (contracts README §3).

Speaks create (``POST /models/{owner}/{name}/predictions`` and ``POST /predictions`` with
``version``), ``GET /predictions/{id}``, ``POST /predictions/{id}/cancel`` and ``GET /account``.
A prediction answers ``starting`` on its first poll, ``processing`` (with a ``NN%`` progress bar in
``logs``) until ``state.steps`` polls have passed, then its scripted :class:`Outcome`. Output URLs
point at the double itself (``/files/<id>/<n>.png``) and serve real PNGs whose longer side is 64
pixels, to keep tests fast. Scripted HTTP failures go in ``state.fail_next`` (see
:mod:`tests.doubles.server`).
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any

from aiohttp import web

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
    """

    valid_tokens: set[str] = field(default_factory=lambda: {VALID_TOKEN})
    models: dict[str, str] = field(default_factory=lambda: {FLUX_SCHNELL: FLUX_VERSION})
    steps: int = 2
    outcomes: list[Outcome] = field(default_factory=list)
    requests: list[RecordedRequest] = field(default_factory=list)
    fail_next: list[tuple[Any, ...]] = field(default_factory=list)
    predictions: dict[str, dict[str, Any]] = field(default_factory=dict)
    _polls: dict[str, int] = field(default_factory=dict)
    _outcome_of: dict[str, Outcome] = field(default_factory=dict)


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
        problem_ = _validate(body)
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

    async def cancel(request: web.Request) -> web.Response:
        if (answer := refused(request)) is not None:
            return answer
        prediction = state.predictions.get(request.match_info["id"])
        if prediction is None:
            return respond(404, problem(404, "Not found."))
        if prediction["status"] not in TERMINAL:
            prediction |= {"status": "canceled", "completed_at": _now()}
            state._outcome_of[prediction["id"]] = Outcome(status="canceled")
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
    app.router.add_get("/files/{id}/{n}.png", files)
    return app


def _now() -> str:
    return datetime.now(timezone.utc).isoformat().replace("+00:00", "Z")


def _advance(state: ReplicateState, prediction_id: str, base: str) -> None:
    """Move a prediction along its script on each poll."""
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
        return
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


def _validate(body: Any) -> web.Response | None:
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
    if "webhook" in body and not str(body["webhook"]).startswith("https://"):
        return invalid("- webhook: must be an HTTPS URL")
    return None
