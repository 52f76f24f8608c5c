"""A real studiobot process killed with SIGKILL mid-work, then restarted: no job lost or charged twice.

The provider is the Replicate double on loopback. With three submission slots and three prediction
creates that never answer, at the moment of the kill three jobs are mid-submission (running, no task
id, their leases held), one is submitted and being polled, and one is still queued.
"""

from __future__ import annotations

import asyncio
import json
import signal
import sys
import time
from pathlib import Path

from sqlalchemy import func, select

from studiobot.db.engine import Database
from studiobot.db.migrate import upgrade
from studiobot.db.models import CreditAccount, CreditEntry, Job, JobEvent
from tests.doubles.replicate import VALID_TOKEN, ReplicateState, make_replicate_app
from tests.doubles.server import serve, stall
from tests.e2e.test_shell import clean_env

JOBS = 5


async def job_states(db: Database) -> list[tuple[str, bool]]:
    async with db.read() as conn:
        rows = (await conn.execute(select(Job.status, Job.provider_task_id).order_by(Job.id))).all()
    return [(status, task is not None) for status, task in rows]


async def wait_for(db: Database, predicate, timeout: float = 30.0) -> list[tuple[str, bool]]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        states = await job_states(db)
        if predicate(states):
            return states
        await asyncio.sleep(0.05)
    raise AssertionError(f"never reached the expected state: {await job_states(db)}")


async def start(cwd: Path, env: dict[str, str]) -> asyncio.subprocess.Process:
    return await asyncio.create_subprocess_exec(
        sys.executable, "-m", "studiobot", "run", "--json", "--no-wait", "--user", "ada",
        cwd=cwd, env=env, stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )


async def test_sigkill_mid_work_then_restart(database_url: str, tmp_path: Path) -> None:
    state = ReplicateState(steps=10_000)  # nothing finishes before the kill
    state.fail_next.extend([stall(60), stall(0), stall(60), stall(60)])  # creates 1, 3, 4 hang
    async with serve(make_replicate_app(state)) as replicate_url:
        env = clean_env(
            STUDIOBOT_DATABASE_URL=database_url,
            REPLICATE_API_TOKEN=VALID_TOKEN,
            STUDIOBOT_REPLICATE_BASE_URL=replicate_url,
            STUDIOBOT_DEFAULT_PROVIDER="replicate",
            STUDIOBOT_WORKER_CONCURRENCY="3",
            STUDIOBOT_MAX_ACTIVE_JOBS_PER_USER="10",
            STUDIOBOT_LEASE_S="2",
            STUDIOBOT_POLL_INTERVAL_S="0.1",
            STUDIOBOT_POLL_BACKOFF_MAX_S="0.2",
            STUDIOBOT_WORKER_INTERVAL_S="0.1",
            STUDIOBOT_REPLICATE_TIMEOUT_S="120",
            STUDIOBOT_DOWNLOAD_ALLOW_NETWORKS='["127.0.0.0/8"]',  # the double serves its files there
        )
        db = Database(database_url)
        await upgrade(db)  # so this test can watch the tables from the start
        try:
            first = await start(tmp_path, env)
            assert first.stdin is not None
            first.stdin.write("".join(f"/imagine crash test {i}\n" for i in range(JOBS)).encode())
            await first.stdin.drain()  # stdin stays open: the process would wait for more input
            expected = sorted([("running", False)] * 3 + [("running", True), ("queued", False)])
            states = await wait_for(db, lambda s: sorted(s) == expected)
            submitted_job = states.index(("running", True)) + 1
            first.send_signal(signal.SIGKILL)
            await first.wait()
            assert first.returncode == -signal.SIGKILL

            state.steps = 2  # after the restart, predictions finish

            second = await start(tmp_path, env)
            out, err = await asyncio.wait_for(second.communicate(b""), timeout=90)
            assert second.returncode == 0, err.decode()
        finally:
            async with db.read() as conn:
                statuses = (await conn.execute(select(Job.status).order_by(Job.id))).scalars().all()
                balance = (await conn.execute(select(CreditAccount.balance))).scalar_one()
                entries = (await conn.execute(
                    select(CreditEntry.kind, func.count()).group_by(CreditEntry.kind))).all()
                recovered = (await conn.execute(
                    select(func.count()).where(JobEvent.kind == "recovered"))).scalar_one()
            await db.dispose()

    assert statuses == ["succeeded"] * JOBS
    assert balance == 50 - 2 * JOBS  # each job charged exactly once
    assert dict(entries) == {"grant": 1, "reserve": JOBS, "capture": JOBS}
    assert recovered == 3  # the jobs cut off mid-submission went back to the queue
    creates = [r for r in state.requests if r.method == "POST" and r.path.endswith("/predictions")]
    sent = sorted(r.json["input"]["prompt"] for r in creates)
    # The job submitted before the kill was never sent again (it was polled to completion); the
    # three whose create never answered were sent once more; the queued one once.
    assert sent.count(f"crash test {submitted_job - 1}") == 1
    assert len(sent) == JOBS + 3 and set(sent) == {f"crash test {i}" for i in range(JOBS)}
    results = [json.loads(line) for line in out.decode().splitlines()]
    delivered = sorted(r["data"]["job_id"] for r in results if r["type"] == "result")
    assert delivered == list(range(1, JOBS + 1))  # every result reached the user after the restart
