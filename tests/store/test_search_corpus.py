"""Search on a real Substack feed from the corpus, parsed and cleaned by the pipeline."""

from __future__ import annotations

from pathlib import Path

import pytest

from ingestd.models import FeedContext
from ingestd.pipeline import dedupe
from ingestd.pipeline.clean import clean_entry
from ingestd.pipeline.parse import parse_feed
from ingestd.store import open_store
from tests.store.helpers import ok

pytestmark = pytest.mark.shared
FEED = "substack_theindependencyco_en.xml"


def test_a_known_phrase_from_a_corpus_post_ranks_first(shared_dir: Path, tmp_path: Path) -> None:
    url = "https://theindependency.substack.com/feed"
    parsed = parse_feed(
        (shared_dir / "corpus" / "feeds" / FEED).read_bytes(), url=url, headers={}, max_entries=500
    )
    ctx = FeedContext(url=url, site_url=parsed.site_url, title=parsed.title, substack_header=True)
    items = []
    for entry in parsed.entries:
        article = clean_entry(entry, ctx)
        items.append(
            (article, dedupe.identity_keys(dedupe.guid_key(entry), article, dedupe.entry_hash(entry)))
        )
    store = open_store(f"sqlite:///{tmp_path / 'ingestd.db'}")
    try:
        fid, _ = store.add_feed(url)
        assert store.save_poll(fid, ok(), items).new == len(items) >= 10
        target = max((a for a, _ in items), key=lambda a: len(a.content_text))
        words = target.content_text.split()
        phrase = " ".join(words[len(words) // 2 : len(words) // 2 + 5])
        hits = store.search(f'"{phrase}"')
        assert hits, phrase
        assert hits[0]["url"] == target.url
        assert store.search(target.title)[0]["url"] == target.url
    finally:
        store.close()
