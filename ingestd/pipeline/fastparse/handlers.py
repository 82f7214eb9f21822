"""The fast path's element handlers, one per feedparser handler, under feedparser's names."""

from __future__ import annotations

from typing import Any

from feedparser.datetimes import _parse_date
from feedparser.urls import _urljoin, make_safe_absolute_uri

from ingestd.pipeline.fastparse.machine import (
    _FP_END,
    _FP_START,
    _HTML_TYPES,
    Machine,
    _Attrs,
    _Decline,
    _End,
    _enforce_href,
    _map_type,
    _Start,
)


class State(Machine):
    """feedparser's element handlers (mixin.py and namespaces/*.py), on ``Machine``."""

    def _cdf_common(self, a: _Attrs) -> None:
        if "lastmod" in a or "href" in a:
            raise _Decline  # CDF attributes: not ported

    def _start_rss(self, a: _Attrs) -> None:
        if not self.version or not self.version.startswith("rss"):
            version = a.get("version", "")
            known = {"0.91": "rss091u", "0.92": "rss092", "0.93": "rss093", "0.94": "rss094"}.get(version)
            self.version = known or ("rss20" if version.startswith("2.") else "rss")

    def _start_channel(self, a: _Attrs) -> None:
        self.infeed = 1
        self._cdf_common(a)

    def _start_feed(self, a: _Attrs) -> None:
        self.infeed = 1
        if not self.version:
            versions = {"0.1": "atom01", "0.2": "atom02", "0.3": "atom03"}
            self.version = versions.get(a.get("version", "")) or "atom"

    def _end_channel(self) -> None:
        self.infeed = 0

    def _start_image(self, a: _Attrs) -> None:
        context = self.context()
        if not self.inentry:
            context.setdefault("image", {})
        self.inimage, self.title_depth = 1, -1
        self.push("image", 0)

    def _end_image(self) -> None:
        self.pop("image")
        self.inimage = 0

    def _start_textinput(self, a: _Attrs) -> None:
        self.context().setdefault("textinput", {})
        self.intextinput, self.title_depth = 1, -1
        self.push("textinput", 0)

    def _end_textinput(self) -> None:
        self.pop("textinput")
        self.intextinput = 0

    def _start_author(self, a: _Attrs) -> None:
        self.inauthor = 1
        self.push("author", 1)
        self.context().setdefault("authors", []).append({})

    def _end_author(self) -> None:
        self.pop("author")
        self.inauthor = 0
        self.sync_author_detail()

    def _start_contributor(self, a: _Attrs) -> None:
        self.incontributor = 1
        self.context().setdefault("contributors", []).append({})
        self.push("contributor", 0)

    def _end_contributor(self) -> None:
        self.pop("contributor")
        self.incontributor = 0

    def _start_dc_contributor(self, a: _Attrs) -> None:
        self.incontributor = 1
        self.context().setdefault("contributors", []).append({})
        self.push("name", 0)

    def _end_dc_contributor(self) -> None:
        self._end_name()
        self.incontributor = 0

    def _end_name(self) -> None:
        value = self.pop("name")
        if self.inpublisher:
            self.save_author("name", value, "publisher")
        elif self.inauthor:
            self.save_author("name", value)
        elif self.incontributor:
            self.save_contributor("name", value)
        elif self.intextinput:
            self.context()["name"] = value

    def _end_width(self, key: str = "width") -> None:  # and height
        value = self.pop(key)
        try:
            value = int(value)
        except ValueError:
            value = 0
        if self.inimage:
            self.context()[key] = value

    def _end_url(self) -> None:
        value = self.pop("href")
        if self.inauthor:
            self.save_author("href", value)
        elif self.incontributor:
            self.save_contributor("href", value)

    def _end_email(self) -> None:
        value = self.pop("email")
        if self.inpublisher:
            self.save_author("email", value, "publisher")
        elif self.inauthor:
            self.save_author("email", value)
        elif self.incontributor:
            self.save_contributor("email", value)

    def _start_item(self, a: _Attrs) -> None:
        self.entries.append({})
        self.push("item", 0)
        self.inentry, self.guidislink, self.title_depth = 1, 0, -1
        about = a.get(self.standard("rdf:about"))
        if about:
            self.context()["id"] = about
        self._cdf_common(a)

    def _end_item(self) -> None:
        self.pop("item")
        self.inentry = self.has_content = 0

    def _end_language(self) -> None:
        self.lang = self.pop("language")

    def _end_webmaster(self) -> None:
        self.pop("publisher")
        self.sync_author_detail("publisher")

    def _start_itunes_owner(self, a: _Attrs) -> None:
        self.inpublisher = 1
        self.push("publisher", 0)

    def _end_itunes_owner(self) -> None:
        self.pop("publisher")
        self.inpublisher = 0
        self.sync_author_detail("publisher")

    def end_date(self, element: str) -> None:
        """``_end_published``, ``_end_updated``, ``_end_created``, ``_end_expirationdate``."""
        self.save(element + "_parsed", _parse_date(self.pop(element)), overwrite=True)

    def _start_category(self, a: _Attrs) -> None:
        self.add_tag(a.get("term"), a.get("scheme", a.get("domain")), a.get("label"))
        self.push("category", 1)

    def _end_category(self) -> None:
        value = self.pop("category")
        if not value:
            return
        tags = self.context()["tags"]
        if value and len(tags) and not tags[-1]["term"]:
            tags[-1]["term"] = value
        else:
            self.add_tag(value, None, None)

    def _start_itunes_category(self, a: _Attrs) -> None:
        self.add_tag(a.get("text"), "http://www.itunes.com/", None)
        self.push("category", 1)

    def _start_media_category(self, a: _Attrs) -> None:
        a.setdefault("scheme", "http://search.yahoo.com/mrss/category_schema")
        self._start_category(a)

    def _end_itunes_keywords(self, element: str = "itunes_keywords") -> None:
        value = self.pop(element)
        if value is None:
            return  # feedparser: None.split raises AttributeError, caught, then a no-op pop
        for term in value.split(","):
            if element == "tags":
                self.add_tag(term.strip(), None, None)
            elif term.strip():
                scheme = "http://www.itunes.com/" if element == "itunes_keywords" else None
                self.add_tag(term.strip(), scheme, None)

    def _end_media_keywords(self) -> None:
        self._end_itunes_keywords("media_keywords")

    def _end_tags(self) -> None:
        self._end_itunes_keywords("tags")

    def _start_cloud(self, a: _Attrs) -> None:
        self.context()["cloud"] = dict(a)

    def _start_link(self, a: _Attrs) -> None:
        a.setdefault("rel", "alternate")
        a.setdefault("type", "application/atom+xml" if a["rel"] == "self" else "text/html")
        context = self.context()
        a = _enforce_href(a)
        if "href" in a:
            a["href"] = _urljoin(self.baseuri or "", a["href"])
        context.setdefault("links", [])
        if not (self.inentry and self.inimage):
            context["links"].append(dict(a))
        if "href" not in a:
            self.push("link", self.infeed or self.inentry)
        elif a.get("rel") == "alternate" and _map_type(a.get("type", "")) in _HTML_TYPES:
            context["link"] = a["href"]

    def _end_link(self) -> None:
        self.pop("link")

    def _start_guid(self, a: _Attrs) -> None:
        self.guidislink = a.get("ispermalink", "true") == "true"
        self.push("id", 1)

    def _end_guid(self) -> None:
        value = self.pop("id")
        self.save("guidislink", self.guidislink and "link" not in self.context())
        if self.guidislink:
            self.save("link", value)

    def _start_title(self, a: _Attrs) -> None:
        self.push_content("title", a, "text/plain", self.infeed or self.inentry)

    def _end_title(self) -> None:
        if self.pop_content("title"):
            self.title_depth = self.depth

    def _end_media_title(self) -> None:
        title_depth = self.title_depth
        self._end_title()
        self.title_depth = title_depth

    def _start_description(self, a: _Attrs) -> None:
        if "summary" in self.context() and not self.has_content:
            self.summary_key = "content"
            self._start_content(a)
        else:
            self.push_content("description", a, "text/html", self.infeed or self.inentry)

    def _end_description(self) -> None:
        if self.summary_key == "content":
            self._end_content()
        else:
            self.pop_content("description")
        self.summary_key = None

    def _start_summary(self, a: _Attrs) -> None:
        if "summary" in self.context() and not self.has_content:
            self.summary_key = "content"
            self._start_content(a)
        else:
            self.summary_key = "summary"
            self.push_content("summary", a, "text/plain", 1)

    def _end_summary(self) -> None:
        if self.summary_key == "content":
            self._end_content()
        else:
            self.pop_content(self.summary_key or "summary")
        self.summary_key = None

    def _start_generator(self, a: _Attrs) -> None:
        if a:
            a = _enforce_href(a)
            if "href" in a:
                a["href"] = _urljoin(self.baseuri or "", a["href"])
        self.context()["generator_detail"] = dict(a)
        self.push("generator", 1)

    def _end_generator(self) -> None:
        value = self.pop("generator")
        context = self.context()
        if "generator_detail" in context:
            context["generator_detail"]["name"] = value

    def _start_enclosure(self, a: _Attrs) -> None:
        a = _enforce_href(a)
        context = self.context()
        a["rel"] = "enclosure"
        context.setdefault("links", []).append(dict(a))

    def _start_content(self, a: _Attrs) -> None:
        self.has_content = 1
        self.push_content("content", a, "text/plain", 1)
        if a.get("src"):
            self.contentparams["src"] = a["src"]
        self.push("content", 1)  # pushed twice, as in feedparser: one stays on its stack

    def _start_content_encoded(self, a: _Attrs) -> None:
        self.has_content = 1
        self.push_content("content", a, "text/html", 1)

    def _end_content(self) -> None:
        content_type = self.contentparams.get("type")
        if content_type is None:
            raise _Decline  # feedparser: AttributeError in map_content_type
        copy_to_summary = _map_type(content_type) in _HTML_TYPES | {"text/plain"}
        value = self.pop_content("content")
        if copy_to_summary:
            self.save("summary", value)

    def _end_newlocation(self) -> None:
        url = self.pop("newlocation")
        context = self.context()
        if context is self.feed and url is not None:
            context["newlocation"] = make_safe_absolute_uri(self.baseuri, url.strip())

    def _start_media_group(self, a: _Attrs) -> None:
        pass

    def _start_media_content(self, a: _Attrs) -> None:
        self.context().setdefault("media_content", []).append(a)

    def _start_media_thumbnail(self, a: _Attrs) -> None:
        context = self.context()
        context.setdefault("media_thumbnail", [])
        self.push("url", 1)
        context["media_thumbnail"].append(a)

    def _end_media_thumbnail(self) -> None:
        url = self.pop("url")
        context = self.context()
        if url is not None and url.strip() and "url" not in context["media_thumbnail"][-1]:
            context["media_thumbnail"][-1]["url"] = url

    def _start_media_credit(self, a: _Attrs) -> None:
        self.context().setdefault("media_credit", []).append(a)
        self.push("credit", 1)

    def _end_media_credit(self) -> None:
        credit = self.pop("credit")
        if credit is not None and credit.strip():
            self.context()["media_credit"][-1]["content"] = credit

    def start_media_attrs(self, a: _Attrs, key: str) -> None:
        """``_start_media_rating``, ``_restriction``, ``_license``: attributes, then text."""
        self.context().setdefault("media_" + key, a)
        self.push(key, 1)

    def end_media_attrs(self, key: str) -> None:
        value: Any = self.pop(key)
        if value is not None and value.strip():
            if key == "restriction":
                value = [cc.strip().lower() for cc in value.split(" ")]
            self.context()["media_" + key]["content"] = value

    def _start_media_player(self, a: _Attrs) -> None:
        self.push("media_player", 0)
        self.context()["media_player"] = dict(a)

    def _end_media_player(self) -> None:
        value = self.pop("media_player")
        self.context()["media_player"]["content"] = value

    def _start_itunes_image(self, a: _Attrs) -> None:
        self.push("itunes_image", 0)
        href = a.get("href") or a.get("url")
        if href:
            self.context()["image"] = {"href": href}

    def _end_itunes_block(self) -> None:
        value = self.pop("itunes_block", 0)
        self.context()["itunes_block"] = 1 if value in ("yes", "Yes") else 0

    def _end_itunes_explicit(self) -> None:
        value = self.pop("itunes_explicit", 0)
        self.context()["itunes_explicit"] = (None, False, True)[
            (value == "yes" and 2) or value == "clean" or 0
        ]


_MEDIA_ATTRS = ("rating", "restriction", "license")  # media:<key>, text pushed as <key>
# feedparser handlers that only push an element (key: element, expecting text), that are plain
# text constructs (key: element, default type), that end with a date; then feedparser's aliases.
_PUSHES = {
    "name": ("name", 0), "email": ("email", 0), "width": ("width", 0), "height": ("height", 0),
    "url": ("href", 1), "language": ("language", 1), "webmaster": ("publisher", 1), "tags": ("tags", 1),
    "published": ("published", 1), "updated": ("updated", 1), "created": ("created", 1),
    "expirationdate": ("expired", 1), "newlocation": ("newlocation", 1),
}  # fmt: skip
_CONSTRUCTS = {"subtitle": ("subtitle", "text/plain"), "rights": ("rights", "text/plain"),
               "info": ("info", "text/plain")}  # fmt: skip
_DATES = {"published": "published", "updated": "updated", "created": "created", "expirationdate": "expired"}
_ALIASES = {
    "author": "managingeditor dc_author dc_creator itunes_author", "name": "itunes_name",
    "url": "uri homepage", "email": "itunes_email", "subtitle": "tagline itunes_subtitle",
    "rights": "copyright dc_rights", "info": "feedburner_browserfriendly", "item": "entry",
    "language": "dc_language", "webmaster": "dc_publisher", "published": "issued pubdate dcterms_issued",
    "updated": "modified lastbuilddate dc_date dcterms_modified", "created": "dcterms_created",
    "category": "keywords dc_subject itunes_category media_category", "guid": "id",
    "title": "dc_title media_title", "channel": "feed",
    "description": "dc_description media_description", "summary": "itunes_summary",
    "content_encoded": "fullitem", "itunes_image": "itunes_link",
}  # fmt: skip


def _table() -> tuple[dict[str, _Start], dict[str, _End]]:
    """Every ported handler by feedparser key, aliases included."""
    starts: dict[str, _Start] = {k[7:]: f for k, f in vars(State).items() if k.startswith("_start_")}
    ends: dict[str, _End] = {k[5:]: f for k, f in vars(State).items() if k.startswith("_end_")}
    for key, (element, expecting) in _PUSHES.items():
        starts[key] = lambda s, a, e=element, x=expecting: s.push(e, x)  # type: ignore[misc]
    for key, (element, default_type) in _CONSTRUCTS.items():
        starts[key] = lambda s, a, e=element, t=default_type: s.push_content(e, a, t, 1)  # type: ignore[misc]
        ends[key] = lambda s, e=element: s.pop_content(e)  # type: ignore[misc]
    for key, element in _DATES.items():
        ends[key] = lambda s, e=element: s.end_date(e)  # type: ignore[misc]
    for key in _MEDIA_ATTRS:
        starts["media_" + key] = lambda s, a, k=key: s.start_media_attrs(a, k)  # type: ignore[misc]
        ends["media_" + key] = lambda s, k=key: s.end_media_attrs(k)  # type: ignore[misc]
    ends["content_encoded"] = ends["content"]
    ends["height"] = lambda s: s._end_width("height")
    for key, aliases in _ALIASES.items():
        for alias in aliases.split():
            if key in starts:
                starts.setdefault(alias, starts[key])
            if key in ends:
                ends.setdefault(alias, ends[key])
    return starts, ends


_STARTS, _ENDS = _table()
_PORTED = frozenset(_STARTS) | frozenset(_ENDS)
_UNPORTED = (_FP_START | _FP_END) - _PORTED

State.starts, State.ends, State.unported = _STARTS, _ENDS, _UNPORTED
