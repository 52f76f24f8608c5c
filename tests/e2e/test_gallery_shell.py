"""Galleries and admin tools through the shell adapter and the command line, and the web gallery
served by the composition root's web server."""

from __future__ import annotations

import asyncio
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
from PIL import Image

from studiobot.app import build_app, web_server
from studiobot.commands.contract import ChatRef, UserRef
from studiobot.config import Settings
from tests.doubles.platform import RecordingOutbox
from tests.e2e.test_shell import clean_env, shell  # noqa: F401  (shell is a fixture)


def replies(records: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [r for r in records if r["type"] == "reply"]


async def test_gallery_pages_through_the_shell_with_its_buttons_and_menu(shell) -> None:
    lines = "".join(f"/imagine a fox number {n}\n" for n in range(10)) + "/gallery\n"
    page = replies(await shell(lines))[-1]
    assert len(page["data"]["items"]) == 9 and Path(page["images"][0]).suffix == ".jpg"
    assert [b["label"] for b in page["buttons"]] == ["Older ▶"]
    assert page["menu"][0]["action"] == "/show 10 1"
    older, opened = replies(await shell(f"{page['buttons'][0]['action']}\n{page['menu'][0]['action']}\n"))
    assert [i["job_id"] for i in older["data"]["items"]] == [1]
    assert opened["data"]["job_id"] == 10 and opened["images"]


async def test_admin_commands_refuse_everyone_but_operators_in_the_shell(shell) -> None:
    script = "/imagine a quiet field\n/mod stats\n/mod ban shell:ada\n/mod audit\n/admin ledger shell:ada\n"
    for record in replies(await shell(script, user="bob"))[1:]:
        assert record["ephemeral"] and ("admins" in record["text"] or "operators" in record["text"])
    ops = replies(await shell("/mod stats 7\n/mod ban shell:bob 1h testing\n/mod audit\n", user="ops",
                              operators=("shell:ops",)))
    assert ops[0]["data"]["jobs"] == 1 and Path(ops[0]["images"][0]).suffix == ".png"
    assert "everywhere for 1 hour" in ops[1]["text"]
    assert ops[2]["data"]["entries"][0]["action"] == "ban"
    refused = replies(await shell("/imagine again\n", user="bob"))
    assert refused[0]["text"].startswith("You are banned from using this bot until")


def test_admin_stats_on_the_command_line(tmp_path: Path) -> None:
    def cli(*args: str, stdin: str = "") -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "studiobot", *args], input=stdin, capture_output=True,
                              text=True, cwd=tmp_path, env=clean_env(), timeout=120)

    assert cli("run", "--user", "ada", stdin="/imagine a red kite --n 2\n/imagine a blue kite\n").returncode == 0
    done = cli("admin", "stats", "--days", "7", "--chart", "usage.png")
    assert done.returncode == 0, done.stderr
    assert "jobs: 2 by 1 user" in done.stdout and "credits spent: 3" in done.stdout
    assert "top providers: offline 2" in done.stdout
    with Image.open(tmp_path / "usage.png") as chart:
        assert chart.format == "PNG" and chart.size == (1000, 600)
    assert cli("admin", "stats", "--days", "0").returncode == 2  # argparse: out of range


async def test_the_web_gallery_serves_public_images_only(make_settings: Callable[..., Settings],
                                                         database_url: str, unused_tcp_port: int) -> None:
    settings = make_settings(database_url=database_url, web_gallery=True, web_port=unused_tcp_port)
    app = await build_app(settings, {"discord": RecordingOutbox()})
    server = web_server(settings, app)
    await server.start()
    app.runner.start()
    ada, chat = UserRef("discord", "1", "ada"), ChatRef("discord", "dm-1", "dm")
    try:
        async def run(line: str) -> Any:
            _, reply = await app.dispatcher.dispatch_text(ada, chat, line, line)
            return reply

        jobs = []
        for prompt in ("a public lighthouse", "a private diary"):
            jobs.append((await run(f"/imagine {prompt}")).data["job_id"])
        for job in jobs:
            while (await run(f"/job {job}")).data["status"] != "succeeded":
                await asyncio.sleep(0.05)
        made_public = await run(f"/visibility {jobs[0]} public")
        url = made_public.data["url"]
        assert url.startswith(f"http://127.0.0.1:{unused_tcp_port}/gallery/i/")
        async with httpx.AsyncClient() as client:
            page = await client.get(url)
            assert page.status_code == 200 and "a public lighthouse" in page.text
            index = await client.get(f"http://127.0.0.1:{unused_tcp_port}/gallery")
            assert "a public lighthouse" in index.text and "a private diary" not in index.text
            (private_asset,) = (await run(f"/show {jobs[1]}")).data["visible"]
            for path in (f"/gallery/i/{private_asset}", f"/media/full/{private_asset}",
                         f"/media/thumb/{private_asset}"):
                assert (await client.get(f"http://127.0.0.1:{unused_tcp_port}{path}")).status_code == 404
    finally:
        await app.runner.shutdown()
        await server.stop()
        await app.aclose()
