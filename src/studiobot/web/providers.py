"""Provider webhook route: ``POST /webhooks/{provider}/{job_id}/{token}``.

Replicate (signed webhooks) and KIE (``callBackUrl``) call it when a task finishes; the receiver in
``scheduler.webhooks`` authenticates the delivery and finishes the job. Answers are plain text;
vendors only look at the status (KIE stops after 3 failed deliveries, Replicate retries, and
studiobot's polls cover both).
"""

from __future__ import annotations

from aiohttp import web

from studiobot.scheduler.webhooks import WebhookReceiver
from studiobot.web.server import Handler, WebServer

ROUTE = "/webhooks/{provider}/{job_id:[0-9]{1,18}}/{token}"


def add_provider_webhook_routes(server: WebServer, receiver: WebhookReceiver) -> None:
    """Serve provider webhooks on ``server``."""
    server.add_route("POST", ROUTE, webhook_handler(receiver))


def webhook_handler(receiver: WebhookReceiver) -> Handler:
    """The handler for :data:`ROUTE`."""

    async def handle(request: web.Request) -> web.Response:
        info = request.match_info
        answer = await receiver.receive(
            info["provider"], int(info["job_id"]), info["token"], await request.read(), request.headers
        )
        headers = {"Retry-After": "30"} if answer.status == 503 else None
        return web.Response(status=answer.status, text=answer.text, headers=headers)

    return handle
