"""Building poll items the way the worker does (dedupe.identity_keys), on real SQLite files."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from ingestd.models import CleanArticle, FeedUpdate, IdentityKeys
from ingestd.pipeline import dedupe

Item = tuple[CleanArticle, IdentityKeys]


def prose(seed: int, words: int = 120) -> str:
    """Distinct readable-ish text: different seeds share almost no word 3-shingles."""
    vocab = [
        f"{w}{(seed * 7919 + i * 104729) % 997}"
        for i, w in enumerate(("alpha beta gamma delta " * 40).split())
    ]
    return " ".join(vocab[i % len(vocab)] + ("." if i % 12 == 11 else "") for i in range(words))


def item(
    guid: str | None,
    url: str | None,
    *,
    title: str = "T",
    text: str = "short body",
    published: datetime | None = None,
    raw: str | None = None,
) -> Item:
    """A cleaned entry and its keys; ``raw`` stands for the raw entry (its hash)."""
    article = CleanArticle(
        guid=guid,
        url=url,
        title=title,
        canonical_url=url,
        content_text=text,
        content_html=f"<p>{text}</p>",
        word_count=len(text.split()),
        published_at=published,
    )
    ehash = dedupe._digest(guid or "", url or "", title, text, raw or "")
    return article, dedupe.identity_keys(guid or url or "hash:" + ehash, article, ehash)


def ok(etag: str | None = None) -> FeedUpdate:
    now = datetime.now(UTC)
    return FeedUpdate("new", now, now + timedelta(minutes=30), etag=etag, http_status=200)
