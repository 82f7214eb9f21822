"""Re-derive stored renderings after a change of cleaning rules, without refetching.

Each article keeps the HTML it was cleaned from (``raw_html``) and the
``cleaner_version`` that cleaned it. ``reclean`` rebuilds the entry from the
row (raw HTML, title, link, guid, author, dates, categories, the lead image
when it did not come from the body) and the feed row (url, site_url,
generator, language), cleans it again and writes the rendering columns back.
Only rows whose rendering really changed take a new ``seq`` (consumers see
them again); the others just get the new ``cleaner_version``.

The store may not import the pipeline (see ``tests/test_architecture.py``),
so the cleaner comes in as arguments: the CLI passes ``clean_entry``,
``CLEANER_VERSION`` and ``dedupe.content_hash``.

Batches are read, cleaned outside any transaction, then written in one
transaction each; a row that a poll changed in between (its ``seq`` moved) is
left alone, since the poll cleaned it with the current rules anyway.
"""

from __future__ import annotations

import html
import json
import logging
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import select, update
from sqlalchemy.exc import SQLAlchemyError

from ingestd.exceptions import CleanError, StorageError
from ingestd.models import CleanArticle, FeedContext, ParsedEntry
from ingestd.store import Store, sql
from ingestd.store.identity import article_columns
from ingestd.store.sql import aware

__all__ = ["RENDERING_COLUMNS", "RecleanResult", "reclean"]

log = logging.getLogger("ingestd.reclean")

Cleaner = Callable[[ParsedEntry, FeedContext], CleanArticle]

# What a cleaning produces and re-cleaning re-derives (identity, dates and the raw HTML stay as
# stored); compared to decide whether the row changed.
RENDERING_COLUMNS = (
    "title",
    "author",
    "summary",
    "subtitle",
    "content_html",
    "content_text",
    "content_markdown",
    "word_count",
    "reading_time",
    "image_url",
    "images",
    "language",
    "is_paywalled",
)


@dataclass
class RecleanResult:
    examined: int = 0
    changed: int = 0
    unchanged: int = 0
    skipped: int = 0  # changed by a poll while we worked
    errors: list[str] = field(default_factory=list)


def _entry(row: Any) -> ParsedEntry:
    """The entry as the feed gave it, as far as the row remembers it."""
    images = _json_list(row.images)
    body_urls = {i.get("url") for i in images if isinstance(i, dict)}
    text = " ".join((row.content_text or "").split())
    summary = row.summary or ""
    if row.subtitle:
        summary_html = html.escape(row.subtitle)
    elif not summary or text.startswith(summary.rstrip("…").rstrip()):
        summary_html = ""  # the summary was cut from the body: let the cleaner cut it again
    else:
        summary_html = html.escape(summary)
    return ParsedEntry(
        guid=row.guid,
        link=row.url,
        title=html.escape(row.title or ""),
        title_is_html=True,
        author=html.escape(row.author or ""),
        published_at=aware(row.published_at),
        updated_at=aware(row.updated_at),
        summary_html=summary_html,
        content_html=row.raw_html or "",
        base_url=row.url,
        language=row.language,
        categories=tuple(str(c) for c in _json_list(row.categories)),
        image_url=row.image_url if row.image_url and row.image_url not in body_urls else None,
    )


def _context(row: Any) -> FeedContext:
    generator = row.feed_generator or ""
    if row.body_source == "api":
        generator = "Substack"  # only the Substack backfill stores API bodies
    return FeedContext(
        url=row.feed_url or row.url or "",
        site_url=row.feed_site_url,
        title=row.feed_title or "",
        language=row.feed_language,
        generator=generator,
    )


def _json_list(value: str | None) -> list[Any]:
    try:
        data = json.loads(value or "[]")
    except ValueError:
        return []
    return data if isinstance(data, list) else []


def _rendering(article: CleanArticle, row: Any) -> dict[str, Any]:
    columns = article_columns(article)
    values = {k: columns[k] for k in RENDERING_COLUMNS}
    values["is_paywalled"] = article.is_paywalled or (row.body_source != "feed" and bool(row.is_paywalled))
    return values


def _batches(
    store: Store, *, feed_id: int | None, everything: bool, version: int, size: int
) -> Iterator[list[Any]]:
    a, f = sql.articles, sql.feeds
    query = (
        select(
            a,
            f.c.url.label("feed_url"),
            f.c.site_url.label("feed_site_url"),
            f.c.title.label("feed_title"),
            f.c.language.label("feed_language"),
            f.c.generator.label("feed_generator"),
        )
        .select_from(a.outerjoin(f, a.c.feed_id == f.c.id))
        .order_by(a.c.id)
        .limit(size)
    )
    if not everything:
        query = query.where(a.c.cleaner_version < version)
    if feed_id is not None:
        query = query.where(
            a.c.id.in_(select(sql.sources.c.article_id).where(sql.sources.c.feed_id == feed_id))
        )
    last = 0
    while True:
        with store.engine.begin() as conn:
            rows = list(conn.execute(query.where(a.c.id > last)))
        if not rows:
            return
        yield rows
        last = rows[-1].id


def reclean(
    store: Store,
    *,
    clean: Cleaner,
    version: int,
    content_hash: Callable[[str], str],
    feed_id: int | None = None,
    everything: bool = False,
    batch_size: int = 200,
) -> RecleanResult:
    """Re-clean articles older than ``version`` (all with ``everything``), optionally of one feed."""
    result = RecleanResult()
    a = sql.articles
    try:
        for rows in _batches(store, feed_id=feed_id, everything=everything, version=version, size=batch_size):
            writes: list[tuple[Any, dict[str, Any]]] = []
            for row in rows:
                result.examined += 1
                try:
                    article = clean(_entry(row), _context(row))
                except CleanError as e:
                    result.errors.append(f"article {row.id}: {e}")
                    log.warning("reclean: article %d: %s", row.id, e)
                    continue
                values = _rendering(article, row)
                changed = any(values[c] != getattr(row, c) for c in RENDERING_COLUMNS)
                values = values if changed else {}
                values["cleaner_version"] = version
                if changed:
                    values["content_hash"] = content_hash(article.title + "\n" + article.content_text)
                writes.append((row, values))
            with store.engine.begin() as conn:
                for row, values in writes:
                    changed = "content_text" in values
                    if changed:
                        values["seq"] = sql.next_seq(conn)
                    done = conn.execute(
                        update(a).where(a.c.id == row.id, a.c.seq == row.seq).values(**values)
                    ).rowcount
                    if not done:
                        result.skipped += 1
                    elif changed:
                        result.changed += 1
                    else:
                        result.unchanged += 1
    except SQLAlchemyError as e:
        raise StorageError(f"database error during reclean: {str(e).splitlines()[0]}") from e
    return result
