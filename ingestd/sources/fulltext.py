"""Full text for summary-only feeds: fetch each new article's page, extract, clean again.

Called by the orchestrator after ``process_document`` for feeds subscribed
with ``--full-text``. Only the articles of this poll that are new or changed
reach it (unchanged entries were skipped before cleaning), so a page is
fetched once per entry version, never on every poll.

The policy, and why:

* an article whose feed body already has ``min_feed_words`` words (150) is
  taken as full and not fetched (``force=True`` fetches anyway): feeds flagged
  ``--full-text`` often carry full posts for most items, and a page fetch costs
  the publisher a request and us a worker slot;
* the page goes through the same ``Fetcher`` as the feed (SSRF guard, size and
  time limits, per-host politeness), extraction and cleaning run in a worker;
* the page's version wins only if it has more words than the feed's: an
  extractor that missed the body (it happens on link-dense or div-soup pages)
  must not replace a summary with nothing;
* any failure (fetch, not HTML, nothing extracted, clean or worker limits, a
  bug) keeps the feed's version and is logged: full text never fails a feed.
"""

from __future__ import annotations

import asyncio
import dataclasses
import html
import logging
from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import Any

from ingestd.exceptions import IngestdError, ParseError
from ingestd.models import CleanArticle, FeedContext, IdentityKeys, ParsedEntry
from ingestd.pipeline import dedupe
from ingestd.pipeline.clean import clean_entry
from ingestd.pipeline.fetch import Fetcher
from ingestd.pipeline.fulltext import extract_main_html

__all__ = ["HTML_ACCEPT", "MIN_FEED_WORDS", "fetch_full_text", "page_article"]

log = logging.getLogger("ingestd.fulltext")

MIN_FEED_WORDS = 150
HTML_ACCEPT = "text/html, application/xhtml+xml;q=0.9, */*;q=0.1"
_HTML_TYPES = ("text/html", "application/xhtml+xml", "application/xml", "text/xml")

Item = tuple[CleanArticle, IdentityKeys]


def page_article(
    page: bytes, *, url: str, headers: Mapping[str, str], article: CleanArticle, feed: FeedContext
) -> CleanArticle:
    """Extract a page's main content and clean it as the body of ``article``; runs in a worker.

    The entry is rebuilt from the cleaned feed article: title, author, dates,
    categories and lead image stay the feed's; the feed's text becomes the
    summary (and stays the Substack subtitle); relative URLs resolve against the page.
    """
    body = extract_main_html(page, url=url, headers=headers)
    entry = ParsedEntry(
        guid=article.guid,
        link=article.url,
        title=html.escape(article.title),  # plain text: escaped so the cleaner keeps it verbatim
        title_is_html=True,
        author=html.escape(article.author),
        published_at=article.published_at,
        updated_at=article.updated_at,
        summary_html=html.escape(article.subtitle or article.summary),
        content_html=body,
        base_url=url,
        language=article.language,
        categories=article.categories,
        image_url=article.image_url,
    )
    clean = clean_entry(entry, feed)
    return dataclasses.replace(
        clean,
        guid=article.guid,
        url=article.url,
        canonical_url=article.canonical_url,
        is_paywalled=article.is_paywalled or clean.is_paywalled,
        body_source="page",
    )


def wants_full_text(
    article: CleanArticle, *, min_feed_words: int = MIN_FEED_WORDS, force: bool = False
) -> bool:
    """Whether the article's page is worth fetching: it has a link and a short feed body."""
    return bool(article.url) and (force or article.word_count < min_feed_words)


async def fetch_full_text(
    items: Sequence[Item],
    *,
    fetcher: Fetcher,
    run_in_worker: Callable[..., Awaitable[Any]],
    feed: FeedContext,
    force: bool = False,
    min_feed_words: int = MIN_FEED_WORDS,
    concurrency: int = 4,
) -> list[Item]:
    """The same items, in order, with the body of short ones replaced by their page's.

    ``run_in_worker(fn, *args, **kwargs)`` runs ``fn`` away from the event loop
    (``WorkerPool.run``). Never raises for one article's failure.
    """
    gate = asyncio.Semaphore(max(1, concurrency))

    async def one(item: Item) -> Item:
        if not wants_full_text(item[0], min_feed_words=min_feed_words, force=force):
            return item
        async with gate:
            return await _replace(item, fetcher=fetcher, run_in_worker=run_in_worker, feed=feed)

    return list(await asyncio.gather(*(one(item) for item in items)))


async def _replace(
    item: Item, *, fetcher: Fetcher, run_in_worker: Callable[..., Awaitable[Any]], feed: FeedContext
) -> Item:
    article, keys = item
    url = article.url or ""
    extra = {"feed_url": feed.url, "article_url": url}
    try:
        result = await fetcher.get(url, accept=HTML_ACCEPT)
        content_type = (result.header("content-type") or "").split(";", 1)[0].strip().lower()
        if content_type and content_type not in _HTML_TYPES:
            raise ParseError(f"not an HTML page ({content_type})", url)
        page: CleanArticle = await run_in_worker(
            page_article,
            result.content,
            url=result.final_url,
            headers=dict(result.headers),
            article=article,
            feed=feed,
        )
    except IngestdError as e:
        log.info("feed %s: full text of %s not used: %s", feed.url, url, e, extra=extra)
        return item
    except Exception:  # a bug: log it with its traceback, keep the feed's version
        log.exception("feed %s: full text of %s failed", feed.url, url, extra=extra)
        return item
    if page.word_count <= article.word_count:
        log.info(
            "feed %s: full text of %s not used: the page gave %d words, the feed %d",
            feed.url,
            url,
            page.word_count,
            article.word_count,
            extra=extra,
        )
        return item
    new_keys = dataclasses.replace(
        keys, content_hash=dedupe.content_hash(page.title + "\n" + page.content_text)
    )
    log.debug("feed %s: full text of %s: %d words", feed.url, url, page.word_count, extra=extra)
    return page, new_keys
