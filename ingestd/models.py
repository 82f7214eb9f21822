"""Values passed between the pipeline stages, named by direction.

``FetchResult`` comes out of fetch, ``ParsedFeed``/``ParsedEntry`` (untrusted
HTML) out of parse, ``CleanArticle`` out of clean, ``IdentityKeys`` out of
dedupe; the store hands out ``FeedToPoll`` and takes a ``FeedUpdate``.
They are frozen, plain and picklable: parse and clean run in worker
processes, so nothing here may hold I/O or database state. ``safe_text`` is
the one rule for the text they may carry into the database.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from datetime import datetime
from typing import Literal

Outcome = Literal["new", "not_modified", "error", "gone", "deferred"]
BodySource = Literal["feed", "page", "api"]


# C0 controls but tab, newline and carriage return (PostgreSQL rejects NUL, and none is
# text), and lone surrogates (not encodable).
_UNSAFE = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\ud800-\udfff]")
_CONTROL_BYTES = bytes(c for c in range(32) if c not in (9, 10, 13))


def _replace_unsafe(match: re.Match[str]) -> str:
    return "\ufffd" if match.group() >= "\ud800" else ""


def safe_text(value: str) -> str:
    """``value`` without C0 controls (bar tab, LF, CR), lone surrogates made U+FFFD: text that
    every model field may hold and every database accepts (the parser and the store apply it)."""
    # Nearly every value is clean, so it is checked before anything is replaced. Encoding to
    # UTF-8 fails on a lone surrogate, and a C0 control is the only way a control byte gets into
    # UTF-8: 1.3 ns per character on the corpus, against 3.1 for a regex search.
    try:
        data = value.encode("utf-8")
    except UnicodeEncodeError:
        return _UNSAFE.sub(_replace_unsafe, value)
    if len(data.translate(None, _CONTROL_BYTES)) == len(data):
        return value
    return _UNSAFE.sub(_replace_unsafe, value)


@dataclass(frozen=True, slots=True)
class FetchResult:
    """One HTTP exchange that produced a usable answer (200 or 304)."""

    url: str
    final_url: str
    status: int
    content: bytes = b""
    headers: tuple[tuple[str, str], ...] = ()
    etag: str | None = None
    last_modified: str | None = None
    permanent_redirect: str | None = None
    elapsed: float = 0.0
    max_age: float | None = None

    @property
    def not_modified(self) -> bool:
        return self.status == 304

    def header(self, name: str) -> str | None:
        name = name.lower()
        for key, value in self.headers:
            if key == name:
                return value
        return None


@dataclass(frozen=True, slots=True)
class Enclosure:
    url: str
    type: str = ""
    length: int | None = None


@dataclass(frozen=True, slots=True)
class ParsedEntry:
    """One feed item as the publisher wrote it; its HTML is untrusted."""

    guid: str | None
    link: str | None
    title: str = ""
    title_is_html: bool = False
    author: str = ""
    published_at: datetime | None = None
    updated_at: datetime | None = None
    summary_html: str = ""
    content_html: str = ""
    base_url: str | None = None
    language: str | None = None
    categories: tuple[str, ...] = ()
    enclosures: tuple[Enclosure, ...] = ()
    image_url: str | None = None
    orig_link: str | None = None


@dataclass(frozen=True, slots=True)
class ParsedFeed:
    url: str
    format: str
    title: str = ""
    site_url: str | None = None
    description: str = ""
    language: str | None = None
    generator: str = ""
    ttl_seconds: int | None = None
    entries: tuple[ParsedEntry, ...] = ()
    warning: str | None = None


@dataclass(frozen=True, slots=True)
class FeedContext:
    """What clean needs to know about the feed an entry came from."""

    url: str
    site_url: str | None = None
    title: str = ""
    language: str | None = None
    generator: str = ""
    substack_header: bool = False


@dataclass(frozen=True, slots=True)
class Image:
    url: str
    alt: str = ""
    caption: str = ""
    width: int | None = None
    height: int | None = None


@dataclass(frozen=True, slots=True)
class CleanArticle:
    """An entry as a reader sees it, in three renderings, plus metadata."""

    guid: str | None
    url: str | None
    title: str
    canonical_url: str | None = None
    author: str = ""
    published_at: datetime | None = None
    updated_at: datetime | None = None
    summary: str = ""
    subtitle: str = ""
    content_html: str = ""
    content_text: str = ""
    content_markdown: str = ""
    word_count: int = 0
    reading_time: int = 0
    image_url: str | None = None
    images: tuple[Image, ...] = ()
    language: str | None = None
    is_paywalled: bool = False
    body_source: BodySource = "feed"
    cleaner_version: int = 0
    categories: tuple[str, ...] = ()
    raw_html: str = ""


@dataclass(frozen=True, slots=True)
class IdentityKeys:
    """How dedupe recognises a story: by source, by URL, by content."""

    guid_key: str
    canonical_url: str | None
    content_hash: str
    entry_hash: str
    #: a looser URL match key (www./amp. hosts, trailing slash, AMP paths; see dedupe.url_key)
    url_key: str | None = None
    #: MinHash sketch of content_text for near-duplicates; None for short texts
    sketch: bytes | None = None
    #: the sketch's LSH band hashes, the near-duplicate index keys
    bands: tuple[int, ...] = ()


@dataclass(frozen=True, slots=True)
class Processed:
    """What a worker sends back for one feed document: its metadata and its cleaned entries."""

    feed: ParsedFeed
    items: tuple[tuple[CleanArticle, IdentityKeys], ...]
    unchanged: int = 0
    errors: tuple[str, ...] = field(default_factory=tuple)
    posting_gap: float | None = None


@dataclass(frozen=True, slots=True)
class FeedToPoll:
    """A feed claimed by a worker, with what a conditional GET needs."""

    id: int
    url: str
    etag: str | None = None
    last_modified: str | None = None
    error_count: int = 0
    interval_seconds: int | None = None
    full_text: bool = False
    title: str = ""


@dataclass(frozen=True, slots=True)
class FeedUpdate:
    """What one poll changes on the feed row, committed with its articles."""

    outcome: Outcome
    polled_at: datetime
    next_poll_at: datetime
    etag: str | None = None
    last_modified: str | None = None
    new_url: str | None = None
    title: str | None = None
    site_url: str | None = None
    generator: str | None = None
    language: str | None = None
    error: str | None = None
    http_status: int | None = None
    bytes: int = 0
    duration: float = 0.0


@dataclass(frozen=True, slots=True)
class SaveStats:
    new: int = 0
    updated: int = 0
    unchanged: int = 0
    merged: int = 0


@dataclass(frozen=True, slots=True)
class IngestResult:
    """What happened to one feed in one poll."""

    feed_id: int
    url: str
    outcome: Outcome
    new: int = 0
    updated: int = 0
    unchanged: int = 0
    merged: int = 0
    error: str | None = None
    elapsed: float = 0.0
    entries: int = 0
    warnings: tuple[str, ...] = field(default_factory=tuple)
    #: the HTTP status of the poll's response (None when no response came: network, deferral)
    http_status: int | None = None
    #: the body's size after decoding (0 for a 304 or no response)
    bytes: int = 0
