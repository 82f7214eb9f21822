"""The fast path's engine: feedparser's parser state (``_FeedParserMixin``), ported.

Namespaces, the element stack, push/pop of text with feedparser's
post-processing, and the helpers the handlers share; the element handlers
themselves are in ``handlers``.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from contextlib import suppress
from typing import Any, ClassVar
from xml.sax.saxutils import escape

from feedparser.api import StrictFeedParser
from feedparser.html import _cp1252
from feedparser.mixin import _FeedParserMixin
from feedparser.urls import _urljoin, make_safe_absolute_uri
from feedparser.util import FeedParserDict

_XHTML = "application/xhtml+xml"
_DECL = b"<?xml version='1.0' encoding='utf-8'?>"
_FIRST_TAG = re.compile(rb"<\w")
_CP1252_CHARS = re.compile("[\x80-\x9f]")
# Where a C1 character could come from: its UTF-8 bytes, or a character reference (a superset).
# Two patterns, each with a literal prefix: re scans for it fast, an alternation would not.
_C1_UTF8 = re.compile(rb"\xc2[\x80-\x9f]")
_C1_REF = re.compile(rb"&#(?:[xX]0*[89][0-9a-fA-F]|0*1[2-5][0-9]);")
_LINK_AMP = re.compile("&([A-Za-z0-9_]+);")
_EMAIL = re.compile(
    r"""(([a-zA-Z0-9\_\-\.\+]+)@((\[[0-9]{1,3}\.[0-9]{1,3}\.[0-9]{1,3}\.)|(([a-zA-Z0-9\-]+\.)+))"""
    r"""([a-zA-Z]{2,4}|[0-9]{1,3})(\]?))(\?subject=\S+)?"""
)
_NAMESPACES = {k.lower(): v for k, v in _FeedParserMixin.namespaces.items()}
_FP_START = frozenset(n[7:] for n in dir(StrictFeedParser) if n.startswith("_start_"))
_FP_END = frozenset(n[5:] for n in dir(StrictFeedParser) if n.startswith("_end_"))
_KEYMAP = {k: v[0] if isinstance(v, list) else v for k, v in FeedParserDict.keymap.items()}
_RELATIVE = frozenset(_FeedParserMixin.can_be_relative_uri)
_HTML_TYPES = frozenset(_FeedParserMixin.html_types)
_looks_like_html = _FeedParserMixin.looks_like_html
_Attrs = dict[str, str]
_Start = Callable[[Any, _Attrs], None]
_End = Callable[[Any], None]
_ROOTS = frozenset({"rss", "feed", "rdf:rdf"})


class _Decline(Exception):
    """The document needs feedparser itself."""


def _put(d: dict[str, Any], key: str, value: Any) -> None:
    """``FeedParserDict.__setitem__``: some keys are stored under another name."""
    d[_KEYMAP.get(key, key)] = value


def _map_type(t: str) -> str:
    t = t.lower()
    return {"text": "text/plain", "plain": "text/plain", "html": "text/html", "xhtml": _XHTML}.get(t, t)


def _enforce_href(a: dict[str, str]) -> dict[str, str]:
    href = a.get("url", a.get("uri", a.get("href")))
    if href:
        a.pop("url", None)
        a.pop("uri", None)
        a["href"] = href
    return a


def _strattrs(attrs: list[tuple[str, str]]) -> str:
    return "".join(' {}="{}"'.format(k, escape(v, {'"': "&quot;"})) for k, v in attrs)


def _unwrap_div(pieces: list[str]) -> list[str]:
    """Atom xhtml: drop the enclosing div when it wraps everything (mixin.pop)."""
    while len(pieces) > 1 and not pieces[-1].strip():
        del pieces[-1]
    while len(pieces) > 1 and not pieces[0].strip():
        del pieces[0]
    if pieces and (pieces[0] == "<div>" or pieces[0].startswith("<div ")) and pieces[-1] == "</div>":
        depth = 0
        for piece in pieces[:-1]:
            if piece.startswith("</"):
                depth -= 1
                if depth == 0:
                    return pieces
            elif piece.startswith("<") and not piece.endswith("/>"):
                depth += 1
        return pieces[1:-1]
    return pieces


class Machine:
    """feedparser's ``_FeedParserMixin`` state machine; the element handlers are in ``handlers``."""

    starts: ClassVar[dict[str, _Start]] = {}
    ends: ClassVar[dict[str, _End]] = {}
    unported: ClassVar[frozenset[str]] = frozenset()

    def __init__(self, content_location: str, language: str | None) -> None:
        self.version = ""
        self.root = ""
        self.feed: dict[str, Any] = {}
        self.entries: list[dict[str, Any]] = []
        self.ns_in_use: dict[str, str] = {}
        self.nsmap: dict[str | None, str] = {}
        self.decls: dict[str, str] = {}
        self.names: dict[str, tuple[str, str, bool]] = {}
        self.end_names: dict[str, tuple[str, str]] = {}
        self.joins: dict[tuple[str, str], str] = {}
        self.stack: list[tuple[str, int, list[str]]] = []
        self.basestack: list[str] = []
        self.langstack: list[str | None] = []
        self.depth_map: dict[int, dict[str, int]] = {}
        self.contentparams: dict[str, Any] = {}
        self.summary_key: str | None = None
        self.infeed = self.inentry = self.incontent = self.intextinput = self.inimage = 0
        self.inauthor = self.incontributor = self.inpublisher = 0
        self.has_content = self.guidislink = self.depth = 0
        self.title_depth = -1
        self.c1 = True  # the document may hold C1 characters, which feedparser maps as cp1252
        self.baseuri = make_safe_absolute_uri("", content_location) or make_safe_absolute_uri(
            content_location
        )
        self.lang = language
        if self.lang:
            self.feed["language"] = self.lang.replace("_", "-")

    # ------------------------------------------------------------------ expat callbacks

    def doctype(self, *_args: object) -> None:
        raise _Decline

    def start_ns(self, prefix: str | None, uri: str | None) -> None:
        """``startPrefixMapping``."""
        if not uri:
            return
        prefix = prefix or None
        self.track_namespace(prefix, uri)
        if prefix and uri == "http://www.w3.org/1999/xlink":
            self.decls["xmlns:" + prefix] = uri

    def track_namespace(self, prefix: str | None, uri: str) -> None:
        loweruri = uri.lower()
        if not self.version:
            if (prefix, loweruri) == (None, "http://my.netscape.com/rdf/simple/0.9/"):
                self.version = "rss090"
            elif loweruri == "http://purl.org/rss/1.0/":
                self.version = "rss10"
            elif loweruri == "http://www.w3.org/2005/atom":
                self.version = "atom10"
        if "backend.userland.com/rss" in loweruri:
            uri = loweruri = "http://backend.userland.com/rss"
        known = _NAMESPACES.get(loweruri)
        if known is not None:
            changed = self.nsmap.get(prefix) != known or self.ns_in_use.get(known) != uri
            self.nsmap[prefix] = known
            self.ns_in_use[known] = uri
        else:
            changed = self.ns_in_use.get(prefix or "") != uri
            self.ns_in_use[prefix or ""] = uri
        if changed:  # tag names depend on the namespaces seen so far
            self.names.clear()
            self.end_names.clear()

    def _split(self, raw: str) -> tuple[str | None, str]:
        pair = raw.split()  # as xml.sax.expatreader does
        if len(pair) == 1:
            return None, raw
        if len(pair) in (2, 3):
            return pair[0], pair[1]
        raise _Decline

    def _prefixed(self, prefix: str | None, namespace: str | None, localname: str) -> str:
        if prefix:
            return (prefix.lower() + ":" + localname).lower()
        if namespace:
            for name, value in self.ns_in_use.items():
                if name and value == namespace:
                    return (name + ":" + localname).lower()
        return localname.lower()

    def resolve(self, raw: str) -> tuple[str, str, bool]:
        """``startElementNS`` + ``unknown_starttag``: the tag, its handler key, whether prefixed."""
        namespace, localname = self._split(raw)
        lowerns = (namespace or "").lower()
        if "backend.userland.com/rss" in lowerns:
            namespace = lowerns = "http://backend.userland.com/rss"
        if localname.lower() in ("svg", "math"):
            raise _Decline  # feedparser adds an xmlns attribute, tracks it, counts svg depth
        tag = self._prefixed(_NAMESPACES.get(lowerns), namespace, localname.lower())
        prefix, suffix = tag.split(":", 1) if ":" in tag else ("", tag)
        prefix = self.nsmap.get(prefix, prefix)
        self.names[raw] = result = (tag, (prefix + "_" if prefix else "") + suffix, bool(prefix))
        return result

    def end_key(self, raw: str) -> tuple[str, str]:
        """``endElementNS`` + ``unknown_endtag``: the tag and its handler key (no userland rewrite)."""
        namespace, localname = self._split(raw)
        tag = self._prefixed(_NAMESPACES.get((namespace or "").lower(), ""), namespace, localname)
        prefix, suffix = tag.split(":", 1) if ":" in tag else ("", tag)
        prefix = self.nsmap.get(prefix, prefix)
        self.end_names[raw] = result = (tag, (prefix + "_" if prefix else "") + suffix)
        return result

    def attributes(self, attrs: dict[str, str]) -> list[tuple[str, str]]:
        """``startElementNS``'s attribute dict, then ``_normalize_attributes``."""
        out, self.decls = self.decls, {}
        qnames = []
        for aname, value in attrs.items():
            parts = aname.split()
            if len(parts) == 1:
                namespace, local, qname = None, aname, aname
            elif len(parts) == 3:
                namespace, local, qname = parts[0], parts[1], parts[2] + ":" + parts[1]
            else:
                raise _Decline
            prefix = _NAMESPACES.get((namespace or "").lower(), "")
            out[(prefix + ":" + local if prefix else local).lower()] = value
            qnames.append((qname, value))
        for qname, value in qnames:
            out[qname.lower()] = value
        return [(k, v.lower() if k in ("rel", "type") else v) for k, v in out.items()]

    def start(self, raw: str, raw_attrs: dict[str, str]) -> None:
        tag, key, prefixed = self.names.get(raw) or self.resolve(raw)
        self.root = self.root or tag
        self.depth += 1
        attrs = self.attributes(raw_attrs) if raw_attrs or self.decls else []
        a = dict(attrs)
        base = (a.get("xml:base", a.get("base")) or self.baseuri) if a else self.baseuri
        joined = self.joins.get((self.baseuri, base))
        if joined is None:
            if self.baseuri:
                joined = make_safe_absolute_uri(self.baseuri, base) or self.baseuri
            else:
                joined = _urljoin(self.baseuri, base)
            self.joins[(self.baseuri, base)] = joined
        self.baseuri = joined
        lang = a.get("xml:lang", a.get("lang")) if a else None
        if lang == "":
            lang = None
        elif lang is None:
            lang = self.lang
        if lang and tag in ("feed", "rss"):
            self.feed["language"] = lang.replace("_", "-")
        self.lang = lang
        self.basestack.append(joined)
        self.langstack.append(lang)
        for name, uri in attrs:
            if name.startswith("xmlns:"):
                self.track_namespace(name[6:], uri)
            elif name == "xmlns":
                self.track_namespace(None, uri)
        if self.incontent:
            if self.contentparams.get("type") != _XHTML or key in _FP_END:
                raise _Decline  # markup in escaped text, or an end handler feedparser would run
            self.markup("<{}{}>".format(tag.split(":", 1)[-1], _strattrs(attrs)))
            return
        if not prefixed:
            if tag not in ("title", "link", "description", "name"):
                self.intextinput = 0
            if tag not in ("title", "link", "description", "url", "href", "width", "height"):
                self.inimage = 0
        if key in self.unported:
            raise _Decline  # a feedparser handler this port does not have
        handler = self.starts.get(key)
        if handler is not None:
            handler(self, a)
        elif a:  # feedparser's unknown tag: attributes are stored, text goes to the parent
            _put(self.context(), key, a)
        else:
            self.push(key, 1)

    def end(self, raw: str) -> None:
        tag, key = self.end_names.get(raw) or self.end_key(raw)
        handler = self.ends.get(key)
        if handler is not None:
            handler(self)
        elif key in self.unported:  # the key can differ from the start tag's (namespaces)
            raise _Decline
        else:
            self.pop(key)
        if self.incontent:
            if self.contentparams.get("type") != _XHTML:
                raise _Decline
            self.markup(f"</{tag.split(':')[-1]}>")
        if self.basestack:
            self.basestack.pop()
            if self.basestack and self.basestack[-1]:
                self.baseuri = self.basestack[-1]
        if self.langstack:
            self.langstack.pop()
            if self.langstack:
                self.lang = self.langstack[-1]
        self.depth -= 1

    def data(self, text: str) -> None:
        """``characters``: to the innermost pushed element, escaped inside xhtml."""
        if self.stack:
            if self.contentparams.get("type") == _XHTML:
                text = escape(text)
            self.stack[-1][2].append(text)

    def markup(self, text: str) -> None:
        """A tag inside xhtml content, kept as text (``handle_data(text, escape=0)``)."""
        if self.stack:
            self.stack[-1][2].append(text)

    # ------------------------------------------------------------------ mixin helpers

    def context(self) -> dict[str, Any]:
        if self.inimage and "image" in self.feed:
            image: dict[str, Any] = self.feed["image"]
            return image
        if self.intextinput:
            textinput: dict[str, Any] = self.feed["textinput"]
            return textinput
        return self.entries[-1] if self.inentry else self.feed

    def push(self, element: str, expecting_text: int) -> None:
        self.stack.append((element, expecting_text, []))

    def pop(self, element: str, strip_whitespace: int = 1) -> Any:
        if not self.stack or self.stack[-1][0] != element:
            return None
        _, expecting_text, pieces = self.stack.pop()
        cp = self.contentparams
        if self.version == "atom10" and cp.get("type", "text") == _XHTML:
            pieces = _unwrap_div(pieces)
        output = "".join(pieces)
        if strip_whitespace:
            output = output.strip()
        if not expecting_text:
            return output
        if cp.get("base64", 0):
            raise _Decline
        if element in _RELATIVE and output and (element != "id" or self.guidislink):
            output = _urljoin(self.baseuri or "", output)
        if (
            not self.version.startswith("atom")
            and cp.get("type") == "text/plain"
            and _looks_like_html(output)
        ):
            cp["type"] = "text/html"
        cp.pop("mode", None)
        cp.pop("base64", None)
        if not output.isascii():
            with suppress(UnicodeEncodeError, UnicodeDecodeError):  # utf-8 read as latin-1: undone
                output = output.encode("iso-8859-1").decode("utf-8")
            if self.c1 and _CP1252_CHARS.search(output):
                output = output.translate(_cp1252)
        if element in ("category", "tags", "itunes_keywords"):
            return output
        if element == "title" and -1 < self.title_depth <= self.depth:
            return output
        if self.inentry:
            entry = self.entries[-1]
            if element == "content":
                entry.setdefault("content", []).append({**cp, "value": output})
            elif element == "link":
                if not self.inimage:
                    if "&" in output:
                        output = _LINK_AMP.sub(r"&\g<1>", output.replace("&amp;", "&"))
                    entry["link"] = output
                    if output:
                        entry["links"][-1]["href"] = output
            else:
                if element == "description":
                    element = "summary"
                depths = self.depth_map.setdefault(id(entry), {})
                old = depths.get(element)
                if old is None or self.depth <= old:
                    depths[element] = self.depth
                    _put(entry, element, output)
                if self.incontent:
                    _put(entry, element + "_detail", {**cp, "value": output})
        elif self.infeed:
            ctx = self.context()
            if element == "description":
                element = "subtitle"
            _put(ctx, element, output)
            if element == "link":
                output = _LINK_AMP.sub(r"&\g<1>", output) if "&" in output else output
                _put(ctx, element, output)
                ctx["links"][-1]["href"] = output
            elif self.incontent:
                _put(ctx, element + "_detail", {**cp, "value": output})
        return output

    def push_content(self, tag: str, a: _Attrs, default_type: str, expecting_text: int) -> None:
        if self.incontent:
            raise _Decline  # nested text constructs
        self.incontent += 1
        if self.lang:
            self.lang = self.lang.replace("_", "-")
        ctype = _map_type(a.get("type", default_type))
        if a.get("mode", "") == "base64" or not (
            ctype.startswith("text/") or ctype.endswith("+xml") or ctype.endswith("/xml")
        ):
            raise _Decline  # feedparser would try to base64-decode it
        self.contentparams = {"type": ctype, "language": self.lang, "base": self.baseuri}
        self.push(tag, expecting_text)

    def pop_content(self, tag: str) -> Any:
        value = self.pop(tag)
        self.incontent -= 1
        self.contentparams.clear()
        return value

    def save(self, key: str, value: Any, overwrite: bool = False) -> None:
        ctx = self.context()
        if overwrite or _KEYMAP.get(key, key) not in ctx:
            _put(ctx, key, value)

    def save_author(self, key: str, value: Any, prefix: str = "author") -> None:
        ctx = self.context()
        ctx.setdefault(prefix + "_detail", {})[key] = value
        self.sync_author_detail()
        ctx.setdefault("authors", [{}])
        ctx["authors"][-1][key] = value

    def save_contributor(self, key: str, value: Any) -> None:
        ctx = self.context()
        ctx.setdefault("contributors", [{}])
        ctx["contributors"][-1][key] = value

    def sync_author_detail(self, key: str = "author") -> None:
        ctx = self.context()
        detail = ctx.get(key + "s", [{}])[-1]
        if detail:
            name, email = detail.get("name"), detail.get("email")
            if name and email:
                ctx[key] = f"{name} ({email})"
            elif name:
                ctx[key] = name
            elif email:
                ctx[key] = email
            return
        author, email = ctx.get(key), None
        if not author:
            return
        match = _EMAIL.search(author)
        if match:
            email = match.group(0)
            author = author.replace(email, "").replace("()", "").replace("<>", "").replace("&lt;&gt;", "")
            author = author.strip()
            if author and author[0] == "(":
                author = author[1:]
            if author and author[-1] == ")":
                author = author[:-1]
            author = author.strip()
        if author or email:
            ctx.setdefault(key + "_detail", detail)
        if author:
            detail["name"] = author
        if email:
            detail["email"] = email

    def add_tag(self, term: str | None, scheme: str | None, label: str | None) -> None:
        tags = self.context().setdefault("tags", [])
        if not term and not scheme and not label:
            return
        value = {"term": term, "scheme": scheme, "label": label}
        if value not in tags:
            tags.append(value)

    def standard(self, name: str) -> str:
        """``_map_to_standard_prefix``."""
        prefix, colon, suffix = name.partition(":")
        return self.nsmap.get(prefix, prefix) + colon + suffix

    # ------------------------------------------------------------------ handlers
    # feedparser's ``_start_<key>`` / ``_end_<key>``, same names, same order of effects.
