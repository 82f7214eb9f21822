"""Byte-level defences applied before feedparser sees a document.

feedparser is the tolerant parser of record, but hostile bytes cost it dearly:
its chardet fallback takes seconds per MB, an internal DTD subset lets entity
bombs expand in its loose fallback parser, references to NUL or surrogates
crash that parser, its e-mail regex is quadratic on a long author, and its
namespace lookup on many declared prefixes. Each defence here is a bounded,
non-backtracking pass over the bytes.
"""

from __future__ import annotations

import codecs
import html
import re
from typing import Any

import feedparser
from feedparser.encodings import convert_to_utf8

from ingestd.exceptions import ParseError

_HEAD = 2048
_UNICODE_ENCODINGS = ("utf-8", "utf8", "utf-16", "utf-32", "utf_16", "utf_32")
_C0_BYTES = bytes(c for c in range(32) if c not in (9, 10, 13))
_BINARY_C0 = _C0_BYTES[1:]
_SAMPLE = 64 * 1024
_CHAR_REF = re.compile(
    rb"&#(?:[xX]([0-9a-fA-F]{1,8})|([0-9]{1,10}));(?:&#(?:[xX]([0-9a-fA-F]{1,8})|([0-9]{1,10}));)?"
)
_DTD_MARK = re.compile(rb"['\"\[\]>]|<!--")
_SUBSET_END = re.compile(rb"\s*>")
_ENTITY_DECL = re.compile(rb"<!ENTITY", re.IGNORECASE)
_FIRST_ELEMENT = re.compile(rb"<\w")
#: Distinct namespace prefixes a document may declare. feedparser (and the fast path, its
#: port) names an element of an unknown namespace by scanning every prefix declared so far, so
#: a document declaring a new prefix per element costs quadratic time (8,000 prefixes in
#: 0.7 MB: 2.4 s; 32,000: the worker's CPU limit). Real feeds declare a few dozen.
MAX_PREFIXES = 256
_PREFIX_DECL = re.compile(rb"xmlns:([A-Za-z_][\w.-]*)")
# feedparser's RE_XML_DECLARATION and replacement (feedparser.encodings.convert_to_utf8), on bytes:
# ">" is never part of a multi-byte UTF-8 sequence.
_XML_DECLARATION = re.compile(rb"<\?xml[^>]*?>")
_UTF8_DECLARATION = b"<?xml version='1.0' encoding='utf-8'?>"
_AUTHOR_OPEN = re.compile(
    rb"<(?:[A-Za-z_][\w.-]{0,64}:)?(?:author|creator|managingeditor|webmaster|publisher)"
    rb"(?:\s[^<>]{0,2048})?>",
    re.IGNORECASE,
)


def prepare_xml(
    content: bytes, headers: dict[str, str], *, author_limit: int, url: str
) -> tuple[bytes, str | None]:
    """UTF-8 bytes safe to hand to feedparser, and a note when the declared charset was wrong."""
    if _looks_binary(content):
        raise ParseError("not a feed: binary data", url)
    if (stripped := content.lstrip())[:5] == b"<?xml":  # a blank line before it is fatal to expat
        content = stripped
    data, encoding_note = _decode(content, headers)
    data = data.translate(None, _C0_BYTES)  # expat rejects them; PostgreSQL rejects NUL
    _check_prefixes(data, url)
    data = _defuse_doctype(data)
    data = _CHAR_REF.sub(_fix_char_ref, data)
    return _cut_author_text(data, author_limit), encoding_note


def _check_prefixes(data: bytes, url: str) -> None:
    if data.count(b"xmlns:") <= MAX_PREFIXES:  # the common case, at memchr speed
        return
    declared = len(set(_PREFIX_DECL.findall(data)))
    if declared > MAX_PREFIXES:
        raise ParseError(
            f"refused: the document declares {declared:,} XML namespace prefixes"
            f" (at most {MAX_PREFIXES}; each one slows the parsing of every element)",
            url,
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
        return _to_utf8(content, encoding, decodes=True), None
    return _to_utf8(content, encoding, decodes=True), note


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


def _to_utf8(content: bytes, encoding: str, *, decodes: bool = False) -> bytes:
    """The document re-encoded by feedparser, its XML declaration saying utf-8.

    ``decodes``: ``content`` is known to decode with ``encoding``. UTF-8 that
    decodes is returned as feedparser would make it without a decode and
    re-encode of the whole document (which changes no byte): its BOM dropped
    and its declaration replaced by, or prefixed with, feedparser's own.
    """
    if decodes and _is_utf8(encoding):
        body = content[len(codecs.BOM_UTF8) :] if content.startswith(codecs.BOM_UTF8) else content
        declaration = _XML_DECLARATION.match(body)
        if declaration is not None:
            return _UTF8_DECLARATION + body[declaration.end() :]
        return _UTF8_DECLARATION + b"\n" + body
    data: bytes = convert_to_utf8({"content-type": f"application/xml; charset={encoding}"}, content, {})
    return data


def _is_utf8(encoding: str) -> bool:
    try:
        return codecs.lookup(encoding).name == "utf-8"
    except LookupError:
        return False


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
