"""The clean stage: one untrusted ``ParsedEntry`` in, one ``CleanArticle`` out.

``clean_entry`` is pure and top-level so the orchestrator can run it in
worker processes. The entry's HTML is parsed once (``html.parse``),
Substack's markup is rewritten in place when it applies (``substack``), the
body is rebuilt as a small semantic tree (``html.Builder``), and that one
tree is rendered three ways: sanitized HTML (``sanitize``, nh3 last), plain
text and Markdown (``render``). Bump ``CLEANER_VERSION`` on any change of
rules: it is stored with each article so ``ingestd reclean`` can re-derive
the renderings from ``raw_html``.
"""

from __future__ import annotations

import functools
import html as htmlmod
import math
import re
import unicodedata
from typing import Any

from lxml import etree

from ingestd.exceptions import CleanError
from ingestd.models import CleanArticle, FeedContext, Image, ParsedEntry

from . import html, render, sanitize, substack, urls
from .urls import canonical_url

__all__ = ["CLEANER_VERSION", "canonical_url", "clean_entry"]

CLEANER_VERSION = 1

WORDS_PER_MINUTE = 230
SUMMARY_CHARS = 300
MIN_DETECT_CHARS = 200  # below this, language guesses are noise
_LANG_RE = re.compile(r"^([a-zA-Z]{2,3})(?:[-_][a-zA-Z0-9]{1,8})*$")
_ISO639_2 = {
    "eng": "en", "ita": "it", "fra": "fr", "fre": "fr", "deu": "de", "ger": "de", "spa": "es",
    "por": "pt", "nld": "nl", "dut": "nl", "rus": "ru", "zho": "zh", "chi": "zh", "jpn": "ja",
    "kor": "ko", "ara": "ar", "urd": "ur", "slk": "sk", "slo": "sk", "pol": "pl", "ces": "cs",
    "cze": "cs", "swe": "sv", "dan": "da", "nor": "no", "fin": "fi", "tur": "tr", "ukr": "uk",
    "ell": "el", "gre": "el", "heb": "he", "hin": "hi", "hun": "hu", "ron": "ro", "rum": "ro",
}  # fmt: skip


def clean_entry(entry: ParsedEntry, feed: FeedContext) -> CleanArticle:
    """Clean one entry; any failure of the HTML libraries becomes a ``CleanError``."""
    try:
        return _clean(entry, feed)
    except CleanError:
        raise
    except (etree.LxmlError, RecursionError, ValueError, UnicodeError) as exc:
        raise CleanError(f"could not clean entry {entry.guid or entry.link!r}: {exc}") from exc


def _clean(entry: ParsedEntry, feed: FeedContext) -> CleanArticle:
    raw = entry.content_html if entry.content_html.strip() else entry.summary_html
    base = urls.safe_base(entry.base_url, entry.link, feed.url)
    is_substack = substack.is_substack(entry, feed, raw)

    body = html.parse(raw) if raw.strip() else etree.Element("body")
    paywalled = substack.apply_rules(body, base) if is_substack else False
    builder = html.Builder(base)
    root = builder.build(body)
    if is_substack and substack.trailing_read_more(root):
        paywalled = True

    content_html = sanitize.sanitize(root, builder.languages) if len(root) else ""
    text, words = render.render_text(root)
    text = _nfc(text)
    markdown = _nfc(render.render_markdown(root))

    url = urls.resolve(entry.link, urls.safe_base(feed.url, feed.site_url), urls.WEB_SCHEMES)
    origin = (
        urls.resolve(entry.orig_link, urls.safe_base(feed.url), urls.WEB_SCHEMES) if entry.orig_link else None
    )
    images = tuple(builder.images)
    has_content = bool(entry.content_html.strip())
    subtitle = render.plain_text(entry.summary_html) if is_substack and has_content else ""
    if has_content and entry.summary_html.strip() and not is_substack:
        summary = _truncate(render.plain_text(entry.summary_html))
    else:
        summary = _summary_of(text)

    return CleanArticle(
        guid=entry.guid,
        url=url,
        canonical_url=canonical_url(origin or url),
        title=render.plain_text(entry.title, is_html=entry.title_is_html),
        author=render.plain_text(entry.author, is_html=False),
        published_at=entry.published_at,
        updated_at=entry.updated_at,
        summary=summary,
        subtitle=subtitle,
        content_html=content_html,
        content_text=text,
        content_markdown=markdown,
        word_count=words,
        reading_time=math.ceil(words / WORDS_PER_MINUTE),
        image_url=_lead_image(entry, images, base),
        images=images,
        language=normalize_language(entry.language)
        or normalize_language(feed.language)
        or detect_language(text),
        is_paywalled=paywalled,
        body_source="feed",
        cleaner_version=CLEANER_VERSION,
        categories=entry.categories,
        raw_html=raw,
    )


def _nfc(text: str) -> str:
    return text if text.isascii() else unicodedata.normalize("NFC", text)


def _summary_of(text: str) -> str:
    """``_truncate(" ".join(text.split()))`` without splitting a whole long article.

    Joining the words of a prefix gives a prefix of the joined whole, so once
    that is longer than the limit it decides the summary on its own.
    """
    if len(text) > 4 * SUMMARY_CHARS:
        head = " ".join(text[: 4 * SUMMARY_CHARS].split())
        if len(head) > SUMMARY_CHARS:
            return _truncate(head)
    return _truncate(" ".join(text.split()))


def _truncate(text: str, limit: int = SUMMARY_CHARS) -> str:
    """Cut at a word boundary so a summary never ends mid-word."""
    if len(text) <= limit:
        return text
    cut = text[: limit - 1]
    space = cut.rfind(" ")
    if space > limit // 2:
        cut = cut[:space]
    return cut.rstrip(" ,;:.-–—") + "…"


def _lead_image(entry: ParsedEntry, images: tuple[Image, ...], base: str | None) -> str | None:
    """The first body image, else the entry's own image, else an image enclosure."""
    if images:
        return images[0].url
    candidates = [entry.image_url] + [
        enc.url
        for enc in entry.enclosures
        if enc.type.startswith("image/")
        or (not enc.type and re.search(r"\.(?:jpe?g|png|gif|webp|avif)$", enc.url, re.I))
    ]
    for candidate in candidates:
        url = urls.resolve(candidate, base, urls.WEB_SCHEMES, strip=False)
        if url:
            return urls.original_image_url(url)
    return None


def normalize_language(value: str | None) -> str | None:
    """An ISO 639-1 code ("en") from a feed's language tag ("en-US", "EN", "eng"), else None."""
    if not value:
        return None
    match = _LANG_RE.match(value.strip())
    if not match:
        return None
    code = match.group(1).lower()
    if len(code) == 3:
        return _ISO639_2.get(code)
    return code


def detect_language(text: str) -> str | None:
    """Guess the language of a long enough text with py3langid; None when unsure."""
    if len(text) < MIN_DETECT_CHARS:
        return None
    identifier = _identifier()
    language, _confidence = identifier.classify(htmlmod.unescape(text[:2000]))
    return language if isinstance(language, str) and len(language) == 2 else None


@functools.cache
def _identifier() -> Any:
    """Load the language model once per process, on first use (it takes ~0.5 s)."""
    from py3langid.langid import MODEL_FILE, LanguageIdentifier  # type: ignore[import-untyped]

    return LanguageIdentifier.from_model_file(MODEL_FILE, norm_probs=True, min_confidence=0.8)
