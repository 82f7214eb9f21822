"""Substack rules: turn Substack's editor markup into plain content before the structural pass.

Substack posts arrive with a web page's chrome inside ``content:encoded``:
image zoom wrappers with ``srcset`` variants, subscribe forms, share and
comment buttons, polls, footnote machinery and embeds serialised as JSON in
``data-attrs``. These rules rewrite the *input* tree in one pass so that the
generic structural pass (``html.Builder``) only sees ordinary HTML: one
``<figure>`` per captioned image pointing at the original asset, links for
embeds, ``[n]`` markers and an ordered list of notes for footnotes.
"""

from __future__ import annotations

import functools
import json
import re
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

from lxml import etree

from ingestd.models import FeedContext, ParsedEntry

from . import urls
from .html import Element, append_text, classes, drop

_MARKERS = ("captioned-image-container", "subscription-widget-wrap", "substackcdn.com/image/fetch")
_REMOVE = frozenset(
    {
        "image-link-expand",
        "captioned-button-wrap",
        "poll-embed",
        "header-anchor-parent",
        "header-anchor",
        "restack-image",
        "view-image",
        "subscribe-widget",
        "community-chat",
        "install-substack-app-embed",
        "install-substack-app-embed-web",
        "sponsorship-campaign-embed",
        "comment-button",
        "share-dialog",
    }
)
_REMOVE_PREFIXES = ("subscription-widget", "subscribe-widget", "install-substack-app", "sponsorship-")
_ACTION_TEXTS = frozenset(
    {
        "subscribe",
        "subscribe now",
        "share",
        "leave a comment",
        "comment",
        "give a gift subscription",
        "gift a subscription",
        "upgrade to paid",
        "get 7 day free trial",
        "get 30 day free trial",
        "restack",
        "share this post",
        "refer a friend",
        "pledge your support",
    }
)
_ACTION_URL_RE = re.compile(
    r"(?:/subscribe(?:\?|$)|[?&]action=share|utm_content=share|/comments/?(?:\?|$)|/gift(?:[/?]|$)|/leaderboard|"
    r"[?&]ref=|/account(?:[/?]|$)|/app-link)",
    re.IGNORECASE,
)
_READ_MORE = frozenset({"read more", "keep reading", "continue reading", "read the full post", "read more ›"})


def is_substack(entry: ParsedEntry, feed: FeedContext, html: str) -> bool:
    """Whether Substack's rules apply: by generator, header, host, or the markup itself."""
    if feed.substack_header or "substack" in feed.generator.lower():
        return True
    for url in (feed.url, feed.site_url, entry.link):
        host = _host(url)
        if host == "substack.com" or host.endswith(".substack.com"):
            return True
    return any(marker in html for marker in _MARKERS)


# Every class token _classify looks at; an element with none of them (and no removal prefix)
# has no rule.
_TOKENS = _REMOVE | {
    "captioned-image-container", "image-link", "paywall-jump", "button-wrapper", "footnote-anchor",
    "footnote", "latex-rendered", "youtube-wrap", "tweet", "twitter-embed", "embedded-post-wrap",
    "digest-post-embed", "pullquote", "mention-wrap", "highlighted_code_block",
}  # fmt: skip
_WITH_CLASS = etree.XPath("descendant-or-self::*[@class]")


@functools.lru_cache(maxsize=1024)
def _host(url: str | None) -> str:
    """The lower-cased host of ``url``; cached, as every entry of a feed asks about the feed's URLs."""
    if not url:
        return ""
    try:
        return (urlsplit(url.strip()).hostname or "").lower()
    except ValueError:
        return ""


def _attrs(el: Element) -> dict[str, Any]:
    raw = el.get("data-attrs")
    if not raw:
        return {}
    try:
        value = json.loads(raw)
    except ValueError:
        return {}
    return value if isinstance(value, dict) else {}


def _str(value: object) -> str:
    return value.strip() if isinstance(value, str) else ""


@dataclass(slots=True)
class _Rules:
    base: str | None
    paywalled: bool = False

    def apply(self, body: Element) -> None:
        actions: list[tuple[str, Element]] = []
        # Only elements with a class can match a rule: libxml2 finds them (in document
        # order, ``body`` included) without a Python step per element.
        for el in _WITH_CLASS(body):
            tokens = el.get("class").split()
            if _TOKENS.isdisjoint(tokens) and not any(t.startswith(_REMOVE_PREFIXES) for t in tokens):
                continue  # no rule looks at any of these classes (or there are none)
            action = self._classify(el, tokens)
            if action:
                actions.append((action, el))
        notes: list[tuple[int, Element]] = []
        for action, el in actions:
            if action == "footnote":
                note = self._footnote(el)
                if note:
                    notes.append(note)
            else:
                getattr(self, "_" + action)(el)
        if notes:
            _append_notes(body, notes)

    def _classify(self, el: Element, tokens: list[str]) -> str | None:
        token_set = set(tokens)
        if token_set & _REMOVE or any(t.startswith(_REMOVE_PREFIXES) for t in tokens):
            return "remove"
        if "captioned-image-container" in token_set or ("image-link" in token_set and el.tag == "a"):
            return "image"
        if "paywall-jump" in token_set:
            return "paywall"
        if "button-wrapper" in token_set and el.tag == "p":
            return "button"
        if "footnote-anchor" in token_set:
            return "anchor"
        if "footnote" in token_set and el.tag == "div":
            return "footnote"
        if "latex-rendered" in token_set:
            return "latex"
        if "youtube-wrap" in token_set:
            return "youtube"
        if token_set & {"tweet", "twitter-embed"} and el.tag == "div":
            return "tweet"
        if token_set & {"embedded-post-wrap", "digest-post-embed"}:
            return "post"
        if "pullquote" in token_set:
            return "pullquote"
        if "mention-wrap" in token_set:
            return "mention"
        if "highlighted_code_block" in token_set:
            return "code"
        return None

    def _replace(self, el: Element, new: Element | None) -> None:
        parent = el.getparent()
        if parent is None:
            return
        if new is None:
            drop(el)
            return
        new.tail = el.tail
        parent.replace(el, new)

    def _remove(self, el: Element) -> None:
        drop(el)

    def _paywall(self, el: Element) -> None:
        self.paywalled = True
        drop(el)

    def _image(self, el: Element) -> None:
        """One ``figure > img + figcaption`` at the original asset, chrome and variants gone."""
        img = next(el.iter("img"), None)
        if img is None:
            self._replace(el, None)
            return
        attrs = _attrs(img)
        src = _str(attrs.get("src"))
        if urls.scheme_of(src) not in urls.WEB_SCHEMES:
            src = img.get("src") or ""
        src = urls.original_image_url(src)
        figure = etree.Element("figure")
        out = etree.SubElement(figure, "img", src=src, alt=_str(attrs.get("alt")) or img.get("alt") or "")
        for key in ("width", "height"):
            value = attrs.get(key) or img.get(key)
            if value is not None:
                out.set(key, str(value))
        caption = next(el.iter("figcaption"), None)
        if caption is not None:
            caption.tail = None
            figure.append(caption)
        self._replace(el, figure)

    def _button(self, el: Element) -> None:
        """Substack's own CTAs vanish; a button pointing off-platform is author content: keep its link."""
        attrs = _attrs(el)
        link = next(el.iter("a"), None)
        url = _str(attrs.get("url")) or (link.get("href", "") if link is not None else "")
        text = _str(attrs.get("text")) or ("".join(link.itertext()).strip() if link is not None else "")
        host = _host(url)
        if (
            not url
            or not text
            or text.lower() in _ACTION_TEXTS
            or _ACTION_URL_RE.search(url)
            or host == "substack.com"
            or (host.endswith(".substack.com") and "/p/" not in url)
        ):
            drop(el)
            return
        para = etree.Element("p")
        etree.SubElement(para, "a", href=url).text = text
        self._replace(el, para)

    def _anchor(self, el: Element) -> None:
        number = "".join(el.itertext()).strip()
        if not number:
            drop(el)
            return
        sup = etree.Element("sup")
        sup.text = f"[{number}]"
        self._replace(el, sup)

    def _footnote(self, el: Element) -> tuple[int, Element] | None:
        number_el = next((a for a in el.iter("a") if "footnote-number" in classes(a)), None)
        content = next((d for d in el.iter("div") if "footnote-content" in classes(d)), None)
        drop(el)
        if number_el is None or content is None:
            return None
        try:
            number = int("".join(number_el.itertext()).strip())
        except ValueError:
            return None
        return number, content

    def _latex(self, el: Element) -> None:
        expression = _str(_attrs(el).get("persistentExpression"))
        if not expression:
            self._replace(el, None)
            return
        pre = etree.Element("pre")
        etree.SubElement(pre, "code", {"class": "language-latex"}).text = expression
        self._replace(el, pre)

    def _youtube(self, el: Element) -> None:
        attrs = _attrs(el)
        video = _str(attrs.get("videoId"))
        if not re.fullmatch(r"[\w-]{6,20}", video):
            frame = next(el.iter("iframe"), None)
            match = re.search(r"/embed/([\w-]{6,20})", frame.get("src", "") if frame is not None else "")
            video = match.group(1) if match else ""
        if not video:
            self._replace(el, None)
            return
        url = f"https://www.youtube.com/watch?v={video}"
        start = attrs.get("startTime")
        if isinstance(start, int | float) and start > 0:
            url += f"&t={int(start)}s"
        para = etree.Element("p")
        etree.SubElement(para, "a", href=url).text = f"YouTube video: {url}"
        self._replace(el, para)

    def _tweet(self, el: Element) -> None:
        attrs = _attrs(el)
        url = _str(attrs.get("url"))
        text = _str(attrs.get("full_text"))
        if not text:
            body = next((d for d in el.iter() if "tweet-text" in classes(d)), None)
            text = " ".join("".join(body.itertext()).split()) if body is not None else ""
        if not url:
            link = next((a for a in el.iter("a") if "/status/" in a.get("href", "")), None)
            url = link.get("href", "") if link is not None else ""
        name, user = _str(attrs.get("name")), _str(attrs.get("username"))
        author = " ".join(part for part in (name, f"(@{user})" if user else "") if part)
        quote = etree.Element("blockquote")
        if text:
            etree.SubElement(quote, "p").text = text
        para = etree.SubElement(quote, "p")
        para.text = f"— {author} " if author else ""
        if url:
            etree.SubElement(para, "a", href=url).text = url
        self._replace(el, quote if len(quote) and ("".join(quote.itertext()).strip()) else None)

    def _post(self, el: Element) -> None:
        attrs = _attrs(el)
        url = _str(attrs.get("canonical_url")) or _str(attrs.get("url"))
        title = _str(attrs.get("title"))
        if not url or not title:
            return  # nothing structured to offer: let the generic pass read what is there
        quote = etree.Element("blockquote")
        para = etree.SubElement(quote, "p")
        etree.SubElement(para, "a", href=url).text = title
        publication = _str(attrs.get("publication_name"))
        if publication:
            append_text(para, f" — {publication}")
        text = _str(attrs.get("truncated_body_text")) or _str(attrs.get("caption"))
        if text:
            etree.SubElement(quote, "p").text = text
        self._replace(el, quote)

    def _pullquote(self, el: Element) -> None:
        el.tag = "blockquote"

    def _mention(self, el: Element) -> None:
        attrs = _attrs(el)
        name = _str(attrs.get("name"))
        if name and not "".join(el.itertext()).strip():
            url = _str(attrs.get("url"))
            if url:
                etree.SubElement(el, "a", href=url).text = name
            else:
                el.text = name

    def _code(self, el: Element) -> None:
        language = _str(_attrs(el).get("language"))
        pre = next(el.iter("pre"), None)
        if pre is not None and language and not pre.get("data-language"):
            pre.set("data-language", language)


def _append_notes(body: Element, notes: list[tuple[int, Element]]) -> None:
    """Footnotes go last, as an ordered list when numbered 1..n, else as ``[n]`` paragraphs."""
    notes.sort(key=lambda note: note[0])
    sequential = [number for number, _ in notes] == list(range(1, len(notes) + 1))
    block = etree.SubElement(body, "ol" if sequential else "div")
    for number, content in notes:
        item = etree.SubElement(block, "li" if sequential else "div")
        if sequential:
            item.text = content.text
        else:
            marker = etree.SubElement(item, "sup")
            marker.text = f"[{number}]"
            marker.tail = " " + (content.text or "")
        item.extend(list(content))


def apply_rules(body: Element, base: str | None) -> bool:
    """Rewrite Substack markup in ``body`` in place; return whether the post is paywalled."""
    rules = _Rules(base)
    rules.apply(body)
    return rules.paywalled


def trailing_read_more(root: Element) -> bool:
    """Remove a final lone "Read more" link paragraph (a truncated paid post); report it."""
    if not len(root):
        return False
    last = root[-1]
    if last.tag != "p" or last.find("a") is None:
        return False
    text = " ".join("".join(last.itertext()).split()).lower().rstrip(" .…→›»")
    if text not in {t.rstrip(" .…→›»") for t in _READ_MORE}:
        return False
    root.remove(last)
    return True
