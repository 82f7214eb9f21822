"""Substack archive backfill: the older posts a publication's feed no longer carries.

A Substack feed lists only the newest 20 posts. The publication's JSON API
lists them all, newest first::

    GET <publication>/api/v1/archive?sort=new&offset=N&limit=M   -> [post, ...] (no body)
    GET <publication>/api/v1/posts/<slug>                         -> post with "body_html"

``backfill`` pages through the archive (pages of at most 25; it stops on an
empty or short page, or after ``limit`` posts), skips posts already stored
(by the feed's guid, which on Substack is the post's canonical URL, or by
canonical URL from any feed), fetches the body of the others one at a time
(at most ``rate`` requests a second: the API is Substack's, not ours), cleans
them with the Substack rules and stores them under the publication's
``/feed``, subscribing it if needed. Every request goes through a
``Fetcher``: the same SSRF guard and limits as a poll.
"""

from __future__ import annotations

import asyncio
import html
import json
import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from typing import Any, Protocol
from urllib.parse import quote, urlsplit

from sqlalchemy import select

from ingestd.exceptions import CleanError, FeedError, FetchError, ParseError
from ingestd.models import CleanArticle, FeedContext, IdentityKeys, ParsedEntry, SaveStats
from ingestd.pipeline import dedupe
from ingestd.pipeline.clean import canonical_url, clean_entry
from ingestd.pipeline.fetch import Fetcher
from ingestd.store import Store, sql

__all__ = ["MAX_PAGE_SIZE", "BackfillResult", "backfill", "post_entry", "publication_base"]

log = logging.getLogger("ingestd.substack")

MAX_PAGE_SIZE = 25
DEFAULT_RATE = 2.0  # requests per second
JSON_ACCEPT = "application/json"


@dataclass
class BackfillResult:
    """What one backfill did; ``errors`` holds one line per post that failed."""

    feed_id: int
    feed_url: str
    listed: int = 0
    already: int = 0
    fetched: int = 0
    new: int = 0
    merged: int = 0
    errors: list[str] = field(default_factory=list)


class _Pacer:
    """At most ``rate`` request starts a second (sequential requests, so no lock needed)."""

    def __init__(self, rate: float) -> None:
        self.interval = 1.0 / rate if rate > 0 else 0.0
        self._next = 0.0

    async def wait(self) -> None:
        now = time.monotonic()
        if self._next > now:
            await asyncio.sleep(self._next - now)
        self._next = max(now, self._next) + self.interval


class _Requests(Protocol):
    async def json(self, url: str) -> Any: ...


def publication_base(url: str) -> str:
    """``https://name.substack.com`` from any URL of the publication (its feed, a post, the archive)."""
    parts = urlsplit(url.strip())
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise FeedError(f"not an http(s) URL: {url!r}", url)
    return f"{parts.scheme}://{parts.netloc}"


def _parse_date(value: Any) -> datetime | None:
    if not isinstance(value, str) or not value:
        return None
    try:
        when = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None
    return when if when.tzinfo else when.replace(tzinfo=UTC)


def _str(value: Any) -> str:
    return value if isinstance(value, str) else ""


def post_url(base: str, post: dict[str, Any]) -> str:
    """The post's canonical URL: what Substack's RSS uses as the item's guid and link."""
    canonical = _str(post.get("canonical_url"))
    if canonical.startswith(("http://", "https://")):
        return canonical
    return f"{base}/p/{quote(_str(post.get('slug')), safe='')}"


def post_entry(base: str, post: dict[str, Any]) -> ParsedEntry:
    """A post of the API as the feed would carry it: guid and link = canonical URL, description = subtitle."""
    url = post_url(base, post)
    bylines = post.get("publishedBylines")
    authors = (
        [_str(b.get("name")) for b in bylines if isinstance(b, dict)] if isinstance(bylines, list) else []
    )
    tags = post.get("postTags")
    categories = [_str(t.get("name")) for t in tags if isinstance(t, dict)] if isinstance(tags, list) else []
    subtitle = _str(post.get("subtitle")) or _str(post.get("description"))
    cover = _str(post.get("cover_image"))
    return ParsedEntry(
        guid=url,
        link=url,
        title=html.escape(_str(post.get("title"))),  # JSON gives plain text: keep it verbatim
        title_is_html=True,
        author=html.escape(", ".join(a for a in authors if a)),
        published_at=_parse_date(post.get("post_date")),
        updated_at=None,
        summary_html=html.escape(subtitle),
        content_html=_str(post.get("body_html")),
        base_url=url,
        categories=tuple(c for c in categories if c),
        image_url=cover or None,
    )


def clean_post(base: str, post: dict[str, Any], feed: FeedContext) -> tuple[CleanArticle, IdentityKeys]:
    """Clean one API post with the Substack rules; ``audience`` other than "everyone" is paywalled."""
    entry = post_entry(base, post)
    article = clean_entry(entry, feed)
    audience = _str(post.get("audience")) or "everyone"
    article = replace(article, body_source="api", is_paywalled=article.is_paywalled or audience != "everyone")
    keys = IdentityKeys(
        guid_key=dedupe.guid_key(entry),
        canonical_url=article.canonical_url,
        content_hash=dedupe.content_hash(article.title + "\n" + article.content_text),
        entry_hash=dedupe.entry_hash(entry),
    )
    return article, keys


class _FetcherJSON:
    """JSON over the guarded ``Fetcher``, paced."""

    def __init__(self, fetcher: Fetcher, rate: float) -> None:
        self.fetcher = fetcher
        self.pacer = _Pacer(rate)

    async def json(self, url: str) -> Any:
        await self.pacer.wait()
        result = await self.fetcher.get(url, accept=JSON_ACCEPT)
        try:
            return json.loads(result.content)
        except (ValueError, UnicodeDecodeError) as e:
            raise ParseError(f"not JSON: {e}", url) from e


def _known(store: Store, feed_id: int, urls: Sequence[str]) -> set[str]:
    """Which of these post URLs are stored already: as this feed's guids, or as any story's canonical URL."""
    known = set(store.entry_hashes(feed_id)) & set(urls)
    canon = {u: c for u in urls if (c := canonical_url(u))}
    if canon:
        a = sql.articles
        with store.engine.connect() as conn:
            rows = conn.execute(
                select(a.c.canonical_url).where(a.c.canonical_url.in_(list(set(canon.values()))))
            )
            stored = {r.canonical_url for r in rows}
        known |= {u for u, c in canon.items() if c in stored}
    return known


async def backfill(
    store: Store,
    fetcher: Fetcher,
    url: str,
    *,
    limit: int | None = None,
    page_size: int = MAX_PAGE_SIZE,
    rate: float = DEFAULT_RATE,
) -> BackfillResult:
    """Store the publication's archived posts that are not stored yet; see the module docstring."""
    base = publication_base(url)
    feed_url = f"{base}/feed"
    info = store.find_feed(feed_url)
    feed_id = info.id if info is not None else store.add_feed(feed_url)[0]
    result = BackfillResult(feed_id=feed_id, feed_url=feed_url)
    ctx = FeedContext(url=feed_url, site_url=base, generator="Substack")
    api = _FetcherJSON(fetcher, rate)
    page_size = max(1, min(page_size, MAX_PAGE_SIZE))
    offset = 0
    while limit is None or result.listed < limit:
        want = page_size if limit is None else min(page_size, limit - result.listed)
        archive_url = f"{base}/api/v1/archive?sort=new&offset={offset}&limit={want}"
        page = await api.json(archive_url)
        if not isinstance(page, list):
            raise ParseError("the archive is not a JSON list of posts", archive_url)
        posts = [p for p in page if isinstance(p, dict)][:want]
        result.listed += len(posts)
        offset += len(page)
        await _store_page(store, api, base, ctx, posts, result)
        if len(page) < want:  # empty or short: the archive's end
            break
    log.info(
        "backfill %s: %d listed, %d already stored, %d fetched, %d new, %d merged, %d failed",
        base,
        result.listed,
        result.already,
        result.fetched,
        result.new,
        result.merged,
        len(result.errors),
        extra={"feed_id": feed_id, "feed_url": feed_url},
    )
    return result


async def _store_page(
    store: Store,
    api: _Requests,
    base: str,
    ctx: FeedContext,
    posts: list[dict[str, Any]],
    result: BackfillResult,
) -> None:
    """Fetch and clean the posts of one archive page that are new, then store them in one transaction."""
    urls = [post_url(base, p) for p in posts]
    known = _known(store, result.feed_id, urls)
    items: list[tuple[CleanArticle, IdentityKeys]] = []
    for post, url in zip(posts, urls, strict=True):
        if url in known:
            result.already += 1
            continue
        known.add(url)
        slug = _str(post.get("slug"))
        try:
            if not slug:
                raise ParseError("post without a slug", url)
            full = post if isinstance(post.get("body_html"), str) else None
            if full is None:
                full = await api.json(f"{base}/api/v1/posts/{quote(slug, safe='')}")
                if not isinstance(full, dict):
                    raise ParseError("the post is not a JSON object", url)
                result.fetched += 1
            items.append(clean_post(base, {**post, **full}, ctx))
        except (FetchError, ParseError, CleanError) as e:
            result.errors.append(f"{url}: {e}")
            log.warning("backfill %s: %s", url, e, extra={"feed_id": result.feed_id})
    if items:
        stats: SaveStats = store.add_articles(result.feed_id, items)
        result.new += stats.new
        result.merged += stats.merged
