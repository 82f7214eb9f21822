"""The last word on stored HTML: serialise the cleaned tree and pass it through nh3.

The structural pass already rebuilds a small tree, but stored HTML is shown
to readers, so it gets a second, independent allowlist in a different
parser (html5ever, inside nh3). A bug in the structural pass can then cost
formatting, never a script, an event handler or a ``javascript:`` URL.
"""

from __future__ import annotations

import functools

import nh3
from lxml import etree

from ingestd.exceptions import CleanError

from .html import Element

# fmt: off
TAGS = frozenset({
    "p", "h2", "h3", "h4", "ul", "ol", "li", "blockquote", "pre", "code", "a", "img", "figure",
    "figcaption", "table", "thead", "tbody", "tr", "th", "td", "br", "em", "strong", "b", "i", "sup",
    "sub", "hr",
})
# fmt: on
ATTRIBUTES = {"a": {"href"}, "img": {"src", "alt"}}
URL_SCHEMES = frozenset({"http", "https", "mailto"})


def sanitize(root: Element, code_classes: set[str] | frozenset[str] = frozenset()) -> str:
    """Serialise ``root``'s content (not the wrapper) as allowlisted HTML.

    ``code_classes`` are the ``language-*`` classes the builder vetted; nh3
    keeps exactly those on ``<code>`` so highlighters still know the language.
    """
    markup = etree.tostring(root, method="html", encoding="unicode")
    return sanitize_html(markup, code_classes)


def sanitize_html(markup: str, code_classes: set[str] | frozenset[str] = frozenset()) -> str:
    """nh3 with our allowlist; the wrapper ``div`` is not allowed, so it is unwrapped."""
    try:
        return _cleaner(frozenset(code_classes)).clean(markup).strip()
    except BaseException as exc:  # nh3 surfaces Rust panics as a BaseException subclass
        if isinstance(exc, KeyboardInterrupt | SystemExit):
            raise
        raise CleanError(f"sanitizer failed: {exc}") from exc


@functools.lru_cache(maxsize=256)
def _cleaner(code_classes: frozenset[str]) -> nh3.Cleaner:
    """One nh3 ``Cleaner`` per set of code classes: building the allowlist costs as much as small cleans.

    Same options as a one-off ``nh3.clean``; cached per process (workers build their own).
    """
    return nh3.Cleaner(
        tags=set(TAGS),
        clean_content_tags={"script", "style"},
        attributes={tag: set(names) for tag, names in ATTRIBUTES.items()},
        url_schemes=set(URL_SCHEMES),
        strip_comments=True,
        link_rel="noopener noreferrer",
        allowed_classes={"code": set(code_classes)} if code_classes else None,
    )
