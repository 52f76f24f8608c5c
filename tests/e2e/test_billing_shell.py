"""Buying credits end to end: the shell adapter, the real web server on loopback, the Stripe double.

A user types ``/buy small`` in the shell and gets a Checkout URL from the double; Stripe's signed
``checkout.session.completed`` posted to ``/stripe/webhook`` credits the pack exactly once across
replays, ``/credits`` shows it, and a refund and a dispute take it back. Bad deliveries get 400
and move nothing. Runs on SQLite and PostgreSQL.
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import aiohttp

from studiobot.app import run_shell
from studiobot.config import Settings
from tests.doubles.stripe import (
    VALID_KEY,
    charge_refunded_event,
    dispute_created_event,
    event_bytes,
    post_webhook,
    running_stripe,
    session_event,
    sign,
)
from tests.e2e.test_shell import clean_env
from tests.ports import free_port

SECRET = "whsec_e2e_studiobot"


class Screen:
    """The shell's stdout in ``--json`` mode: each printed record, with a way to wait for one."""

    def __init__(self) -> None:
        self.records: list[dict[str, Any]] = []
        self._buffer = ""
        self._changed = asyncio.Event()

    def write(self, text: str) -> int:
        self._buffer += text
        *lines, self._buffer = self._buffer.split("\n")
        self.records += [json.loads(line) for line in lines if line.strip()]
        self._changed.set()
        return len(text)

    def flush(self) -> None:
        pass

    async def next(self, check: Callable[[dict[str, Any]], bool], *, after: int = 0,
                   timeout: float = 10.0) -> dict[str, Any]:
        async with asyncio.timeout(timeout):
            while True:
                for record in self.records[after:]:
                    if check(record):
                        return record
                self._changed.clear()
                await self._changed.wait()



async def test_buy_through_the_shell_then_webhooks_credit_once_and_take_back(
    database_url: str, make_settings: Callable[..., Settings]
) -> None:
    async with running_stripe() as stripe_double:
        port = free_port()
        settings = make_settings(
            database_url=database_url, welcome_credits=5, stripe_secret_key=VALID_KEY,
            stripe_webhook_secret=SECRET, stripe_api_base=stripe_double.url, web_port=port,
        )
        read_fd, write_fd = os.pipe()
        stdin = os.fdopen(read_fd, "r")
        screen = Screen()
        shell = asyncio.create_task(run_shell(settings, user="ada", json_mode=True, stdin=stdin,
                                              stdout=screen))  # type: ignore[arg-type]
        base = f"http://127.0.0.1:{port}"

        async def type_line(line: str) -> dict[str, Any]:
            seen = len(screen.records)
            os.write(write_fd, (line + "\n").encode())
            return await screen.next(lambda r: r["type"] == "reply", after=seen)

        try:
            listing = await type_line("/buy")
            assert [p["id"] for p in listing["data"]["products"]] == ["small", "large", "day"]
            assert "5.00 USD" in listing["text"]
            bought = await type_line("/buy small")
            url = bought["data"]["checkout_url"]
            assert url.startswith("https://checkout.stripe.com/") and url in bought["text"]
            (create,) = stripe_double.state.creates()
            session_id = next(iter(stripe_double.state.sessions))
            assert create.idempotency_key == f"studiobot-checkout:order:{bought['data']['order_id']}:attempt:1"
            unknown = await type_line("/buy huge")
            assert "nothing called “huge”" in unknown["text"] and len(stripe_double.state.creates()) == 1

            stripe_double.state.pay(session_id)
            payload = event_bytes(session_event(stripe_double.state, session_id, "checkout.session.completed"))
            webhook = f"{base}/stripe/webhook"
            answers = [await post_webhook(webhook, payload, sign(payload, SECRET)) for _ in range(5)]
            assert [status for status, _ in answers] == [200] * 5
            assert [json.loads(body)["status"] for _, body in answers] == ["received"] + ["duplicate"] * 4
            notice = await screen.next(lambda r: r["type"] == "result" and "Payment received" in r["text"])
            assert notice["data"]["event"] == "fulfilled"
            credits = await type_line("/credits")
            assert credits["data"]["balance"] == 105
            assert [e["kind"] for e in credits["data"]["entries"]].count("purchase") == 1

            # Bad deliveries: 400, a log line, nothing moved.
            stale = sign(payload, SECRET, timestamp=int(time.time()) - 600)
            for body, header in ((payload, sign(payload, "whsec_forged")), (payload, stale), (payload, None),
                                 (b"{oops", sign(b"{oops", SECRET))):
                status, _ = await post_webhook(webhook, body, header)
                assert status == 400
            ignored = event_bytes({"id": "evt_other", "object": "event", "type": "invoice.paid",
                                   "data": {"object": {"id": "in_1", "object": "invoice"}}})
            status, body = await post_webhook(webhook, ignored, sign(ignored, SECRET))
            assert (status, json.loads(body)["status"]) == (200, "ignored")

            async with aiohttp.ClientSession() as http:
                async with http.get(f"{base}/checkout/success", params={"session_id": session_id}) as page:
                    assert page.status == 200 and "Payment received" in await page.text()
                async with http.get(f"{base}/checkout/cancel") as page:
                    assert page.status == 200 and "Nothing was charged" in await page.text()

            refund = event_bytes(charge_refunded_event(stripe_double.state, session_id, 500))
            dispute = event_bytes(dispute_created_event(stripe_double.state, session_id))
            for body in (refund, refund, dispute):
                assert (await post_webhook(webhook, body, sign(body, SECRET)))[0] == 200
            await screen.next(lambda r: r["type"] == "result" and "taken back" in r["text"])
            deadline = time.monotonic() + 5
            while (credits := await type_line("/credits"))["data"]["balance"] != 5:
                assert time.monotonic() < deadline, credits
                await asyncio.sleep(0.1)
            assert [e["kind"] for e in credits["data"]["entries"]].count("clawback") == 1
        finally:
            os.close(write_fd)
            await asyncio.wait_for(shell, 20)


def test_admin_grant_and_ledger_from_the_command_line(tmp_path: Path) -> None:
    def cli(*args: str, stdin: str = "") -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "studiobot", *args], input=stdin, capture_output=True,
                              text=True, cwd=tmp_path, env=clean_env(), timeout=120)

    assert cli("run", "--user", "ada", stdin="/credits\n").returncode == 0
    granted = cli("admin", "grant", "shell:ada", "20", "--reason", "contest prize", "--by", "cli:ops")
    assert granted.returncode == 0 and "Balance: 70 credits" in granted.stdout
    refused = cli("admin", "grant", "shell:ada", "-500", "--reason", "oops")
    assert refused.returncode == 1 and "only 70 credits" in refused.stderr
    missing = cli("admin", "grant", "shell:bob", "5", "--reason", "x")
    assert missing.returncode == 1 and "shell:bob" in missing.stderr
    ledger = cli("admin", "ledger", "shell:ada")
    assert ledger.returncode == 0
    assert "adjustment +20 → 70 by cli:ops (contest prize)" in ledger.stdout
    # Operators do the same from chat; everyone else is refused.
    out = cli("run", "--user", "ops", "--json",
              stdin="/admin grant shell:ada 5 --reason \"bug bounty\"\n/admin ledger shell:ada\n",
              ).stdout.splitlines()
    assert all("operators" in json.loads(line)["text"] for line in out)
    env_ops = subprocess.run(
        [sys.executable, "-m", "studiobot", "run", "--user", "ops", "--json"],
        input="/admin grant shell:ada 5 --reason \"bug bounty\"\n/admin ledger shell:ada\n",
        capture_output=True, text=True, cwd=tmp_path, timeout=120,
        env=clean_env(STUDIOBOT_OPERATORS='["shell:ops"]'),
    )
    grant_reply, ledger_reply = (json.loads(line) for line in env_ops.stdout.splitlines())
    assert "Balance: 75 credits" in grant_reply["text"]
    assert "by shell:ops (bug bounty)" in ledger_reply["text"]
