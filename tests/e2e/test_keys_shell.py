"""Personal keys end to end through the shell adapter, typed (piped) as a user would.

The real shell adapter, dispatcher, vault, worker and OpenAI adapter run against the loopback
OpenAI double on SQLite and PostgreSQL. The user's key must reach the provider and nothing else:
not the database, not the logs, not a single line of output.
"""

from __future__ import annotations

import asyncio
import io
import json
import logging
import os
import subprocess
import sys
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select, text

from studiobot.app import open_database, open_vault, run_shell
from studiobot.config import Settings
from studiobot.db import users
from studiobot.db.engine import Database
from studiobot.db.models import ApiKey, Job
from studiobot.vault.cipher import new_master_key
from tests.doubles.openai_images import VALID_KEY as PLATFORM_KEY
from tests.doubles.openai_images import OpenAIState, error_body, make_openai_app
from tests.doubles.server import reply, serve

USER_KEY = "sk-proj-UsersOwnKey0123456789abcdefghijklmnWXYZ"
OTHER_KEY = "sk-proj-SomeoneElsesKey0123456789abcdefghijkQRST"
MASTER = new_master_key().decode()


@pytest.fixture
async def openai() -> AsyncIterator[tuple[str, OpenAIState]]:
    state = OpenAIState(valid_keys={PLATFORM_KEY, USER_KEY, OTHER_KEY})
    async with serve(make_openai_app(state)) as url:
        yield url, state


@pytest.fixture
def shell(make_settings: Callable[..., Settings], database_url: str, openai, caplog, capsys):
    """Run the shell in-process on piped text with OpenAI at the double; returns its JSON records.

    Every run also checks the secrets' hygiene: no user key in the output, the logs (DEBUG) or
    the standard streams.
    """
    url, _ = openai
    caplog.set_level(logging.DEBUG)

    async def run(script: str, *, user: str = "ada", platform_key: bool = True, **overrides: Any):
        out = io.StringIO()
        values: dict[str, Any] = {"database_url": database_url, "openai_base_url": url,
                                  "master_keys": MASTER}
        if platform_key:
            values["openai_api_key"] = PLATFORM_KEY
        settings = make_settings(**values | overrides)
        await run_shell(settings, user=user, json_mode=True, stdin=io.StringIO(script), stdout=out)
        streams = capsys.readouterr()
        for secret in (USER_KEY, OTHER_KEY, MASTER):
            assert secret not in out.getvalue()
            assert secret not in caplog.text
            assert secret not in streams.out + streams.err
        return [json.loads(line) for line in out.getvalue().splitlines()]

    return run


def keys_used(state: OpenAIState, path: str = "/images/generations") -> list[str]:
    return [r.headers["Authorization"].removeprefix("Bearer ") for r in state.requests if r.path.endswith(path)]


async def read(database_url: str, statement):
    db = Database(database_url)
    try:
        async with db.read() as conn:
            return (await conn.execute(statement)).all()
    finally:
        await db.dispose()


async def test_done_when_own_key_pays_then_removed_platform_pays(shell, openai, database_url) -> None:
    """The issue's acceptance script."""
    _, state = openai
    records = await shell(
        f"/keys add openai\n{USER_KEY}\n/imagine a lighthouse at dusk --provider openai\n/keys list\n"
        "/credits\n/keys remove openai\n/imagine a lighthouse at dusk --provider openai\n/credits\n"
    )
    added, queued, result, listing, credits, removed, queued2, result2, credits2 = records
    assert "Stored your openai key …WXYZ" in added["text"] and added["ephemeral"]
    assert queued["data"]["key_source"] == "user" and queued["data"]["cost"] == 0
    assert "paid by your own openai key, no credits" in queued["text"]
    assert result["data"]["status"] == "succeeded" and result["data"]["key_source"] == "user"
    assert "…WXYZ" in listing["text"] and "active" in listing["text"] and "last used 20" in listing["text"]
    assert credits["data"]["balance"] == 50  # nothing charged
    assert "Removed your openai key …WXYZ" in removed["text"]
    assert queued2["data"]["key_source"] == "platform" and queued2["data"]["cost"] == 4
    assert result2["data"]["status"] == "succeeded"
    assert credits2["data"]["balance"] == 46
    # The key check and the first job used the user's key; the second job the platform's.
    assert keys_used(state, "/models") == [USER_KEY]
    assert keys_used(state) == [USER_KEY, PLATFORM_KEY]
    assert await read(database_url, select(ApiKey.id)) == []  # removed means deleted


async def test_stored_key_is_encrypted_in_the_database(shell, database_url, tmp_path: Path) -> None:
    await shell(f"/keys add openai work\n{USER_KEY}\n/imagine a fox --provider openai\n")
    (ciphertext, hint, fingerprint, label), = await read(
        database_url, select(ApiKey.ciphertext, ApiKey.hint, ApiKey.fingerprint, ApiKey.label)
    )
    assert (hint, label) == ("…WXYZ", "work") and USER_KEY not in ciphertext + fingerprint
    # No table anywhere holds the key: every row of every table, as text.
    db = Database(database_url)
    try:
        async with db.read() as conn:
            if conn.dialect.name == "postgresql":
                tables = (await conn.execute(text(
                    "SELECT tablename FROM pg_tables WHERE schemaname = current_schema()"))).scalars().all()
            else:
                tables = (await conn.execute(text(
                    "SELECT name FROM sqlite_master WHERE type = 'table'"))).scalars().all()
            for table in tables:
                rows = (await conn.execute(text(f'SELECT * FROM "{table}"'))).all()
                assert USER_KEY[3:] not in repr(rows), table
                assert USER_KEY[-12:] not in repr(rows), table
    finally:
        await db.dispose()
    if database_url.startswith("sqlite"):
        for path in (tmp_path / "data").glob("studiobot.db*"):  # the file and its WAL
            assert USER_KEY[-12:].encode() not in path.read_bytes(), path


async def test_routing_table(shell, openai) -> None:
    _, state = openai
    # No platform key and no key of one's own: told how to add one, nothing queued.
    none = await shell("/imagine a fox --provider openai\n/credits\n", platform_key=False)
    assert "openai needs an API key" in none[0]["text"] and "/keys add openai" in none[0]["text"]
    assert none[1]["data"]["balance"] == 50
    # Platform key only: charged.
    platform = await shell("/imagine a fox --provider openai\n", user="bob")
    assert (platform[0]["data"]["key_source"], platform[0]["data"]["cost"]) == ("platform", 4)
    # Their own key, no platform key: free for them, and it is theirs only.
    own = await shell(f"/keys add openai\n{OTHER_KEY}\n/imagine a fox --provider openai\n", user="cy",
                      platform_key=False)
    assert own[1]["data"]["key_source"] == "user" and own[2]["data"]["status"] == "succeeded"
    other = await shell("/imagine a fox --provider openai\n", user="dee", platform_key=False)
    assert "openai needs an API key" in other[0]["text"]
    assert keys_used(state) == [PLATFORM_KEY, OTHER_KEY]


async def test_bad_keys_are_refused_and_never_stored(shell, openai, database_url) -> None:
    _, state = openai
    records = await shell(
        "/keys add openai\nsk-proj-NotARealKey00000000000000000000000\n"  # refused by OpenAI
        # A key typed where the label goes: refused before the key is asked for, so the next
        # line is read as a command (a prompt), and refused as a key too.
        f"/keys add openai {USER_KEY}\n{USER_KEY}\n"
        "/keys add nowhere\n"  # refused before asking: nothing waits for a key line
        "/keys add offline\n"
        f"/keys add openai\n{USER_KEY}\n/keys add openai again\n{USER_KEY}\n"  # the same key twice
        "/keys remove stability\n/keys test\n"
    )
    texts = [r["text"] for r in records]
    assert "openai refused that key, so I did not store it" in texts[0]
    assert "That looks like an OpenAI or Stability AI API key; it was not saved" in texts[1]
    assert "That looks like an OpenAI or Stability AI API key; it was not saved" in texts[2]
    assert records[2]["command"] == "imagine"
    assert "There is no provider 'nowhere'" in texts[3]
    assert "There is no provider 'offline'" in texts[4]
    assert "Stored your openai key" in texts[5]
    assert "You already added that key: #" in texts[6]
    assert "You have no key 'stability'" in texts[7]
    assert "openai …WXYZ: works." in texts[8]
    assert len(await read(database_url, select(ApiKey.id))) == 1
    assert not any(r.path.endswith("/images/generations") for r in state.requests)


async def test_a_key_refused_later_is_marked_invalid_and_the_user_told_privately(shell, openai, database_url):
    _, state = openai
    await shell(f"/keys add openai\n{USER_KEY}\n")
    state.valid_keys.discard(USER_KEY)  # revoked at OpenAI
    records = await shell("/imagine a fox --provider openai\n/keys list\n")
    notice = next(r for r in records if "refused your API key" in r["text"])
    assert notice["ephemeral"] is True and "/keys add openai" in notice["text"]
    failed = next(r for r in records if r["data"].get("status") == "failed")
    assert failed["data"]["error_code"] == "auth_error" and failed["data"]["cost"] == 0
    assert "invalid" in records[-1]["text"]
    # An invalid key no longer routes: the next job takes the platform key and is charged.
    again = await shell("/imagine a fox --provider openai\n")
    assert (again[0]["data"]["key_source"], again[0]["data"]["cost"]) == ("platform", 4)
    assert (await read(database_url, select(ApiKey.status))) == [("invalid",)]


@pytest.mark.parametrize(
    ("script", "fails_over"),
    [
        (reply(503, error_body("Engine overloaded", "server_error")), True),
        (reply(429, error_body("Rate limit reached for requests", "requests", "rate_limit_exceeded")), True),
        (reply(400, error_body("Invalid size", "invalid_request_error")), False),
        (reply(401, error_body("Incorrect API key provided", "invalid_request_error", "invalid_api_key")), False),
        (reply(403, error_body("Country, region, or territory not supported", "request_forbidden")), False),
    ],
    ids=["503", "429", "400", "401", "403"],
)
async def test_fallback_on_retryable_failures_only(shell, openai, database_url, script, fails_over) -> None:
    _, state = openai
    state.fail_next = [script]
    records = await shell("/imagine a fox --provider openai\n", max_attempts=1,
                          fallbacks={"openai": ["offline"]})
    result = records[-1]
    if fails_over:
        assert result["data"]["status"] == "succeeded" and result["data"]["provider"] == "offline"
        assert result["data"]["cost"] == 4  # the price agreed when it was queued
    else:
        assert result["data"]["status"] == "failed" and result["data"]["provider"] == "openai"
    assert len([r for r in state.requests if r.path.endswith("/images/generations")]) == 1
    (provider,), = await read(database_url, select(Job.provider))
    assert provider == ("offline" if fails_over else "openai")


async def test_a_users_own_key_never_fails_over(shell, openai) -> None:
    _, state = openai
    await shell(f"/keys add openai\n{USER_KEY}\n")
    state.fail_next = [reply(503, error_body("Engine overloaded", "server_error"))]
    records = await shell("/imagine a fox --provider openai\n", max_attempts=1, fallbacks={"openai": ["offline"]})
    assert records[-1]["data"]["status"] == "failed" and records[-1]["data"]["provider"] == "openai"


async def test_wrong_master_key_stops_start_up_with_a_clear_message(tmp_path: Path, database_url: str) -> None:
    """In a real process: keys stored under one master key; a start with another refuses to run."""
    settings = Settings(_env_file=None, data_dir=tmp_path / "data", database_url=database_url, master_keys=MASTER)
    db = await open_database(settings)
    try:
        vault = await open_vault(settings, db)
        assert vault is not None
        user_id = await db.run(users.create_user, "shell", "ada", "ada")
        await vault.add(user_id, "openai", USER_KEY)
    finally:
        await db.dispose()
    env = {k: v for k, v in os.environ.items() if not k.startswith("STUDIOBOT_")}
    env.update(STUDIOBOT_DATABASE_URL=database_url, STUDIOBOT_MASTER_KEYS=new_master_key().decode())
    done = await asyncio.to_thread(
        subprocess.run, [sys.executable, "-m", "studiobot", "run"], input="/keys list\n",
        capture_output=True, text=True, cwd=tmp_path, env=env, timeout=120,
    )
    assert done.returncode == 1
    assert "does not open the personal API keys stored in this database" in done.stderr
    assert USER_KEY not in done.stderr + done.stdout
    assert len(await read(database_url, select(ApiKey.ciphertext))) == 1  # nothing lost


@pytest.fixture
async def new_providers() -> AsyncIterator[dict[str, Any]]:
    """Stability, KIE.ai and Hugging Face doubles, as settings pointing at them."""
    from tests.doubles.huggingface import VALID_TOKEN as HF_TOKEN
    from tests.doubles.huggingface import HuggingFaceState, huggingface_app
    from tests.doubles.kie import VALID_KEY as KIE_KEY
    from tests.doubles.kie import KieState, kie_app
    from tests.doubles.stability import VALID_KEY as STABILITY_KEY
    from tests.doubles.stability import StabilityState, stability_app

    hf, kie, stability = HuggingFaceState(), KieState(steps=1), StabilityState()
    async with serve(huggingface_app(hf)) as hf_url, serve(kie_app(kie)) as kie_url, \
            serve(stability_app(stability)) as stability_url:
        yield {
            "settings": dict(
                stability_base_url=stability_url, kie_base_url=kie_url,
                huggingface_base_url=f"{hf_url}/hf-inference", huggingface_hub_url=hf_url,
            ),
            "platform": dict(stability_api_key=STABILITY_KEY, kie_api_key=KIE_KEY, huggingface_token=HF_TOKEN),
            "keys": {"stability": STABILITY_KEY, "kie": KIE_KEY, "huggingface": HF_TOKEN},
            "states": {"stability": stability, "kie": kie, "huggingface": hf},
        }


async def test_each_new_provider_generates_against_its_double(shell, new_providers) -> None:
    records = await shell(
        "/imagine a lighthouse --provider stability --ar 16:9\n"
        "/imagine a lighthouse --provider stability --model sdxl-1.0 --count 2\n"
        "/imagine a lighthouse --provider kie\n"
        "/imagine a lighthouse --provider kie --model gpt-4o-image --ar 3:2 --count 2\n"
        "/imagine a lighthouse --provider kie --model flux-kontext-pro\n"
        "/imagine a lighthouse --provider huggingface --ar 9:16\n",
        **new_providers["settings"], **new_providers["platform"],
    )
    results = [r for r in records if r["type"] == "result"]
    assert [(r["data"]["provider"], r["data"]["model"], len(r["data"]["images"])) for r in results] == [
        ("stability", "core", 1), ("stability", "sdxl-1.0", 2), ("kie", "midjourney", 4),
        ("kie", "gpt-4o-image", 2), ("kie", "flux-kontext-pro", 1), ("huggingface", "black-forest-labs/FLUX.1-schnell", 1),
    ]
    assert all(r["data"]["status"] == "succeeded" for r in results)
    from PIL import Image

    with Image.open(results[0]["data"]["images"][0]) as wide, Image.open(results[-1]["data"]["images"][0]) as tall:
        assert wide.width > wide.height and tall.height > tall.width


@pytest.mark.parametrize("provider", ["stability", "kie", "huggingface"])
async def test_own_keys_work_for_the_new_providers(shell, new_providers, provider) -> None:
    key = new_providers["keys"][provider]
    records = await shell(f"/keys add {provider}\n{key}\n/imagine a fox --provider {provider}\n/credits\n",
                          **new_providers["settings"])
    assert f"Stored your {provider} key" in records[0]["text"]
    result = next(r for r in records if r["type"] == "result")
    assert result["data"]["status"] == "succeeded" and result["data"]["key_source"] == "user"
    assert records[-1]["data"]["balance"] == 50
    seen = new_providers["states"][provider].requests
    assert all(r.headers.get("Authorization") == f"Bearer {key}" for r in seen if "/files/" not in r.path)


async def test_a_refused_keys_add_never_takes_the_next_piped_line(tmp_path: Path, database_url: str) -> None:
    """In a real process: ``/keys add nosuchprovider`` is refused before a key is asked for, so
    the next piped line runs as the command it is instead of being swallowed as the key."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("STUDIOBOT_")}
    env.update(STUDIOBOT_DATABASE_URL=database_url, STUDIOBOT_MASTER_KEYS=MASTER)
    done = await asyncio.to_thread(
        subprocess.run, [sys.executable, "-m", "studiobot", "run", "--json", "--user", "ada"],
        input="/keys add nosuchprovider\n/credits\n/keys add\n/keys add offline\n/credits\n",
        capture_output=True, text=True, cwd=tmp_path, env=env, timeout=120,
    )
    assert done.returncode == 0, done.stderr
    records = [json.loads(line) for line in done.stdout.splitlines()]
    assert [r["command"] for r in records] == ["keys", "credits", "keys", "keys", "credits"]
    assert "There is no provider 'nosuchprovider'" in records[0]["text"]
    assert records[1]["data"]["balance"] == 50
    assert "Which provider is the key for?" in records[2]["text"]
    assert "There is no provider 'offline'" in records[3]["text"]
    assert records[4]["data"]["balance"] == 50
    assert "Paste" not in done.stderr  # no key was ever asked for
