"""News for one user, told privately: payments (credits arrived, a payment failed, credits taken
back) and keys (a provider refused their own key).

The billing service produces :class:`~studiobot.billing.orders.Notice` values after its
transactions commit; the key ring reports refused keys with the job that met the refusal. Each is
delivered through the outbox of the platform it came from, as a private reply (a DM on Discord and
Telegram), addressed to the user.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping

from studiobot.billing.orders import Notice
from studiobot.commands.contract import ChatRef, Outbox, Reply
from studiobot.db import users
from studiobot.db.engine import Database
from studiobot.scheduler.lifecycle import JobRow

log = logging.getLogger(__name__)


class PaymentNotices:
    """Delivers billing notices (the ``notify`` of :class:`studiobot.billing.service.Billing`).

    Args:
        db: Database (to find the buyer's account on the order's platform).
        outboxes: One per platform this process can deliver to.
    """

    def __init__(self, db: Database, outboxes: Mapping[str, Outbox]) -> None:
        self._db = db
        self._outboxes = outboxes

    async def __call__(self, notice: Notice) -> None:
        outbox = self._outboxes.get(notice.origin_platform)
        if outbox is None:
            log.info("no %s outbox in this process; notice for order %s not delivered",
                     notice.origin_platform, notice.data.get("order_id"))
            return
        async with self._db.read() as conn:
            recipient = await users.platform_user_id(conn, notice.user_id, notice.origin_platform)
        reply = Reply(text=notice.text, ephemeral=True, private=True, data=dict(notice.data))
        await outbox.deliver(ChatRef.from_dict(notice.origin_chat), reply, recipient=recipient)


class KeyNotices:
    """Tells a user privately that a provider refused their key (the ``tell_user`` of the key ring).

    Args:
        db: Database (to find the user's account on the job's platform).
        outboxes: One per platform this process can deliver to.
    """

    def __init__(self, db: Database, outboxes: Mapping[str, Outbox]) -> None:
        self._db = db
        self._outboxes = outboxes

    async def __call__(self, job: JobRow, text: str) -> None:
        outbox = self._outboxes.get(job.origin_platform)
        if outbox is None:
            log.info("no %s outbox in this process; key notice for job %s not delivered", job.origin_platform, job.id)
            return
        async with self._db.read() as conn:
            recipient = await users.platform_user_id(conn, job.user_id, job.origin_platform)
        reply = Reply(text=text, ephemeral=True, private=True, data={"job_id": job.id, "notice": "key_invalid"})
        await outbox.deliver(ChatRef.from_dict(job.origin_chat), reply, recipient=recipient)
