"""Read-only queries for operators: metrics, the systemd STATUS line, ``ingestd status``.

Kept apart from the write path (``sql.py``) so that looking at the daemon can
never change what it stores. Every function takes a ``Store`` and reads
through its engine; nothing here writes.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from typing import TYPE_CHECKING, Any

from sqlalchemy import func, select
from sqlalchemy.exc import SQLAlchemyError

from ingestd.exceptions import StorageError
from ingestd.store import sql
from ingestd.store.sql import naive

if TYPE_CHECKING:
    from ingestd.store import Store

POLLED_STATUSES = ("active", "failing")


@dataclass(frozen=True)
class Snapshot:
    """The daemon's view of the database at one moment, cheap enough for every tick."""

    taken_at: datetime
    feeds_by_status: dict[str, int]
    due: int
    articles: int
    oldest_due_at: datetime | None
    last_success: dict[int, datetime] = field(default_factory=dict)

    @property
    def feeds(self) -> int:
        return sum(self.feeds_by_status.values())

    @property
    def failing(self) -> int:
        return self.feeds_by_status.get("failing", 0)

    @property
    def schedule_lag(self) -> float:
        """Seconds the most overdue feed has been waiting: grows when the daemon falls behind."""
        if self.oldest_due_at is None:
            return 0.0
        return max(0.0, (self.taken_at - self.oldest_due_at).total_seconds())

    def status_line(self) -> str:
        return f"{self.feeds} feeds, {self.due} due, {self.failing} failing; {self.articles} articles"


def _wrap(e: SQLAlchemyError) -> StorageError:
    return StorageError(f"database error: {e.__class__.__name__}: {str(e).splitlines()[0]}")


def snapshot(store: Store, *, now: datetime | None = None, per_feed_limit: int = 5000) -> Snapshot:
    """Feeds by status, due feeds, article count and (for up to ``per_feed_limit`` feeds) last success."""
    now = now or datetime.now(UTC)
    f = sql.feeds
    due_cond = (f.c.status.in_(POLLED_STATUSES), f.c.next_poll_at <= naive(now))
    try:
        with store.engine.connect().execution_options(ingestd_read_only=True) as conn:
            by_status = {
                str(s): int(n) for s, n in conn.execute(select(f.c.status, func.count()).group_by(f.c.status))
            }
            due, oldest = conn.execute(
                select(func.count(), func.min(f.c.next_poll_at)).where(*due_cond)
            ).one()
            articles = sql.count_articles(conn)
            rows = conn.execute(
                select(f.c.id, f.c.last_success_at)
                .where(f.c.last_success_at.is_not(None))
                .order_by(f.c.id)
                .limit(per_feed_limit)
            )
            last_success = {int(r.id): _as_dt(r.last_success_at) for r in rows}
    except SQLAlchemyError as e:
        raise _wrap(e) from e
    return Snapshot(
        taken_at=now,
        feeds_by_status=by_status,
        due=int(due),
        articles=articles,
        oldest_due_at=_as_dt(oldest) if oldest is not None else None,
        last_success=last_success,
    )


def _as_dt(value: datetime | str) -> datetime:
    # An aggregate (MIN) over a SQLite datetime column comes back as text.
    if isinstance(value, str):
        value = datetime.fromisoformat(value)
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value


def daily_new_articles(
    store: Store, *, days: int = 30, now: datetime | None = None, feed_ids: Iterable[int] | None = None
) -> dict[int, list[int]]:
    """Per feed, stories first seen on each of the last ``days`` UTC days, oldest first.

    Counted on ``article_sources.first_seen_at``: a story merged from two
    feeds shows up in the activity of both, which is what an operator asks
    ("is this feed still publishing?").
    """
    now = now or datetime.now(UTC)
    today = now.astimezone(UTC).date()
    first_day = today - timedelta(days=days - 1)
    start = datetime(first_day.year, first_day.month, first_day.day, tzinfo=UTC)
    s = sql.sources
    day = func.date(s.c.first_seen_at)
    query = select(s.c.feed_id, day.label("day"), func.count()).where(s.c.first_seen_at >= naive(start))
    if feed_ids is not None:
        query = query.where(s.c.feed_id.in_(list(feed_ids)))
    query = query.group_by(s.c.feed_id, day)
    result: dict[int, list[int]] = {}
    try:
        with store.engine.connect().execution_options(ingestd_read_only=True) as conn:
            for feed_id, value, count in conn.execute(query):
                d = value if isinstance(value, date) else date.fromisoformat(str(value)[:10])
                index = (d - first_day).days
                if 0 <= index < days:
                    result.setdefault(int(feed_id), [0] * days)[index] += int(count)
    except SQLAlchemyError as e:
        raise _wrap(e) from e
    return result


def leased_feeds(store: Store, *, now: datetime | None = None) -> int:
    """Feeds whose lease has not expired: polls in progress somewhere."""
    now = now or datetime.now(UTC)
    f = sql.feeds
    try:
        with store.engine.connect().execution_options(ingestd_read_only=True) as conn:
            return int(
                conn.execute(
                    select(func.count())
                    .select_from(f)
                    .where(f.c.lease_until.is_not(None), f.c.lease_until > naive(now))
                ).scalar_one()
            )
    except SQLAlchemyError as e:
        raise _wrap(e) from e


def fetch_history(
    store: Store, *, feed_ids: Iterable[int] | None = None, limit: int = 10
) -> dict[int, list[dict[str, Any]]]:
    """Per feed, its last ``limit`` poll outcomes, newest first (from ``fetch_log``)."""
    log = sql.fetch_log
    query = select(
        log.c.feed_id,
        log.c.at,
        log.c.outcome,
        log.c.http_status,
        log.c.bytes,
        log.c.duration,
        log.c.new,
        log.c.error,
    ).order_by(log.c.feed_id, log.c.id.desc())
    if feed_ids is not None:
        query = query.where(log.c.feed_id.in_(list(feed_ids)))
    history: dict[int, list[dict[str, Any]]] = {}
    try:
        with store.engine.connect().execution_options(ingestd_read_only=True) as conn:
            for row in conn.execute(query):
                rows = history.setdefault(int(row.feed_id), [])
                if len(rows) < limit:
                    entry = dict(row._mapping)
                    entry.pop("feed_id")
                    entry["at"] = _as_dt(entry["at"])
                    rows.append(entry)
    except SQLAlchemyError as e:
        raise _wrap(e) from e
    return history
