"""End to end through the shell adapter, typed (piped) as a user would, on SQLite and PostgreSQL."""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from PIL import Image
from sqlalchemy import func, select

from studiobot.app import run_shell
from studiobot.config import Settings
from studiobot.db.engine import Database
from studiobot.db.models import CreditAccount, Job


def clean_env(**extra: str) -> dict[str, str]:
    """The environment for a studiobot subprocess: none of the developer's STUDIOBOT_ settings."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("STUDIOBOT_")}
    env.update(extra)
    return env


def run_cli(stdin: str, cwd: Path, *args: str, **env: str) -> list[dict[str, Any]]:
    done = subprocess.run(
        [sys.executable, "-m", "studiobot", "run", "--json", *args],
        input=stdin, capture_output=True, text=True, cwd=cwd, env=clean_env(**env), timeout=120,
    )
    assert done.returncode == 0, done.stderr
    return [json.loads(line) for line in done.stdout.splitlines()]


def test_done_when_script(database_url: str, tmp_path: Path) -> None:
    """The issue's acceptance script: a real image, a reduced balance, a gallery listing it."""
    out = run_cli(
        "/imagine a lighthouse at dusk, oil painting\n/credits\n/gallery\n",
        tmp_path,
        STUDIOBOT_DATABASE_URL=database_url,
    )
    queued, result, credits, gallery = out
    assert (queued["command"], queued["data"]["status"]) == ("imagine", "queued")
    assert result["type"] == "result" and result["data"]["status"] == "succeeded"
    image = Path(result["images"][0])
    assert image.is_file() and image.is_relative_to(tmp_path / "data" / "media")
    with Image.open(image) as opened:
        assert opened.format == "PNG" and opened.size == (512, 512)
    cost = result["data"]["cost"]
    assert cost >= 1 and credits["data"]["balance"] == 50 - cost
    assert [e["kind"] for e in credits["data"]["entries"]] == ["capture", "reserve", "grant"]
    assert [item["path"] for item in gallery["data"]["items"]] == [str(image)]


@pytest.fixture
def shell(make_settings: Callable[..., Settings], database_url: str):
    """Run the real shell adapter in-process on piped text; returns its JSON records."""

    async def run(text: str, *, user: str = "ada", **overrides: Any) -> list[dict[str, Any]]:
        out = io.StringIO()
        settings = make_settings(database_url=database_url, **overrides)
        await run_shell(settings, user=user, json_mode=True, stdin=io.StringIO(text), stdout=out)
        return [json.loads(line) for line in out.getvalue().splitlines()]

    return run


async def count_jobs_and_balance(database_url: str) -> tuple[int, int]:
    db = Database(database_url)
    try:
        async with db.read() as conn:
            jobs = (await conn.execute(select(func.count()).select_from(Job))).scalar_one()
            balance = (await conn.execute(select(CreditAccount.balance))).scalar_one()
    finally:
        await db.dispose()
    return jobs, balance


BAD_INPUT = [
    ("/imagine", "/imagine needs prompt"),
    ("/imagine    ", "/imagine needs prompt"),
    ("/imagine " + "x" * 1001, "Your prompt is 1,001 characters; the limit is 1,000"),
    ("/imagine a fox --provider nope",
     "Unknown provider 'nope'. Available here: offline, openai, replicate, stability, kie, huggingface."),
    ("/imagine a fox --model dream-9", "offline has no model 'dream-9'. Choose one of: offline-sketch."),
    ("/imagine a fox --ar 5:7", "aspect must be one of: 1:1, 16:9, 9:16, 4:3, 3:4, 3:2, 2:3."),
    ("/imagine a fox --count 9", "count must be a whole number from 1 to 4, not 9."),
    ("/imagine a fox --count two", "count must be a whole number, not 'two'."),
    ("/imagine a fox --seed -1", "seed must be a whole number from 0 to 4294967295, not -1."),
    ("/imagine a fox --count 4 --count 2", "--count was given twice."),
    ("/imagine a fox --style noir", "/imagine has no option --style."),
    ("/imagine a fox --count 4", "This needs 4 credits and you have 3."),
    ("/frobnicate", "Unknown command /frobnicate. Try /help."),
    ("/job abc", "job_id must be a whole number, not 'abc'."),
    ("/job 1", "Job #1 is not one of yours."),
    ("/gallery --page 0", "page must be a whole number from 1 to 10000, not 0."),
    ("/gallery everyone", "scope must be one of: mine, favorites, community."),
]


async def test_bad_input_gets_a_clear_reply_and_charges_nothing(shell, database_url: str) -> None:
    records = await shell("\n".join(line for line, _ in BAD_INPUT) + "\n", welcome_credits=3)
    assert len(records) == len(BAD_INPUT)
    for (line, expected), record in zip(BAD_INPUT, records, strict=True):
        assert expected in record["text"], (line, record["text"])
        assert record["ephemeral"] is True and "error" in record["data"]
    assert await count_jobs_and_balance(database_url) == (0, 3)


async def test_other_users_jobs_are_invisible(shell) -> None:
    ada = await shell("/imagine a private sketch\n", user="ada")
    job_id = ada[0]["data"]["job_id"]
    bob = await shell(f"/job {job_id}\n/cancel {job_id}\n/gallery\n", user="bob")
    assert [r["text"] for r in bob[:2]] == [f"Job #{job_id} is not one of yours."] * 2
    assert bob[2]["data"]["items"] == []


async def test_count_and_aspect_make_a_grid_and_the_right_shape(shell) -> None:
    records = await shell("a harbour at night --ar 16:9 --count 4 --seed 7\n/job 1\n")
    result = next(r for r in records if r["type"] == "result")
    assert result["data"]["cost"] == 4 and len(result["data"]["images"]) == 4
    with Image.open(result["data"]["grid"]) as grid:
        assert grid.format == "JPEG"
    for path in result["data"]["images"]:
        with Image.open(path) as image:
            assert image.size == (512, 288)
    assert len(set(result["data"]["images"])) == 4  # four different pictures
    job = records[-1]
    assert job["command"] == "job" and job["data"]["status"] == "succeeded"


async def test_text_mode_reads_like_a_conversation(make_settings, database_url) -> None:
    out = io.StringIO()
    settings = make_settings(database_url=database_url)
    await run_shell(settings, user="ada", json_mode=False, stdin=io.StringIO("/help\n/imagine a red fox\n"),
                    stdout=out)
    text = out.getvalue()
    assert "/imagine <prompt>" in text and "Example: /imagine" in text
    assert "is queued" in text and "is ready." in text and "  image: " in text
    assert "[Cancel: /cancel 1]" in text


async def test_asynchronous_offline_provider_reports_progress_then_the_result(shell) -> None:
    records = await shell("/imagine a slow sunrise\n", offline_delay_s=0.6, poll_backoff_max_s=0.1)
    kinds = [r["type"] for r in records]
    assert kinds[0] == "reply" and kinds[-1] == "result" and "progress" in kinds
    progress = next(r for r in records if r["type"] == "progress")
    assert 0 <= progress["data"]["progress"] < 1 and progress["text"].startswith("Job #1: “a slow sunrise” [")
    assert records[-1]["data"]["status"] == "succeeded"
