"""reclean: renderings re-derived from raw_html; seq moves only for rows that changed."""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest
from click.testing import CliRunner
from sqlalchemy import select

from ingestd.cli import main
from ingestd.models import CleanArticle, FeedContext, FeedUpdate, IdentityKeys, ParsedEntry
from ingestd.pipeline import dedupe
from ingestd.pipeline.clean import CLEANER_VERSION, clean_entry
from ingestd.store import Store, open_store, sql
from ingestd.store.reclean import reclean

pytestmark = pytest.mark.integration

SUBSTACK_BODY = (
    '<p>Opening paragraph of the post.</p><div class="captioned-image-container"><figure>'
    '<img src="https://substackcdn.com/image/fetch/w_848/https%3A%2F%2Fsubstack-post-media.s3.amazonaws.com'
    '%2Fpublic%2Fimages%2Fa.png" srcset="x 1x"><figcaption>A caption</figcaption></figure></div>'
    '<p class="button-wrapper"><a class="button" href="/subscribe"><span>Subscribe now</span></a></p>'
)
NOW = datetime(2026, 1, 1, tzinfo=UTC)


def keys_for(article: CleanArticle, entry: ParsedEntry) -> IdentityKeys:
    return IdentityKeys(
        guid_key=dedupe.guid_key(entry),
        canonical_url=article.canonical_url,
        content_hash=dedupe.content_hash(article.title + "\n" + article.content_text),
        entry_hash=dedupe.entry_hash(entry),
    )


@pytest.fixture
def store(tmp_path: Path) -> Iterator[Store]:
    s = open_store(f"sqlite:///{tmp_path / 'db'}")
    yield s
    s.close()


def add(store: Store, feed_url: str, generator: str, entries: list[tuple[ParsedEntry, bool]]) -> int:
    """Store entries as a poll would, with cleaner_version 0; ``stale`` ones get an old rendering."""
    feed_id, _ = store.add_feed(feed_url)
    ctx = FeedContext(url=feed_url, generator=generator)
    items = []
    for entry, stale in entries:
        article = dataclasses.replace(clean_entry(entry, ctx), cleaner_version=0)
        if stale:
            article = dataclasses.replace(
                article, content_text="old rendering https://substackcdn.com/image/fetch srcset", word_count=4
            )
        items.append((article, keys_for(article, entry)))
    update = FeedUpdate(outcome="new", polled_at=NOW, next_poll_at=NOW, generator=generator)
    store.save_poll(feed_id, update, items)
    return feed_id


def seqs(store: Store) -> dict[str, tuple[int, int]]:
    a = sql.articles
    with store.engine.begin() as conn:
        return {
            r.guid: (r.seq, r.cleaner_version)
            for r in conn.execute(select(a.c.guid, a.c.seq, a.c.cleaner_version))
        }


def run(store: Store, **kw: object) -> object:
    return reclean(store, clean=clean_entry, version=CLEANER_VERSION, content_hash=dedupe.content_hash, **kw)  # type: ignore[arg-type]


def entry(guid: str, body: str, title: str = "Rock &amp; roll &amp;lt;3") -> ParsedEntry:
    return ParsedEntry(
        guid=guid,
        link=f"https://pub.substack.com/p/{guid}",
        title=title,
        author="Ada",
        published_at=NOW,
        summary_html="<p>The subtitle</p>",
        content_html=body,
        categories=("essays",),
    )


def test_only_changed_renderings_take_a_new_seq(store: Store) -> None:
    add(
        store,
        "https://pub.substack.com/feed",
        "Substack",
        [(entry("same", SUBSTACK_BODY), False), (entry("old", SUBSTACK_BODY), True)],
    )
    before = seqs(store)
    result = run(store)
    assert (result.examined, result.changed, result.unchanged, result.errors) == (2, 1, 1, [])  # type: ignore[attr-defined]
    after = seqs(store)
    assert after["same"] == (
        before["same"][0],
        CLEANER_VERSION,
    )  # the Substack context came from feeds.generator
    assert after["old"][0] > max(s for s, _v in before.values())
    assert after["old"][1] == CLEANER_VERSION
    row = next(a for a in store.list_articles(limit=None) if a["guid"] == "old")
    assert "Opening paragraph of the post." in row["content_text"]
    assert "A caption" in row["content_text"]
    assert "substackcdn" not in row["content_text"]
    assert "Subscribe" not in row["content_text"]
    assert row["title"] == "Rock & roll &lt;3"
    assert row["subtitle"] == "The subtitle"
    assert row["content_hash"] == dedupe.content_hash(row["title"] + "\n" + row["content_text"])
    assert run(store).examined == 0  # type: ignore[attr-defined]  # nothing older than the current rules


def test_all_and_feed_filter(store: Store) -> None:
    one = add(store, "https://a.example/feed", "", [(entry("a1", "<p>First feed.</p>", "A1"), True)])
    add(store, "https://b.example/feed", "", [(entry("b1", "<p>Second feed.</p>", "B1"), True)])
    result = run(store, feed_id=one)
    assert (result.examined, result.changed) == (1, 1)  # type: ignore[attr-defined]
    assert seqs(store)["b1"][1] == 0
    everything = run(store, everything=True)
    assert (everything.examined, everything.changed, everything.unchanged) == (2, 1, 1)  # type: ignore[attr-defined]


def test_cli(tmp_path: Path) -> None:
    db = f"sqlite:///{tmp_path / 'cli.db'}"
    s = open_store(db)
    add(s, "https://a.example/feed", "", [(entry("a1", "<p>First feed.</p>", "A1"), True)])
    s.close()
    out = CliRunner().invoke(main, ["--db", db, "reclean", "--feed", "https://a.example/feed"])
    assert out.exit_code == 0, out.output
    assert "re-cleaned 1 articles" in out.output
    assert "1 changed" in out.output
    again = CliRunner().invoke(main, ["--db", db, "reclean", "--all"])
    assert "re-cleaned 1 articles" in again.output
    assert "0 changed, 1 unchanged" in again.output
