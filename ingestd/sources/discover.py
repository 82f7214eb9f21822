"""Feed autodiscovery: the feeds a web page announces with <link rel="alternate">.

Used when a user subscribes to a site rather than a feed (at subscription
time only: a subscribed feed is never silently switched), and to tell the
user which feed a subscribed URL that now serves HTML points to.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from urllib.parse import urljoin, urlsplit

from lxml import etree, html

from ingestd.exceptions import FetchError, ParseError
from ingestd.pipeline.fetch import Fetcher, FetchPolicy
from ingestd.pipeline.parse import parse_feed

FEED_TYPES = (
    "application/rss+xml",
    "application/atom+xml",
    "application/feed+json",
    "application/json",
    "application/rdf+xml",
    "application/xml",
    "text/xml",
)
PAGE_OR_FEED = "application/rss+xml, application/atom+xml, application/feed+json, text/html;q=0.9, */*;q=0.5"


def discover_feed_links(page: bytes, base_url: str) -> list[str]:
    """Absolute http(s) URLs of the feeds ``page`` links to, in document order, best types first."""
    if not page.strip():
        return []
    try:
        doc = html.document_fromstring(page)
    except (etree.ParserError, ValueError):
        return []
    base = doc.find(".//base")
    href_base = urljoin(base_url, base.get("href", "")) if base is not None else base_url
    found: list[tuple[int, int, str]] = []
    for index, link in enumerate(doc.iter("link")):
        rel = (link.get("rel") or "").lower().split()
        kind = (link.get("type") or "").lower().split(";")[0].strip()
        href = (link.get("href") or "").strip()
        if "alternate" not in rel or kind not in FEED_TYPES or not href:
            continue
        url = urljoin(href_base, href)
        if urlsplit(url).scheme not in ("http", "https"):
            continue
        found.append((FEED_TYPES.index(kind), index, url))
    seen: set[str] = set()
    result = []
    for _rank, _index, url in sorted(found):
        if url not in seen:
            seen.add(url)
            result.append(url)
    return result


def substack_feed_url(url: str) -> str | None:
    """``https://name.substack.com[/...]`` -> its ``/feed``; None for other URLs."""
    parts = urlsplit(url)
    host = (parts.hostname or "").lower()
    if (
        parts.scheme in ("http", "https")
        and host.endswith(".substack.com")
        and parts.path.rstrip("/") in ("", "/")
    ):
        return f"https://{host}/feed"
    return None


async def resolve_feed_url(url: str, fetcher: Fetcher) -> tuple[str, str]:
    """The feed to subscribe to for ``url``, and a note on how it was found.

    A Substack publication's home maps to its ``/feed``; a web page is
    searched for ``<link rel="alternate">``; a feed is itself. The request
    goes through the fetcher, so the SSRF guard and limits apply. When the
    URL cannot be checked (offline), it is subscribed as given.
    """
    substack = substack_feed_url(url)
    if substack:
        return substack, "Substack publication"
    try:
        result = await fetcher.get(url, accept=PAGE_OR_FEED)
    except FetchError as e:
        return url, f"not checked: {e}"
    try:
        parse_feed(result.content, url=result.final_url, headers=dict(result.headers), max_entries=1)
    except ParseError:
        links = discover_feed_links(result.content, result.final_url)
        if links:
            return links[0], f"discovered on {url}"
        raise ParseError(f"{url} is neither a feed nor a page that links to one", url) from None
    return url, "feed"


def resolve_feed_urls(urls: Sequence[str], policy: FetchPolicy) -> list[tuple[str, str]]:
    """``resolve_feed_url`` for several URLs with one fetcher; (feed URL, note) each, or an error note."""

    async def run() -> list[tuple[str, str]]:
        async with Fetcher(policy) as fetcher:
            out: list[tuple[str, str]] = []
            for url in urls:
                try:
                    out.append(await resolve_feed_url(url, fetcher))
                except ParseError as e:
                    out.append(("", str(e)))
            return out

    return asyncio.run(run())
