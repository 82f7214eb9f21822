"""Autodiscovery at subscription time, over a real local server."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from ingestd.pipeline.fetch import FetchPolicy
from ingestd.sources.discover import discover_feed_links, resolve_feed_urls, substack_feed_url
from tests.feedserver import FeedServer, serve

PAGE = b"""<!doctype html><html><head><title>Blog</title>
<link rel="stylesheet" href="/s.css">
<link rel="alternate" type="application/atom+xml" title="Atom" href="/feed.atom">
<link rel="alternate" type="application/rss+xml" title="RSS" href="feed.xml">
<link rel="alternate" type="application/rss+xml" href="javascript:alert(1)">
</head><body><p>hello</p></body></html>"""
RSS = b"""<?xml version="1.0"?><rss version="2.0"><channel><title>t</title><link>http://x/</link>
<item><title>a</title><link>http://x/a</link><guid>a</guid></item></channel></rss>"""


def test_links_are_absolute_rss_first_and_safe() -> None:
    assert discover_feed_links(PAGE, "http://site.test/blog/") == [
        "http://site.test/blog/feed.xml",
        "http://site.test/feed.atom",
    ]
    assert discover_feed_links(b"", "http://x/") == []
    assert discover_feed_links(b"\x89PNG\x00\x01binary", "http://x/") == []


def test_substack_home_maps_to_its_feed() -> None:
    assert substack_feed_url("https://Example.substack.com/") == "https://example.substack.com/feed"
    assert substack_feed_url("https://example.substack.com/p/post") is None
    assert substack_feed_url("https://example.com/") is None


def test_resolve_over_http() -> None:
    with serve(FeedServer()) as server:
        server.files["blog/index.html"] = PAGE
        server.files["blog/feed.xml"] = RSS
        server.files["plain.html"] = b"<html><body>no feeds here</body></html>"
        policy = FetchPolicy(allowed_hosts=(f"127.0.0.1:{server.port}",), timeout=10)
        got = resolve_feed_urls(
            [server.url("blog/index.html"), server.url("blog/feed.xml"), server.url("plain.html")], policy
        )
    assert got[0] == (server.url("blog/feed.xml"), f"discovered on {server.url('blog/index.html')}")
    assert got[1] == (server.url("blog/feed.xml"), "feed")
    assert got[2][0] == ""
    assert "neither a feed nor a page that links to one" in got[2][1]


def test_guard_refusal_subscribes_unchecked() -> None:
    # The default guard refuses loopback before any connection is made.
    url, note = resolve_feed_urls(["http://127.0.0.1:9/feed.xml"], FetchPolicy(timeout=5))[0]
    assert url == "http://127.0.0.1:9/feed.xml"
    assert note.startswith("not checked: refused")


def test_cli_feeds_add_discovers(tmp_path: Path) -> None:
    with serve(FeedServer()) as server:
        server.files["blog/index.html"] = PAGE
        server.files["blog/feed.xml"] = RSS
        env = {k: v for k, v in os.environ.items() if not k.startswith("INGESTD_")}
        env.update(
            INGESTD_DB=f"sqlite:///{tmp_path / 'db'}", INGESTD_FETCH_ALLOWED_HOSTS=f"127.0.0.1:{server.port}"
        )
        proc = subprocess.run(
            [sys.executable, "-m", "ingestd", "feeds", "add", server.url("blog/index.html")],
            capture_output=True,
            text=True,
            env=env,
            timeout=60,
        )
    assert proc.returncode == 0, proc.stderr
    assert f"added: 1 {server.url('blog/feed.xml')} (discovered on" in proc.stdout
