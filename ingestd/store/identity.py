"""Saving a poll: which story each entry is, and what changed.

An entry is matched, in order, by its source ``(feed, guid_key)``, then by URL
(``url_key``, or ``canonical_url`` for rows written before it existed), then
by the hash of its cleaned text (long texts only). A match attaches a source
row; no match inserts a story and looks for a near-duplicate through the band
index. A changed source updates its story in place, keeping the previous
version in ``article_revisions``; a deleted story's tombstone keeps it deleted.

Feeds whose guids prove unstable (one guid reused for different links, or
known links arriving under new guids) switch to ``guid_mode = 'link'``: from
then on their entries are keyed by URL. Like FreshRSS, a poll in which more
than 5 % of the entries break their guid is enough.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import asdict
from datetime import datetime
from typing import Any

from sqlalchemy import Connection, delete, insert, or_, select, update

from ingestd.models import CleanArticle, IdentityKeys, SaveStats
from ingestd.store.sql import articles, feeds, naive, next_seq, sources, text_safe
from ingestd.store.tables import ArticleRevision, NearDupBand, NearDupSketch, Tombstone

revisions = ArticleRevision.__table__  # type: ignore[attr-defined]
tombstones = Tombstone.__table__  # type: ignore[attr-defined]
sketches = NearDupSketch.__table__  # type: ignore[attr-defined]
bands_t = NearDupBand.__table__  # type: ignore[attr-defined]

#: Texts shorter than this never merge by content hash nor count as near-duplicates.
MIN_WORDS = 50
#: Estimated Jaccard similarity (dedupe.NEAR_DUPLICATE_SIMILARITY, measured in the tests).
NEAR_DUPLICATE_SIMILARITY = 0.6
#: Share of a poll's entries with broken guids above which the feed is keyed by link.
UNSTABLE_GUIDS = 0.05
_CANDIDATES = 20


def article_values(article: CleanArticle, keys: IdentityKeys) -> dict[str, Any]:
    values = {
        "guid": article.guid,
        "url": article.url,
        "canonical_url": keys.canonical_url,
        "url_key": keys.url_key or keys.canonical_url,
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


def sketch_similarity(a: bytes, b: bytes) -> float:
    """The share of equal 8-byte bins of two MinHash sketches (dedupe.similarity)."""
    if len(a) != len(b) or not a:
        return 0.0
    return sum(a[i : i + 8] == b[i : i + 8] for i in range(0, len(a), 8)) / (len(a) // 8)


def _url_key(keys: IdentityKeys) -> str | None:
    return text_safe(keys.url_key or keys.canonical_url)


def _long_enough(article: CleanArticle) -> bool:
    return len(article.content_text.split()) >= MIN_WORDS


def _link_key(keys: IdentityKeys) -> str:
    uk = _url_key(keys)
    return f"link:{uk}" if uk else keys.guid_key


class _Poll:
    """One feed's batch inside one transaction."""

    def __init__(self, conn: Connection, feed_id: int, now: datetime) -> None:
        self.conn = conn
        self.feed_id = feed_id
        self.now = naive(now)
        self.stats = {"new": 0, "updated": 0, "unchanged": 0, "merged": 0}

    # -- unstable guids -------------------------------------------------------

    def guids_unstable(self, items: Sequence[tuple[CleanArticle, IdentityKeys]]) -> bool:
        """Does this batch break guids: one reused for another link, or a known link under a new guid?"""
        if not items:
            return False
        keyed = [(text_safe(k.guid_key) or "", _url_key(k), a.title) for a, k in items]
        found = {
            r.guid_key: (r.url_key, r.article_id)
            for r in self.conn.execute(
                select(sources.c.guid_key, sources.c.url_key, sources.c.article_id).where(
                    sources.c.feed_id == self.feed_id, sources.c.guid_key.in_([g for g, _, _ in keyed])
                )
            )
        }
        known_links = {
            r.url_key
            for r in self.conn.execute(
                select(sources.c.url_key).where(
                    sources.c.feed_id == self.feed_id,
                    sources.c.url_key.in_([u for _, u, _ in keyed if u]),
                )
            )
        }
        titles: dict[int, str] = dict(
            self.conn.execute(
                select(articles.c.id, articles.c.title).where(
                    articles.c.id.in_([aid for _, aid in found.values()])
                )
            ).all()
        )
        broken = 0
        in_batch: dict[str, tuple[str | None, str]] = {}
        for guid, uk, title in keyed:
            if guid in in_batch:
                other_uk, other_title = in_batch[guid]
                broken += bool(uk and other_uk and uk != other_uk and title != other_title)
                continue
            in_batch[guid] = (uk, title)
            if guid in found:
                old_uk, aid = found[guid]
                broken += bool(uk and old_uk and uk != old_uk and titles.get(aid) != title)
            elif uk and uk in known_links:
                broken += 1
        return broken > 0 and broken / len(keyed) > UNSTABLE_GUIDS

    # -- one entry ------------------------------------------------------------

    def save(self, article: CleanArticle, keys: IdentityKeys, gk: str) -> None:
        uk = _url_key(keys)
        src = self.conn.execute(
            select(sources.c.id, sources.c.article_id, sources.c.entry_hash, sources.c.url_key).where(
                sources.c.feed_id == self.feed_id, sources.c.guid_key == gk
            )
        ).first()
        if src is not None and src.entry_hash != keys.entry_hash and self._reused(src, article, uk):
            # A guid reused for another story (other link, other title): key this one by its link.
            link_key = _link_key(keys)
            if link_key != gk:
                self.save(article, keys, link_key)
                return
        if src is not None:
            self._update(src, article, keys)
            return
        if self._tombstoned(gk, uk, text_safe(keys.canonical_url)):
            self.stats["unchanged"] += 1
            return
        existing = self._match(article, keys, uk)
        if existing is not None:
            self.stats["merged"] += 1
        else:
            existing = self._insert(article, keys)
            self.stats["new"] += 1
        self.conn.execute(
            insert(sources).values(
                feed_id=self.feed_id,
                guid_key=gk,
                article_id=existing,
                url=text_safe(article.url),
                url_key=uk,
                entry_hash=keys.entry_hash,
                first_seen_at=self.now,
            )
        )

    def _reused(self, src: Any, article: CleanArticle, uk: str | None) -> bool:
        if not (uk and src.url_key and uk != src.url_key):
            return False
        title = self.conn.execute(select(articles.c.title).where(articles.c.id == src.article_id)).scalar()
        return title != text_safe(article.title)

    def _tombstoned(self, gk: str, uk: str | None, canonical: str | None) -> bool:
        cond = [(tombstones.c.feed_id == self.feed_id) & (tombstones.c.guid_key == gk)]
        for key in {uk, canonical} - {None}:
            cond.append(tombstones.c.url_key == key)
        return self.conn.execute(select(tombstones.c.id).where(or_(*cond)).limit(1)).first() is not None

    def _match(self, article: CleanArticle, keys: IdentityKeys, uk: str | None) -> int | None:
        """An existing story with the same URL, else (long texts only) the same cleaned text."""
        if uk or keys.canonical_url:
            cond = []
            if uk:
                cond.append(articles.c.url_key == uk)
            if keys.canonical_url:
                cond.append(articles.c.canonical_url == text_safe(keys.canonical_url))
            found = self.conn.execute(
                select(articles.c.id).where(or_(*cond)).order_by(articles.c.id).limit(1)
            ).scalar_one_or_none()
            if found is not None:
                return int(found)
        if _long_enough(article):
            found = self.conn.execute(
                select(articles.c.id)
                .where(articles.c.content_hash == keys.content_hash)
                .order_by(articles.c.id)
                .limit(1)
            ).scalar_one_or_none()
            if found is not None:
                return int(found)
        return None

    def _insert(self, article: CleanArticle, keys: IdentityKeys) -> int:
        values = article_values(article, keys)
        values.update(feed_id=self.feed_id, created_at=self.now, seq=next_seq(self.conn))
        near = self._near_duplicate(keys) if _long_enough(article) else None
        if near is not None:
            values["near_duplicate_of"] = near
        new_id = int(
            self.conn.execute(insert(articles).values(**values).returning(articles.c.id)).scalar_one()
        )
        self._index(new_id, keys)
        return new_id

    def _update(self, src: Any, article: CleanArticle, keys: IdentityKeys) -> None:
        """A known source again: nothing if unchanged, a revision if its text or title changed."""
        if src.entry_hash == keys.entry_hash:
            self.stats["unchanged"] += 1
            return
        self.conn.execute(update(sources).where(sources.c.id == src.id).values(entry_hash=keys.entry_hash))
        current = self.conn.execute(
            select(
                articles.c.seq,
                articles.c.title,
                articles.c.content_text,
                articles.c.content_html,
                articles.c.content_hash,
            ).where(articles.c.id == src.article_id)
        ).first()
        if current is None:
            self.stats["unchanged"] += 1
            return
        if current.content_hash == keys.content_hash and current.title == text_safe(article.title):
            # Dates or tracking tokens moved, the story did not: no revision, no seq churn.
            self.stats["unchanged"] += 1
            return
        self.conn.execute(
            insert(revisions).values(
                article_id=src.article_id,
                seq=current.seq,
                revised_at=self.now,
                title=current.title,
                content_text=current.content_text,
                content_html=current.content_html,
                content_hash=current.content_hash,
            )
        )
        values = article_values(article, keys)
        values["seq"] = next_seq(self.conn)
        values["updated_at"] = naive(article.updated_at) or self.now
        self.conn.execute(update(articles).where(articles.c.id == src.article_id).values(**values))
        self.conn.execute(delete(sketches).where(sketches.c.article_id == src.article_id))
        self.conn.execute(delete(bands_t).where(bands_t.c.article_id == src.article_id))
        if _long_enough(article):
            self._index(src.article_id, keys)
        self.stats["updated"] += 1

    # -- near-duplicates ------------------------------------------------------

    def _index(self, article_id: int, keys: IdentityKeys) -> None:
        if keys.sketch is None or not keys.bands:
            return
        self.conn.execute(insert(sketches).values(article_id=article_id, sketch=keys.sketch))
        self.conn.execute(
            insert(bands_t),
            [{"band": i, "value": v, "article_id": article_id} for i, v in enumerate(keys.bands)],
        )

    def _near_duplicate(self, keys: IdentityKeys) -> int | None:
        """The story this text nearly duplicates: 32 index searches, then at most 20 sketch comparisons."""
        if keys.sketch is None or not keys.bands:
            return None
        wanted = set(enumerate(keys.bands))
        candidates: list[int] = []
        for row in self.conn.execute(candidate_query(keys.bands)):
            if (row.band, row.value) in wanted and row.article_id not in candidates:
                candidates.append(row.article_id)
                if len(candidates) >= _CANDIDATES:
                    break
        if not candidates:
            return None
        rows = self.conn.execute(
            select(sketches.c.article_id, sketches.c.sketch, articles.c.near_duplicate_of)
            .join(articles, articles.c.id == sketches.c.article_id)
            .where(sketches.c.article_id.in_(candidates))
        ).all()
        best: tuple[float, int] | None = None
        for row in rows:
            sim = sketch_similarity(keys.sketch, row.sketch)
            if sim >= NEAR_DUPLICATE_SIMILARITY and (best is None or sim > best[0]):
                best = (sim, int(row.near_duplicate_of or row.article_id))
        return best[1] if best else None


def candidate_query(band_hashes: Sequence[int]) -> Any:
    """Rows of the band index sharing a hash with ``band_hashes``: one index search per hash."""
    return select(bands_t.c.value, bands_t.c.band, bands_t.c.article_id).where(
        bands_t.c.value.in_(list(band_hashes))
    )


def save_articles(
    conn: Connection,
    feed_id: int,
    items: Sequence[tuple[CleanArticle, IdentityKeys]],
    now: datetime,
) -> SaveStats:
    """Insert new stories, update changed ones, attach duplicates as sources."""
    poll = _Poll(conn, feed_id, now)
    mode = conn.execute(select(feeds.c.guid_mode).where(feeds.c.id == feed_id)).scalar_one_or_none()
    if mode != "link" and poll.guids_unstable(items):
        conn.execute(update(feeds).where(feeds.c.id == feed_id).values(guid_mode="link"))
        mode = "link"
    for article, keys in items:
        gk = _link_key(keys) if mode == "link" else keys.guid_key
        poll.save(article, keys, text_safe(gk) or "")
    return SaveStats(**poll.stats)


def tombstone_articles(conn: Connection, ids: Sequence[int], now: datetime, reason: str) -> int:
    """Delete stories and remember their sources and URLs, so no feed brings them back."""
    if not ids:
        return 0
    ids = list(ids)
    now_n = naive(now)
    rows = conn.execute(
        select(sources.c.feed_id, sources.c.guid_key, sources.c.entry_hash).where(
            sources.c.article_id.in_(ids)
        )
    ).all()
    marks: list[dict[str, Any]] = [
        {"feed_id": r.feed_id, "guid_key": r.guid_key, "entry_hash": r.entry_hash, "url_key": None}
        for r in rows
    ]
    for r in conn.execute(select(articles.c.url_key, articles.c.canonical_url).where(articles.c.id.in_(ids))):
        for key in {r.url_key, r.canonical_url} - {None}:
            marks.append({"feed_id": None, "guid_key": None, "entry_hash": None, "url_key": key})
    if marks:
        conn.execute(insert(tombstones), [{**m, "deleted_at": now_n, "reason": reason} for m in marks])
    return int(conn.execute(delete(articles).where(articles.c.id.in_(ids))).rowcount or 0)


def tombstoned_entry_hashes(conn: Connection, feed_id: int) -> dict[str, str]:
    """Tombstoned sources as guid_key -> entry_hash: the worker skips them before cleaning."""
    rows = conn.execute(
        select(tombstones.c.guid_key, tombstones.c.entry_hash).where(
            tombstones.c.feed_id == feed_id, tombstones.c.guid_key.is_not(None)
        )
    )
    return {r.guid_key: r.entry_hash for r in rows if r.entry_hash}
