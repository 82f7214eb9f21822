"""Structure: parse an entry's HTML once and rebuild it as a small semantic tree.

The input is whatever a publisher wrote; the output tree has only the
elements ``render`` and ``sanitize`` know (p, h2-h4, lists, blockquote,
pre/code, figure, table, inline formatting, links, images). Rebuilding
rather than deleting from the input means an element we did not think of
can only lose its markup, never leak through. The walk is a single pass over
lxml's tree with bounded recursion: nesting deeper than ``MAX_DEPTH`` is
read as plain text, and documents libxml2 refuses as too deep are
re-parsed once with their layout tags flattened.
"""

from __future__ import annotations

import re
import unicodedata
from dataclasses import dataclass, field

from lxml import etree

from ingestd.exceptions import CleanError
from ingestd.models import Image

from . import urls

Element = etree._Element

MAX_HTML_CHARS = 16_000_000
MAX_ELEMENTS = 300_000
MAX_DEPTH = 120  # input nesting walked as structure; deeper subtrees become text
MAX_INLINE_DEPTH = 12
MAX_BLOCK_NESTING = 8  # blockquotes / lists inside each other

# Not here: source/track/wbr. libxml2 does not know them as void elements, so what it nests
# inside them are really siblings; they are walked as transparent elements instead.
# fmt: off
DROP_TAGS = frozenset({
    "script", "style", "noscript", "template", "object", "embed", "applet", "form", "input", "button",
    "select", "option", "optgroup", "textarea", "label", "svg", "math", "canvas", "head", "title",
    "meta", "link", "base", "map", "area", "frame", "frameset", "noframes", "xmp",
    "plaintext", "noembed", "dialog", "param", "portal", "datalist", "output", "progress", "meter",
})
BLOCK_TAGS = frozenset({
    "div", "p", "section", "article", "main", "header", "footer", "aside", "center", "address",
    "details", "summary", "dl", "dd", "dt", "fieldset", "legend", "nav", "hgroup", "body", "html",
    "figcaption", "li", "caption", "thead", "tbody", "tfoot", "tr", "td", "th", "blockquote", "ul",
    "ol", "dir", "menu", "pre", "table", "figure", "hr", "h1", "h2", "h3", "h4", "h5", "h6",
})
# fmt: on
HEADINGS = {"h1": "h2", "h2": "h2", "h3": "h3", "h4": "h4", "h5": "h4", "h6": "h4"}
LISTS = {"ul": "ul", "ol": "ol", "dir": "ul", "menu": "ul"}
# fmt: off
INLINE = {
    "em": "em", "i": "i", "strong": "strong", "b": "b", "code": "code", "tt": "code", "kbd": "code",
    "samp": "code", "var": "em", "cite": "em", "dfn": "em", "sup": "sup", "sub": "sub",
}
# fmt: on
EMBED_TAGS = frozenset({"iframe", "video", "audio"})
# Tags _flow_node hands to the inline pass as they are (unless they wrap blocks).
_FLOW_PLAIN_INLINE = frozenset({*INLINE, *EMBED_TAGS, "a", "img"})
# Layout tags removed when libxml2 refuses a document as too deeply nested.
_FLATTEN_RE = re.compile(
    r"</?(?:div|span|section|article|font|center|main|header|footer|aside|nav|table|tbody|tr|td)\b[^>]*>",
    re.IGNORECASE,
)

_WS_RE = re.compile(r"[ \t\n\r\f\v]+")


def collapse_ws(text: str) -> str:
    """Whitespace runs to one space; most text nodes have none (six substring scans tell, no regex)."""
    if (
        "  " not in text
        and "\n" not in text
        and "\t" not in text
        and "\r" not in text
        and "\x0c" not in text
        and "\x0b" not in text
    ):
        return text
    return _WS_RE.sub(" ", text)


# C0 controls (but tab/newline/CR), DEL and C1 controls: removed or, for C1, re-read as cp1252.
_CTRL_RE = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f]")


def _c1_to_cp1252(code: int) -> str:
    try:
        return bytes([code]).decode("cp1252")
    except UnicodeDecodeError:
        return ""


_CTRL_MAP: dict[int, str] = {c: "" for c in (*range(0x09), 0x0B, 0x0C, *range(0x0E, 0x20), 0x7F)}
_CTRL_MAP.update({c: _c1_to_cp1252(c) for c in range(0x80, 0xA0)})
# The same controls in UTF-8: C0 and DEL are single bytes, C1 are \xc2\x80-\xc2\x9f.
_NOT_C0_BYTES = bytes(b for b in range(256) if not ((b < 0x20 and b not in (0x09, 0x0A, 0x0D)) or b == 0x7F))
_C1_UTF8_RE = re.compile(rb"\xc2[\x80-\x9f]")

# fmt: off
_DROP_CLASSES = frozenset({
    "feedflare", "sharedaddy", "sd-sharing-enabled", "share-buttons", "addtoany_share_save_container",
    "a2a_kit",
})
# fmt: on
_WP_FOOTER_RE = re.compile(r"^The post .+ appeared first on .+$", re.DOTALL)


def clean_chars(text: str) -> str:
    """Remove control characters, re-read mis-decoded cp1252 and compose to NFC."""
    if _CTRL_RE.search(text):
        text = text.translate(_CTRL_MAP)
    if not text.isascii() and not unicodedata.is_normalized("NFC", text):
        text = unicodedata.normalize("NFC", text)
    return text


def parse(html: str) -> Element:
    """Parse an HTML fragment or document with lxml once and return its body.

    ``huge_tree`` lifts libxml2's 10 MB text-node cap; its nesting cap still
    applies, and a document that hits it is flattened once, else refused.
    """
    if len(html) > MAX_HTML_CHARS:
        raise CleanError(f"entry HTML is {len(html):,} characters, over the {MAX_HTML_CHARS:,} limit")
    html, data = _clean_encoded(html)
    body = _parse_bytes(data)
    if body is None:
        data = _FLATTEN_RE.sub(" ", html).encode("utf-8", "replace")
        body = _parse_bytes(data)
        if body is None:
            raise CleanError("entry HTML is nested too deeply to clean (libxml2 depth limit)")
    if data.count(b"<") * 4 + 16 > MAX_ELEMENTS:  # elements come from "<" (a few implied aside)
        count = sum(1 for _ in body.iter())
        if count > MAX_ELEMENTS:
            raise CleanError(f"entry HTML has {count:,} elements, over the {MAX_ELEMENTS:,} limit")
    return body


def _clean_encoded(html: str) -> tuple[str, bytes]:
    """``clean_chars(html)`` and its UTF-8 bytes; C passes over those spot controls faster than a regex."""
    data = html.encode("utf-8", "replace")
    cleaned = html
    if data.translate(None, _NOT_C0_BYTES) or _C1_UTF8_RE.search(data):
        cleaned = cleaned.translate(_CTRL_MAP)
    if not cleaned.isascii() and not unicodedata.is_normalized("NFC", cleaned):
        cleaned = unicodedata.normalize("NFC", cleaned)
    if cleaned is not html:
        data = cleaned.encode("utf-8", "replace")
    return cleaned, data


def _parse_once(html: str) -> Element | None:
    return _parse_bytes(html.encode("utf-8", "replace"))


def _parse_bytes(data: bytes) -> Element | None:
    """The body of UTF-8 ``data``, or None when libxml2 hit its nesting limit."""
    parser = etree.HTMLParser(
        encoding="utf-8", remove_comments=True, remove_pis=True, no_network=True, huge_tree=True
    )
    try:
        root = etree.fromstring(data, parser=parser)
    except etree.ParserError:
        root = None
    if any(err.type_name == "ERR_RESOURCE_LIMIT" for err in parser.error_log):
        return None
    if root is None:
        return etree.Element("body")
    body = root.find("body")
    return body if body is not None else root


def classes(el: Element) -> list[str]:
    value = el.get("class")
    return value.split() if value else []


def append_text(host: Element, text: str) -> None:
    """Append text at the end of ``host``'s content (its text or its last child's tail)."""
    if len(host):
        last = host[-1]
        last.tail = (last.tail or "") + text
    else:
        host.text = (host.text or "") + text


def drop(el: Element) -> None:
    """Remove ``el`` and its subtree, keeping the text that follows it."""
    parent = el.getparent()
    if parent is None:
        return
    if el.tail:
        previous = el.getprevious()
        if previous is not None:
            previous.tail = (previous.tail or "") + el.tail
        else:
            parent.text = (parent.text or "") + el.tail
    parent.remove(el)


def has_content(el: Element) -> bool:
    """Whether ``el`` holds visible text or an image (leading text decides most cases cheaply)."""
    text = el.text
    if text and not text.isspace():
        return True
    return bool("".join(el.itertext()).strip()) or el.find(".//img") is not None


def _int(value: object) -> int | None:
    try:
        number = round(float(str(value)))
    except (TypeError, ValueError, OverflowError):
        return None
    return number if 0 <= number < 1_000_000 else None


@dataclass(slots=True)
class _Flow:
    """A block container being filled, with its lazily opened paragraph."""

    container: Element
    para: Element | None = None

    def paragraph(self) -> Element:
        if self.para is None:
            self.para = etree.SubElement(self.container, "p")
        return self.para

    def close(self) -> None:
        para = self.para
        if para is not None:
            self.para = None
            text = finish_inline(para)
            if text:  # has_content and _is_wp_footer, reusing the text just trimmed
                if text.startswith("The post ") and _WP_FOOTER_RE.match("".join(para.itertext()).strip()):
                    self.container.remove(para)
            elif not has_content(para) or _is_wp_footer(para):
                self.container.remove(para)


def finish_inline(host: Element) -> str | None:
    """Trim the edges of an inline host and drop trailing line breaks; return its text.

    Text is only written back when trimming changed it: lxml calls are the cost here.
    """
    count = len(host)
    while count:
        last = host[-1]
        if last.tag != "br" or (last.tail and not last.tail.isspace()):
            break
        host.remove(last)
        count -= 1
    text = host.text
    if text:
        trimmed = text.lstrip()
        if count:
            if len(trimmed) != len(text):
                host.text = trimmed
            tail = host[-1].tail
            if tail:
                stripped = tail.rstrip()
                if len(stripped) != len(tail):
                    host[-1].tail = stripped
        else:
            trimmed = trimmed.rstrip()
            if len(trimmed) != len(text):
                host.text = trimmed
        return trimmed
    if count:
        last = host[-1]
        tail = last.tail
        if tail:
            stripped = tail.rstrip()
            if len(stripped) != len(tail):
                last.tail = stripped
    return text


def _is_wp_footer(para: Element) -> bool:
    if not (para.text or "").startswith("The post "):
        return False
    return bool(_WP_FOOTER_RE.match("".join(para.itertext()).strip()))


@dataclass(slots=True)
class Builder:
    """Rebuilds one entry's body as a semantic tree (``root``) and collects its images."""

    base: str | None
    root: Element = field(default_factory=lambda: etree.Element("div"))
    images: list[Image] = field(default_factory=list)
    languages: set[str] = field(default_factory=set)
    nesting: int = 0

    def build(self, body: Element) -> Element:
        flow = _Flow(self.root)
        self._flow_children(body, flow, 0)
        flow.close()
        return self.root

    # -- flow context: blocks and paragraphs --------------------------------

    def _flow_children(self, src: Element, flow: _Flow, depth: int) -> None:
        # _flow_text inlined: this loop runs for every element of every entry.
        text = src.text
        if text and (flow.para is not None or not text.isspace()):
            append_text(flow.paragraph(), collapse_ws(text))
        depth += 1
        flow_node = self._flow_node
        for child in src:
            flow_node(child, flow, depth)
            text = child.tail
            if text and (flow.para is not None or not text.isspace()):
                append_text(flow.paragraph(), collapse_ws(text))

    def _flow_text(self, text: str, flow: _Flow) -> None:
        if flow.para is None and (not text or text.isspace()):
            return
        append_text(flow.paragraph(), collapse_ws(text))

    def _flow_node(self, el: Element, flow: _Flow, depth: int) -> None:
        tag = el.tag
        # The commonest case first: em, strong, a, img ... that wrap no block.
        if tag in _FLOW_PLAIN_INLINE and depth <= MAX_DEPTH and not (len(el) and _contains_block(el)):
            self._inline_node(el, flow.paragraph(), depth, 0)
            return
        if not isinstance(tag, str) or tag in DROP_TAGS:
            return
        if depth > MAX_DEPTH:
            self._flow_text(" ".join(el.itertext()), flow)
            return
        if tag in BLOCK_TAGS:
            cls = el.get("class")
            if cls and not _DROP_CLASSES.isdisjoint(cls.split()):
                return
        if tag in HEADINGS:
            flow.close()
            heading = etree.SubElement(flow.container, HEADINGS[tag])
            self._inline_children(el, heading, depth, 0)
            finish_inline(heading)
            if not "".join(heading.itertext()).strip():
                flow.container.remove(heading)
        elif tag in LISTS and self.nesting < MAX_BLOCK_NESTING:
            flow.close()
            self._list(el, LISTS[tag], flow.container, depth)
        elif tag == "blockquote" and self.nesting < MAX_BLOCK_NESTING:
            flow.close()
            quote = etree.SubElement(flow.container, "blockquote")
            self._nested_flow(el, quote, depth)
            if not len(quote):
                flow.container.remove(quote)
        elif tag == "pre":
            flow.close()
            self._pre(el, flow.container)
        elif tag == "table":
            flow.close()
            self._table(el, flow.container, depth)
        elif tag == "figure" and next(el.iterdescendants("img"), None) is not None:
            flow.close()
            self._figure(el, flow.container, depth)
        elif tag == "hr":
            flow.close()
            if len(flow.container) and flow.container[-1].tag != "hr":
                etree.SubElement(flow.container, "hr")
        elif tag in BLOCK_TAGS:
            flow.close()
            self._flow_children(el, flow, depth)
            flow.close()
        elif tag == "br":
            para = flow.para
            if para is None:
                return
            if len(para) and para[-1].tag == "br" and not (para[-1].tail or "").strip():
                para.remove(para[-1])
                flow.close()
            else:
                etree.SubElement(para, "br")
        elif (tag in INLINE or tag == "a") and len(el) and _contains_block(el):
            self._flow_children(el, flow, depth)  # e.g. <strong><p>..</p></strong>: keep the blocks
        elif tag in INLINE or tag in EMBED_TAGS or tag in ("a", "img"):
            self._inline_node(el, flow.paragraph(), depth, 0)
        else:  # span, font and unknown tags: transparent
            self._flow_children(el, flow, depth)

    def _nested_flow(self, src: Element, container: Element, depth: int) -> None:
        self.nesting += 1
        inner = _Flow(container)
        self._flow_children(src, inner, depth)
        inner.close()
        self.nesting -= 1

    def _list(self, el: Element, tag: str, container: Element, depth: int) -> None:
        out = etree.SubElement(container, tag)
        self.nesting += 1
        stray = _Flow(etree.Element("li"))
        for child in el:
            if child.tag == "li":
                if len(stray.container):
                    stray.close()
                    out.append(stray.container)
                    stray = _Flow(etree.Element("li"))
                item = etree.SubElement(out, "li")
                inner = _Flow(item)
                self._flow_children(child, inner, depth + 1)
                inner.close()
                if not len(item):
                    out.remove(item)
            elif isinstance(child.tag, str):
                self._flow_node(child, stray, depth + 1)
            if child.tail and child.tail.strip():
                self._flow_text(child.tail, stray)
        stray.close()
        if len(stray.container):
            out.append(stray.container)
        self.nesting -= 1
        if not len(out):
            container.remove(out)

    def _pre(self, el: Element, container: Element) -> None:
        text = pre_text(el).strip("\n").rstrip()
        if not text.strip():
            return
        pre = etree.SubElement(container, "pre")
        code = etree.SubElement(pre, "code")
        code.text = text
        language = code_language(el)
        if language:
            code.set("class", f"language-{language}")
            self.languages.add(f"language-{language}")

    def _table(self, el: Element, container: Element, depth: int) -> None:
        head_rows: list[Element] = []
        body_rows: list[Element] = []
        for tr in el.iter("tr"):
            if next(tr.iterancestors("table"), None) is not el:
                continue
            row = etree.Element("tr")
            for cell in tr:
                if cell.tag not in ("td", "th"):
                    continue
                out = etree.SubElement(row, cell.tag)
                self._inline_children(cell, out, depth + 1, 0)
                finish_inline(out)
            if not len(row):
                continue
            parent = tr.getparent()
            in_head = parent is not None and parent.tag == "thead"
            all_th = all(cell.tag == "th" for cell in row)
            (head_rows if (in_head or (all_th and not body_rows)) else body_rows).append(row)
        if not any(has_content(row) for row in head_rows + body_rows):
            return
        table = etree.SubElement(container, "table")
        for section, rows in (("thead", head_rows), ("tbody", body_rows)):
            if rows:
                part = etree.SubElement(table, section)
                part.extend(rows)

    def _figure(self, el: Element, container: Element, depth: int) -> None:
        figure = etree.SubElement(container, "figure")
        images = [img for img in (self._image(src) for src in el.iter("img")) if img is not None]
        for img in images:
            figure.append(img)
        caption_src = next(el.iter("figcaption"), None)
        caption = ""
        if caption_src is not None:
            out = etree.Element("figcaption")
            self._inline_children(caption_src, out, depth + 1, 0)
            finish_inline(out)
            if has_content(out):
                figure.append(out)
                caption = _WS_RE.sub(" ", "".join(out.itertext())).strip()
        if not images:
            container.remove(figure)
            if caption:
                etree.SubElement(container, "p").text = caption
            return
        for img in images:
            self._record(img, caption)

    # -- inline context -----------------------------------------------------

    def _inline_children(self, src: Element, host: Element, depth: int, level: int) -> None:
        if src.text:
            append_text(host, collapse_ws(src.text))
        for child in src:
            self._inline_node(child, host, depth + 1, level)
            if child.tail:
                append_text(host, collapse_ws(child.tail))

    def _inline_node(self, el: Element, host: Element, depth: int, level: int) -> None:
        tag = el.tag
        if not isinstance(tag, str) or tag in DROP_TAGS:
            return
        if depth > MAX_DEPTH:
            append_text(host, _WS_RE.sub(" ", " ".join(el.itertext())))
        elif tag == "br":
            etree.SubElement(host, "br")
        elif tag == "img":
            img = self._image(el)
            if img is not None:
                host.append(img)
                self._record(img, "")
        elif tag == "a":
            self._link(el, host, depth, level)
        elif tag in INLINE and level < MAX_INLINE_DEPTH:
            out = etree.SubElement(host, INLINE[tag])
            self._inline_children(el, out, depth, level + 1)
            if not len(out) and not (out.text or "").strip():
                _unwrap_empty(out)
        elif tag in EMBED_TAGS:
            found = urls.embed_link(
                el.get("src") or next((s.get("src") for s in el.iter("source")), None), self.base
            )
            if found:
                link = etree.SubElement(host, "a", href=found[0])
                link.text = found[1]
        elif tag in BLOCK_TAGS:
            append_text(host, " ")  # keep words of adjacent blocks apart
            self._inline_children(el, host, depth, level)
            append_text(host, " ")
        else:
            self._inline_children(el, host, depth, level)

    def _link(self, el: Element, host: Element, depth: int, level: int) -> None:
        href = urls.resolve(el.get("href"), self.base)
        if href is not None and urls.is_share_link(href):
            return
        if href is None or level >= MAX_INLINE_DEPTH or host.tag == "a":
            self._inline_children(el, host, depth, level)
            return
        out = etree.SubElement(host, "a", href=href)
        self._inline_children(el, out, depth, level + 1)
        if not len(out) and not (out.text or "").strip():
            _unwrap_empty(out)

    def _image(self, el: Element) -> Element | None:
        src = el.get("src") or el.get("data-src")
        if not src or src.startswith("data:"):
            src = urls.largest_srcset(el.get("srcset") or el.get("data-srcset"))
            picture = next(el.iterancestors("picture"), None)
            if not src and picture is not None:
                src = next((urls.largest_srcset(s.get("srcset")) for s in picture.iter("source")), None)
        url = urls.resolve(src, self.base, urls.WEB_SCHEMES, strip=False)
        if url is None or urls.is_tracker(url):
            return None
        width, height = _int(el.get("width")), _int(el.get("height"))
        if (width is not None and width <= 1) or (height is not None and height <= 1):
            return None
        img = etree.Element("img", src=urls.original_image_url(url), alt=clean_alt(el.get("alt")))
        if width:
            img.set("width", str(width))
        if height:
            img.set("height", str(height))
        return img

    def _record(self, img: Element, caption: str) -> None:
        self.images.append(
            Image(
                url=img.get("src", ""),
                alt=img.get("alt", ""),
                caption=caption,
                width=_int(img.get("width")),
                height=_int(img.get("height")),
            )
        )


def _unwrap_empty(el: Element) -> None:
    """Remove an empty inline element, keeping its tail."""
    drop(el)


def _contains_block(el: Element) -> bool:
    for _ in el.iterdescendants("p", "div", "ul", "ol", "blockquote", "table", "pre", "h1", "h2", "h3"):
        return True
    return False


def clean_alt(value: str | None) -> str:
    return _WS_RE.sub(" ", clean_chars(value)).strip() if value else ""


def pre_text(el: Element) -> str:
    """The verbatim text of a ``pre`` block, with ``br`` read as a newline (no recursion)."""
    parts: list[str] = []
    for event, node in etree.iterwalk(el, events=("start", "end")):
        if event == "start":
            if node.tag == "br":
                parts.append("\n")
            if node.text and node.tag not in DROP_TAGS:
                parts.append(node.text)
        elif node is not el and node.tail:
            parts.append(node.tail)
    return "".join(parts).expandtabs(4)


_LANG_RE = re.compile(r"^(?:language|lang)-([a-z0-9+#_-]{1,30})$", re.IGNORECASE)


def code_language(el: Element) -> str | None:
    """The code language from ``class="language-x"`` on the pre, its code, or the wrapper's hint."""
    for node in (el, next(el.iter("code"), None)):
        if node is None:
            continue
        for cls in classes(node):
            match = _LANG_RE.match(cls)
            if match:
                return match.group(1).lower()
    hint = el.get("data-language")
    return hint.lower() if hint and re.fullmatch(r"[a-zA-Z0-9+#_-]{1,30}", hint) else None
