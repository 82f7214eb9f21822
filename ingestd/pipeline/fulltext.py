"""Main-content extraction for ``--full-text`` feeds: an article page in, its body's HTML out.

``extract_main_html`` is pure and top-level, so the orchestrator runs it in a
worker process (under the worker's CPU, memory and time limits) like parse and
clean. Its output is untrusted HTML: it goes through ``clean_entry`` next.

Why trafilatura and not readability-lxml: measured by
``bench/fulltext_extractors.py`` on the 332 corpus entries that carry a full
body (>= 50 words), each rendered inside a realistic article page (nav,
share buttons, byline, related posts, sidebar, newsletter form, comments,
cookie banner, footer) and compared after ``clean_entry``:

=====================  ======  =======  =========  ======  =====  =====  =======
extractor              recall  p10 rec  precision  struct  leaky  ms/pg  install
=====================  ======  =======  =========  ======  =====  =====  =======
trafilatura 2.3.1      94.2 %  69.3 %   96.2 %     70.8 %  0.4 %  7-10   49 MB
readability-lxml 0.9   90.3 %  61.8 %   94.7 %     83.0 %  1.3 %  6-9    2.6 MB
this module            94.2 %  68.9 %   98.8 %     79.5 %  0.4 %  8-9    (trafilatura)
=====================  ======  =======  =========  ======  =====  =====  =======

(ms per page vary by run on a shared machine: call it a tie.)

trafilatura keeps more of the article and lets less chrome in; readability's
failure mode is worse: on link-dense or div-soup bodies it returns the page
chrome (the cookie banner leaked on 14 % of pages) around an emptied
``<article>``, where trafilatura at worst returns a short body, which
``fetch_full_text`` then rejects in favour of the feed's. Speed is a wash.
The price is the footprint (12 packages, ~49 MB against ~2.6 MB) and a
coarser HTML output (its ``html`` format turns every ``<code>`` into a
``<pre>`` and repeats the title as ``<h1>``), which ``_tidy`` below repairs.
"""

from __future__ import annotations

import codecs
import configparser
import functools
import re
from collections.abc import Mapping

from lxml import etree

from ingestd.exceptions import ParseError

__all__ = ["MAX_TREE_SIZE", "MIN_WORDS", "extract_main_html"]

MAX_TREE_SIZE = 200_000  # elements; a bigger page is refused by trafilatura, not walked
MIN_WORDS = 10  # fewer is a caption or a menu, not an article
# Below 250 characters of output trafilatura falls back to a whole-page baseline, which is right for
# div soup but glues a short article to its menu in one paragraph; such a short result is retried
# with this lower threshold (lowering it for every page costs 3 points of recall on the corpus).
SHORT_RESULT = 250
MIN_EXTRACTED_SIZE = 20
_CHARSET = re.compile(rb"""<meta[^>]{0,200}?charset\s*=\s*["']?\s*([A-Za-z0-9_.:-]{1,40})""", re.I)
# Where trafilatura's <pre> stands for inline code: inside a paragraph-level or inline element.
_INLINE_PARENTS = frozenset(
    {
        "p",
        "li",
        "a",
        "td",
        "th",
        "h1",
        "h2",
        "h3",
        "h4",
        "h5",
        "h6",
        "em",
        "strong",
        "b",
        "i",
        "span",
        "pre",
        "del",
    }
)


def extract_main_html(page: bytes, *, url: str, headers: Mapping[str, str] | None = None) -> str:
    """The main content of an article page as HTML (untrusted: clean it next).

    Raises ``ParseError`` when the page has no recognisable article body.
    """
    import trafilatura  # imported here: ~0.3 s and 49 MB that only full-text feeds need

    document = _decode(page, headers or {})
    try:
        out = None
        for short in (False, True):
            out = trafilatura.extract(
                document,
                url=url,
                output_format="html",
                include_comments=False,
                include_links=True,
                include_images=True,
                include_tables=True,
                include_formatting=True,
                deduplicate=False,
                config=_config(short),
            )
            if out is None or len(out) >= SHORT_RESULT:
                break
    except (etree.LxmlError, ValueError, TypeError) as e:
        raise ParseError(f"could not read the article page: {e}", url) from e
    if not out or not out.strip():
        raise ParseError("no article text found on the page", url)
    body = _tidy(out)
    if not body:
        raise ParseError("no article text found on the page", url)
    return body


@functools.cache
def _config(short: bool) -> configparser.ConfigParser:
    """trafilatura's settings: a tree-size cap, and no SIGALRM timeout (the worker pool has limits)."""
    from trafilatura.settings import use_config

    config = use_config()
    config["DEFAULT"]["MAX_TREE_SIZE"] = str(MAX_TREE_SIZE)
    config["DEFAULT"]["EXTRACTION_TIMEOUT"] = "0"
    if short:
        config["DEFAULT"]["MIN_EXTRACTED_SIZE"] = str(MIN_EXTRACTED_SIZE)
    return config


def _decode(page: bytes, headers: Mapping[str, str]) -> str | bytes:
    """Text by the header's charset, else a BOM or <meta charset>; bytes when unsure (trafilatura guesses)."""
    content_type = next((v for k, v in headers.items() if k.lower() == "content-type"), "")
    candidates: list[str] = []
    match = re.search(r"charset\s*=\s*[\"']?([A-Za-z0-9_.:-]+)", content_type, re.I)
    if match:
        candidates.append(match.group(1))
    if page.startswith(codecs.BOM_UTF8):
        candidates.insert(0, "utf-8-sig")
    meta = _CHARSET.search(page[:4096])
    if meta:
        candidates.append(meta.group(1).decode("ascii"))
    for name in candidates:
        try:
            return page.decode(codecs.lookup(name).name)
        except (LookupError, UnicodeDecodeError):
            continue
    try:
        return page.decode("utf-8")
    except UnicodeDecodeError:
        return page


def _tidy(out: str) -> str:
    """Undo trafilatura's HTML quirks: the title as <h1>, inline code as <pre>.

    Its output is lxml-serialised XML; it is read as XML because an HTML parser
    would close a ``<p>`` at the first ``<pre>`` and lose where the code stood.
    """
    parser = etree.XMLParser(recover=True, resolve_entities=False, no_network=True, load_dtd=False)
    root = etree.fromstring(out.encode("utf-8"), parser)
    if root is None:
        return ""
    body = root.find("body")
    if body is None:
        body = root
    first = next(iter(body), None)
    if first is not None and first.tag == "h1":
        _drop(first)
    for pre in list(body.iter("pre")):
        parent = pre.getparent()
        if parent is not None and parent.tag in _INLINE_PARENTS:
            pre.tag = "code"
    if len(" ".join(body.itertext()).split()) < MIN_WORDS:
        return ""
    return "".join(etree.tostring(child, method="html", encoding="unicode") for child in body).strip()


def _drop(element: etree._Element) -> None:
    """Remove an element but keep the text that follows it."""
    parent = element.getparent()
    if parent is None:
        return
    if element.tail and element.tail.strip():
        prev = element.getprevious()
        if prev is not None:
            prev.tail = (prev.tail or "") + element.tail
        else:
            parent.text = (parent.text or "") + element.tail
    parent.remove(element)
