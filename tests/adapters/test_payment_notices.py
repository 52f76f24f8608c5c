"""Payment news reaches the buyer privately through the platform's outbox, never the group.

The real PTB bot against the loopback Bot API: a notice for an order made in a group is sent to
the buyer's private chat; one for an order made in private goes there too.
"""

from __future__ import annotations

from sqlalchemy.engine import Connection
from telegram import Bot

from studiobot.billing.orders import Notice
from studiobot.bot.telegram.outbox import TelegramOutbox
from studiobot.bot.telegram.render import Sender
from studiobot.commands.notices import PaymentNotices
from studiobot.db import users
from studiobot.db.engine import Database
from tests.doubles.telegram import running_telegram

BUYER = 424242
GROUP = -100777


async def test_payment_news_goes_to_the_buyers_private_chat(db: Database) -> None:
    def make_user(conn: Connection) -> int:
        return users.create_user(conn, "telegram", str(BUYER), "Ada")

    user_id = await db.run(make_user)
    async with running_telegram() as tg:
        bot = Bot(tg.token, base_url=tg.base_url, base_file_url=tg.base_file_url)
        await bot.initialize()
        try:
            notices = PaymentNotices(db, {"telegram": TelegramOutbox(Sender(bot, db), db)})
            in_group = {"platform": "telegram", "chat_id": str(GROUP), "kind": "group",
                        "community_id": str(GROUP), "reply_to": "55"}
            await notices(Notice(user_id, "telegram", in_group, "Payment received: 100 credits are yours.",
                                 {"order_id": 1, "event": "fulfilled"}))
            in_private = {"platform": "telegram", "chat_id": str(BUYER), "kind": "dm"}
            await notices(Notice(user_id, "telegram", in_private, "Your payment did not go through.",
                                 {"order_id": 2, "event": "failed"}))
            # A platform this process has no outbox for is skipped, not an error.
            await notices(Notice(user_id, "discord", in_private, "x", {"order_id": 3}))
        finally:
            await bot.shutdown()
    sent = [c for c in tg.calls_to("sendMessage")]
    assert [c.params["chat_id"] for c in sent] == [BUYER, BUYER]
    assert "100 credits" in sent[0].params["text"] and "reply_parameters" not in sent[0].params
    assert tg.sends_in(GROUP) == []
