"""The parse stage: feed bytes in, a ``ParsedFeed`` of untrusted HTML out.

RSS, Atom and RDF go through feedparser; JSON Feed through ``jsonfeed``.
Around feedparser we add only what it lacks for hostile input:

* the bytes are wrapped in ``BytesIO``: ``feedparser.parse(b"/etc/passwd")``
  opens that *file*, so raw bytes are never handed over;
* decoding follows feedparser's rules, on a 64 KiB sample (its chardet
  fallback costs seconds per MB), except that bytes which are (nearly) valid
  UTF-8 win over a declared legacy charset (a common publishing mistake);
* a DOCTYPE with an internal subset is removed before parsing, so entity
  bombs and external entities cannot expand (expat alone would still expand
  a quadratic blow-up in feedparser's loose fallback parser);
* references to NUL or surrogates, which crash that loose parser, are fixed;
* oversized author text is cut before feedparser runs its e-mail regex on
  it, which is quadratic (100 KiB took 84 s);
* every field is cleaned (C0 controls, lone surrogates) and capped to
  ``FieldLimits``, dates are sane UTC or None, URLs are http(s) or relative.

feedparser stays the parser of record, but ``fastparse`` replays its rules
several times faster on the same expat parser and gives the same result for
the documents it takes; it declines the rest (malformed, DOCTYPE, rare
elements), which feedparser then parses as before. ``INGESTD_FASTPARSE=0`` or
``fast_path=False`` forces feedparser.

``parse_feed`` is a pure top-level function: it runs in worker processes.
"""

from __future__ import annotations

import hashlib
import html
import io
import logging
import os
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from typing import Any

import feedparser

from ingestd.exceptions import ParseError
from ingestd.models import Enclosure, ParsedEntry, ParsedFeed, safe_text
from ingestd.pipeline.fastparse import FeedData, parse_prepared
from ingestd.pipeline.jsonfeed import looks_like_json, parse_json_feed
from ingestd.pipeline.xmlsafe import prepare_xml

__all__ = ["FieldLimits", "parse_feed"]

log = logging.getLogger("ingestd.parse")


@dataclass(frozen=True, slots=True)
class FieldLimits:
    """Caps on field sizes, in characters: the database and the cleaner rely on them."""

    title: int = 1000
    author: int = 500
    url: int = 2048
    guid: int = 2048
    categories: int = 50
    category: int = 100
    enclosures: int = 50
    content: int = 2_000_000


# The default of parse_feed's fast_path: fastparse where it is sure to match feedparser.
FAST_PATH = os.environ.get("INGESTD_FASTPARSE", "1") != "0"

MIN_DATE = datetime(1990, 1, 1, tzinfo=UTC)
FUTURE_SLACK = timedelta(days=2)

_WARNING_MAX = 500
_HEAD = 2048
_UTF8_HEADERS = {"content-type": "application/xml; charset=utf-8"}

_BLANK = b" \t\r\n\x00\xef\xbb\xbf\xfe\xff"  # whitespace, NUL and byte-order marks
_SPACES = re.compile(r"\s+")
_SCHEME = re.compile(r"([A-Za-z][A-Za-z0-9+.-]*):")
_URL_JUNK = re.compile(r"[\x00-\x20]")
_LANGUAGE = re.compile(r"[a-z]{2,3}(?:-[a-z0-9]{1,8})*")
_EPOCH = re.compile(r"[0-9]{9,13}")

_HTML_HEAD = re.compile(rb"<html[\s>]|<!doctype\s+html", re.IGNORECASE)
_SY_PERIODS = {"hourly": 3600, "daily": 86400, "weekly": 604800, "monthly": 2592000, "yearly": 31536000}


def parse_feed(
    content: bytes,
    *,
    url: str,
    headers: Mapping[str, str] | None = None,
    max_entries: int = 500,
    field_limits: FieldLimits = FieldLimits(),
    fast_path: bool | None = None,
) -> ParsedFeed:
    """Parse one RSS, Atom, RDF or JSON Feed document.

    ``headers`` are the lower-cased HTTP response headers: Content-Type's
    charset steers decoding, Content-Location and Content-Language give the
    base URL and language. At most ``max_entries`` entries are kept, the
    newest by date (undated ones after dated ones, in document order); they
    are returned in document order and the drop is noted in ``warning``.

    ``fast_path`` (default: ``FAST_PATH``) lets ``fastparse`` stand in for
    feedparser where it gives the same result; False forces feedparser.

    Raises ``ParseError`` (one line, with ``url``) when the document is empty,
    not a feed, or so broken that nothing was recovered.
    """
    if max_entries < 1:
        raise ValueError("max_entries must be at least 1")
    if not content.strip(_BLANK):
        raise ParseError("empty document", url)
    if looks_like_json(content):
        raw = parse_json_feed(content, url=url)
    else:
        lowered = {k.lower(): v for k, v in (headers or {}).items()}
        raw = _parse_xml(content, url, lowered, field_limits, FAST_PATH if fast_path is None else fast_path)
    return _finish(raw, field_limits, max_entries, datetime.now(UTC))


# --------------------------------------------------------------------------- XML via fastparse or feedparser


def _parse_xml(
    content: bytes, url: str, headers: dict[str, str], limits: FieldLimits, fast_path: bool
) -> ParsedFeed:
    data, encoding_note = prepare_xml(content, headers, author_limit=limits.author, url=url)
    fast = _fast_parse(data, headers, url) if fast_path else None
    if fast is not None:
        version, feed, entries, bozo = fast.version, fast.feed, fast.entries, None
    else:
        try:
            result = feedparser.parse(
                io.BytesIO(data),
                response_headers={**headers, **_UTF8_HEADERS},
                sanitize_html=False,
                resolve_relative_uris=False,
            )
        except Exception as e:  # a feedparser bug on hostile input is this feed's failure
            raise ParseError(f"not a feed: feedparser failed: {_bozo_text(e)}", url) from e
        version = str(_get(result, "version") or "")
        feed = _get(result, "feed") or {}
        entries = _get(result, "entries") or []
        bozo = _bozo_text(_get(result, "bozo_exception")) if _get(result, "bozo") else None

    if not entries and not version:
        if _HTML_HEAD.search(data, 0, _HEAD):
            raise ParseError("not a feed: got an HTML page", url)
        raise ParseError(f"not a feed: {bozo or 'no RSS, Atom or RDF root element'}", url)
    if not entries and bozo and not _str(_get(feed, "title")).strip():
        raise ParseError(f"not a feed: {bozo}", url)

    doc_base = headers.get("content-location", "")
    notes = [n for n in (encoding_note, bozo and f"malformed document, recovered what could be: {bozo}") if n]
    return ParsedFeed(
        url=url,
        format=version or "unknown",
        title=_str(_get(feed, "title")),
        site_url=_str(_get(feed, "link")) or None,
        description=_str(_get(feed, "subtitle")),
        language=_feed_language(feed),
        generator=_generator(feed),
        ttl_seconds=_ttl(feed),
        entries=tuple(_entry(e, doc_base) for e in entries),
        warning="; ".join(notes) or None,
    )


def _fast_parse(data: bytes, headers: dict[str, str], url: str) -> FeedData | None:
    """feedparser's result through ``fastparse``, or None to run feedparser itself.

    A fast-path bug must never fail a feed: any exception falls back to feedparser,
    except running out of memory or stack, which is the document's doing, not the port's.
    """
    try:
        return parse_prepared(data, headers)
    except (MemoryError, RecursionError):
        raise
    except Exception:
        log.debug("fast parse failed, falling back to feedparser: %s", url, exc_info=True)
        return None


def _bozo_text(exc: object) -> str:
    text = _SPACES.sub(" ", str(exc)).replace("<unknown>:", "line ").strip()
    return f"{type(exc).__name__}: {text}"[:200]


# --------------------------------------------------------------------------- feedparser -> raw values


def _str(value: object) -> str:
    return value if isinstance(value, str) else ""


def _get(mapping: Any, key: str) -> Any:
    """``dict.get``, bypassing ``FeedParserDict.get``: its aliases warn (``updated`` -> ``published``)."""
    return dict.get(mapping, key) if isinstance(mapping, dict) else None


def _entry(e: Any, doc_base: str) -> ParsedEntry:
    """One feedparser entry as a raw ``ParsedEntry`` (cleaned and capped by ``_finish``)."""
    contents = [c for c in _get(e, "content") or [] if _str(_get(c, "value"))]
    detail = max(contents, key=lambda c: len(c["value"]), default=None)
    content = _html_value(detail) if detail is not None else ""
    summary_detail = _get(e, "summary_detail") or {}
    summary = _html_value(summary_detail) if summary_detail else _str(_get(e, "summary"))
    if summary == content:
        summary = ""  # feedparser copies content into summary when there is none
    title_detail = _get(e, "title_detail") or {}
    link = _link(e)
    base = next((_str(_get(d, "base")) for d in (detail, summary_detail) if d and _get(d, "base")), "")
    language = next(
        (
            _str(_get(d, "language"))
            for d in (detail, summary_detail, title_detail)
            if d and _get(d, "language")
        ),
        None,
    )
    return ParsedEntry(
        guid=_str(_get(e, "id")) or None,
        link=link,
        title=_str(_get(e, "title")),
        title_is_html=_get(title_detail, "type") == "text/html",
        author=_author(e),
        published_at=_date(e, "published"),
        updated_at=_date(e, "updated"),
        summary_html=summary,
        content_html=content,
        base_url=base if base and base != doc_base else link,
        language=language,
        categories=tuple(_str(_get(t, "term")) or _str(_get(t, "label")) for t in _get(e, "tags") or []),
        enclosures=tuple(
            Enclosure(
                url=_str(_get(x, "href")), type=_str(_get(x, "type")), length=_length(_get(x, "length"))
            )
            for x in _enclosures(e)
        ),
        image_url=_image(e),
        orig_link=_str(_get(e, "feedburner_origlink")) or None,
    )


def _html_value(detail: Any) -> str:
    """A text construct as HTML: plain text is escaped, html and xhtml kept."""
    value = _str(_get(detail, "value"))
    return html.escape(value, quote=False) if _get(detail, "type") == "text/plain" else value


def _link(e: Any) -> str | None:
    for link in _get(e, "links") or []:
        if (_get(link, "rel") or "alternate") == "alternate" and _safe_url(_str(_get(link, "href"))):
            return _str(_get(link, "href"))
    return _str(_get(e, "link")) or None


def _enclosures(e: Any) -> list[Any]:
    """feedparser computes ``enclosures`` from the ``rel="enclosure"`` links on access."""
    return [x for x in _get(e, "links") or [] if _get(x, "rel") == "enclosure"]


def _author(e: Any) -> str:
    names = [_str(_get(a, "name")) for a in _get(e, "authors") or [] if _str(_get(a, "name")).strip()]
    return ", ".join(dict.fromkeys(names)) if names else _str(_get(e, "author"))


def _image(e: Any) -> str | None:
    candidates = [_str(_get(t, "url")) for t in _get(e, "media_thumbnail") or []]
    candidates += [
        _str(_get(m, "url"))
        for m in _get(e, "media_content") or []
        if _get(m, "medium") == "image" or _str(_get(m, "type")).startswith("image/")
    ]
    candidates += [
        _str(_get(x, "href")) for x in _enclosures(e) if _str(_get(x, "type")).startswith("image/")
    ]
    image = _get(e, "image")
    if isinstance(image, Mapping):
        candidates.append(_str(_get(image, "href")))
    return next((c for c in candidates if _safe_url(c)), None)


def _length(value: object) -> int | None:
    text = _str(value).strip()
    length = int(text) if text.isascii() and text.isdigit() and len(text) <= 18 else 0
    return length or None  # 0 is how many feeds (Substack) say "unknown"


def _date(e: Any, key: str) -> datetime | None:
    """A feedparser date as aware UTC; epoch seconds and ISO 8601 read here.

    feedparser reads "1518478934" as an ISO ordinal date (2015-07-03), so a
    bare number is taken as epoch seconds (10 digits) or milliseconds (13).
    """
    raw = _str(_get(e, key)).strip()
    if _EPOCH.fullmatch(raw):
        if len(raw) in (11, 12):
            return None
        try:
            return datetime.fromtimestamp(int(raw) / (1000 if len(raw) == 13 else 1), UTC)
        except (OverflowError, OSError, ValueError):
            return None
    parsed = _get(e, f"{key}_parsed")
    if parsed:
        try:
            year, month, day, hour, minute, second = (int(v) for v in tuple(parsed)[:6])
            return datetime(year, month, day, hour, minute, min(second, 59), tzinfo=UTC)
        except (OverflowError, ValueError, TypeError):
            return None
    try:
        return datetime.fromisoformat(raw) if raw else None
    except ValueError:
        return None


def _feed_language(feed: Any) -> str | None:
    for value in (_get(feed, "language"), _get(_get(feed, "title_detail"), "language")):
        if _str(value):
            return _str(value)
    return None


def _generator(feed: Any) -> str:
    detail = _get(feed, "generator_detail") or {}
    name = _str(_get(detail, "name")) or _str(_get(feed, "generator"))
    version, uri = _str(_get(detail, "version")), _str(_get(detail, "href"))
    text = f"{name} {version}".strip()
    return f"{text} ({uri})" if uri and uri not in text else text


def _ttl(feed: Any) -> int | None:
    """RSS ``<ttl>`` (minutes), else sy:updatePeriod / sy:updateFrequency, in seconds."""
    ttl = _str(_get(feed, "ttl")).strip()
    if ttl.isascii() and ttl.isdigit() and 0 < len(ttl) <= 6 and int(ttl) > 0:
        return int(ttl) * 60
    period = _SY_PERIODS.get(_str(_get(feed, "sy_updateperiod")).strip().lower())
    if period is None:
        return None
    frequency = _str(_get(feed, "sy_updatefrequency")).strip() or "1"
    if not (frequency.isascii() and frequency.isdigit() and len(frequency) <= 6 and int(frequency) > 0):
        return period
    return max(60, period // int(frequency))


# --------------------------------------------------------------------------- cleaning and caps


def _finish(raw: ParsedFeed, limits: FieldLimits, max_entries: int, now: datetime) -> ParsedFeed:
    """Clean and cap every field, drop empty entries, keep the newest ``max_entries``."""
    notes = [raw.warning] if raw.warning else []
    latest = now + FUTURE_SLACK
    entries = [e for e in (_finish_entry(r, limits, latest) for r in raw.entries) if e is not None]
    if len(entries) < len(raw.entries):
        notes.append(f"skipped {len(raw.entries) - len(entries)} entries without id, title or content")
    if len(entries) > max_entries:
        notes.append(f"kept the newest {max_entries} of {len(entries)} entries")
        entries = _newest(entries, max_entries)
    warning = _text("; ".join(notes), _WARNING_MAX) or None
    return replace(
        raw,
        title=_line(raw.title, limits.title),
        site_url=_url(raw.site_url, limits),
        description=_text(raw.description, limits.content),
        language=_language(raw.language),
        generator=_line(raw.generator, limits.title),
        entries=tuple(entries),
        warning=warning,
    )


def _finish_entry(raw: ParsedEntry, limits: FieldLimits, latest: datetime) -> ParsedEntry | None:
    guid = _text(raw.guid or "", len(raw.guid or "")) or None
    if guid is not None and len(guid) > limits.guid:
        guid = "sha256:" + hashlib.sha256(guid.encode("utf-8")).hexdigest()
    link = _url(raw.link, limits)
    title = _line(raw.title, limits.title)
    content = _text(raw.content_html, limits.content)
    summary = _text(raw.summary_html, limits.content)
    enclosures = [
        Enclosure(url=url, type=_line(x.type, 255), length=x.length)
        for x in raw.enclosures
        if (url := _url(x.url, limits)) is not None
    ]
    if not (guid or link or title or content or summary or enclosures):
        return None
    return ParsedEntry(
        guid=guid,
        link=link,
        title=title,
        title_is_html=raw.title_is_html,
        author=_line(raw.author, limits.author),
        published_at=_sane_date(raw.published_at, latest),
        updated_at=_sane_date(raw.updated_at, latest),
        summary_html=summary,
        content_html=content,
        base_url=_absolute_url(raw.base_url, limits) or _absolute_url(link, limits),
        language=_language(raw.language),
        categories=_categories(raw.categories, limits),
        enclosures=tuple(dict.fromkeys(enclosures))[: limits.enclosures],
        image_url=_url(raw.image_url, limits),
        orig_link=_url(raw.orig_link, limits),
    )


def _text(value: str, cap: int) -> str:
    """Without C0 controls (bar tab, LF, CR) and lone surrogates, stripped, at most ``cap`` chars."""
    return safe_text(value).strip()[:cap].strip()


def _line(value: str, cap: int) -> str:
    """A one-line field (title, author): whitespace runs collapse to one space."""
    return _SPACES.sub(" ", _text(value[: cap * 4], cap * 4))[:cap].strip()


def _safe_url(value: str) -> bool:
    """http(s), protocol-relative or relative: never javascript:, data:, file: and the like."""
    value = _URL_JUNK.sub("", value)
    scheme = _SCHEME.match(value)
    return bool(value) and (scheme is None or scheme.group(1).lower() in ("http", "https"))


def _url(value: str | None, limits: FieldLimits) -> str | None:
    """A URL we may keep: trimmed, tabs and newlines removed (browsers ignore them), capped."""
    if not value:
        return None
    value = _clean_url(value)
    if not value or len(value) > limits.url or not _safe_url(value):
        return None
    return value


def _clean_url(value: str) -> str:
    value = _text(value, len(value))
    for junk in "\t\n\r":
        value = value.replace(junk, "")
    return value


def _absolute_url(value: str | None, limits: FieldLimits) -> str | None:
    url = _url(value, limits)
    return url if url and url.lower().startswith(("http://", "https://")) else None


def _language(value: str | None) -> str | None:
    if not value:
        return None
    tag = value.strip().replace("_", "-").lower()
    return tag if _LANGUAGE.fullmatch(tag) else None


def _categories(values: Iterable[str], limits: FieldLimits) -> tuple[str, ...]:
    terms = (_line(v, limits.category) for v in values)
    return tuple(dict.fromkeys(t for t in terms if t))[: limits.categories]


def _sane_date(value: datetime | None, latest: datetime) -> datetime | None:
    """UTC, or None when missing or absurd (before 1990, or more than two days ahead)."""
    if value is None:
        return None
    if value.tzinfo is None:
        value = value.replace(tzinfo=UTC)
    try:
        value = value.astimezone(UTC)
    except (OverflowError, ValueError):
        return None
    return value if MIN_DATE <= value <= latest else None


def _newest(entries: list[ParsedEntry], n: int) -> list[ParsedEntry]:
    """The ``n`` newest entries (dated before undated), kept in document order."""

    def rank(i: int) -> tuple[int, float, int]:
        when = entries[i].published_at or entries[i].updated_at
        return (0, -when.timestamp(), i) if when else (1, 0.0, i)

    keep = sorted(sorted(range(len(entries)), key=rank)[:n])
    return [entries[i] for i in keep]
