"""Usage reports: the figures as text and as a chart image (``/mod stats``, ``studiobot admin stats``)."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass

from studiobot.db import stats
from studiobot.db.engine import Database
from studiobot.db.models import utcnow
from studiobot.media.charts import usage_chart


@dataclass(frozen=True, slots=True)
class Report:
    """A usage report: ``text`` for people, ``chart`` as PNG bytes, ``usage`` for scripts."""

    text: str
    chart: bytes
    usage: stats.Usage


async def usage_report(db: Database, community_id: int | None, *, days: int, title: str) -> Report:
    """Usage of one community (None: the whole bot) over the last ``days`` UTC days.

    The chart is drawn with matplotlib in a worker thread (about half a second of CPU).
    """
    async with db.read() as conn:
        usage = await stats.usage(conn, community_id, days=days, today=utcnow().date())
    rate = usage.success_rate
    lines = [
        f"{title}, last {days} day{'s' if days != 1 else ''} (UTC):",
        f"  jobs: {usage.jobs} by {usage.users} user{'s' if usage.users != 1 else ''}",
        f"  succeeded: {usage.succeeded}, failed: {usage.failed}"
        + (f" (success rate {rate:.0%})" if rate is not None else ""),
        f"  credits spent: {usage.credits}",
        "  top providers: " + (", ".join(f"{name} {n}" for name, n in usage.providers) or "none"),
        "  busiest day: " + (f"{max(usage.days, key=lambda d: d.jobs).day:%Y-%m-%d}" if usage.jobs else "none"),
    ]
    chart = await asyncio.to_thread(
        usage_chart,
        [d.day for d in usage.days], [d.jobs for d in usage.days], [d.succeeded for d in usage.days],
        [d.credits for d in usage.days], usage.providers, title=title,
    )
    return Report("\n".join(lines), chart, usage)
