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
from dataclasses import dataclass, fields
from datetime import datetime
from typing import Any

from sqlalchemy import (
    BindParameter,
    Connection,
    bindparam,
    delete,
    insert,
    or_,
    select,
    update,
)

from ingestd.models import CleanArticle, IdentityKeys, Image, SaveStats
from ingestd.store.neardup import band_matches, bands_t, insert_bands, similarities, sketches, stored_sketches
from ingestd.store.sql import articles, feeds, naive, reserve_seq, sources, text_safe
from ingestd.store.tables import ArticleRevision, Tombstone

revisions = ArticleRevision.__table__  # type: ignore[attr-defined]
tombstones = Tombstone.__table__  # type: ignore[attr-defined]

#: Texts shorter than this never merge by content hash nor count as near-duplicates.
MIN_WORDS = 50
#: Estimated Jaccard similarity (dedupe.NEAR_DUPLICATE_SIMILARITY, measured in the tests).
NEAR_DUPLICATE_SIMILARITY = 0.6
#: Share of a poll's entries with broken guids above which the feed is keyed by link.
UNSTABLE_GUIDS = 0.05
_CANDIDATES = 8  # stories compared, sketch to sketch, per new long story
# Many rows per statement, their ids returned in the order of the rows.
_INSERT_ARTICLES = insert(articles).returning(articles.c.id, sort_by_parameter_order=True)
_SET_NEAR = (
    update(articles).where(articles.c.id == bindparam("_id")).values(near_duplicate_of=bindparam("_near"))
)
# The reads of every poll, built once (building a Core statement costs more than running it).
_FEED: BindParameter[int] = bindparam("feed")
_KEYS: BindParameter[Any] = bindparam("keys", expanding=True)
_GUID_MODE = select(feeds.c.guid_mode).where(feeds.c.id == _FEED)
_SOURCES_BY_GUID = select(
    sources.c.id, sources.c.guid_key, sources.c.article_id, sources.c.entry_hash, sources.c.url_key
).where(sources.c.feed_id == _FEED, sources.c.guid_key.in_(_KEYS))
_SOURCE_LINKS = select(sources.c.url_key).where(sources.c.feed_id == _FEED, sources.c.url_key.in_(_KEYS))
_TITLES = select(articles.c.id, articles.c.title).where(articles.c.id.in_(bindparam("ids", expanding=True)))
_TOMBSTONED_GUIDS = select(tombstones.c.guid_key).where(
    tombstones.c.feed_id == _FEED, tombstones.c.guid_key.in_(_KEYS)
)
_TOMBSTONED_URLS = select(tombstones.c.url_key).where(tombstones.c.url_key.in_(_KEYS))
_TOMBSTONED_HASHES = select(tombstones.c.guid_key, tombstones.c.entry_hash).where(
    tombstones.c.feed_id == _FEED, tombstones.c.guid_key.is_not(None)
)
_ARTICLES_BY_URL = (
    select(articles.c.id, articles.c.url_key, articles.c.canonical_url)
    .where(or_(articles.c.url_key.in_(_KEYS), articles.c.canonical_url.in_(_KEYS)))
    .order_by(articles.c.id.desc())
)
_ARTICLES_BY_HASH = (
    select(articles.c.id, articles.c.content_hash)
    .where(articles.c.content_hash.in_(_KEYS))
    .order_by(articles.c.id.desc())
)
#: Image fields as a JSON object: read directly (``dataclasses.asdict`` deep-copies, 12x slower).
_IMAGE_FIELDS = tuple(f.name for f in fields(Image))
_NEAR_OF = select(articles.c.near_duplicate_of).where(articles.c.id == bindparam("id"))


def article_columns(article: CleanArticle) -> dict[str, Any]:
    """The ``articles`` columns a cleaned article fills (the identity keys aside), database-safe."""
    values = {
        "guid": article.guid,
        "url": article.url,
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
        "images": json.dumps(
            [{f: getattr(i, f) for f in _IMAGE_FIELDS} for i in article.images], ensure_ascii=False
        ),
        "categories": json.dumps(list(article.categories), ensure_ascii=False),
        "language": article.language,
        "is_paywalled": article.is_paywalled,
        "body_source": article.body_source,
        "cleaner_version": article.cleaner_version,
        "raw_html": article.raw_html,
    }
    return {k: text_safe(v) if isinstance(v, str) else v for k, v in values.items()}


def article_values(article: CleanArticle, keys: IdentityKeys) -> dict[str, Any]:
    values = article_columns(article)
    values.update(
        canonical_url=text_safe(keys.canonical_url),
        url_key=text_safe(keys.url_key or keys.canonical_url),
        content_hash=keys.content_hash,
    )
    return values


def _url_key(keys: IdentityKeys) -> str | None:
    return text_safe(keys.url_key or keys.canonical_url)


def _long_enough(article: CleanArticle) -> bool:
    # word_count is the cleaner's count of content_text's words (no need to split it again).
    return article.word_count >= MIN_WORDS


def _link_key(keys: IdentityKeys) -> str:
    uk = _url_key(keys)
    return f"link:{uk}" if uk else keys.guid_key


_CHUNK = 500


def _chunks(values: Sequence[Any]) -> list[list[Any]]:
    unique = list(dict.fromkeys(v for v in values if v is not None))
    return [unique[i : i + _CHUNK] for i in range(0, len(unique), _CHUNK)]


@dataclass
class _Source:
    """A source row, stored (``id``) or queued in this batch (``pending``)."""

    article_id: int
    entry_hash: str
    url_key: str | None
    id: int | None = None
    pending: dict[str, Any] | None = None


class _Poll:
    """One feed's batch inside one transaction.

    What the decisions need is read up front in a few ``IN (...)`` queries
    (near-duplicate candidates included) and new rows are written with one
    ``executemany`` per table: a poll of 20 new entries costs a handful of
    statements, not 200 (the store's thread is the daemon's narrowest point).
    A new story gets a provisional negative id until ``flush`` inserts it and
    learns its real one. Every decision also updates the in-memory maps, so two
    entries of one batch see each other exactly as if they had been saved one
    by one.
    """

    def __init__(self, conn: Connection, feed_id: int, now: datetime) -> None:
        self.conn = conn
        self.feed_id = feed_id
        self.now = naive(now)
        self.stats = {"new": 0, "updated": 0, "unchanged": 0, "merged": 0}
        self.sources: dict[str, _Source] = {}
        self.looked_up: set[str] = set()
        self.tomb_guids: set[str] = set()
        self.tomb_urls: set[str] = set()
        self.by_url: dict[str, int] = {}
        self.by_hash: dict[str, int] = {}
        self.band_index: dict[tuple[int, int], list[int]] = {}
        self.sketches: dict[int, bytes] = {}
        self.near_of: dict[int, int | None] = {}  # a story's own near_duplicate_of, once known
        self.new_sources: list[dict[str, Any]] = []
        self.new_sketches: list[dict[str, Any]] = []
        self.new_bands: list[tuple[int, int, int]] = []  # (value, band, article id)
        self.new_articles: list[tuple[int, dict[str, Any]]] = []  # (provisional id, row)
        self.titles: dict[int, str | None] = {}  # provisional id -> title, until flushed
        self.real: dict[int, int] = {}  # provisional id -> id in the database
        self.seqs: list[int] = []
        self.remaining = 0  # entries still to save: the size of the next block of seq numbers

    # -- unstable guids -------------------------------------------------------

    def guids_unstable(self, items: Sequence[tuple[CleanArticle, IdentityKeys]]) -> bool:
        """Does this batch break guids: one reused for another link, or a known link under a new guid?"""
        if not items:
            return False
        keyed = [(text_safe(k.guid_key) or "", _url_key(k), a.title) for a, k in items]
        found = {
            r.guid_key: (r.url_key, r.article_id)
            for r in self.conn.execute(
                _SOURCES_BY_GUID, {"feed": self.feed_id, "keys": [g for g, _, _ in keyed]}
            )
        }
        known_links = {
            r.url_key
            for r in self.conn.execute(
                _SOURCE_LINKS, {"feed": self.feed_id, "keys": [u for _, u, _ in keyed if u]}
            )
        }
        titles: dict[int, str] = dict(
            self.conn.execute(_TITLES, {"ids": [aid for _, aid in found.values()]}).all()
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

    # -- reading ahead -------------------------------------------------------

    def prefetch(self, batch: Sequence[tuple[CleanArticle, IdentityKeys, str]]) -> None:
        """Load every row the batch's decisions can touch."""
        conn = self.conn
        guids = [gk for _a, _k, gk in batch]
        self._load_sources(guids)
        urls = [u for _a, k, _g in batch for u in (_url_key(k), text_safe(k.canonical_url))]
        for chunk in _chunks(guids):
            self.tomb_guids.update(
                r[0] for r in conn.execute(_TOMBSTONED_GUIDS, {"feed": self.feed_id, "keys": chunk})
            )
        for chunk in _chunks(urls):
            self.tomb_urls.update(r[0] for r in conn.execute(_TOMBSTONED_URLS, {"keys": chunk}))
            rows = conn.execute(_ARTICLES_BY_URL, {"keys": chunk})
            for r in rows:  # descending, so the oldest story wins
                for key in (r.url_key, r.canonical_url):
                    if key in chunk:
                        self.by_url[key] = int(r.id)
        hashes = [k.content_hash for a, k, _g in batch if _long_enough(a)]
        for chunk in _chunks(hashes):
            rows = conn.execute(_ARTICLES_BY_HASH, {"keys": chunk})
            for r in rows:
                self.by_hash[r.content_hash] = int(r.id)

    def _load_sources(self, guids: Sequence[str]) -> None:
        todo = [g for g in guids if g not in self.looked_up]
        self.looked_up.update(todo)
        for chunk in _chunks(todo):
            rows = self.conn.execute(_SOURCES_BY_GUID, {"feed": self.feed_id, "keys": chunk})
            for r in rows:
                self.sources[r.guid_key] = _Source(int(r.article_id), r.entry_hash, r.url_key, id=int(r.id))

    def _source(self, gk: str) -> _Source | None:
        self._load_sources([gk])
        return self.sources.get(gk)

    def _seq(self) -> int:
        """A consumer sequence number; taken in blocks, so one counter update serves a batch."""
        if not self.seqs:
            block = max(self.remaining, 1)
            last = reserve_seq(self.conn, block)
            self.seqs = list(range(last - block + 1, last + 1))
        return self.seqs.pop(0)

    # -- one entry ------------------------------------------------------------

    def save(self, article: CleanArticle, keys: IdentityKeys, gk: str) -> None:
        uk = _url_key(keys)
        src = self._source(gk)
        if src is not None and src.entry_hash != keys.entry_hash and self._reused(src, article, uk):
            # A guid reused for another story (other link, other title): key this one by its link.
            link_key = _link_key(keys)
            if link_key != gk:
                self.save(article, keys, link_key)
                return
        if src is not None:
            self._update(src, article, keys)
            return
        canonical = text_safe(keys.canonical_url)
        if gk in self.tomb_guids or bool({uk, canonical} & self.tomb_urls - {None}):
            self.stats["unchanged"] += 1
            return
        existing = self._match(article, keys, uk, canonical)
        if existing is not None:
            self.stats["merged"] += 1
        else:
            existing = self._insert(article, keys, uk, canonical)
            self.stats["new"] += 1
        row = {
            "feed_id": self.feed_id,
            "guid_key": gk,
            "article_id": existing,
            "url": text_safe(article.url),
            "url_key": uk,
            "entry_hash": keys.entry_hash,
            "first_seen_at": self.now,
        }
        self.new_sources.append(row)
        self.sources[gk] = _Source(existing, keys.entry_hash, uk, pending=row)

    def _reused(self, src: _Source, article: CleanArticle, uk: str | None) -> bool:
        if not (uk and src.url_key and uk != src.url_key):
            return False
        if src.article_id in self.titles:
            title = self.titles[src.article_id]
        else:
            title = self.conn.execute(
                select(articles.c.title).where(articles.c.id == self._resolve(src.article_id))
            ).scalar()
        return title != text_safe(article.title)

    def _resolve(self, article_id: int) -> int:
        """The database id of a story, provisional or not (provisional ones must be flushed)."""
        return self.real.get(article_id, article_id)

    def _match(
        self, article: CleanArticle, keys: IdentityKeys, uk: str | None, canonical: str | None
    ) -> int | None:
        """An existing story with the same URL, else (long texts only) the same cleaned text."""
        found = [self.by_url[k] for k in (uk, canonical) if k is not None and k in self.by_url]
        if found:
            return min(found)
        if _long_enough(article):
            return self.by_hash.get(keys.content_hash)
        return None

    def _insert(
        self, article: CleanArticle, keys: IdentityKeys, uk: str | None, canonical: str | None
    ) -> int:
        values = article_values(article, keys)
        long_enough = _long_enough(article)
        near = self._near_duplicate(keys) if long_enough else None
        values.update(feed_id=self.feed_id, created_at=self.now, seq=self._seq(), near_duplicate_of=near)
        new_id = -1 - len(self.real) - len(self.new_articles)  # provisional, until flushed
        self.new_articles.append((new_id, values))
        self.titles[new_id] = values["title"]
        for key in (uk, canonical):
            if key is not None:
                self.by_url.setdefault(key, new_id)
        if long_enough:
            self.by_hash.setdefault(keys.content_hash, new_id)
        self._index(new_id, keys, near)
        return new_id

    def _update(self, src: _Source, article: CleanArticle, keys: IdentityKeys) -> None:
        """A known source again: nothing if unchanged, a revision if its text or title changed."""
        if src.entry_hash == keys.entry_hash:
            self.stats["unchanged"] += 1
            return
        src.entry_hash = keys.entry_hash
        if src.article_id < 0 and src.article_id not in self.real:
            self.flush()  # the story is new in this batch: write it, then revise it
        article_id = self._resolve(src.article_id)
        if src.pending is not None:
            src.pending["entry_hash"] = keys.entry_hash
        else:
            self.conn.execute(
                update(sources).where(sources.c.id == src.id).values(entry_hash=keys.entry_hash)
            )
        current = self.conn.execute(
            select(
                articles.c.seq,
                articles.c.title,
                articles.c.content_text,
                articles.c.content_html,
                articles.c.content_hash,
            ).where(articles.c.id == article_id)
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
                article_id=article_id,
                seq=current.seq,
                revised_at=self.now,
                title=current.title,
                content_text=current.content_text,
                content_html=current.content_html,
                content_hash=current.content_hash,
            )
        )
        values = article_values(article, keys)
        values["seq"] = self._seq()
        values["updated_at"] = naive(article.updated_at) or self.now
        self.conn.execute(update(articles).where(articles.c.id == article_id).values(**values))
        self.flush()  # the index rows of this article may still be queued
        self.conn.execute(delete(sketches).where(sketches.c.article_id == article_id))
        self.conn.execute(delete(bands_t).where(bands_t.c.article_id == article_id))
        self.sketches.pop(src.article_id, None)
        self.sketches.pop(article_id, None)
        if _long_enough(article):
            self._index(article_id, keys, None)
        self.stats["updated"] += 1

    # -- near-duplicates ------------------------------------------------------

    def _index(self, article_id: int, keys: IdentityKeys, near: int | None) -> None:
        if keys.sketch is None or not keys.bands:
            return
        self.new_sketches.append({"article_id": article_id, "sketch": keys.sketch})
        self.sketches[article_id] = keys.sketch
        self.near_of[article_id] = near
        for i, v in enumerate(keys.bands):
            self.new_bands.append((v, i, article_id))
            self.band_index.setdefault((i, v), []).append(article_id)

    def _near_duplicate(self, keys: IdentityKeys) -> int | None:
        """The story this text nearly duplicates: those sharing the most band hashes, then their sketches.

        Every band hash reads at most its 5 newest stories (a hash that thousands
        of stories share, a common phrase, costs no more than a rare one); the 8
        stories sharing the most bands are compared, sketch to sketch. A pair at
        the threshold (Jaccard 0.6) shares 2.9 of 8 bands on average, stories
        that only share boilerplate one or none. (Comparing the first 20 stories
        found instead spent a second of the store thread per cold bench cycle.)
        """
        if keys.sketch is None or not keys.bands or len(keys.sketch) % 8:
            return None
        shared: dict[int, int] = {}
        for i, v in enumerate(keys.bands):  # stories of this batch, not written yet
            for article_id in self.band_index.get((i, v), ()):
                shared[article_id] = shared.get(article_id, 0) + 1
        for article_id in band_matches(self.conn, keys.bands):  # stories already stored
            shared[article_id] = shared.get(article_id, 0) + 1
        if not shared:
            return None
        # Most bands shared first; among equals, first found (this batch's, then the newest stored).
        candidates = sorted(shared, key=shared.__getitem__, reverse=True)[:_CANDIDATES]
        missing = [a for a in candidates if a not in self.sketches]
        if missing:
            self.sketches.update(stored_sketches(self.conn, missing))
        size = len(keys.sketch)
        known = [(a, sk) for a in candidates if (sk := self.sketches.get(a)) and len(sk) == size]
        if not known:
            return None
        sims = similarities(keys.sketch, [sk for _a, sk in known])
        best = sims.index(max(sims))  # the first of the most similar
        if sims[best] < NEAR_DUPLICATE_SIMILARITY:
            return None
        article_id = known[best][0]
        return self._near_root(article_id)

    def _near_root(self, article_id: int) -> int:
        """The original a near-duplicate points to: the story itself, or the story it duplicates.

        Read only for the match (``near_duplicate_of`` is the articles row's
        last column, behind the bodies: reading it for every candidate walked
        their overflow pages).
        """
        if article_id not in self.near_of:
            self.near_of[article_id] = self.conn.execute(_NEAR_OF, {"id": article_id}).scalar()
        return self.near_of[article_id] or article_id

    # -- writing ---------------------------------------------------------------

    def flush(self) -> None:
        """Write the queued stories, sources and index rows, a statement per table."""
        if self.new_articles:
            self._flush_articles()
        if self.new_sources:
            for row in self.new_sources:
                row["article_id"] = self._resolve(row["article_id"])
            self.conn.execute(insert(sources), self.new_sources)
            for src in self.sources.values():
                src.pending = None  # every pending row was in new_sources
            self._reload_pending_ids()
            self.new_sources = []
        if self.new_sketches:
            for row in self.new_sketches:
                row["article_id"] = self._resolve(row["article_id"])
            self.conn.execute(insert(sketches), self.new_sketches)
            self.new_sketches = []
        if self.new_bands:
            # 16 rows per story: straight to the driver (SQLAlchemy's per-row work would double the cost).
            rows = [(v, band, self._resolve(a)) for v, band, a in self.new_bands]
            insert_bands(self.conn, rows)
            self.new_bands = []

    def _flush_articles(self) -> None:
        """Insert the queued stories in one statement and learn their ids.

        A story nearly duplicating another of the same statement gets its
        ``near_duplicate_of`` set just after, once that one has an id.
        """
        later: list[tuple[int, int]] = []
        for provisional, row in self.new_articles:
            near = row["near_duplicate_of"]
            if near is not None and near < 0:
                if near in self.real:
                    row["near_duplicate_of"] = self.real[near]
                else:
                    later.append((provisional, near))
                    row["near_duplicate_of"] = None
        ids = self.conn.execute(_INSERT_ARTICLES, [row for _, row in self.new_articles]).scalars().all()
        for (provisional, _row), new_id in zip(self.new_articles, ids, strict=True):
            self.real[provisional] = int(new_id)
            self.titles.pop(provisional, None)
        self.new_articles = []
        if later:
            self.conn.execute(_SET_NEAR, [{"_id": self.real[p], "_near": self.real[n]} for p, n in later])

    def _reload_pending_ids(self) -> None:
        """Sources written by the last flush get their ids (for a later update in the batch)."""
        unknown = [gk for gk, src in self.sources.items() if src.id is None and src.pending is None]
        for chunk in _chunks(unknown):
            rows = self.conn.execute(_SOURCES_BY_GUID, {"feed": self.feed_id, "keys": chunk})
            for r in rows:
                self.sources[r.guid_key].id = int(r.id)


def save_articles(
    conn: Connection,
    feed_id: int,
    items: Sequence[tuple[CleanArticle, IdentityKeys]],
    now: datetime,
) -> SaveStats:
    """Insert new stories, update changed ones, attach duplicates as sources."""
    poll = _Poll(conn, feed_id, now)
    mode = conn.execute(_GUID_MODE, {"feed": feed_id}).scalar_one_or_none()
    if mode != "link" and poll.guids_unstable(items):
        conn.execute(update(feeds).where(feeds.c.id == feed_id).values(guid_mode="link"))
        mode = "link"
    batch = [
        (article, keys, text_safe(_link_key(keys) if mode == "link" else keys.guid_key) or "")
        for article, keys in items
    ]
    poll.prefetch(batch)
    poll.remaining = len(batch)
    for article, keys, gk in batch:
        poll.save(article, keys, gk)
        poll.remaining -= 1
    poll.flush()
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
    rows = conn.execute(_TOMBSTONED_HASHES, {"feed": feed_id})
    return {r.guid_key: r.entry_hash for r in rows if r.entry_hash}
