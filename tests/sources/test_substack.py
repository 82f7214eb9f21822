"""Substack backfill against a local server speaking the archive and post API."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest
from click.testing import CliRunner

from ingestd.cli import main
from ingestd.models import FeedContext, IdentityKeys, ParsedEntry
from ingestd.pipeline import dedupe
from ingestd.pipeline.clean import clean_entry
from ingestd.pipeline.fetch import Fetcher, FetchPolicy
from ingestd.sources.substack import BackfillResult, backfill
from ingestd.store import Store, open_store
from tests.feedserver import FeedServer, serve

pytestmark = pytest.mark.integration

POSTS = 60
BODY = (
    '<p>Post {n} opens with a paragraph.</p><div class="captioned-image-container"><figure>'
    '<img src="https://substackcdn.com/image/fetch/w_848/https%3A%2F%2Fsubstack-post-media.s3.amazonaws.com'
    '%2Fpublic%2Fimages%2Fp{n}.png" srcset="a 1x"><figcaption>Figure of post {n}</figcaption></figure></div>'
    '<p class="button-wrapper"><a class="button primary" href="/subscribe"><span>Subscribe now</span></a></p>'
    "<p>And closes with another one.</p>"
)


class Archive:
    """60 posts, newest first; /api/v1/archive pages them, /api/v1/posts/<slug> gives the body."""

    def __init__(self, server: FeedServer) -> None:
        self.server = server
        self.archive_calls: list[tuple[int, int]] = []
        self.times: list[float] = []
        base = server.url("").rstrip("/")
        self.posts = [
            {
                "id": 1000 + n,
                "slug": f"post-{n}",
                "title": f"Post {n} & friends",
                "subtitle": f"Subtitle of post {n}",
                "post_date": f"2025-{1 + n % 12:02d}-{1 + n % 28:02d}T08:00:00.000Z",
                "canonical_url": f"{base}/p/post-{n}",
                "audience": "only_paid" if n % 10 == 0 else "everyone",
                "type": "newsletter",
                "publishedBylines": [{"name": "Ada Writer"}],
                "postTags": [{"name": "essays"}],
                "cover_image": f"https://substack-post-media.s3.amazonaws.com/public/images/cover{n}.png",
            }
            for n in range(POSTS, 0, -1)
        ]
        server.handlers["api/v1/archive"] = self.archive
        for post in self.posts:
            full = {**post, "body_html": BODY.format(n=post["id"] - 1000)}
            server.files[f"api/v1/posts/{post['slug']}"] = json.dumps(full).encode()

    def archive(self, handler: BaseHTTPRequestHandler) -> None:
        query = parse_qs(urlsplit(handler.path).query)
        offset, limit = int(query["offset"][0]), int(query["limit"][0])
        assert query["sort"] == ["new"]
        assert limit <= 25
        self.archive_calls.append((offset, limit))
        self.times.append(time.monotonic())
        body = json.dumps(self.posts[offset : offset + limit]).encode()
        handler.send_response(200)
        handler.send_header("Content-Type", "application/json")
        handler.send_header("Content-Length", str(len(body)))
        handler.end_headers()
        handler.wfile.write(body)

    def post_hits(self) -> int:
        return sum(1 for h in self.server.hits if h.path.startswith("api/v1/posts/"))


@pytest.fixture
def api() -> Iterator[Archive]:
    with serve() as srv:
        yield Archive(srv)


@pytest.fixture
def store(tmp_path: Path) -> Iterator[Store]:
    s = open_store(f"sqlite:///{tmp_path / 'db'}")
    yield s
    s.close()


def run(store: Store, api: Archive, **kw: Any) -> BackfillResult:
    async def go() -> BackfillResult:
        policy = FetchPolicy(allowed_hosts=(f"127.0.0.1:{api.server.port}",), timeout=10)
        async with Fetcher(policy) as fetcher:
            return await backfill(store, fetcher, api.server.url("feed"), **{"rate": 1000.0, **kw})

    return asyncio.run(go())


def store_feed_items(store: Store, api: Archive, numbers: list[int]) -> int:
    """What a poll of the feed would store: guid and link = the post's canonical URL."""
    feed_url = api.server.url("feed")
    feed_id, _ = store.add_feed(feed_url)
    items = []
    for n in numbers:
        url = api.server.url(f"p/post-{n}")
        entry = ParsedEntry(
            guid=url, link=url, title=f"Post {n} &amp; friends", content_html=f"<p>Feed {n}</p>"
        )
        article = clean_entry(entry, FeedContext(url=feed_url, generator="Substack"))
        keys = IdentityKeys(url, article.canonical_url, dedupe.content_hash(article.content_text), "h")
        items.append((article, keys))
    store.add_articles(feed_id, items)
    return feed_id


def test_backfill_pages_until_a_short_page_and_skips_feed_items(store: Store, api: Archive) -> None:
    feed_id = store_feed_items(store, api, [60, 59, 58])
    result = run(store, api)
    assert api.archive_calls == [(0, 25), (25, 25), (50, 25)]  # 25 + 25 + 10: the short page ends it
    assert (result.feed_id, result.listed, result.already, result.new, result.errors) == (
        feed_id,
        60,
        3,
        57,
        [],
    )
    assert api.post_hits() == 57  # bodies of the stored posts are not fetched again
    assert store.count_articles() == 60
    again = run(store, api)
    assert (again.already, again.new, again.fetched) == (60, 0, 0)


def test_backfilled_posts_are_cleaned_with_the_substack_rules(store: Store, api: Archive) -> None:
    run(store, api, limit=10)
    rows = {a["title"]: a for a in store.list_articles(limit=None)}
    post = rows["Post 55 & friends"]
    assert post["body_source"] == "api"
    assert post["subtitle"] == "Subtitle of post 55"
    assert post["author"] == "Ada Writer"
    assert post["categories"] == ["essays"]
    assert post["guid"] == post["url"] == api.server.url("p/post-55")
    assert post["published_at"] is not None
    assert "Post 55 opens with a paragraph." in post["content_text"]
    assert "Figure of post 55" in post["content_text"]
    for junk in ("substackcdn.com", "srcset", "Subscribe now"):
        assert junk not in post["content_text"]
        assert junk not in post["content_html"]
    assert post["images"][0]["url"].endswith("/public/images/p55.png")
    assert rows["Post 60 & friends"]["is_paywalled"] is True  # audience "only_paid"
    assert post["is_paywalled"] is False


def test_limit_stops_the_paging(store: Store, api: Archive) -> None:
    result = run(store, api, limit=30)
    assert api.archive_calls == [(0, 25), (25, 5)]
    assert result.listed == result.new == 30


def test_dedupes_by_canonical_url_against_other_feeds(store: Store, api: Archive) -> None:
    other, _ = store.add_feed("https://aggregator.example/feed")
    url = api.server.url("p/post-42") + "?utm_source=rss"  # same story, tracking parameters on the link
    entry = ParsedEntry(guid="agg-1", link=url, title="Post 42", content_html="<p>Seen elsewhere first.</p>")
    article = clean_entry(entry, FeedContext(url="https://aggregator.example/feed"))
    keys = IdentityKeys("agg-1", article.canonical_url, dedupe.content_hash(article.content_text), "h")
    store.add_articles(other, [(article, keys)])
    result = run(store, api, limit=25)
    assert result.already == 1
    assert result.new == 24
    assert store.count_articles() == 25


def test_at_most_rate_requests_a_second(store: Store, api: Archive) -> None:
    started = time.monotonic()
    result = run(store, api, limit=4, rate=20.0)
    elapsed = time.monotonic() - started
    assert result.new == 4
    assert elapsed >= (1 + 4 - 1) / 20.0  # 5 requests, spaced by 50 ms


def test_a_broken_post_is_reported_and_the_others_stored(store: Store, api: Archive) -> None:
    api.server.files["api/v1/posts/post-57"] = b"<html>not json</html>"
    del api.server.files["api/v1/posts/post-56"]
    result = run(store, api, limit=5)
    assert result.new == 3
    assert len(result.errors) == 2
    assert "post-57" in result.errors[0]
    assert "not JSON" in result.errors[0]


def test_cli(api: Archive, tmp_path: Path) -> None:
    cfg = tmp_path / "ingestd.toml"
    cfg.write_text(f'[fetch]\nallowed_hosts = ["127.0.0.1:{api.server.port}"]\n')
    db = f"sqlite:///{tmp_path / 'cli.db'}"
    url = api.server.url("")
    out = CliRunner().invoke(
        main, ["--config", str(cfg), "--db", db, "substack", "backfill", url, "--limit", "3", "--rate", "100"]
    )
    assert out.exit_code == 0, out.output
    assert "3 posts listed, 0 already stored, 3 new" in out.output
    refused = CliRunner().invoke(main, ["--db", db, "substack", "backfill", url, "--limit", "3"])
    assert refused.exit_code == 1  # no allowed_hosts: the SSRF guard refuses loopback
    assert "refused" in refused.output.lower() or "error" in refused.output.lower()
