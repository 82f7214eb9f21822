"""The queries: saving a poll, the consumer cursor, claiming due feeds.

Plain SQLAlchemy Core over the SQLModel tables, portable between SQLite and
PostgreSQL; anything dialect-specific is marked and stays in this package.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import Connection, Update, and_, bindparam, delete, func, insert, or_, select, update

from ingestd.models import FeedToPoll, FeedUpdate, safe_text
from ingestd.store.tables import Article, ArticleSource, Counter, Feed, FetchLog

feeds = Feed.__table__  # type: ignore[attr-defined]
articles = Article.__table__  # type: ignore[attr-defined]
sources = ArticleSource.__table__  # type: ignore[attr-defined]
fetch_log = FetchLog.__table__  # type: ignore[attr-defined]
counters = Counter.__table__  # type: ignore[attr-defined]

FETCH_LOG_KEEP = 20
_LOG_COLUMNS = ("feed_id", "at", "outcome", "http_status", "bytes", "duration", "new", "error")


def text_safe(value: str | None) -> str | None:
    """Text the database accepts on every dialect: no C0 controls, no lone surrogates."""
    return None if value is None else safe_text(value)


def naive(dt: datetime | None) -> datetime | None:
    """Aware UTC, the one form written to the database (SQLite keeps it as UTC text)."""
    if dt is None:
        return None
    if dt.tzinfo is None:
        return dt.replace(tzinfo=UTC)
    return dt.astimezone(UTC)


def aware(dt: datetime | None) -> datetime | None:
    if dt is None:
        return None
    return dt.replace(tzinfo=UTC) if dt.tzinfo is None else dt


def next_seq(conn: Connection) -> int:
    """Take the next consumer sequence number; gap-safe for ``WHERE seq > N ORDER BY seq``.

    A plain sequence (SQLite AUTOINCREMENT, a PostgreSQL SEQUENCE) is not
    enough: two writers may take 7 and 8 and commit 8 first; a consumer that
    reads 8 and moves its cursor to 8 never sees 7. Here the number comes from
    ``UPDATE counters SET value = value + 1 ... RETURNING value``:

    * PostgreSQL: the UPDATE takes a row lock on the counter held until
      COMMIT, so a second writer blocks on it until the first has committed
      (or rolled back, which frees the number for reuse). Numbers are therefore
      handed out and made visible in the same order: every row a reader can
      see below its cursor is already committed. This serialises only the
      tail of each write transaction (the counter is taken per article, late);
      keep it that way, and never take it in a long transaction.
    * SQLite: ``BEGIN IMMEDIATE`` (see store/__init__.py) admits one writer at
      a time, which gives the same order; the counter row keeps one code path.

    The cost is one hot row; ``seq`` values of rolled-back transactions are
    reused, never skipped for good, and every committed change gets a
    larger number than everything committed before it.
    """
    return reserve_seq(conn, 1)


def reserve_seq(conn: Connection, count: int) -> int:
    """Take ``count`` consecutive sequence numbers (see ``next_seq``); returns the last one.

    Numbers reserved and left unused leave a hole in the numbering, never a
    row a reader can miss.
    """
    value = conn.execute(_TAKE_SEQ, {"count": count}).scalar_one_or_none()
    if value is None:
        conn.execute(insert(counters).values(name="seq", value=count))
        return count
    return int(value)


def known_entry_hashes(conn: Connection, feed_id: int) -> dict[str, str]:
    rows = conn.execute(_ENTRY_HASHES, {"feed": feed_id})
    return {row.guid_key: row.entry_hash for row in rows}


def apply_feed_update(conn: Connection, feed_id: int, upd: FeedUpdate, new: int) -> None:
    """Record one poll on the feed row and in its fetch log, in the poll's transaction."""
    values: dict[str, Any] = {
        "last_polled_at": naive(upd.polled_at),
        "next_poll_at": naive(upd.next_poll_at),
        "lease_until": None,
        "lease_owner": None,
        "http_status": upd.http_status,
    }
    failed = upd.outcome not in ("new", "not_modified")
    if not failed:
        values.update(error_count=0, last_error=None, last_success_at=naive(upd.polled_at))
        values["status"] = "active"
    else:  # error_count + 1, in the statement
        values.update(status="gone" if upd.outcome == "gone" else "failing", last_error=text_safe(upd.error))
    if upd.outcome == "new":
        # The validators commit with the articles they describe, never before them.
        values.update(etag=upd.etag, last_modified=upd.last_modified)
    elif upd.outcome == "not_modified" and upd.etag:
        values["etag"] = upd.etag
    if upd.title:
        values["title"] = text_safe(upd.title)
    if upd.site_url:
        values["site_url"] = text_safe(upd.site_url)
    if upd.generator is not None:
        values["generator"] = text_safe(upd.generator[:500])
    if upd.language is not None:
        values["language"] = upd.language[:35]
    if upd.new_url:
        taken = conn.execute(_FEED_BY_URL, {"url": upd.new_url}).scalar_one_or_none()
        if taken is None:
            values["url"] = upd.new_url
    # A paused feed stays paused even if a poll was in flight when it was paused: it only loses
    # its lease (a second statement, needed only then).
    if not conn.execute(_feed_update(tuple(values), failed), {**values, "_feed": feed_id}).rowcount:
        conn.execute(_RELEASE_PAUSED, {"_feed": feed_id})
    conn.execute(
        _INSERT_LOG,
        {
            "feed_id": feed_id,
            "at": naive(upd.polled_at),
            "outcome": upd.outcome,
            "http_status": upd.http_status,
            "bytes": upd.bytes,
            "duration": upd.duration,
            "new": new,
            "error": text_safe(upd.error),
        },
    )
    conn.execute(_TRIM_LOG, {"_feed": feed_id})


# The statements of every poll, built once: building a Core statement costs ~5x more than
# running it (0.35 s of CPU on the store thread for 450 unchanged feeds, 0.06 s in SQLite).
_TAKE_SEQ = (
    update(counters)
    .where(counters.c.name == "seq")
    .values(value=counters.c.value + bindparam("count"))
    .returning(counters.c.value)
)
_ENTRY_HASHES = select(sources.c.guid_key, sources.c.entry_hash).where(sources.c.feed_id == bindparam("feed"))
_FEED_BY_URL = select(feeds.c.id).where(feeds.c.url == bindparam("url"))
_RELEASE_PAUSED = (
    update(feeds)
    .where(feeds.c.id == bindparam("_feed"), feeds.c.status == "paused")
    .values(lease_until=None, lease_owner=None)
)
_INSERT_LOG = insert(fetch_log).values({c: bindparam(c) for c in _LOG_COLUMNS})
_TRIM_LOG = delete(fetch_log).where(
    fetch_log.c.id.in_(
        select(fetch_log.c.id)
        .where(fetch_log.c.feed_id == bindparam("_feed"))
        .order_by(fetch_log.c.id.desc())
        .offset(FETCH_LOG_KEEP)
        .scalar_subquery()
    )
)


@functools.cache
def _feed_update(columns: tuple[str, ...], failed: bool) -> Update:
    """The feed row's update for one set of columns (a handful of shapes in all)."""
    values: dict[str, Any] = {c: bindparam(c) for c in columns}
    if failed:
        values["error_count"] = feeds.c.error_count + 1
    return update(feeds).where(feeds.c.id == bindparam("_feed"), feeds.c.status != "paused").values(values)


def _to_poll(row: Any) -> FeedToPoll:
    return FeedToPoll(
        id=row.id,
        url=row.url,
        etag=row.etag,
        last_modified=row.last_modified,
        error_count=row.error_count,
        interval_seconds=row.interval_seconds,
        full_text=bool(row.full_text),
        title=row.title or "",
    )


def claim(
    conn: Connection,
    *,
    now: datetime,
    lease_until: datetime,
    owner: str,
    limit: int,
    due_only: bool,
    ids: Sequence[int] | None = None,
    for_update_skip_locked: bool = False,
) -> list[FeedToPoll]:
    """Lease feeds to this worker so no other worker polls them meanwhile.

    A lease that is not released (the worker died) simply expires.
    """
    now_n = naive(now)
    cond = [or_(feeds.c.lease_until.is_(None), feeds.c.lease_until < now_n)]
    if ids is not None:
        cond.append(feeds.c.id.in_(list(ids)))
    else:
        cond.append(feeds.c.status.in_(("active", "failing")))
        if due_only:
            cond.append(feeds.c.next_poll_at <= now_n)
    query = select(feeds.c.id).where(and_(*cond)).order_by(feeds.c.next_poll_at, feeds.c.id).limit(limit)
    if for_update_skip_locked:
        query = query.with_for_update(skip_locked=True)
    chosen = [r.id for r in conn.execute(query)]
    if not chosen:
        return []
    conn.execute(
        update(feeds).where(feeds.c.id.in_(chosen)).values(lease_until=naive(lease_until), lease_owner=owner)
    )
    rows = conn.execute(
        select(feeds).where(feeds.c.id.in_(chosen)).order_by(feeds.c.next_poll_at, feeds.c.id)
    )
    return [_to_poll(r) for r in rows]


def count_articles(conn: Connection) -> int:
    return int(conn.execute(select(func.count()).select_from(articles)).scalar_one())
