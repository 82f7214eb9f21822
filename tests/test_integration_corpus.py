"""Acceptance: every corpus feed over a real HTTP server, polled twice through the CLI.

The expected stories are computed independently of ingestd's own parser:
feedparser for XML, ``json`` for JSON Feed, and a plain canonical-URL rule.
"""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess
import sys
from pathlib import Path
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

import feedparser
import pytest

from tests.feedserver import FeedServer, serve

pytestmark = [pytest.mark.integration, pytest.mark.shared]

# Files that are not feeds at all, or broken beyond recovery: they must end as
# failing feeds with a clear error while every other feed is stored.
BROKEN = {
    "substack_zejiac99_cloudflare_challenge_NOT_A_FEED.rss": "not a feed",
    "jsonfeed_allthis_truncated_invalid.json": "JSON",
    "json_scriptingnews_rss_in_json_not_jsonfeed.json": "not a feed",
}
TRACKING = ("utm_", "fbclid", "gclid", "mc_cid", "mc_eid", "ref_src")


def _canonical(url: str) -> str | None:
    parts = urlsplit(url.strip())
    if parts.scheme.lower() not in ("http", "https"):
        return None
    query = [
        (k, v)
        for k, v in parse_qsl(parts.query, keep_blank_values=True)
        if not k.lower().startswith(TRACKING)
    ]
    host = (parts.hostname or "").lower()
    if parts.port and (parts.scheme.lower(), parts.port) not in (("http", 80), ("https", 443)):
        host = f"{host}:{parts.port}"
    return urlunsplit((parts.scheme.lower(), host, parts.path or "/", urlencode(query), ""))


def _entries(path: Path) -> list[tuple[str | None, str | None]]:
    """(guid, link) of every entry, read without ingestd."""
    data = path.read_bytes()
    if path.suffix == ".json":
        doc = json.loads(data)
        return [(str(i.get("id")) if i.get("id") is not None else None, i.get("url")) for i in doc["items"]]
    parsed = feedparser.parse(data, sanitize_html=False, resolve_relative_uris=False)
    # An entry with nothing in it (no id, link, title or body) is not a story.
    return [
        (e.get("id") or None, e.get("link") or None)
        for e in parsed.entries
        if e.get("id") or e.get("link") or e.get("title") or e.get("summary") or e.get("content")
    ]


def expected_stories(files: list[Path]) -> int:
    stories: set[tuple[str, ...]] = set()
    for path in files:
        seen: set[str] = set()
        for guid, link in _entries(path):
            key = (guid or link or "").strip()
            if key and key in seen:
                continue
            seen.add(key)
            canon = _canonical(link) if link else None
            stories.add(("url", canon) if canon else ("feed", path.name, key))
    return len(stories)


def run_cli(*args: str, env: dict[str, str], check: bool = True) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run(
        [sys.executable, "-m", "ingestd", *args], capture_output=True, text=True, env=env, timeout=600
    )
    if check and proc.returncode != 0:
        raise AssertionError(f"ingestd {' '.join(args)} exited {proc.returncode}:\n{proc.stderr}")
    return proc


@pytest.fixture(scope="module")
def corpus_run(shared_dir: Path, tmp_path_factory: pytest.TempPathFactory):  # type: ignore[no-untyped-def]
    feeds_dir = shared_dir / "corpus" / "feeds"
    files = sorted(p for p in feeds_dir.iterdir() if p.suffix in (".xml", ".rss", ".json"))
    tmp = tmp_path_factory.mktemp("corpus")
    with serve(FeedServer()) as server:
        names = server.add_dir(feeds_dir)
        names = [n for n in names if Path(n).suffix in (".xml", ".rss", ".json")]
        opml = tmp / "feeds.opml"
        outlines = "\n".join(f'<outline type="rss" text="{n}" xmlUrl="{server.url(n)}"/>' for n in names)
        opml.write_text(f'<?xml version="1.0"?><opml version="2.0"><head/><body>{outlines}</body></opml>')
        config = tmp / "ingestd.toml"
        config.write_text(f'[fetch]\nallowed_hosts = ["127.0.0.1:{server.port}"]\n')
        db = tmp / "ingestd.db"
        env = {
            **{k: v for k, v in os.environ.items() if not k.startswith("INGESTD_")},
            "INGESTD_CONFIG": str(config),
            "INGESTD_DB": f"sqlite:///{db}",
        }
        run_cli("feeds", "import", str(opml), env=env)
        first = run_cli("poll", "--all", env=env)
        hits_first = list(server.hits)
        counts_first = _count(db)
        second = run_cli("poll", "--all", env=env)
        hits_second = server.hits[len(hits_first) :]
        yield {
            "files": files,
            "db": db,
            "env": env,
            "server": server,
            "first": first,
            "second": second,
            "hits_first": hits_first,
            "hits_second": hits_second,
            "counts_first": counts_first,
            "counts_second": _count(db),
        }


def _count(db: Path) -> tuple[int, int, int]:
    conn = sqlite3.connect(db)
    try:
        return (
            conn.execute("SELECT COUNT(*) FROM articles").fetchone()[0],
            conn.execute("SELECT COUNT(*) FROM article_sources").fetchone()[0],
            conn.execute("SELECT COALESCE(MAX(seq), 0) FROM articles").fetchone()[0],
        )
    finally:
        conn.close()


def test_first_pass_stores_every_distinct_story(corpus_run: dict) -> None:  # type: ignore[type-arg]
    good = [p for p in corpus_run["files"] if p.name not in BROKEN]
    want = expected_stories(good)
    stored, _sources, _seq = corpus_run["counts_first"]
    print(f"corpus: {len(good)} feeds, {want} distinct stories expected, {stored} stored")
    assert stored == want


def test_broken_files_fail_with_a_clear_error_and_the_rest_are_stored(corpus_run: dict) -> None:  # type: ignore[type-arg]
    conn = sqlite3.connect(corpus_run["db"])
    rows = conn.execute("SELECT url, status, last_error FROM feeds").fetchall()
    by_name = {url.rsplit("/", 1)[-1]: (status, error) for url, status, error in rows}
    for name, needle in BROKEN.items():
        status, error = by_name[name]
        assert status == "failing", name
        assert error, name
        assert needle.lower() in error.lower(), (name, error)
        assert "Traceback" not in error
    healthy = {n: s for n, (s, _e) in by_name.items() if n not in BROKEN}
    assert set(healthy.values()) == {"active"}, {n: by_name[n] for n, s in healthy.items() if s != "active"}
    # Every failure is one line on stderr, and poll still exits 0.
    assert corpus_run["first"].returncode == 0
    assert "Traceback" not in corpus_run["first"].stderr
    for name in BROKEN:
        assert name in corpus_run["first"].stderr


def test_second_pass_is_conditional_and_stores_nothing(corpus_run: dict) -> None:  # type: ignore[type-arg]
    assert corpus_run["counts_second"] == corpus_run["counts_first"]
    good_hits = [h for h in corpus_run["hits_second"] if h.path not in BROKEN]
    assert good_hits, "the second pass made no request"
    assert all(h.conditional and h.status == 304 for h in good_hits), [
        h for h in good_hits if not (h.conditional and h.status == 304)
    ]
    assert "0 new" in corpus_run["second"].stderr


def test_articles_show_text_and_json(corpus_run: dict) -> None:  # type: ignore[type-arg]
    env = corpus_run["env"]
    conn = sqlite3.connect(corpus_run["db"])
    article_id, title, author = conn.execute(
        "SELECT id, title, author FROM articles WHERE author != '' AND published_at IS NOT NULL "
        "AND content_text LIKE '%' || char(10) || char(10) || '%' ORDER BY id LIMIT 1"
    ).fetchone()
    text = run_cli("articles", "show", str(article_id), "--format", "text", env=env).stdout
    lines = text.splitlines()
    assert lines[0] == title
    assert author in lines[1]
    assert any(ch.isdigit() for ch in lines[1])  # the date
    assert "\n\n" in text.split("\n\n", 1)[1]  # body paragraphs separated by blank lines
    data = json.loads(run_cli("articles", "show", str(article_id), "--format", "json", env=env).stdout)
    columns = {r[1] for r in conn.execute("PRAGMA table_info(articles)")}
    assert columns <= set(data)
    assert data["id"] == article_id


def test_articles_list_and_feeds_list(corpus_run: dict) -> None:  # type: ignore[type-arg]
    env = corpus_run["env"]
    out = run_cli("articles", "list", "--limit", "5", "--json", env=env).stdout.splitlines()
    assert len(out) == 5
    assert all("seq" in json.loads(line) for line in out)
    feeds = [json.loads(line) for line in run_cli("feeds", "list", "--json", env=env).stdout.splitlines()]
    assert len(feeds) == len(corpus_run["files"])
    assert all(f["url"].startswith("http://127.0.0.1:") for f in feeds)
