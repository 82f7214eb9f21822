"""A fast path for the parse stage: feedparser's own rules, without feedparser's overhead.

feedparser stays the parser of record. Most of its time goes to its SAX
plumbing (a ``getattr`` per tag, ``FeedParserDict`` look-ups per character
chunk) and to ``str.translate`` over every text, even pure ASCII. This module
replays the same rules, ported line by line from feedparser 6.0 (mixin.py,
namespaces/_base.py, dc.py, itunes.py, mediarss.py; handlers keep feedparser's
names), on the XML parser feedparser uses: expat, set up as ``xml.sax`` does.
So well-formedness, text and namespaces are feedparser's by construction;
lxml parses no faster here, and libxml2 accepts and splits some documents
differently. No DTD is ever read (a DOCTYPE declines), and expat neither
expands undeclared entities nor loads external ones.

It builds the feedparser-shaped ``version``, ``feed`` and ``entries`` that
``parse.py`` maps to a ``ParsedFeed``, or returns None whenever it cannot
promise feedparser's result: expat errors (feedparser would go bozo and use
its loose parser), a DOCTYPE or entity declaration, a root other than rss,
feed or rdf:RDF, elements with a feedparser handler not ported here (georss,
psc, source, body, ...), markup inside text constructs other than xhtml,
base64 content, SVG/MathML, CDF attributes, or a feedparser release not verified.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any
from xml.parsers import expat

import feedparser

from ingestd.pipeline.fastparse.handlers import State
from ingestd.pipeline.fastparse.machine import _C1_REF, _C1_UTF8, _DECL, _FIRST_TAG, _ROOTS, _Decline

__all__ = ["VERIFIED_FEEDPARSER", "FeedData", "parse_prepared"]

# The port was checked against this release, field by field (tests/pipeline/test_fastparse.py).
VERIFIED_FEEDPARSER = ("6.0.14",)


@dataclass(frozen=True, slots=True)
class FeedData:
    """What ``feedparser.parse`` returns for a document it reads without bozo, in plain dicts."""

    version: str
    feed: dict[str, Any] = field(default_factory=dict)
    entries: list[dict[str, Any]] = field(default_factory=list)


def parse_prepared(data: bytes, headers: dict[str, str]) -> FeedData | None:
    """feedparser's result for ``prepare_xml`` output, or None when only feedparser can tell.

    ``headers`` are the lower-cased response headers: Content-Location and
    Content-Language seed the base URI and the language, as in feedparser.
    """
    if feedparser.__version__ not in VERIFIED_FEEDPARSER or not data.startswith(_DECL):
        return None
    first = _FIRST_TAG.search(data)
    head = data[: first.start() + 1] if first else data
    if b"<!DOCTYPE" in head or b"<!ENTITY" in head or b"<!INERT" in head:
        return None  # feedparser rewrites the prolog (replace_doctype): leave it to feedparser
    state = State(headers.get("content-location", ""), headers.get("content-language"))
    state.c1 = _C1_UTF8.search(data) is not None or _C1_REF.search(data) is not None
    parser = expat.ParserCreate(None, " ")
    parser.namespace_prefixes = True
    parser.buffer_text = True
    parser.buffer_size = 1 << 16
    parser.SetParamEntityParsing(expat.XML_PARAM_ENTITY_PARSING_UNLESS_STANDALONE)
    parser.StartNamespaceDeclHandler = state.start_ns
    parser.StartElementHandler = state.start
    parser.EndElementHandler = state.end
    parser.CharacterDataHandler = state.data
    parser.StartDoctypeDeclHandler = state.doctype
    try:
        parser.Parse(data, True)
    except (_Decline, expat.ExpatError):
        return None
    if not state.version or state.root not in _ROOTS:
        return None
    return FeedData(state.version, state.feed, state.entries)
