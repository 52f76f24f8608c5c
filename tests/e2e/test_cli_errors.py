"""Start-up failures print one clear line, exit non-zero and never print a secret (issue 15
item 13).

Each test runs the real ``studiobot`` console script in a subprocess; platform tokens are refused
by the loopback Discord and Telegram doubles, as the real services do (HTTP 401, gateway close
4004).
"""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path

import pytest

from tests.doubles.discord import API, VALID_TOKEN, DiscordState, running_discord
from tests.doubles.telegram import running_telegram
from tests.e2e.test_shell import clean_env

pytestmark = pytest.mark.slow

CONFIGURATION, FAILURE = 2, 1
_SCRIPT = Path(sys.executable).with_name("studiobot")


async def studiobot(cwd: Path, *args: str, **env: str) -> tuple[int, str]:
    """Run the ``studiobot`` entry point; return its exit status and stdout + stderr."""
    process = await asyncio.create_subprocess_exec(
        str(_SCRIPT), *args, cwd=cwd, env=clean_env(**env), stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )
    try:
        out, err = await asyncio.wait_for(process.communicate(), 90)
    finally:
        if process.returncode is None:
            process.kill()
    assert process.returncode is not None
    return process.returncode, out.decode() + err.decode()


def one_clear_line(status: int, output: str, *, expected: int, says: str, secrets: tuple[str, ...] = ()) -> str:
    """Assert the exit status, a single ``studiobot:`` line saying ``says``, no traceback and no
    secret anywhere in the output; return that line."""
    assert status == expected, output[-3000:]
    assert "Traceback" not in output, output[-3000:]
    lines = [line for line in output.splitlines() if line.startswith("studiobot: ")]
    assert len(lines) == 1 and says in lines[0], output[-3000:]
    for secret in secrets:
        assert secret not in output
    return lines[0]


async def test_a_token_discord_refuses_at_login(database_url: str, tmp_path: Path) -> None:
    wrong = VALID_TOKEN[:-6] + "WRONG0"
    async with running_discord(DiscordState()) as (state, base_url):
        status, output = await studiobot(
            tmp_path, "run", STUDIOBOT_DATABASE_URL=database_url, DISCORD_TOKEN=wrong,
            STUDIOBOT_DISCORD_API_BASE=base_url + API)
        assert [c.status for c in state.calls if c.route == "get_me"] == [401]
    one_clear_line(status, output, expected=CONFIGURATION,
                   says="Discord refused the bot token: set STUDIOBOT_DISCORD_TOKEN", secrets=(wrong,))


async def test_a_token_the_discord_gateway_refuses(database_url: str, tmp_path: Path) -> None:
    # Accepted by REST, then reset before IDENTIFY: the gateway closes with 4004.
    async with running_discord(DiscordState(gateway_token=VALID_TOKEN + "-reset")) as (state, base_url):
        status, output = await studiobot(
            tmp_path, "run", STUDIOBOT_DATABASE_URL=database_url, DISCORD_TOKEN=VALID_TOKEN,
            STUDIOBOT_DISCORD_API_BASE=base_url + API)
        assert any(f.get("op") == 2 for f in state.gateway_received)  # it got as far as IDENTIFY
    one_clear_line(status, output, expected=CONFIGURATION, says="Discord refused the bot token",
                   secrets=(VALID_TOKEN,))


async def test_a_token_telegram_refuses_is_never_printed(database_url: str, tmp_path: Path) -> None:
    wrong = "123456:WRONG-token-never-printed"
    async with running_telegram() as tg:
        status, output = await studiobot(
            tmp_path, "run", STUDIOBOT_DATABASE_URL=database_url, TELEGRAM_TOKEN=wrong,
            STUDIOBOT_TELEGRAM_API_BASE=tg.base_url)
    # python-telegram-bot's own message quotes the token; the secret part must not appear.
    one_clear_line(status, output, expected=CONFIGURATION,
                   says="Telegram refused the bot token: set STUDIOBOT_TELEGRAM_TOKEN",
                   secrets=(wrong, "WRONG-token-never-printed"))


@pytest.mark.parametrize(("variable", "value"), [
    ("STUDIOBOT_OPERATORS", "shell:bob"),
    ("STUDIOBOT_PROVIDERS", "[offline"),
])
async def test_settings_that_are_not_json(tmp_path: Path, variable: str, value: str) -> None:
    status, output = await studiobot(tmp_path, "admin", "stats", **{variable: value})
    line = one_clear_line(status, output, expected=CONFIGURATION, says=f"{variable} is not valid JSON")
    assert value not in line


async def test_a_postgresql_server_that_is_not_there(tmp_path: Path) -> None:
    password = "pw-hunter2-secret"
    url = f"postgresql+asyncpg://studiobot:{password}@127.0.0.1:1/studiobot"  # nothing listens on port 1
    for args in (("db", "upgrade"), ("admin", "stats"), ("run",)):
        status, output = await studiobot(tmp_path, *args, STUDIOBOT_DATABASE_URL=url)
        line = one_clear_line(status, output, expected=FAILURE, says="cannot open the database", secrets=(password,))
        assert "studiobot:***@127.0.0.1:1/studiobot" in line and "STUDIOBOT_DATABASE_URL" in line


async def test_a_sqlite_file_in_a_missing_folder(tmp_path: Path) -> None:
    url = f"sqlite+aiosqlite:///{tmp_path / 'gone' / 'studiobot.db'}"
    status, output = await studiobot(tmp_path, "db", "upgrade", STUDIOBOT_DATABASE_URL=url)
    line = one_clear_line(status, output, expected=FAILURE, says="cannot open the database")
    assert "unable to open database file" in line and "its folder exists" in line


async def test_a_chart_path_in_a_missing_folder(database_url: str, tmp_path: Path) -> None:
    chart = tmp_path / "no-such-folder" / "usage.png"
    status, output = await studiobot(tmp_path, "admin", "stats", "--chart", str(chart),
                                     STUDIOBOT_DATABASE_URL=database_url)
    one_clear_line(status, output, expected=CONFIGURATION, says=f"the folder {chart.parent} does not exist")
    assert not chart.parent.exists()
