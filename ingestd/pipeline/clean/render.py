"""Plain text and Markdown from the cleaned tree.

Both renderings walk the tree ``html.Builder`` produced, so they agree on
structure by construction and the entry is parsed only once. The tree is
small and closed (p, h2-h4, ul/ol > li, blockquote, pre > code, figure,
table, hr; inline em/strong/b/i/code/sup/sub/a/img/br) and its nesting is
bounded by the builder, so plain recursion is safe here.

Plain text is what search, summaries and word counts use: blocks separated
by a blank line, ``- item`` / ``1. item`` lists, ``> `` quotes, link text
without URLs, image captions but never image URLs, code verbatim.
``plain_text`` gives one line of text from a title or summary fragment.
"""

from __future__ import annotations

import re

from lxml import etree

from ingestd.exceptions import CleanError

from .html import BLOCK_TAGS, DROP_TAGS, Element, _parse_once, clean_chars, collapse_ws

_WS_RE = re.compile(r"[ \t\n\r\f\v]+")
_BR = "\x00"  # the builder removed every NUL from the text, so it is free as a line-break marker
_EMPHASIS = {"em": "*", "i": "*", "strong": "**", "b": "**"}
_HEADING_MARKS = {"h2": "## ", "h3": "### ", "h4": "#### "}
_MD_SPECIAL_RE = re.compile(r"([\\`*\[\]<>])|(?<!\w)_|_(?!\w)")
_MD_LINE_START_RE = re.compile(r"^(\s*)([#>+=|-]|\d+[.)])")


# -- plain text ---------------------------------------------------------------


def render_text(root: Element) -> tuple[str, int]:
    """The article as plain text, and its word count (markers and code fences not counted)."""
    counter = [0]
    blocks = _text_blocks(root, counter)
    return "\n\n".join(blocks), counter[0]


def _inline_text(host: Element) -> str:
    if not len(host):  # a childless host (most paragraphs): its text is all there is
        raw = host.text or ""
        return (_WS_RE.sub(" ", raw) if "  " in raw else raw).strip()
    if next(host.iterdescendants("br"), None) is None:
        raw = "".join(host.itertext())
        return (_WS_RE.sub(" ", raw) if "  " in raw else raw).strip()
    raw = "".join(_text_pieces(host))
    if _BR not in raw:
        return (_WS_RE.sub(" ", raw) if "  " in raw else raw).strip()
    lines = (collapse_ws(line).strip() for line in raw.split(_BR))
    return "\n".join(line for line in lines if line)


def _text_pieces(host: Element) -> list[str]:
    """Text in document order with each ``br`` as a line-break marker (iterative walk)."""
    out: list[str] = []
    for event, node in etree.iterwalk(host, events=("start", "end")):
        if event == "start":
            if node.tag == "br":
                out.append(_BR)
            elif node.text:
                out.append(node.text)
        elif node is not host and node.tail:
            out.append(node.tail)
    return out


def _text_blocks(container: Element, counter: list[int]) -> list[str]:
    blocks = (_text_block(child, counter) for child in container)
    return [block for block in blocks if block]


def _text_block(child: Element, counter: list[int]) -> str:
    tag = child.tag
    text = ""
    if tag == "p" or tag in _HEADING_MARKS:
        text = _inline_text(child)
        counter[0] += len(text.split())
    elif tag in ("ul", "ol"):
        text = "\n".join(_text_list(child, "", counter))
    elif tag == "blockquote":
        inner = "\n\n".join(_text_blocks(child, counter))
        text = "\n".join("> " + line if line else ">" for line in inner.split("\n")) if inner else ""
    elif tag == "pre":
        text = "".join(child.itertext())
        counter[0] += len(text.split())
    elif tag == "figure":
        caption = child.find("figcaption")
        if caption is not None:
            text = _inline_text(caption)
            counter[0] += len(text.split())
    elif tag == "table":
        rows = []
        for row in child.iter("tr"):
            cells = [_inline_text(cell) for cell in row]
            counter[0] += sum(len(cell.split()) for cell in cells)
            rows.append(" | ".join(cells))
        text = "\n".join(rows)
    return text


def _text_list(lst: Element, indent: str, counter: list[int]) -> list[str]:
    lines: list[str] = []
    for number, item in enumerate(lst, 1):
        marker = f"{number}. " if lst.tag == "ol" else "- "
        pad = indent + " " * len(marker)
        first = True
        for child in item:
            if child.tag in ("ul", "ol"):
                lines.extend(_text_list(child, pad, counter))
                first = False
                continue
            for i, line in enumerate(_text_block(child, counter).split("\n")):
                lead = (indent + marker) if first and i == 0 else pad
                lines.append(lead + line if line else "")
            first = False
    return lines


# -- Markdown -----------------------------------------------------------------


def render_markdown(root: Element) -> str:
    """The article as CommonMark (with GFM tables and fenced code)."""
    return "\n\n".join(_md_blocks(root))


def _md_blocks(container: Element) -> list[str]:
    blocks: list[str] = []
    for child in container:
        text = _md_block(child)
        if text:
            blocks.append(text)
    return blocks


def _md_block(child: Element) -> str:
    tag = child.tag
    if tag == "p":
        return _escape_line_start(_md_inline_host(child))
    if tag in _HEADING_MARKS:
        text = _md_inline_host(child).replace("\n", " ")
        return _HEADING_MARKS[tag] + text if text else ""
    if tag in ("ul", "ol"):
        return "\n".join(_md_list(child, ""))
    if tag == "blockquote":
        inner = "\n\n".join(_md_blocks(child))
        return "\n".join("> " + line if line else ">" for line in inner.split("\n")) if inner else ""
    if tag == "pre":
        code = child.find("code")
        source = "".join(child.itertext())
        language = ""
        if code is not None and (code.get("class") or "").startswith("language-"):
            language = (code.get("class") or "")[len("language-") :]
        fence = "```"
        while fence in source:
            fence += "`"
        return f"{fence}{language}\n{source}\n{fence}"
    if tag == "figure":
        parts = [_md_image(img) for img in child.iter("img")]
        caption = child.find("figcaption")
        if caption is not None:
            parts.append(_escape_line_start(_md_inline_host(caption)))
        return "\n\n".join(part for part in parts if part)
    if tag == "table":
        return _md_table(child)
    if tag == "hr":
        return "* * *"
    return ""


def _md_list(lst: Element, indent: str) -> list[str]:
    lines: list[str] = []
    for number, item in enumerate(lst, 1):
        marker = f"{number}. " if lst.tag == "ol" else "- "
        pad = indent + " " * len(marker)
        first = True
        for child in item:
            if child.tag in ("ul", "ol"):
                lines.extend(_md_list(child, pad))
                first = False
                continue
            if not first:
                lines.append("")
            for i, line in enumerate(_md_block(child).split("\n")):
                lead = (indent + marker) if first and i == 0 else pad
                lines.append(lead + line if line else "")
            first = False
    return lines


def _md_table(table: Element) -> str:
    rows = [
        [_md_inline_host(cell).replace("\n", " ").replace("|", "\\|") for cell in tr]
        for tr in table.iter("tr")
    ]
    if not rows:
        return ""
    width = max(len(row) for row in rows)
    rows = [row + [""] * (width - len(row)) for row in rows]
    lines = ["| " + " | ".join(rows[0]) + " |", "|" + " --- |" * width]
    lines.extend("| " + " | ".join(row) + " |" for row in rows[1:])
    return "\n".join(lines)


def _md_inline_host(host: Element) -> str:
    raw = _md_inline(host)
    if _BR not in raw:  # one line: what the join below gives for a single piece
        return collapse_ws(raw).strip()
    lines = (collapse_ws(line).strip() for line in raw.split(_BR))
    return "  \n".join(line for line in lines if line)


def _md_inline(el: Element) -> str:
    text = el.text
    if not len(el):
        return _md_escape(text) if text else ""
    parts = [_md_escape(text)] if text else []
    for child in el:
        parts.append(_md_element(child))
        tail = child.tail
        if tail:
            parts.append(_md_escape(tail))
    return "".join(parts)


def _md_element(el: Element) -> str:
    tag = el.tag
    if tag == "br":
        return _BR
    if tag == "img":
        return _md_image(el)
    if tag == "code":
        source = "".join(el.itertext())
        ticks = "`"
        while ticks in source:
            ticks += "`"
        pad = " " if source.startswith("`") or source.endswith("`") else ""
        return f"{ticks}{pad}{source}{pad}{ticks}" if source.strip() else source
    inner = _md_inline(el)
    if tag == "a":
        text = inner.strip() or _md_escape(el.get("href", ""))
        return f"[{text}]({_md_url(el.get('href', ''))})"
    marks = _EMPHASIS.get(str(tag))
    if marks is None or not inner.strip():
        return inner
    stripped = inner.strip()
    lead = inner[: len(inner) - len(inner.lstrip())]
    trail = inner[len(inner.rstrip()) :]
    return f"{lead}{marks}{stripped}{marks}{trail}"


def _md_image(img: Element) -> str:
    src = img.get("src")
    return f"![{_md_escape(img.get('alt', ''))}]({_md_url(src)})" if src else ""


def _md_url(url: str) -> str:
    return (
        url.replace(" ", "%20")
        .replace("(", "%28")
        .replace(")", "%29")
        .replace("<", "%3C")
        .replace(">", "%3E")
    )


def _md_escape(text: str) -> str:
    # Most text runs have none of the special characters: eight substring scans (C loops)
    # tell faster than a regex search or a set test, and no substitution pass is needed.
    if not (
        "\\" in text
        or "`" in text
        or "*" in text
        or "[" in text
        or "]" in text
        or "<" in text
        or ">" in text
        or "_" in text
    ):
        return text
    return _MD_SPECIAL_RE.sub(r"\\\g<0>", text)


def _escape_line_start(text: str) -> str:
    match = _MD_LINE_START_RE.match(text)  # anchored: the one place a substitution could go
    if match is None:
        return text
    return match.group(1) + "\\" + match.group(2) + text[match.end() :]


# -- one line of text from a title or summary -------------------------------


# Text without "<" or "&" comes out of libxml2 unchanged but for these (lone surrogates
# become "?", a byte order mark is dropped) and for whitespace that is collapsed anyway.
_PARSER_ALTERS_RE = re.compile(r"[\ud800-\udfff\ufeff]")
_TAG_LIKE_RE = re.compile(r"</?[a-zA-Z][^>]*>|&(?:#\d+|#x[0-9a-fA-F]+|[a-zA-Z]{2,8});")


def plain_text(fragment: str, *, is_html: bool = True) -> str:
    """One line of plain text from a small HTML fragment (a title, a summary).

    Text that is not declared HTML is still read as HTML when it carries tags
    or entities, because feeds double-escape and mislabel titles freely.
    """
    if not fragment:
        return ""
    if is_html or _TAG_LIKE_RE.search(fragment):
        cleaned = clean_chars(fragment)
        if "<" not in cleaned and "&" not in cleaned and not _PARSER_ALTERS_RE.search(cleaned):
            # No markup: libxml2 would hand the text back as it is (most titles and summaries).
            return _WS_RE.sub(" ", cleaned).strip()
        body = _parse_once(cleaned)
        if body is None:
            raise CleanError("title or summary HTML is nested too deeply")
        etree.strip_elements(body, *DROP_TAGS, with_tail=False)
        for block in body.iter(*BLOCK_TAGS, "br"):
            block.tail = " " + (block.tail or "")  # adjacent blocks must not glue their words
        fragment = "".join(body.itertext())
    return _WS_RE.sub(" ", clean_chars(fragment)).strip()
