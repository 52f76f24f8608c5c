"""Usage figures for ``/mod stats`` and ``studiobot admin stats``: jobs per day, success rate,
credits spent and top providers, for one community or the whole bot."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta

from sqlalchemy import Date, case, cast, func, select
from sqlalchemy.ext.asyncio import AsyncConnection

from studiobot.db.models import Job


@dataclass(frozen=True, slots=True)
class Day:
    """One UTC day: jobs started, how they ended, and credits spent (captured) on them."""

    day: date
    jobs: int
    succeeded: int
    failed: int
    credits: int


@dataclass(frozen=True, slots=True)
class Usage:
    """Figures over a period, every day present (zeros included), oldest first."""

    days: list[Day]
    providers: list[tuple[str, int]]
    users: int

    @property
    def jobs(self) -> int:
        """Jobs started in the period."""
        return sum(d.jobs for d in self.days)

    @property
    def succeeded(self) -> int:
        """Of those, how many succeeded."""
        return sum(d.succeeded for d in self.days)

    @property
    def failed(self) -> int:
        """Of those, how many failed (cancelled ones are neither)."""
        return sum(d.failed for d in self.days)

    @property
    def credits(self) -> int:
        """Credits spent on the period's succeeded jobs."""
        return sum(d.credits for d in self.days)

    @property
    def success_rate(self) -> float | None:
        """Succeeded over finished (succeeded + failed); None when nothing finished."""
        finished = self.succeeded + self.failed
        return self.succeeded / finished if finished else None


async def usage(conn: AsyncConnection, community_id: int | None, *, days: int, today: date) -> Usage:
    """Usage over the ``days`` UTC days ending with ``today``, for one community (None: everything).

    Uses ix_jobs_community_id_created_at for a community; a whole-bot report scans the period's
    jobs (an operator's occasional query).
    """
    first = today - timedelta(days=days - 1)
    since = datetime(first.year, first.month, first.day, tzinfo=UTC)
    where = [Job.created_at >= since]
    if community_id is not None:
        where.append(Job.community_id == community_id)
    day = _day(conn)
    succeeded = func.sum(case((Job.status == "succeeded", 1), else_=0))
    failed = func.sum(case((Job.status == "failed", 1), else_=0))
    spent = func.sum(case((Job.status == "succeeded", Job.cost), else_=0))
    rows = await conn.execute(
        select(day.label("day"), func.count(), succeeded, failed, spent).where(*where).group_by(day)
    )
    by_day = {_as_date(r[0]): r for r in rows.all()}
    series = []
    for n in range(days):
        d = first + timedelta(days=n)
        r = by_day.get(d)
        series.append(Day(d, int(r[1]), int(r[2] or 0), int(r[3] or 0), int(r[4] or 0)) if r else Day(d, 0, 0, 0, 0))
    providers = (await conn.execute(
        select(Job.provider, func.count()).where(*where).group_by(Job.provider)
        .order_by(func.count().desc(), Job.provider).limit(5)
    )).all()
    people = (await conn.execute(select(func.count(func.distinct(Job.user_id))).where(*where))).scalar_one()
    return Usage(series, [(p, int(n)) for p, n in providers], int(people))


def _day(conn: AsyncConnection):  # type: ignore[no-untyped-def]
    # Stored UTC on both: SQLite as naive text (date() reads it), PostgreSQL as timestamptz, whose
    # date must be taken in UTC rather than in the session's time zone.
    if conn.dialect.name == "postgresql":
        return cast(func.timezone("UTC", Job.created_at), Date)
    return func.date(Job.created_at)


def _as_date(value: object) -> date:
    return value if isinstance(value, date) else date.fromisoformat(str(value))
