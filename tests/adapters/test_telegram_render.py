"""Rendering Replies on Telegram: photos within the size limit, odd shapes as documents, file ids
reused, against the loopback Bot API with a real PTB bot."""

from __future__ import annotations

import io
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from PIL import Image
from telegram import Bot

from studiobot.bot.telegram.render import Sender
from studiobot.commands.contract import ImageRef, Reply
from studiobot.db.engine import Database
from tests.doubles.telegram import TelegramState, running_telegram

CHAT = 1111111


def image_file(folder: Path, name: str, size: tuple[int, int], *, noisy: bool = False) -> ImageRef:
    image = Image.effect_noise(size, 80).convert("RGB") if noisy else Image.new("RGB", size, (200, 80, 40))
    path = folder / name
    image.save(path, "PNG")
    return ImageRef(path, "image", name, key=f"ab/{name}")


@pytest.fixture
async def sender(db: Database) -> AsyncIterator[tuple[Sender, TelegramState]]:
    async with running_telegram() as tg:
        bot = Bot(tg.token, base_url=tg.base_url, base_file_url=tg.base_file_url)
        await bot.initialize()
        try:
            yield Sender(bot, db, photo_max_bytes=40_000), tg
        finally:
            await bot.shutdown()


async def test_a_photo_over_the_limit_is_sent_as_a_smaller_jpeg_preview(
    sender: tuple[Sender, TelegramState], tmp_path: Path
) -> None:
    send, tg = sender
    big = image_file(tmp_path, "big.png", (600, 600), noisy=True)
    assert big.path.stat().st_size > 40_000
    await send.send(CHAT, Reply("Job #1 is ready.", images=[big]))
    (call,) = tg.calls_to("sendPhoto")
    upload = call.files["photo"]
    assert len(upload) <= 40_000 and Image.open(io.BytesIO(upload)).format == "JPEG"


async def test_odd_shapes_and_originals_go_as_documents(sender: tuple[Sender, TelegramState], tmp_path: Path) -> None:
    send, tg = sender
    narrow = image_file(tmp_path, "narrow.png", (2100, 100))  # wider than 20:1: not a photo
    await send.send(CHAT, Reply("A banner.", images=[narrow]))
    square = image_file(tmp_path, "square.png", (64, 64))
    await send.send(CHAT, Reply("The original.", images=[square], originals=True))
    assert [c.method for c in tg.calls if c.method.startswith("send")] == ["sendDocument", "sendDocument"]


async def test_images_telegram_holds_are_sent_again_by_file_id(
    sender: tuple[Sender, TelegramState], tmp_path: Path
) -> None:
    send, tg = sender
    images = [image_file(tmp_path, f"{n}.png", (64, 64)) for n in range(3)]
    first = await send.send(CHAT, Reply("Three images.", images=images))
    again = await send.send(CHAT, Reply("The same three.", images=images))
    albums = tg.calls_to("sendMediaGroup")
    assert len(albums) == 2 and albums[0].files and not albums[1].files  # no second upload
    sent_ids = [m["photo"][-1]["file_id"] for m in albums[0].response["result"]]
    assert [item["media"] for item in albums[1].params["media"]] == sent_ids
    assert len(first.message_ids) == 4 and first.keyboard_message_id == first.message_ids[-1]
    assert len(again.message_ids) == 4
