"""Full text: short feed bodies are replaced by their page's, any failure keeps the feed's."""

# ruff: noqa: E501 - HTML fixtures read best one element per line

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from ingestd.models import CleanArticle, FeedContext, IdentityKeys, ParsedEntry
from ingestd.pipeline import dedupe
from ingestd.pipeline.clean import clean_entry
from ingestd.pipeline.fetch import Fetcher, FetchPolicy
from ingestd.pipeline.worker import WorkerPool
from ingestd.sources.fulltext import fetch_full_text
from tests.feedserver import FeedServer, serve

pytestmark = pytest.mark.integration

PARAGRAPHS = "".join(
    f"<p>Paragraph {i} of the long story tells how the valley railway was rebuilt after the flood of that year.</p>"
    for i in range(12)
)
PAGE = (
    "<html><head><title>Valley railway</title></head><body><nav><a href='/'>Home</a> <a href='/t'>Topics</a></nav>"
    f"<article><h1>Valley railway</h1>{PARAGRAPHS}<p>See <a href='/more'>the timeline</a>.</p></article>"
    "<footer>Copyright Valley Times, all rights reserved, privacy and cookie policy.</footer></body></html>"
).encode()
FEED = FeedContext(url="http://127.0.0.1/feed", title="Valley Times")


async def inline(fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
    return fn(*args, **kwargs)


def item(link: str, body: str = "<p>The valley railway reopens.</p>") -> tuple[CleanArticle, IdentityKeys]:
    entry = ParsedEntry(guid=link, link=link, title="Valley railway", content_html=body)
    article = clean_entry(entry, FEED)
    keys = IdentityKeys(
        guid_key=link,
        canonical_url=article.canonical_url,
        content_hash=dedupe.content_hash(article.title + "\n" + article.content_text),
        entry_hash=dedupe.entry_hash(entry),
    )
    return article, keys


@pytest.fixture
def server() -> Iterator[FeedServer]:
    with serve() as srv:
        srv.files["story.html"] = PAGE
        srv.files["story.json"] = b'{"not": "html"}'
        srv.files["short.html"] = (
            b"<html><body><article><p>Only a few words here, nothing more.</p></article></body></html>"
        )
        yield srv


def run(items: list[tuple[CleanArticle, IdentityKeys]], srv: FeedServer, **kw: Any) -> list[Any]:
    async def go() -> list[Any]:
        policy = FetchPolicy(allowed_hosts=(f"127.0.0.1:{srv.port}",), timeout=10)
        async with Fetcher(policy) as fetcher:
            return await fetch_full_text(
                items, fetcher=fetcher, run_in_worker=kw.pop("worker", inline), feed=FEED, **kw
            )

    return asyncio.run(go())


def test_a_summary_is_replaced_by_the_page(server: FeedServer) -> None:
    original = item(server.url("story.html"))
    [(article, keys)] = run([original], server)
    assert article.body_source == "page"
    assert "Paragraph 11 of the long story" in article.content_text
    assert "Copyright" not in article.content_text
    assert "Topics" not in article.content_text
    assert "the timeline" in article.content_markdown
    assert server.url("more") in article.content_html
    assert article.word_count > original[0].word_count
    assert article.summary == "The valley railway reopens."  # the feed's text stays the summary
    assert (article.url, article.guid, article.title) == (original[0].url, original[0].guid, "Valley railway")
    assert keys.content_hash == dedupe.content_hash(article.title + "\n" + article.content_text)
    assert keys.content_hash != original[1].content_hash
    assert (keys.guid_key, keys.entry_hash) == (original[1].guid_key, original[1].entry_hash)


def test_long_feed_bodies_are_not_fetched_unless_forced(server: FeedServer) -> None:
    long_body = "<p>" + " ".join(["word"] * 400) + "</p>"
    original = item(server.url("story.html"), long_body)
    assert run([original], server) == [original]
    assert server.hits == []
    [(forced, _keys)] = run([original], server, force=True)
    assert len(server.hits) == 1
    assert forced.body_source == "feed"  # fetched, but 400 words beat the page's: the feed's version stays


@pytest.mark.parametrize("path", ["missing.html", "story.json", "short.html"])
def test_failures_keep_the_feed_version(server: FeedServer, path: str) -> None:
    original = item(server.url(path))
    assert run([original], server) == [original]


def test_the_ssrf_guard_applies_to_article_pages(server: FeedServer) -> None:
    original = item("http://127.0.0.1:9/secret.html")  # another port on loopback: not allowed
    assert run([original], server) == [original]


def test_order_is_kept_and_one_failure_does_not_stop_the_others(server: FeedServer) -> None:
    items = [item(server.url("missing.html")), item(server.url("story.html")), item("ftp://x.example/a")]
    out = run(items, server)
    assert out[0] == items[0]
    assert out[2] == items[2]
    assert out[1][0].body_source == "page"


def test_in_a_real_worker_process(server: FeedServer) -> None:
    pool = WorkerPool(workers=1, wall_seconds=30)
    try:
        [(article, _keys)] = run([item(server.url("story.html"))], server, worker=pool.run)
    finally:
        pool.close()
    assert article.body_source == "page"
