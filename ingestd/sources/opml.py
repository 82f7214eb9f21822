"""OPML import and export: the subscription list format every reader speaks."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from xml.sax.saxutils import quoteattr

from lxml import etree

from ingestd.exceptions import IngestdError


class OPMLError(IngestdError):
    """The file is not OPML we can read."""


@dataclass(frozen=True)
class Outline:
    url: str
    title: str = ""
    site_url: str | None = None
    category: str = ""


def read_opml(data: bytes) -> list[Outline]:
    """Every feed outline (``xmlUrl``), folders flattened into ``category``.

    The parser resolves no entities and fetches nothing: an OPML file is
    untrusted input like any feed.
    """
    parser = etree.XMLParser(resolve_entities=False, no_network=True, huge_tree=False, recover=True)
    try:
        root = etree.fromstring(data.lstrip(), parser=parser)
    except etree.XMLSyntaxError as e:
        raise OPMLError(f"not an OPML file: {e}") from e
    if root is None or etree.QName(root).localname.lower() != "opml":
        raise OPMLError("not an OPML file: the root element is not <opml>")
    found: list[Outline] = []
    seen: set[str] = set()

    def walk(node: etree._Element, folder: str) -> None:
        for child in node:
            if not isinstance(child.tag, str) or etree.QName(child).localname.lower() != "outline":
                continue
            attrs = {k.lower(): v for k, v in child.attrib.items()}
            title = (attrs.get("title") or attrs.get("text") or "").strip()
            url = (attrs.get("xmlurl") or "").strip()
            if url and url not in seen:
                seen.add(url)
                found.append(Outline(url, title, (attrs.get("htmlurl") or "").strip() or None, folder))
            walk(child, f"{folder}/{title}".strip("/") if not url else folder)

    body = next(
        (c for c in root if isinstance(c.tag, str) and etree.QName(c).localname.lower() == "body"), None
    )
    if body is None:
        raise OPMLError("not an OPML file: no <body>")
    walk(body, "")
    return found


def write_opml(outlines: Iterable[Outline], title: str = "ingestd subscriptions") -> str:
    lines = [
        '<?xml version="1.0" encoding="UTF-8"?>',
        '<opml version="2.0">',
        f"  <head><title>{_escape(title)}</title></head>",
        "  <body>",
    ]
    for o in outlines:
        attrs = f'type="rss" text={quoteattr(o.title or o.url)} title={quoteattr(o.title or o.url)}'
        attrs += f" xmlUrl={quoteattr(o.url)}"
        if o.site_url:
            attrs += f" htmlUrl={quoteattr(o.site_url)}"
        lines.append(f"    <outline {attrs}/>")
    lines += ["  </body>", "</opml>", ""]
    return "\n".join(lines)


def _escape(text: str) -> str:
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
