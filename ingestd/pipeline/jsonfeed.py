"""JSON Feed 1.0 and 1.1, which feedparser does not read.

Detection is by content, never by Content-Type: servers label JSON Feeds
``text/plain`` or ``application/json``, and ``application/json`` is also
what Dave Winer's RSS-in-JSON (``{"rss": {"channel": ...}}``) is served as.
That format is refused rather than mapped: one publisher uses it, and each
of those feeds also exists as RSS.

The values come out raw, as feedparser's do; ``parse.parse_feed`` cleans and
caps both alike.
"""

from __future__ import annotations

import codecs
import html
import json
import re
from datetime import UTC, datetime
from typing import Any

from ingestd.exceptions import ParseError
from ingestd.models import Enclosure, ParsedEntry, ParsedFeed

__all__ = ["looks_like_json", "parse_json_feed"]

_VERSION_PREFIXES = ("https://jsonfeed.org/version/", "http://jsonfeed.org/version/")
_PARAGRAPH_BREAK = re.compile(r"\n[ \t]*\n\s*")


def looks_like_json(content: bytes) -> bool:
    """True when the first non-blank byte (after a UTF-8 BOM) is ``{``: never XML."""
    return content.removeprefix(codecs.BOM_UTF8).lstrip()[:1] == b"{"


def parse_json_feed(content: bytes, *, url: str) -> ParsedFeed:
    """Map a JSON Feed document; ``ParseError`` for invalid JSON or JSON that is no JSON Feed."""
    text = content.removeprefix(codecs.BOM_UTF8).decode("utf-8", "replace")
    try:
        doc = json.loads(text)
    except (ValueError, RecursionError) as e:  # JSONDecodeError, too many digits, too deep
        message = str(e).splitlines()[0][:200] if str(e) else type(e).__name__
        raise ParseError(f"invalid JSON feed: {message}", url) from e
    version = doc.get("version") if isinstance(doc, dict) else None
    if not (isinstance(version, str) and version.startswith(_VERSION_PREFIXES)):
        raise ParseError("not a feed: JSON without a JSON Feed version", url)
    suffix = version.rsplit("/", 1)[-1].replace(".", "")
    feed_authors = _authors(doc)
    items = doc.get("items")
    return ParsedFeed(
        url=url,
        format=f"json{suffix}" if suffix.isalnum() else "json",
        title=_str(doc.get("title")),
        site_url=_str(doc.get("home_page_url")) or None,
        description=_str(doc.get("description")),
        language=_str(doc.get("language")) or None,
        entries=tuple(
            _item(item, feed_authors)
            for item in (items if isinstance(items, list) else ())
            if isinstance(item, dict)
        ),
    )


def _item(item: dict[str, Any], feed_authors: str) -> ParsedEntry:
    link = _str(item.get("url")) or _str(item.get("external_url")) or None
    content = _str(item.get("content_html")) or _text_to_html(_str(item.get("content_text")))
    summary = _str(item.get("summary"))
    tags = item.get("tags")
    attachments = item.get("attachments")
    return ParsedEntry(
        guid=_id(item.get("id")),
        link=link,
        title=_str(item.get("title")),
        author=_authors(item) or feed_authors,
        published_at=_date(item.get("date_published")),
        updated_at=_date(item.get("date_modified")),
        summary_html=html.escape(summary, quote=False) if summary else "",
        content_html=content,
        base_url=link,
        language=_str(item.get("language")) or None,
        categories=tuple(t for t in (tags if isinstance(tags, list) else ()) if isinstance(t, str)),
        enclosures=tuple(
            Enclosure(
                url=_str(a.get("url")), type=_str(a.get("mime_type")), length=_size(a.get("size_in_bytes"))
            )
            for a in (attachments if isinstance(attachments, list) else ())
            if isinstance(a, dict) and _str(a.get("url"))
        ),
        image_url=_str(item.get("image")) or _str(item.get("banner_image")) or None,
    )


def _str(value: object) -> str:
    return value if isinstance(value, str) else ""


def _id(value: object) -> str | None:
    """Ids are strings by the spec; numbers occur in the wild (bool is no id)."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int | float):
        return str(value)
    return _str(value) or None


def _authors(obj: dict[str, Any]) -> str:
    """1.1 ``authors`` (a list), else 1.0 ``author`` (one object): their names."""
    authors = obj.get("authors")
    if not isinstance(authors, list):
        authors = [obj.get("author")]
    names = [_str(a.get("name")).strip() for a in authors if isinstance(a, dict)]
    return ", ".join(dict.fromkeys(n for n in names if n))


def _size(value: object) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) and value >= 0 else None


def _date(value: object) -> datetime | None:
    """RFC 3339 as aware UTC; a date without offset is taken as UTC."""
    text = _str(value).strip()
    if not text:
        return None
    try:
        when = datetime.fromisoformat(text)
        return when.replace(tzinfo=UTC) if when.tzinfo is None else when.astimezone(UTC)
    except (ValueError, OverflowError):
        return None


def _text_to_html(text: str) -> str:
    """``content_text`` as escaped paragraphs; single newlines become ``<br>``."""
    paragraphs = [p.strip() for p in _PARAGRAPH_BREAK.split(text.strip())]
    return "".join(
        "<p>" + "<br>\n".join(html.escape(p, quote=False).splitlines()) + "</p>\n" for p in paragraphs if p
    )
