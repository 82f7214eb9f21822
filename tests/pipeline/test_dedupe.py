from __future__ import annotations

from datetime import UTC, datetime

from ingestd.models import ParsedEntry
from ingestd.pipeline import dedupe


def test_guid_key_prefers_guid_then_link_then_content() -> None:
    assert dedupe.guid_key(ParsedEntry(guid=" g1 ", link="http://x/a")) == "g1"
    assert dedupe.guid_key(ParsedEntry(guid=None, link="http://x/a")) == "http://x/a"
    a = dedupe.guid_key(ParsedEntry(guid=None, link=None, title="t", content_html="<p>x</p>"))
    b = dedupe.guid_key(ParsedEntry(guid=None, link=None, title="t", content_html="<p>y</p>"))
    assert a.startswith("hash:")
    assert a != b


def test_entry_hash_changes_with_content_and_dates() -> None:
    base = ParsedEntry(guid="g", link="l", title="t", content_html="c")
    same = ParsedEntry(guid="g", link="l", title="t", content_html="c")
    assert dedupe.entry_hash(base) == dedupe.entry_hash(same)
    assert dedupe.entry_hash(base) != dedupe.entry_hash(ParsedEntry(guid="g", link="l", title="t2", content_html="c"))
    dated = ParsedEntry(guid="g", link="l", title="t", content_html="c", published_at=datetime(2020, 1, 1, tzinfo=UTC))
    assert dedupe.entry_hash(base) != dedupe.entry_hash(dated)


def test_content_hash_ignores_spacing_case_and_unicode_form() -> None:
    assert dedupe.content_hash("Caffè  Latte\n") == dedupe.content_hash("caffe\u0300 latte")
    assert dedupe.content_hash("a b") != dedupe.content_hash("a c")
