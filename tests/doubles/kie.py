"""Loopback double of KIE.ai's Midjourney, Flux Kontext and GPT-4o image APIs (contracts README §5).

Speaks ``POST /api/v1/mj/generate``, ``/api/v1/flux/kontext/generate``,
``/api/v1/gpt4o-image/generate``, each family's ``GET .../record-info?taskId=`` and
``GET /api/v1/chat/credit``. Like KIE, it answers HTTP 200 with a ``{code, msg, data}`` envelope
whatever happens (wrong key: code 401; invalid field: 422; unknown task: 422 "record is null").

A task answers "generating" for ``state.steps`` polls, then its scripted :class:`Outcome`.
:func:`deliver_callback` POSTs the finished task's callback envelope to its ``callBackUrl`` and
marks the task finished, so tests can have KIE call back before, after or instead of polls. Result
URLs point at the double (``/files/<taskId>/<n>.png``) and serve real PNGs whose longer side is 64
pixels. ``state.envelope_next`` scripts envelope codes (402, 429, 455...) on HTTP 200;
``state.fail_next`` scripts real HTTP answers (see :mod:`tests.doubles.server`).
"""

from __future__ import annotations

import json
import secrets
import time
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

import httpx
from aiohttp import web

from tests.doubles.server import RecordedRequest, png, respond, scripting_middleware

VALID_KEY = "3f9c2b7e4a1d8c6b5e0f9a2d7c4b1e8a"  # KIE keys are 32 hex characters

# README §5 / kie.yaml enums and limits.
MJ_TASK_TYPES = ("mj_txt2img", "mj_img2img", "mj_style_reference", "mj_omni_reference",
                 "mj_video", "mj_video_hd")  # fmt: skip
MJ_SPEEDS = ("relaxed", "fast", "turbo")
MJ_ASPECTS = ("1:2", "9:16", "2:3", "3:4", "5:6", "6:5", "4:3", "3:2", "1:1", "16:9", "2:1")
MJ_VERSIONS = ("7", "6.1", "6", "5.2", "5.1", "niji6")
MJ_MAX_PROMPT = 2000
FLUX_MODELS = ("flux-kontext-pro", "flux-kontext-max")
FLUX_ASPECTS = ("21:9", "16:9", "4:3", "1:1", "3:4", "9:16")  # UNVERIFIED in the contract
FLUX_FORMATS = ("jpeg", "png")
GPT4O_SIZES = ("1:1", "3:2", "2:3")
GPT4O_VARIANTS = (1, 2, 4)  # UNVERIFIED in the contract

PATHS = {
    "mj": ("/api/v1/mj/generate", "/api/v1/mj/record-info"),
    "flux": ("/api/v1/flux/kontext/generate", "/api/v1/flux/kontext/record-info"),
    "4o": ("/api/v1/gpt4o-image/generate", "/api/v1/gpt4o-image/record-info"),
}
CONTENT_POLICY_MESSAGE = "Your content was flagged by OpenAI as violating content policies."


@dataclass(frozen=True)
class Outcome:
    """How one task ends.

    Attributes:
        error_code: None to succeed; else the task's ``errorCode`` (and the callback ``code``).
        error_message: ``errorMessage`` of a failed task (the callback ``msg``).
        flag: MJ/Kontext ``successFlag`` of a failure: 2 failed, 3 created but generation failed.
            For 4o, 3 gives ``GENERATE_FAILED`` and 2 ``CREATE_TASK_FAILED``.
    """

    error_code: int | None = None
    error_message: str = ""
    flag: int = 3


SUCCEED = Outcome()
CONTENT_POLICY = Outcome(400, CONTENT_POLICY_MESSAGE, 3)


def failure(code: int = 501, message: str = "Image generation failed", flag: int = 3) -> Outcome:
    """A task that ends without images for a reason other than content policy."""
    return Outcome(code, message, flag)


@dataclass
class Task:
    """One task the double created (tests may inspect it)."""

    task_id: str
    family: str
    body: dict[str, Any]
    outcome: Outcome
    base: str  # the double's own URL, for result links
    polls: int = 0
    done: bool = False

    @property
    def images(self) -> int:
        if self.family == "mj":
            return 4
        return self.body.get("nVariants", 1) if self.family == "4o" else 1

    def urls(self) -> list[str]:
        return [f"{self.base}/files/{self.task_id}/{n}.png" for n in range(self.images)]


@dataclass
class KieState:
    """What the double knows and saw.

    Attributes:
        valid_keys: Keys accepted in ``Authorization: Bearer <key>``.
        steps: Polls answered "generating" before a task shows its outcome.
        outcomes: Outcomes taken by successive creates, first first; empty means success.
        envelope_next: ``(code, msg)`` pairs answered (HTTP 200) instead of the next API call.
        credits: What ``GET /api/v1/chat/credit`` reports.
        requests: Every request received, in order.
        fail_next: Scripted HTTP answers played before normal handling, first first.
        tasks: Tasks by KIE taskId.
        deliveries: ``(url, body, receiver's HTTP status)`` of each callback sent.
    """

    valid_keys: set[str] = field(default_factory=lambda: {VALID_KEY})
    steps: int = 1
    outcomes: list[Outcome] = field(default_factory=list)
    envelope_next: list[tuple[int, str]] = field(default_factory=list)
    credits: int = 1000
    requests: list[RecordedRequest] = field(default_factory=list)
    fail_next: list[tuple[Any, ...]] = field(default_factory=list)
    tasks: dict[str, Task] = field(default_factory=dict)
    deliveries: list[tuple[str, dict[str, Any], int]] = field(default_factory=list)


def envelope(code: int, msg: str, data: Any = None) -> dict[str, Any]:
    """KIE's response envelope (README §5)."""
    return {"code": code, "msg": msg, "data": data}


def kie_app(state: KieState) -> web.Application:
    """Build the double's aiohttp application around ``state``."""
    app = web.Application(middlewares=[scripting_middleware(state)])

    def gate(request: web.Request) -> web.Response | None:
        """Scripted envelope, else auth; None when the call may proceed."""
        if state.envelope_next:
            return respond(200, envelope(*state.envelope_next.pop(0)))
        scheme, _, key = request.headers.get("Authorization", "").partition(" ")
        if scheme == "Bearer" and key in state.valid_keys:
            return None
        return respond(200, envelope(401, "You do not have access permissions"))

    def creator(family: str):
        async def create(request: web.Request) -> web.Response:
            if (answer := gate(request)) is not None:
                return answer
            try:
                body = await request.json()
            except ValueError:
                body = None
            if not isinstance(body, dict):
                return respond(200, envelope(422, "request body must be a JSON object"))
            if (problem := _VALIDATORS[family](body)) is not None:
                return respond(200, envelope(422, problem))
            task_id = secrets.token_hex(16)
            outcome = state.outcomes.pop(0) if state.outcomes else SUCCEED
            base = f"{request.scheme}://{request.host}"
            state.tasks[task_id] = Task(task_id, family, body, outcome, base)
            return respond(200, envelope(200, "success", {"taskId": task_id}))

        return create

    def recorder(family: str):
        async def record_info(request: web.Request) -> web.Response:
            if (answer := gate(request)) is not None:
                return answer
            task = state.tasks.get(request.query.get("taskId", ""))
            if task is None or task.family != family:
                return respond(200, envelope(422, "record is null"))
            task.polls += 1
            if task.polls > state.steps:
                task.done = True
            return respond(200, envelope(200, "success", _record(task, state.steps)))

        return record_info

    async def credit(request: web.Request) -> web.Response:
        if (answer := gate(request)) is not None:
            return answer
        return respond(200, envelope(200, "success", state.credits))

    async def files(request: web.Request) -> web.Response:
        task = state.tasks.get(request.match_info["task"])
        if task is None or not task.done or task.outcome.error_code is not None:
            return respond(404, "Not Found")
        if int(request.match_info["n"]) >= task.images:
            return respond(404, "Not Found")
        ratio = task.body.get("size") or task.body.get("aspectRatio") or "1:1"
        return web.Response(body=png(ratio.replace(":", "x"), 64), content_type="image/png")

    for family, (create_path, record_path) in PATHS.items():
        app.router.add_post(create_path, creator(family))
        app.router.add_get(record_path, recorder(family))
    app.router.add_get("/api/v1/chat/credit", credit)
    app.router.add_get("/files/{task}/{n:\\d+}.png", files)
    return app


def _record(task: Task, steps: int) -> dict[str, Any]:
    """The record-info ``data`` for ``task`` in its family's shape (README §5, kie.yaml)."""
    now = int(time.time() * 1000)
    outcome = task.outcome
    failed = task.done and outcome.error_code is not None
    succeeded = task.done and not failed
    common = {
        "taskId": task.task_id,
        "paramJson": json.dumps(task.body),
        "createTime": now - 1000,
        "completeTime": now if task.done else None,
        "errorCode": outcome.error_code if failed else None,
        "errorMessage": outcome.error_message if failed else None,
    }
    flag = 1 if succeeded else outcome.flag if failed else 0
    if task.family == "mj":
        results = [{"resultUrl": u} for u in task.urls()] if succeeded else []
        return common | {"taskType": task.body["taskType"], "successFlag": flag,
                         "resultInfoJson": {"resultUrls": results}}  # fmt: skip
    if task.family == "flux":
        response = {"resultImageUrl": task.urls()[0], "originImageUrl": None} if succeeded else None
        return common | {"successFlag": flag, "response": response}
    status = "GENERATING"
    if succeeded:
        status = "SUCCESS"
    elif failed:
        status = "GENERATE_FAILED" if outcome.flag == 3 else "CREATE_TASK_FAILED"
    progress = 1.0 if task.done else task.polls / (steps + 1)
    return common | {
        "status": status,
        "successFlag": flag,
        "progress": f"{progress:.2f}",
        "response": {"resultUrls": task.urls()} if succeeded else None,
    }


def callback_body(task: Task) -> dict[str, Any]:
    """The envelope KIE POSTs to ``callBackUrl`` when ``task`` ends.

    Shapes from docs.kie.ai's callback pages: MJ ``data.resultUrls``, 4o ``data.info.result_urls``,
    Kontext ``data.info.resultImageUrl``; failures carry the error code and message in
    ``code``/``msg``.
    """
    outcome = task.outcome
    if outcome.error_code is not None:
        info: dict[str, Any] = {"resultUrls": []} if task.family == "mj" else {"info": None}
        return envelope(outcome.error_code, outcome.error_message, {"taskId": task.task_id} | info)
    data: dict[str, Any] = {"taskId": task.task_id}
    if task.family == "mj":
        data |= {"promptJson": json.dumps(task.body), "resultUrls": task.urls()}
    elif task.family == "4o":
        data["info"] = {"result_urls": task.urls()}
    else:
        data["info"] = {"originImageUrl": None, "resultImageUrl": task.urls()[0]}
    return envelope(200, "success", data)


async def deliver_callback(state: KieState, task_id: str) -> int:
    """Finish ``task_id`` now and POST its callback to its ``callBackUrl``, as KIE does.

    Returns:
        The receiver's HTTP status (KIE expects 200 within 15 s).

    Raises:
        KeyError: Unknown task. ValueError: the task was created without ``callBackUrl``.
    """
    task = state.tasks[task_id]
    url = task.body.get("callBackUrl")
    if not url:
        raise ValueError(f"task {task_id} has no callBackUrl")
    task.done = True
    body = callback_body(task)
    async with httpx.AsyncClient(timeout=15.0) as client:
        response = await client.post(url, json=body)
    state.deliveries.append((url, body, response.status_code))
    return response.status_code


def _is_url(value: object) -> bool:
    if not isinstance(value, str):
        return False
    parts = urlsplit(value)
    return parts.scheme in ("http", "https") and bool(parts.netloc)


def _common(body: dict[str, Any]) -> str | None:
    if "callBackUrl" in body and not _is_url(body["callBackUrl"]):
        return "callBackUrl must be a valid URL"
    return None


def _one_of(
    body: dict[str, Any], name: str, allowed: tuple[Any, ...], *, required: bool
) -> str | None:
    if name not in body:
        return f"{name} is required" if required else None
    if body[name] not in allowed or isinstance(body[name], bool):
        return f"{name} must be one of {', '.join(map(str, allowed))}"
    return None


def _prompt(body: dict[str, Any], limit: int | None = None) -> str | None:
    prompt = body.get("prompt")
    if not isinstance(prompt, str) or not prompt.strip():
        return "prompt is required"
    if limit is not None and len(prompt) > limit:
        return f"prompt length must not exceed {limit} characters"
    return None


def _validate_mj(body: dict[str, Any]) -> str | None:
    return (
        _one_of(body, "taskType", MJ_TASK_TYPES, required=True)
        or _prompt(body, MJ_MAX_PROMPT)
        # speed is optional only for video and omni-reference tasks (kie.yaml)
        or _one_of(body, "speed", MJ_SPEEDS, required=body["taskType"] in MJ_TASK_TYPES[:3])
        or _one_of(body, "aspectRatio", MJ_ASPECTS, required=False)
        or _one_of(body, "version", MJ_VERSIONS, required=False)
        or _common(body)
    )


def _validate_flux(body: dict[str, Any]) -> str | None:
    return (
        _prompt(body)
        or _one_of(body, "model", FLUX_MODELS, required=False)
        or _one_of(body, "aspectRatio", FLUX_ASPECTS, required=False)
        or _one_of(body, "outputFormat", FLUX_FORMATS, required=False)
        or _common(body)
    )


def _validate_4o(body: dict[str, Any]) -> str | None:
    return (
        _one_of(body, "size", GPT4O_SIZES, required=True)
        or _prompt(body)  # we send no filesUrl, so a prompt is required
        or _one_of(body, "nVariants", GPT4O_VARIANTS, required=False)
        or _common(body)
    )


_VALIDATORS = {"mj": _validate_mj, "flux": _validate_flux, "4o": _validate_4o}
