"""The queries: saving a poll, the consumer cursor, claiming due feeds.

Plain SQLAlchemy Core over the SQLModel tables, portable between SQLite and
PostgreSQL; anything dialect-specific is marked and stays in this package.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import asdict
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import Connection, and_, delete, func, insert, or_, select, update

from ingestd.models import CleanArticle, FeedToPoll, FeedUpdate, IdentityKeys, SaveStats
from ingestd.store.tables import Article, ArticleSource, Counter, Feed, FetchLog

feeds = Feed.__table__  # type: ignore[attr-defined]
articles = Article.__table__  # type: ignore[attr-defined]
sources = ArticleSource.__table__  # type: ignore[attr-defined]
fetch_log = FetchLog.__table__  # type: ignore[attr-defined]
counters = Counter.__table__  # type: ignore[attr-defined]

FETCH_LOG_KEEP = 20
# C0 controls but tab, newline and carriage return: PostgreSQL rejects NUL, and none is text.
_C0 = dict.fromkeys(c for c in range(32) if c not in (9, 10, 13))


def text_safe(value: str | None) -> str | None:
    """Text the database accepts on every dialect: no C0 controls, no lone surrogates."""
    if value is None:
        return None
    value = value.translate(_C0)
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        value = value.encode("utf-8", "replace").decode("utf-8")
    return value


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
    """Take the next consumer sequence number.

    The UPDATE locks the counter row until commit, so transactions that
    write articles commit in ``seq`` order: a reader of ``seq > N`` never
    skips a row that commits later with a smaller number (on SQLite the
    single writer gives the same guarantee).
    """
    value = conn.execute(
        update(counters).where(counters.c.name == "seq").values(value=counters.c.value + 1).returning(
            counters.c.value
        )
    ).scalar_one_or_none()
    if value is None:
        conn.execute(insert(counters).values(name="seq", value=1))
        return 1
    return int(value)


def _article_values(article: CleanArticle, keys: IdentityKeys) -> dict[str, Any]:
    values = {
        "guid": article.guid,
        "url": article.url,
        "canonical_url": keys.canonical_url,
        "title": article.title,
        "author": article.author,
        "published_at": naive(article.published_at),
        "updated_at": naive(article.updated_at),
        "summary": article.summary,
        "subtitle": article.subtitle,
        "content_html": article.content_html,
        "content_text": article.content_text,
        "content_markdown": article.content_markdown,
        "word_count": article.word_count,
        "reading_time": article.reading_time,
        "image_url": article.image_url,
        "images": json.dumps([asdict(i) for i in article.images], ensure_ascii=False),
        "categories": json.dumps(list(article.categories), ensure_ascii=False),
        "language": article.language,
        "content_hash": keys.content_hash,
        "is_paywalled": article.is_paywalled,
        "body_source": article.body_source,
        "cleaner_version": article.cleaner_version,
        "raw_html": article.raw_html,
    }
    return {k: text_safe(v) if isinstance(v, str) else v for k, v in values.items()}


def known_entry_hashes(conn: Connection, feed_id: int) -> dict[str, str]:
    rows = conn.execute(select(sources.c.guid_key, sources.c.entry_hash).where(sources.c.feed_id == feed_id))
    return {row.guid_key: row.entry_hash for row in rows}


def save_articles(
    conn: Connection,
    feed_id: int,
    items: Sequence[tuple[CleanArticle, IdentityKeys]],
    now: datetime,
) -> SaveStats:
    """Insert new stories, update changed ones, attach duplicates as sources."""
    new = updated = unchanged = merged = 0
    now_n = naive(now)
    for article, keys in items:
        gk = text_safe(keys.guid_key)
        src = conn.execute(
            select(sources.c.id, sources.c.article_id, sources.c.entry_hash).where(
                sources.c.feed_id == feed_id, sources.c.guid_key == gk
            )
        ).first()
        values = _article_values(article, keys)
        if src is not None:
            if src.entry_hash == keys.entry_hash:
                unchanged += 1
                continue
            conn.execute(update(sources).where(sources.c.id == src.id).values(entry_hash=keys.entry_hash))
            current = conn.execute(
                select(articles.c.content_hash, articles.c.title).where(articles.c.id == src.article_id)
            ).first()
            if current is not None and current.content_hash == keys.content_hash and (
                current.title == article.title
            ):
                unchanged += 1
                continue
            values["seq"] = next_seq(conn)
            values["updated_at"] = naive(article.updated_at) or now_n
            conn.execute(update(articles).where(articles.c.id == src.article_id).values(**values))
            updated += 1
            continue
        existing_id = None
        if keys.canonical_url:
            existing_id = conn.execute(
                select(articles.c.id).where(articles.c.canonical_url == keys.canonical_url).limit(1)
            ).scalar_one_or_none()
        if existing_id is not None:
            merged += 1
        else:
            values.update(feed_id=feed_id, created_at=now_n, seq=next_seq(conn))
            existing_id = conn.execute(insert(articles).values(**values).returning(articles.c.id)).scalar_one()
            new += 1
        conn.execute(
            insert(sources).values(
                feed_id=feed_id,
                guid_key=gk,
                article_id=existing_id,
                url=text_safe(article.url),
                entry_hash=keys.entry_hash,
                first_seen_at=now_n,
            )
        )
    return SaveStats(new=new, updated=updated, unchanged=unchanged, merged=merged)


def apply_feed_update(conn: Connection, feed_id: int, upd: FeedUpdate, new: int) -> None:
    """Record one poll on the feed row and in its fetch log, in the poll's transaction."""
    values: dict[str, Any] = {
        "last_polled_at": naive(upd.polled_at),
        "next_poll_at": naive(upd.next_poll_at),
        "lease_until": None,
        "lease_owner": None,
        "http_status": upd.http_status,
    }
    if upd.outcome in ("new", "not_modified"):
        values.update(error_count=0, last_error=None, last_success_at=naive(upd.polled_at))
        values["status"] = "active"
    elif upd.outcome == "gone":
        values.update(status="gone", last_error=text_safe(upd.error), error_count=feeds.c.error_count + 1)
    else:
        values.update(status="failing", last_error=text_safe(upd.error), error_count=feeds.c.error_count + 1)
    if upd.outcome == "new":
        # The validators commit with the articles they describe, never before them.
        values.update(etag=upd.etag, last_modified=upd.last_modified)
    elif upd.outcome == "not_modified" and upd.etag:
        values["etag"] = upd.etag
    if upd.title:
        values["title"] = text_safe(upd.title)
    if upd.site_url:
        values["site_url"] = text_safe(upd.site_url)
    if upd.new_url:
        taken = conn.execute(select(feeds.c.id).where(feeds.c.url == upd.new_url)).scalar_one_or_none()
        if taken is None:
            values["url"] = upd.new_url
    # A paused feed stays paused even if a poll was in flight when it was paused.
    conn.execute(update(feeds).where(feeds.c.id == feed_id, feeds.c.status != "paused").values(**values))
    conn.execute(
        update(feeds)
        .where(feeds.c.id == feed_id, feeds.c.status == "paused")
        .values(lease_until=None, lease_owner=None)
    )
    conn.execute(
        insert(fetch_log).values(
            feed_id=feed_id,
            at=naive(upd.polled_at),
            outcome=upd.outcome,
            http_status=upd.http_status,
            bytes=upd.bytes,
            duration=upd.duration,
            new=new,
            error=text_safe(upd.error),
        )
    )
    old = (
        select(fetch_log.c.id)
        .where(fetch_log.c.feed_id == feed_id)
        .order_by(fetch_log.c.id.desc())
        .offset(FETCH_LOG_KEEP)
    )
    conn.execute(delete(fetch_log).where(fetch_log.c.id.in_(old.scalar_subquery())))


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
        update(feeds)
        .where(feeds.c.id.in_(chosen))
        .values(lease_until=naive(lease_until), lease_owner=owner)
    )
    rows = conn.execute(select(feeds).where(feeds.c.id.in_(chosen)).order_by(feeds.c.next_poll_at, feeds.c.id))
    return [_to_poll(r) for r in rows]


def count_articles(conn: Connection) -> int:
    return int(conn.execute(select(func.count()).select_from(articles)).scalar_one())
