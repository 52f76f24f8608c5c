"""``studiobot run`` with ``DISCORD_TOKEN`` set: a real process connects to the loopback Discord
and answers ``/imagine`` from interaction to final image message with working buttons."""

from __future__ import annotations

import asyncio
import signal
import sys
from pathlib import Path

import pytest

from tests.doubles.discord import API, GUILD_ID, VALID_TOKEN, DiscordState, running_discord
from tests.e2e.test_shell import clean_env

pytestmark = pytest.mark.slow


async def test_studiobot_run_serves_discord_until_sigterm(database_url: str, tmp_path: Path) -> None:
    async with running_discord(DiscordState()) as (state, base_url):
        env = clean_env(
            STUDIOBOT_DATABASE_URL=database_url,
            DISCORD_TOKEN=VALID_TOKEN,
            STUDIOBOT_DISCORD_API_BASE=base_url + API,
        )
        process = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "studiobot", "run", cwd=tmp_path, env=env,
            stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
        try:
            await state.wait_ready(shards=(0,), timeout=30)
            sent = await state.dispatch_interaction(
                state.slash_command("imagine", {"prompt": "a lighthouse at dusk", "count": 4},
                                    guild_id=GUILD_ID))
            final = await state.wait_for(
                lambda c: c.route == "edit_original" and c.params.get("token") == sent.token
                and bool(c.files), timeout=30)
            assert sent.responded_at - sent.dispatched_at < 3.0
            assert final.files[0].filename == "1-grid.jpg"
            message = state.messages[sent.original_id]
            ids = [c["custom_id"] for row in message["components"] for c in row["components"]]
            assert ids[:4] == [f"sb:upscale 1 {n}" for n in range(1, 5)]
            click = await state.dispatch_interaction(
                state.button_click("sb:upscale 1 3", message, guild_id=GUILD_ID))
            upscaled = await state.wait_for(
                lambda c: c.route == "edit_followup" and c.params.get("token") == click.token
                and bool(c.files), timeout=30)
            assert upscaled.payload["embeds"][0]["title"] == "Job #2"
        finally:
            if process.returncode is None:
                process.send_signal(signal.SIGTERM)
            _, stderr = await asyncio.wait_for(process.communicate(), 30)
        assert process.returncode == 0, stderr.decode()[-2000:]
        assert VALID_TOKEN not in stderr.decode()
