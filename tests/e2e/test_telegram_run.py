"""``studiobot run`` with ``TELEGRAM_TOKEN`` set: a real process serves the loopback Bot API, by
polling and by webhook, from ``/imagine`` to photo with a working keyboard."""

from __future__ import annotations

import asyncio
import signal
import sys
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest

from tests.doubles.telegram import TelegramState, running_telegram
from tests.e2e.test_shell import clean_env
from tests.ports import free_port

pytestmark = pytest.mark.slow



Deliver = Callable[[dict[str, Any]], Awaitable[None]]


async def imagine_and_upscale(tg: TelegramState, deliver: Deliver) -> None:
    """Send ``/imagine`` with 4 images, check the album and keyboard, press U3, get the upscale."""
    ada = tg.user(1111111, "Ada", "ada")
    chat = tg.private_chat(ada)
    await deliver(tg.message_update(chat, ada, "/imagine a lighthouse at dusk --count 4"))
    album = await tg.wait_for(lambda c: c.method == "sendMediaGroup" and c.ok, timeout=30)
    assert len(album.response["result"]) == 4
    keyboard = await tg.wait_for(
        lambda c: c.method == "sendMessage" and c.ok and "is ready" in c.params["text"], timeout=30)
    rows = keyboard.params["reply_markup"]["inline_keyboard"]
    assert [b["callback_data"] for b in rows[0]] == [f"upscale 1 {n}" for n in range(1, 5)]
    await deliver(tg.callback_query_update(ada, keyboard.response["result"], "upscale 1 3"))
    upscale = await tg.wait_for(lambda c: c.method == "sendPhoto" and c.ok, timeout=30)
    assert "Upscale of job #1 image 3" in upscale.params["caption"]


@pytest.mark.parametrize("mode", ["polling", "webhook"])
async def test_studiobot_run_serves_telegram_until_sigterm(database_url: str, tmp_path: Path, mode: str) -> None:
    async with running_telegram() as tg:
        env = {"STUDIOBOT_DATABASE_URL": database_url, "TELEGRAM_TOKEN": tg.token,
               "STUDIOBOT_TELEGRAM_API_BASE": tg.base_url}
        if mode == "webhook":
            port = free_port()
            env |= {"TELEGRAM_WEBHOOK_URL": f"http://127.0.0.1:{port}/tg/hook", "STUDIOBOT_WEB_PORT": str(port)}
        process = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "studiobot", "run", cwd=tmp_path, env=clean_env(**env),
            stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
        try:
            if mode == "polling":
                await tg.wait_until(lambda: tg.polling, 30, "polling")
                await imagine_and_upscale(tg, _push(tg))
            else:
                await tg.wait_until(lambda: tg.webhook is not None, 30, "the webhook set")
                await _wait_listening(port)
                await imagine_and_upscale(tg, _post(tg))
        finally:
            if process.returncode is None:
                process.send_signal(signal.SIGTERM)
            _, stderr = await asyncio.wait_for(process.communicate(), 30)
        assert process.returncode == 0, stderr.decode()[-2000:]
        assert tg.token not in stderr.decode()


def _push(tg: TelegramState) -> Deliver:
    async def deliver(update: dict[str, Any]) -> None:
        tg.push_update(update)
    return deliver


def _post(tg: TelegramState) -> Deliver:
    async def deliver(update: dict[str, Any]) -> None:
        status, _ = await tg.post_to_webhook(update)
        assert status == 200
    return deliver


async def _wait_listening(port: int) -> None:
    for _ in range(100):
        try:
            _, writer = await asyncio.open_connection("127.0.0.1", port)
            writer.close()
            return
        except OSError:
            await asyncio.sleep(0.1)
    raise TimeoutError(f"nothing listens on port {port}")
