"""Several people's shells on one database: each terminal prints and waits for its own user's
jobs only, although any shell's worker may run anyone's job (issue 15, item 7)."""

from __future__ import annotations

import asyncio
import io
import json
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from studiobot.app import build_app, run_shell
from studiobot.bot.shell.adapter import PLATFORM, TERMINAL
from studiobot.commands.contract import UserRef
from studiobot.config import Settings
from studiobot.scheduler import lifecycle
from tests.e2e.test_shell import clean_env


async def _shell(settings: Settings, user: str, text: str) -> list[dict[str, Any]]:
    out = io.StringIO()
    await run_shell(settings, user=user, json_mode=True, wait_each=False, stdin=io.StringIO(text), stdout=out)
    return [json.loads(line) for line in out.getvalue().splitlines()]


def _results(records: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [r for r in records if r["type"] == "result"]


async def test_a_shell_never_prints_or_waits_for_another_users_job(
    make_settings: Callable[..., Settings], database_url: str
) -> None:
    settings = make_settings(database_url=database_url)
    # Zed queued a job from a shell that has since closed: nobody will ever print it.
    app = await build_app(settings, {})
    try:
        _, queued = await app.dispatcher.dispatch_text(
            UserRef(PLATFORM, "zed", "zed"), TERMINAL, "/imagine zed's secret garden", "zed-1"
        )
    finally:
        await app.aclose()
    zeds = queued.data["job_id"]

    async with asyncio.timeout(30):  # before the fix Ada's shell waited for Zed's job forever
        records = await _shell(settings, "ada", "/imagine ada's harbour\n")

    assert [r["data"]["prompt"] for r in _results(records)] == ["ada's harbour"]
    assert all("zed" not in json.dumps(r) for r in records)
    reader = await build_app(settings, {})
    try:
        async with reader.db.read() as conn:
            zed_job = await lifecycle.get(conn, zeds)
        assert zed_job.status == "succeeded"  # Ada's worker made it...
        assert zed_job.notified_at is None  # ...and left it for Zed's own terminal
    finally:
        await reader.aclose()


@pytest.mark.slow
def test_five_shell_processes_at_once_each_print_exactly_their_own_results(
    database_url: str, tmp_path: Path
) -> None:
    env = clean_env(STUDIOBOT_DATABASE_URL=database_url, STUDIOBOT_DATA_DIR=str(tmp_path / "data"))
    command = [sys.executable, "-m", "studiobot"]
    subprocess.run([*command, "db", "upgrade"], env=env, cwd=tmp_path, check=True, capture_output=True,
                   timeout=60)
    users = [f"u{i}" for i in range(1, 6)]
    shells = [
        subprocess.Popen([*command, "run", "--json", "--no-wait", "--user", user], env=env, cwd=tmp_path, text=True,
                         stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        for user in users
    ]
    # Every line at once (no waiting per line), so any process's worker may take anyone's job.
    outputs = [shell.communicate("".join(f"/imagine {user} picture {n}\n" for n in range(3)), timeout=120)
               for user, shell in zip(users, shells, strict=True)]

    for user, shell, (stdout, stderr) in zip(users, shells, outputs, strict=True):
        assert shell.returncode == 0, stderr
        records = [json.loads(line) for line in stdout.splitlines()]
        prompts = sorted(r["data"]["prompt"] for r in _results(records))
        assert prompts == [f"{user} picture {n}" for n in range(3)], (user, prompts)
