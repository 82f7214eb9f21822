"""The clean stage's shortcuts give exactly what the general code they skip would give.

Each test pits one fast path (a check that avoids a regex, a parse or a split)
against the straightforward formulation it replaces, on generated text that
leans on the characters where the two could part ways: whitespace of every
kind, controls, surrogates, byte order marks, markup and Markdown punctuation.
"""

from __future__ import annotations

import re
import unicodedata
from urllib.parse import urljoin, urlsplit

import nh3
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from lxml import etree

from ingestd.pipeline.clean import _summary_of, _truncate, render, sanitize, urls
from ingestd.pipeline.clean import html as cleanhtml

_TRICKY = (
    " \t\n\r\x0b\x0c\x1c\x1f\x85\xa0\u1680\u2003\u2028\u2029\u202f\u3000"  # whitespace of every kind
    "\x00\x08\x7f\x80\x81\x9f\ud800\udfff\ufeff\ufffe\uffff"  # controls, surrogates, BOM, non-characters
    "<>&;#/\\`*[]_=|-+.)(:?%@"  # markup, entities, Markdown and URL punctuation
    "aZ09éñ中\u0301\U0001f600"
)
TEXT = st.text(st.sampled_from(list(_TRICKY)) | st.characters(), max_size=40)
WORDS = st.lists(
    st.sampled_from(["a", "bc", "é", " ", "  ", "\n", "\xa0", "\u3000", "\t", "x" * 50]), max_size=200
)


@settings(max_examples=300)
@given(TEXT)
def test_collapse_ws_is_the_regex(text: str) -> None:
    assert cleanhtml.collapse_ws(text) == re.sub(r"[ \t\n\r\f\v]+", " ", text)


@settings(max_examples=300)
@given(TEXT)
def test_clean_encoded_is_clean_chars(text: str) -> None:
    cleaned = cleanhtml.clean_chars(text)
    assert cleanhtml._clean_encoded(text) == (cleaned, cleaned.encode("utf-8", "replace"))


def _plain_text_by_parsing(fragment: str) -> str:
    """plain_text as it was before its shortcut: every fragment through libxml2."""
    if not fragment:
        return ""
    body = cleanhtml._parse_once(cleanhtml.clean_chars(fragment))
    assert body is not None
    etree.strip_elements(body, *cleanhtml.DROP_TAGS, with_tail=False)
    for block in body.iter(*cleanhtml.BLOCK_TAGS, "br"):
        block.tail = " " + (block.tail or "")
    text = "".join(body.itertext())
    return re.sub(r"[ \t\n\r\f\v]+", " ", cleanhtml.clean_chars(text)).strip()


@settings(max_examples=500)
@given(TEXT)
def test_plain_text_without_markup_skips_the_parser_safely(text: str) -> None:
    assert render.plain_text(text) == _plain_text_by_parsing(text)


@pytest.mark.parametrize("text", ["\ufeffTitle", "a\ud800b", "  x\r\ny  ", "Tom &amp; Jerry", "<b>x</b>y"])
def test_plain_text_cases_the_parser_changes(text: str) -> None:
    assert render.plain_text(text) == _plain_text_by_parsing(text)


def _resolve_with_urlsplit(href: str | None, base: str | None, schemes: frozenset[str]) -> str | None:
    """urls.resolve as it was: a regex for junk and urlsplit for the host check."""
    if not href:
        return None
    href = re.sub(r"[\x00-\x20\x7f]+", "", href)
    if not href:
        return None
    scheme = urls.scheme_of(href)
    if scheme is None:
        if base is None or href.startswith("#"):
            return None
        try:
            href = urljoin(base, href)
        except ValueError:
            return None
        scheme = urls.scheme_of(href)
    if scheme not in schemes:
        return None
    if scheme != "mailto":
        try:
            if not urlsplit(href).netloc:
                return None
        except ValueError:
            return None
    return urls.strip_tracking(href)


URL_PARTS = st.sampled_from(
    ["http", "https", "HTTPS", "mailto", "javascript", ":", "//", "/", "?", "#", "[", "]", "[::1]", "a.b",
     "é", "\uff45", "\u2100", "%2F", "@", " ", "\t", "\x00", "\xa0", "x=1&utm_source=y", "..", "\ufeff"]
)  # fmt: skip


@settings(max_examples=500)
@given(
    st.lists(URL_PARTS, max_size=8).map("".join),
    st.sampled_from([None, "https://example.org/a/b", "http://h", "https://[::1]/x"]),
    st.sampled_from([urls.LINK_SCHEMES, urls.WEB_SCHEMES]),
)
def test_resolve_host_check_is_urlsplit(href: str, base: str | None, schemes: frozenset[str]) -> None:
    assert urls.resolve(href, base, schemes) == _resolve_with_urlsplit(href, base, schemes)


@settings(max_examples=300)
@given(WORDS.map("".join))
def test_summary_from_a_prefix_is_the_summary_of_the_whole(text: str) -> None:
    assert _summary_of(text) == _truncate(" ".join(text.split()))


@settings(max_examples=300)
@given(TEXT)
def test_markdown_escapes_are_the_regex(text: str) -> None:
    assert render._md_escape(text) == render._MD_SPECIAL_RE.sub(r"\\\g<0>", text)
    expected = render._MD_LINE_START_RE.sub(lambda m: m.group(1) + "\\" + m.group(2), text, count=1)
    assert render._escape_line_start(text) == expected


@pytest.mark.parametrize("markup", ["</p>" * 1000, "</br>" * 1000, "<td>" * 1000, "x</p>" * 1000, "<li><p>a"])
def test_element_count_bound_holds_for_implied_elements(markup: str) -> None:
    """parse() only counts elements when "<" could add up to the limit: libxml2 adds few on its own."""
    data = markup.encode()
    body = cleanhtml._parse_bytes(data)
    assert body is not None
    assert sum(1 for _ in body.iter()) <= data.count(b"<") * 4 + 16


@pytest.mark.parametrize("classes", [frozenset(), frozenset({"language-python"})])
def test_cached_cleaner_is_nh3_clean(classes: frozenset[str]) -> None:
    markup = (
        '<div><p onclick="x()">a<script>bad()</script><a href="javascript:x">j</a>'
        '<a href="https://e.org">e</a><pre><code class="language-python other">x</code></pre>'
        '<img src="https://e.org/i.png" alt="i"></p></div>'
    )
    expected = nh3.clean(
        markup,
        tags=set(sanitize.TAGS),
        clean_content_tags={"script", "style"},
        attributes={tag: set(names) for tag, names in sanitize.ATTRIBUTES.items()},
        url_schemes=set(sanitize.URL_SCHEMES),
        strip_comments=True,
        link_rel="noopener noreferrer",
        allowed_classes={"code": set(classes)} if classes else None,
    ).strip()
    assert sanitize.sanitize_html(markup, classes) == expected


def test_nfc_check_of_clean_chars_still_composes() -> None:
    decomposed = "e\u0301"
    assert cleanhtml._clean_encoded(decomposed)[0] == unicodedata.normalize("NFC", decomposed)
