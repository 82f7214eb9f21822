"""URL hygiene for the clean stage: resolution, scheme policy, tracking parameters.

Every URL that leaves clean (links, image sources, the article URL) goes
through here, so the scheme allowlist lives in one place: a publisher's
``javascript:`` link or a hostile ``xml:base`` can never become a stored URL.
``canonical_url`` is the benchmark's identity rule for a story and is kept
deliberately narrow (see its docstring) so dedupe does not merge too much.
"""

from __future__ import annotations

import re
from urllib.parse import unquote, urljoin, urlsplit, urlunsplit

#: Query keys that only identify a campaign or a click, never the document.
TRACKING_PARAMS = frozenset(
    {
        "fbclid",
        "gclid",
        "dclid",
        "msclkid",
        "mc_cid",
        "mc_eid",
        "ref_src",
        "_hsenc",
        "_hsmi",
        "igshid",
        "yclid",
    }
)

LINK_SCHEMES = frozenset({"http", "https", "mailto"})
WEB_SCHEMES = frozenset({"http", "https"})
_DEFAULT_PORTS = {"http": 80, "https": 443}

# Browsers ignore ASCII whitespace and C0 controls inside a scheme
# ("java\tscript:"), so they must be removed before the scheme is judged.
_URL_JUNK_RE = re.compile(r"[\x00-\x20\x7f]+")
_SCHEME_RE = re.compile(r"^([a-zA-Z][a-zA-Z0-9+.\-]*):")
_CDN_FETCH_RE = re.compile(r"^https?://substackcdn\.com/image/fetch/[^/]*/(.+)$", re.IGNORECASE)


SHARE_RE = re.compile(
    r"^https?://(?:[a-z0-9-]+\.)*(?:twitter\.com/(?:intent|share)|x\.com/intent|facebook\.com/share"
    r"|linkedin\.com/(?:shareArticle|sharing|cws/share)|reddit\.com/submit|pinterest\.com/pin/create"
    r"|tumblr\.com/(?:share|widgets/share)|news\.ycombinator\.com/submitlink|api\.whatsapp\.com/send"
    r"|wa\.me/\?|t\.me/share|getpocket\.com/(?:save|edit)|addtoany\.com|sharethis\.com"
    r"|feeds\.feedburner\.com/~ff)",
    re.IGNORECASE,
)
TRACKER_RE = re.compile(
    r"^https?://(?:[a-z0-9-]+\.)*(?:feeds\.feedburner\.com/~r/|feedburner\.google\.com/~r/"
    r"|pixel\.wp\.com/|stats\.wordpress\.com/|medium\.com/_/stat|pixel\.quantserve\.com/"
    r"|www\.google-analytics\.com/|sb\.scorecardresearch\.com/|pi\.feedsportal\.com/"
    r"|ad\.doubleclick\.net/|feeds\.wordpress\.com/|analytics\.twitter\.com/|pixel\.substack\.com/"
    r"|eotrx\.substackcdn\.com/|ct\.pinterest\.com/|www\.facebook\.com/tr)",
    re.IGNORECASE,
)


def is_share_link(url: str) -> bool:
    """ "Share on X" style links: chrome, not content."""
    return bool(SHARE_RE.match(url))


def is_tracker(url: str) -> bool:
    """Images that exist to count readers (feed and analytics pixels)."""
    return bool(TRACKER_RE.match(url))


def _is_tracking_key(key: str) -> bool:
    key = unquote(key).lower()
    return key.startswith("utm_") or key in TRACKING_PARAMS


def strip_tracking(url: str) -> str:
    """Drop tracking parameters, keeping every other parameter byte for byte and in order."""
    if "?" not in url:
        return url
    head, sep, fragment = url.partition("#")
    base, _, query = head.partition("?")
    kept = [part for part in query.split("&") if part and not _is_tracking_key(part.partition("=")[0])]
    result = base + ("?" + "&".join(kept) if kept else "")
    return result + sep + fragment


def scheme_of(url: str) -> str | None:
    """The lower-cased scheme of an absolute URL, or None for a relative one."""
    match = _SCHEME_RE.match(url)
    return match.group(1).lower() if match else None


def resolve(
    href: str | None, base: str | None, schemes: frozenset[str] = LINK_SCHEMES, *, strip: bool = True
) -> str | None:
    """Resolve ``href`` against ``base`` and return it only if its scheme is allowed.

    Whitespace and control characters are removed first, because that is how
    ``java&#9;script:`` and `` JaVaScRiPt:`` smuggle a scheme past a naive check.
    """
    if not href:
        return None
    if " " in href or not href.isprintable():  # printable text has no junk but the space
        href = _URL_JUNK_RE.sub("", href)
        if not href:
            return None
    scheme = scheme_of(href)
    if scheme is None:
        if base is None or href.startswith("#"):
            return None
        try:
            href = urljoin(base, href)
        except ValueError:
            return None
        scheme = scheme_of(href)
    if scheme not in schemes:
        return None
    if scheme != "mailto" and not _has_netloc(href, scheme):
        return None
    return strip_tracking(href) if strip else href


def _has_netloc(href: str, scheme: str) -> bool:
    """Whether ``urlsplit(href)`` succeeds with a host part, mostly without calling it.

    For ASCII without brackets urlsplit cannot fail and its netloc is what
    follows ``scheme://`` up to the first ``/``, ``?`` or ``#``.
    """
    if href.isascii() and "[" not in href and "]" not in href:
        rest = href[len(scheme) + 1 :]
        return rest[:2] == "//" and len(rest) > 2 and rest[2] not in "/?#"
    try:
        return bool(urlsplit(href).netloc)
    except ValueError:
        return False


def safe_base(*candidates: str | None) -> str | None:
    """The first candidate that is an absolute http(s) URL: the only kind we resolve against."""
    for candidate in candidates:
        if candidate and scheme_of(candidate.strip()) in WEB_SCHEMES:
            return candidate.strip()
    return None


def original_image_url(url: str) -> str:
    """Undo Substack's image proxy: ``substackcdn.com/image/fetch/<params>/<encoded original>``.

    The proxied URL carries resizing parameters and a signature that change
    between renderings; the original asset is the stable identity of the image.
    """
    if "substackcdn.com/image/fetch/" not in url:
        return url
    match = _CDN_FETCH_RE.match(url)
    if not match:
        return url
    inner = match.group(1)
    if inner[:4].lower() != "http":
        return url
    if "%" in inner[:10]:
        inner = unquote(inner)
    return inner if scheme_of(inner) in WEB_SCHEMES else url


def canonical_url(url: str | None) -> str | None:
    """The story identity of a URL: the benchmark's rule and nothing more.

    Lower-cases scheme and host, drops the default port, the fragment and
    tracking parameters (``utm_*`` and click ids); keeps the path (case,
    trailing slash) and the other parameters exactly as they were. Returns
    None for anything that is not an absolute http(s) URL.
    """
    if not url:
        return None
    url = url.strip()
    scheme = scheme_of(url)
    if scheme not in WEB_SCHEMES:
        return None
    try:
        parts = urlsplit(url)
        host = parts.hostname
        port = parts.port
    except ValueError:
        return None
    if not host:
        return None
    netloc = f"[{host}]" if ":" in host else host
    if port is not None and port != _DEFAULT_PORTS[scheme]:
        netloc = f"{netloc}:{port}"
    userinfo = parts.netloc.rpartition("@")[0] if "@" in parts.netloc else ""
    if userinfo:
        netloc = f"{userinfo}@{netloc}"
    query = strip_tracking("?" + parts.query)[1:] if parts.query else ""
    return urlunsplit((scheme, netloc, parts.path, query, ""))


def largest_srcset(srcset: str | None) -> str | None:
    """The widest candidate of a ``srcset``: what an image without ``src`` would show at best."""
    best: tuple[float, str] | None = None
    for candidate in (srcset or "").split(","):
        parts = candidate.split()
        if not parts:
            continue
        size = 1.0
        if len(parts) > 1 and parts[1][:-1].replace(".", "", 1).isdigit():
            size = float(parts[1][:-1])
        if best is None or size > best[0]:
            best = (size, parts[0])
    return best[1] if best else None


def embed_link(src: str | None, base: str | None) -> tuple[str, str] | None:
    """A (url, label) link for a known video/audio embed; unknown embeds are dropped."""
    url = resolve(src, base, WEB_SCHEMES)
    if url is None:
        return None
    match = re.search(r"(?:youtube(?:-nocookie)?\.com/(?:embed/|watch\?v=)|youtu\.be/)([\w-]{6,})", url)
    if match:
        watch = f"https://www.youtube.com/watch?v={match.group(1)}"
        return watch, f"YouTube video: {watch}"
    match = re.search(r"player\.vimeo\.com/video/(\d+)", url)
    if match:
        page = f"https://vimeo.com/{match.group(1)}"
        return page, f"Vimeo video: {page}"
    if "open.spotify.com/" in url:
        return url.replace("/embed/", "/", 1), f"Spotify: {url.replace('/embed/', '/', 1)}"
    return None
