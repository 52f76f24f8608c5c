"""Usage charts: jobs, successes and credits per day, and the busiest providers, as one PNG.

Drawn with matplotlib's object API (a :class:`~matplotlib.figure.Figure` on its own Agg canvas)
and never ``pyplot``, whose global figure registry is not thread safe; so charts can be drawn in
``asyncio.to_thread`` workers side by side. ``matplotlib.use`` is not called: the Agg canvas is
chosen per figure. Matplotlib keeps its font cache under ``MPLCONFIGDIR`` (by default
``~/.cache/matplotlib``), built on first use.

Synchronous CPU work (about half a second per chart); async callers use ``asyncio.to_thread``.
"""

from __future__ import annotations

import datetime
import io
from collections.abc import Sequence

from matplotlib.axes import Axes
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.dates import (
    AutoDateLocator,
    ConciseDateFormatter,
    DateFormatter,
    DayLocator,
    date2num,
)
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

__all__ = ["TOP_PROVIDERS", "usage_chart"]

TOP_PROVIDERS = 8

_WIDTH_IN, _HEIGHT_IN, _DPI = 10, 6, 100
# Up to two weeks, day ticks named plainly ("01 Jun"); the concise formatter would call a lone
# day "00:00". Longer spans get the automatic locator and the concise formatter.
_SHORT_SPAN_DAYS = 14
# Rows kept for provider bars, so one provider is a bar and not a block filling the panel.
_PROVIDER_SLOTS_MIN = 4
_PROVIDER_NAME_CHARS = 18

_JOBS_COLOUR = "#c7d2fe"
_SUCCEEDED_COLOUR = "#4f46e5"
_CREDITS_COLOUR = "#ea580c"
_PROVIDER_COLOUR = "#0d9488"
_MUTED = "#6b7280"


def usage_chart(
    days: Sequence[datetime.date],
    jobs: Sequence[int],
    succeeded: Sequence[int],
    credits: Sequence[int],
    providers: Sequence[tuple[str, int]],
    *,
    title: str,
) -> bytes:
    """Draw a usage report as a 1000 x 600 pixel PNG (100 dpi).

    Left panel: per day, a light bar of all jobs with the succeeded ones as a dark bar over it,
    and the credits spent as a line on a secondary axis on the right. Right panel: the
    :data:`TOP_PROVIDERS` providers with the most jobs as horizontal bars, busiest at the top, or
    "no jobs" when there are none.

    Args:
        days: The days reported, in any order (the four per-day sequences are read together).
        jobs: Jobs created on each day.
        succeeded: Of those, the jobs that succeeded.
        credits: Credits spent on each day.
        providers: ``(provider name, job count)`` pairs, in any order; zero counts are left out.
        title: The heading over both panels.

    Returns:
        PNG bytes.

    Raises:
        ValueError: ``days`` is empty, the four per-day sequences differ in length, a count is
            negative, or a day's ``succeeded`` exceeds its ``jobs``.
    """
    lengths = {len(days), len(jobs), len(succeeded), len(credits)}
    if len(lengths) != 1:
        raise ValueError(
            "days, jobs, succeeded and credits must have one entry per day; got lengths "
            f"{len(days)}, {len(jobs)}, {len(succeeded)} and {len(credits)}"
        )
    if not days:
        raise ValueError("a usage chart needs at least one day")
    rows = sorted(zip(days, jobs, succeeded, credits, strict=True))
    for day, day_jobs, day_succeeded, day_credits in rows:
        if min(day_jobs, day_succeeded, day_credits) < 0:
            raise ValueError(f"negative count on {day.isoformat()}")
        if day_succeeded > day_jobs:
            raise ValueError(f"more jobs succeeded than ran on {day.isoformat()}")
    if any(count < 0 for _, count in providers):
        raise ValueError("provider job counts cannot be negative")

    figure = Figure(figsize=(_WIDTH_IN, _HEIGHT_IN), dpi=_DPI, layout="constrained")
    FigureCanvasAgg(figure)
    figure.suptitle(title, fontsize=15, fontweight="bold")
    daily, busiest = figure.subplots(1, 2, width_ratios=(2.3, 1))
    _draw_daily(daily, rows)
    _draw_providers(busiest, providers)
    out = io.BytesIO()
    # No "Software" entry: the PNG should not advertise the matplotlib version.
    figure.savefig(out, format="png", dpi=_DPI, metadata={"Software": None})
    return out.getvalue()


def _draw_daily(ax: Axes, rows: list[tuple[datetime.date, int, int, int]]) -> None:
    days = [row[0] for row in rows]
    jobs = [row[1] for row in rows]
    succeeded = [row[2] for row in rows]
    credits = [row[3] for row in rows]
    ax.set_title("Jobs per day", loc="left", fontsize=11)
    all_bars = ax.bar(days, jobs, width=0.8, color=_JOBS_COLOUR, label="jobs", zorder=2)
    ok_bars = ax.bar(
        days, succeeded, width=0.8, color=_SUCCEEDED_COLOUR, label="succeeded", zorder=3
    )
    # Headroom above the tallest bar for the legend; at least 0..1 so an idle month has an axis.
    ax.set_ylim(0, max(1, *jobs) * 1.25)
    ax.yaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_ylabel("jobs")
    ax.grid(axis="y", color="#e5e7eb", zorder=0)
    ax.spines[["top"]].set_visible(False)
    # Room for half a bar either side (date units are days), so a lone day still has a day axis.
    ax.set_xlim(date2num(days[0]) - 0.6, date2num(days[-1]) + 0.6)
    span = (days[-1] - days[0]).days
    if span <= _SHORT_SPAN_DAYS:
        ax.xaxis.set_major_locator(DayLocator(interval=1 if span <= 7 else 2))
        ax.xaxis.set_major_formatter(DateFormatter("%d %b"))
    else:
        locator = AutoDateLocator(minticks=4, maxticks=10)
        ax.xaxis.set_major_locator(locator)
        ax.xaxis.set_major_formatter(ConciseDateFormatter(locator))

    spent = ax.twinx()
    # A lone day needs its marker to show at all; past a month markers only add clutter.
    (line,) = spent.plot(
        days, credits, color=_CREDITS_COLOUR, marker="o" if len(days) <= 31 else None,
        markersize=4, linewidth=2, label="credits spent", zorder=4,
    )
    spent.set_ylim(0, max(1, *credits) * 1.25)
    spent.yaxis.set_major_locator(MaxNLocator(integer=True))
    spent.set_ylabel("credits", color=_CREDITS_COLOUR)
    spent.tick_params(axis="y", colors=_CREDITS_COLOUR)
    spent.spines[["top"]].set_visible(False)
    ax.legend(
        handles=[all_bars, ok_bars, line], loc="upper left", ncols=3, frameon=False, fontsize=9
    )


def _draw_providers(ax: Axes, providers: Sequence[tuple[str, int]]) -> None:
    ax.set_title("Top providers", loc="left", fontsize=11)
    used = sorted(((n, c) for n, c in providers if c > 0), key=lambda p: (-p[1], p[0]))
    used = used[:TOP_PROVIDERS]
    if not used:
        ax.text(0.5, 0.5, "no jobs", ha="center", va="center", color=_MUTED, fontsize=13,
                transform=ax.transAxes)
        ax.set_axis_off()
        return
    counts = [count for _, count in used]
    # Numeric positions, not names as categories: two names shortened alike stay two bars.
    positions = range(len(used))
    bars = ax.barh(positions, counts, color=_PROVIDER_COLOUR, height=0.6)
    ax.set_yticks(positions, [_shorten(name) for name, _ in used])
    # Top to bottom, busiest first; spare rows stay empty below.
    ax.set_ylim(max(_PROVIDER_SLOTS_MIN, len(used)) - 0.5, -0.5)
    ax.bar_label(bars, padding=3, fontsize=9)
    ax.set_xlim(0, max(counts) * 1.2)  # room for the count labels
    ax.xaxis.set_major_locator(MaxNLocator(integer=True, nbins=4))
    ax.set_xlabel("jobs")
    ax.spines[["top", "right"]].set_visible(False)


def _shorten(name: str) -> str:
    if len(name) <= _PROVIDER_NAME_CHARS:
        return name
    return name[: _PROVIDER_NAME_CHARS - 1] + "…"
