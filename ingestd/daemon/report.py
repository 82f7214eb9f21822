"""What ``ingestd status`` prints: a table of feeds with a 30-day sparkline, and totals.

Pure functions over values the store hands out, so the layout is tested
without a terminal or a database.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import UTC, datetime

from ingestd.store import FeedInfo
from ingestd.store.stats import Snapshot

BARS = "▁▂▃▄▅▆▇█"
DAYS = 30


def sparkline(counts: Sequence[int]) -> str:
    """One character per day: ``▁`` for none, then ``▂``..``█`` scaled to the busiest day."""
    peak = max(counts, default=0)
    if peak <= 0:
        return BARS[0] * len(counts)
    top = len(BARS) - 1
    return "".join(BARS[0] if c <= 0 else BARS[max(1, min(top, round(c / peak * top)))] for c in counts)


#: One character per poll in the fetch log, oldest on the left.
OUTCOME_MARKS = {"new": "+", "not_modified": "=", "error": "x", "gone": "g", "deferred": "d"}
RECENT = 10


def outcome_marks(history: Sequence[Mapping[str, object]]) -> str:
    """The last polls as ``+`` stored, ``=`` not modified, ``x`` error, ``d`` deferred, ``g`` gone."""
    return "".join(OUTCOME_MARKS.get(str(h["outcome"]), "?") for h in reversed(history[:RECENT]))


def _time(dt: datetime | None) -> str:
    return dt.astimezone(UTC).strftime("%Y-%m-%d %H:%M") if dt else "-"


def _one_line(text: str, width: int) -> str:
    text = " ".join(text.split())
    return text if len(text) <= width else text[: width - 1] + "…"


def status_lines(
    feeds: Sequence[FeedInfo],
    activity: Mapping[int, Sequence[int]],
    snap: Snapshot,
    *,
    leased: int = 0,
    history: Mapping[int, Sequence[Mapping[str, object]]] | None = None,
) -> list[str]:
    """The table, one feed a line, then the totals."""
    history = history or {}
    lines = [
        f"{'ID':>5}  {'STATUS':<8} {'LAST POLL':<16}  {'NEXT POLL':<16}  {'ARTICLES':>8}  "
        f"{'LAST ' + str(DAYS) + ' DAYS':<{DAYS}}  {'POLLS':<{RECENT}}  FEED / LAST ERROR"
    ]
    empty = [0] * DAYS
    for f in feeds:
        name = f.title or f.url
        error = f"  ({_one_line(f.last_error, 120)})" if f.last_error and f.status != "active" else ""
        lines.append(
            f"{f.id:>5}  {f.status:<8} {_time(f.last_polled_at):<16}  {_time(f.next_poll_at):<16}  "
            f"{f.articles:>8}  {sparkline(activity.get(f.id, empty))}  "
            f"{outcome_marks(history.get(f.id, ())):<{RECENT}}  {name}{error}"
        )
    by_status = ", ".join(f"{n} {s}" for s, n in sorted(snap.feeds_by_status.items())) or "no feeds"
    recent = sum(sum(v) for v in activity.values())
    lines.append("")
    lines.append(f"{snap.feeds} feeds ({by_status}); {snap.due} due now; {leased} being polled")
    lines.append(f"{snap.articles} articles; {recent} entries seen in the last {DAYS} days")
    lines.append("POLLS, oldest first: + stored, = not modified, x error, d deferred, g gone")
    if snap.due and snap.schedule_lag > 0:
        lines.append(f"the most overdue feed has waited {snap.schedule_lag:.0f} s")
    return lines
