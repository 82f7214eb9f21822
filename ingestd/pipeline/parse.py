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

``parse_feed`` is a pure top-level function: it runs in worker processes.
"""

from __future__ import annotations

import hashlib
import html
import io
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from typing import Any

import feedparser
from feedparser.encodings import convert_to_utf8

from ingestd.exceptions import ParseError
from ingestd.models import Enclosure, ParsedEntry, ParsedFeed
from ingestd.pipeline.jsonfeed import looks_like_json, parse_json_feed

__all__ = ["FieldLimits", "parse_feed"]


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


MIN_DATE = datetime(1990, 1, 1, tzinfo=UTC)
FUTURE_SLACK = timedelta(days=2)

_WARNING_MAX = 500
_HEAD = 2048
_UTF8_HEADERS = {"content-type": "application/xml; charset=utf-8"}
_UNICODE_ENCODINGS = ("utf-8", "utf8", "utf-16", "utf-32", "utf_16", "utf_32")

_C0_BYTES = bytes(c for c in range(32) if c not in (9, 10, 13))
_C0_RE = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f]")
_BINARY_C0 = _C0_BYTES[1:]
_SAMPLE = 64 * 1024
_BLANK = b" \t\r\n\x00\xef\xbb\xbf\xfe\xff"  # whitespace, NUL and byte-order marks
_SURROGATE = re.compile("[\ud800-\udfff]")
_SPACES = re.compile(r"\s+")
_SCHEME = re.compile(r"([A-Za-z][A-Za-z0-9+.-]*):")
_URL_JUNK = re.compile(r"[\x00-\x20]")
_LANGUAGE = re.compile(r"[a-z]{2,3}(?:-[a-z0-9]{1,8})*")
_EPOCH = re.compile(r"[0-9]{9,13}")
_CHAR_REF = re.compile(
    rb"&#(?:[xX]([0-9a-fA-F]{1,8})|([0-9]{1,10}));(?:&#(?:[xX]([0-9a-fA-F]{1,8})|([0-9]{1,10}));)?"
)

_DTD_MARK = re.compile(rb"['\"\[\]>]|<!--")
_SUBSET_END = re.compile(rb"\s*>")
_ENTITY_DECL = re.compile(rb"<!ENTITY", re.IGNORECASE)
_FIRST_ELEMENT = re.compile(rb"<\w")
_AUTHOR_OPEN = re.compile(
    rb"<(?:[A-Za-z_][\w.-]{0,64}:)?(?:author|creator|managingeditor|webmaster|publisher)"
    rb"(?:\s[^<>]{0,2048})?>",
    re.IGNORECASE,
)
_HTML_HEAD = re.compile(rb"<html[\s>]|<!doctype\s+html", re.IGNORECASE)
_SY_PERIODS = {"hourly": 3600, "daily": 86400, "weekly": 604800, "monthly": 2592000, "yearly": 31536000}


def parse_feed(
    content: bytes,
    *,
    url: str,
    headers: Mapping[str, str] | None = None,
    max_entries: int = 500,
    field_limits: FieldLimits = FieldLimits(),
) -> ParsedFeed:
    """Parse one RSS, Atom, RDF or JSON Feed document.

    ``headers`` are the lower-cased HTTP response headers: Content-Type's
    charset steers decoding, Content-Location and Content-Language give the
    base URL and language. At most ``max_entries`` entries are kept, the
    newest by date (undated ones after dated ones, in document order); they
    are returned in document order and the drop is noted in ``warning``.

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
        raw = _parse_xml(content, url, {k.lower(): v for k, v in (headers or {}).items()}, field_limits)
    return _finish(raw, field_limits, max_entries, datetime.now(UTC))


# --------------------------------------------------------------------------- XML via feedparser


def _parse_xml(content: bytes, url: str, headers: dict[str, str], limits: FieldLimits) -> ParsedFeed:
    if _looks_binary(content):
        raise ParseError("not a feed: binary data", url)
    if (stripped := content.lstrip())[:5] == b"<?xml":  # a blank line before it is fatal to expat
        content = stripped
    data, encoding_note = _decode(content, headers)
    data = data.translate(None, _C0_BYTES)  # expat rejects them; PostgreSQL rejects NUL
    data = _defuse_doctype(data)
    data = _CHAR_REF.sub(_fix_char_ref, data)
    data = _cut_author_text(data, limits.author)
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


def _decode(content: bytes, headers: dict[str, str]) -> tuple[bytes, str | None]:
    """UTF-8 bytes for feedparser, and a note when the declared charset was wrong.

    feedparser's RFC 3023 rules pick the charset, on a 64 KiB sample: when the
    declared one fails it runs chardet, which takes ~2 s per MB. The choice is
    then checked on the whole document, falling back as feedparser would.
    Bytes that are (nearly all) valid UTF-8 are read as UTF-8 whatever was
    declared: a legacy charset would turn them into mojibake without error.
    """
    info: dict[str, Any] = {}
    convert_to_utf8(headers, _sample(content), info)
    chosen = str(info.get("encoding") or "")
    if not chosen.lower().startswith(_UNICODE_ENCODINGS) and _mostly_utf8(content):
        note = f"document declared as {chosen or 'unknown'}, but its bytes are UTF-8"
        return _to_utf8(content, "utf-8"), note
    encoding = next((e for e in (chosen, "windows-1252", "iso-8859-2") if e and _decodes(content, e)), "")
    if not encoding:  # unreachable with iso-8859-2 last, kept for safety
        return content.decode("utf-8", "replace").encode("utf-8"), "document encoding unknown"
    exc = info.get("bozo_exception")
    if encoding != chosen:
        note = f"document declared as {chosen or 'unknown'}, but parsed as {encoding}"
    elif isinstance(exc, feedparser.CharacterEncodingOverride) and "us-ascii" not in str(exc):
        note = str(exc)  # (a text/* Content-Type without charset means us-ascii: nobody means that)
    else:
        return _to_utf8(content, encoding), None
    return _to_utf8(content, encoding), note


def _sample(content: bytes) -> bytes:
    """The first 64 KiB, cut after a newline (never inside a character) when ASCII-based."""
    if len(content) <= _SAMPLE or b"\x00" in content[:4] or content[:2] in (b"\xff\xfe", b"\xfe\xff"):
        return content
    cut = content.rfind(b"\n", 0, _SAMPLE)
    return content[: cut + 1] if cut > 0 else content[:_SAMPLE]


def _decodes(content: bytes, encoding: str) -> bool:
    try:
        content.decode(encoding)
    except (UnicodeDecodeError, LookupError):
        return False
    return True


def _to_utf8(content: bytes, encoding: str) -> bytes:
    """The document re-encoded by feedparser, its XML declaration saying utf-8."""
    data: bytes = convert_to_utf8({"content-type": f"application/xml; charset={encoding}"}, content, {})
    return data


def _mostly_utf8(content: bytes) -> bool:
    """True when non-ASCII bytes form UTF-8, bar one bad sequence in twenty."""
    if content.isascii():
        return False
    text = content.decode("utf-8", "replace")
    bad = text.count("\ufffd") - content.count(b"\xef\xbf\xbd")
    if bad == 0:
        return True
    good = len(text) - len(text.encode("ascii", "ignore")) - bad
    return good >= 20 * bad


def _looks_binary(content: bytes) -> bool:
    """Many C0 controls near the start: an image or archive, not a text document.

    NUL is not counted: UTF-16 and UTF-32 text is full of it.
    """
    head = content[:4096]
    return len(head) - len(head.translate(None, _BINARY_C0)) > len(head) // 32


def _defuse_doctype(data: bytes) -> bytes:
    """Remove a DOCTYPE that has an internal subset, so no entity can expand.

    The prolog is walked with ``find``/bounded regex steps only (linear, no
    backtracking); quoted strings and comments inside the DTD are skipped, so
    one-line and multi-line DTDs alike end at their real ``]>``. A DOCTYPE
    without an internal subset stays (feedparser reads the Netscape RSS 0.91
    one); expat never fetches its external DTD. Then, as a second line of
    defence, any ``<!ENTITY`` left where feedparser looks for declarations to
    hand its loose parser is made inert.
    """
    pos = 0
    while (lt := data.find(b"<", pos)) >= 0:
        if data.startswith(b"<?", lt):
            end, step = data.find(b"?>", lt + 2), 2
        elif data.startswith(b"<!--", lt):
            end, step = data.find(b"-->", lt + 4), 3
        else:
            if data[lt : lt + 9].upper() == b"<!DOCTYPE":
                span = _doctype_end(data, lt + 9)
                if span is None:  # it runs to the end of the document: nothing left to parse
                    return data[:lt]
                if span[1]:
                    data = data[:lt] + data[span[0] :]
            break  # the root element (or junk): the prolog is over
        if end < 0:
            break
        pos = end + step
    head = _FIRST_ELEMENT.search(data)
    head_end = head.start() if head else len(data)
    if _ENTITY_DECL.search(data, 0, head_end):
        data = _ENTITY_DECL.sub(b"<!INERT-ENTITY", data[:head_end]) + data[head_end:]
    return data


def _doctype_end(data: bytes, pos: int) -> tuple[int, bool] | None:
    """The end of the DOCTYPE whose body starts at ``pos``, and whether it has a subset."""
    in_subset = False
    while (m := _DTD_MARK.search(data, pos)) is not None:
        mark = m.group()
        if mark in (b'"', b"'"):
            close = data.find(mark, m.end())
        elif mark == b"<!--":
            close = data.find(b"-->", m.end())
            close = close + 2 if close >= 0 else close
        elif mark == b"[":
            in_subset = True
            close = m.start()
        elif mark == b"]":
            close = m.start()
            if in_subset and (gt := _SUBSET_END.match(data, m.end())) is not None:
                return gt.end(), True
        elif not in_subset:  # ">"
            return m.end(), False
        else:
            close = m.start()
        if close < 0:
            return None
        pos = close + 1
    return None


def _fix_char_ref(m: re.Match[bytes]) -> bytes:
    """Keep a numeric character reference only if it names an XML character.

    References to NUL, C0 controls or surrogates make expat fail, and then crash
    feedparser's loose parser (``chr(0xD800).encode()``). A UTF-16 pair written
    as two references (``&#55357;&#56832;``, a common encoder bug) becomes the
    character it meant.
    """
    first = int(m[1], 16) if m[1] else int(m[2])
    if m[3] is None and m[4] is None:
        return _char_ref(first, m[0])
    second = int(m[3], 16) if m[3] else int(m[4])
    if 0xD800 <= first <= 0xDBFF and 0xDC00 <= second <= 0xDFFF:
        return b"&#x%X;" % (0x10000 + ((first - 0xD800) << 10) + (second - 0xDC00))
    cut = m[0].index(b";") + 1
    return _char_ref(first, m[0][:cut]) + _char_ref(second, m[0][cut:])


def _char_ref(value: int, ref: bytes) -> bytes:
    if value in (9, 10, 13) or 32 <= value < 0xD800 or 0xE000 <= value <= 0x10FFFF:
        return ref
    return b"" if value < 32 else b"&#xFFFD;"


def _cut_author_text(data: bytes, limit: int) -> bytes:
    """Cut the text of author-like elements to ``limit`` characters.

    feedparser's ``_sync_author_detail`` looks for an e-mail address with a
    regex that is quadratic on a long run of word characters; it only runs on
    these elements' text. Text and CDATA up to the next tag are rewritten as
    one CDATA section; the scan is linear and leaves normal feeds untouched.
    """
    out: list[bytes] = []
    pos = done = 0
    while (m := _AUTHOR_OPEN.search(data, pos)) is not None:
        pos = m.end()
        if m.group().endswith(b"/>"):
            continue
        end = _char_data_end(data, pos)
        if end - pos > limit:
            text = _char_data_text(data[pos:end])[:limit].replace("]]>", "]] >")
            out += [data[done:pos], b"<![CDATA[", text.encode("utf-8", "replace"), b"]]>"]
            done = end
        pos = end
    if not out:
        return data
    out.append(data[done:])
    return b"".join(out)


def _char_data_end(data: bytes, pos: int) -> int:
    """Where the text and CDATA sections starting at ``pos`` end (the next other ``<``)."""
    while True:
        lt = data.find(b"<", pos)
        if lt < 0:
            return len(data)
        if not data.startswith(b"<![CDATA[", lt):
            return lt
        close = data.find(b"]]>", lt + 9)
        if close < 0:
            return len(data)
        pos = close + 3


def _char_data_text(chunk: bytes) -> str:
    """The characters of a run of text and CDATA sections."""
    parts: list[str] = []
    for i, piece in enumerate(chunk.decode("utf-8", "replace").split("<![CDATA[")):
        if i == 0:
            parts.append(html.unescape(piece))
            continue
        cdata, _, tail = piece.partition("]]>")
        parts += [cdata, html.unescape(tail)]
    return "".join(parts)


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
    if _C0_RE.search(value) is not None:
        value = _C0_RE.sub("", value)
    if not value.isascii():
        value = _SURROGATE.sub("\ufffd", value)
    return value.strip()[:cap].strip()


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
