"""The parse stage: mapping, hostile input, charsets, the real-world corpus.

Golden files live in tests/data/parse/: ``X`` in, ``X.expected.json`` out.
Rewrite them with ``INGESTD_UPDATE_GOLDEN=1 pytest tests/pipeline/test_parse.py``
and review the diff.
"""

from __future__ import annotations

import dataclasses
import json
import os
import pickle
import socket
import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from ingestd.exceptions import ParseError
from ingestd.models import ParsedEntry, ParsedFeed
from ingestd.pipeline.parse import FieldLimits, parse_feed

URL = "https://feed.example/rss"
MiB = 1 << 20

# A generous ceiling for the hostile documents: they finish in well under 2 s;
# without the defences they take minutes (84 s for a 100 KiB author alone).
HOSTILE_SECONDS = 30.0


def parse(doc: bytes | str, **kwargs: Any) -> ParsedFeed:
    data = doc.encode("utf-8") if isinstance(doc, str) else doc
    return parse_feed(data, url=URL, **kwargs)


def rss(
    *items: str, channel: str = "<title>T</title><link>https://feed.example/</link>", head: str = ""
) -> str:
    return (
        f'<?xml version="1.0" encoding="UTF-8"?>\n{head}'
        '<rss version="2.0" xmlns:content="http://purl.org/rss/1.0/modules/content/"'
        ' xmlns:dc="http://purl.org/dc/elements/1.1/"'
        ' xmlns:itunes="http://www.itunes.com/dtds/podcast-1.0.dtd">'
        f"<channel>{channel}{''.join(items)}</channel></rss>\n"
    )


def item(title: str = "t", guid: str = "g", extra: str = "") -> str:
    return f"<item><title>{title}</title><guid isPermaLink='false'>{guid}</guid>{extra}</item>"


def texts(feed: ParsedFeed) -> Iterator[str]:
    """Every string field of the feed and its entries."""
    objects: list[ParsedFeed | ParsedEntry] = [feed, *feed.entries]
    for obj in objects:
        for f in dataclasses.fields(obj):
            value = getattr(obj, f.name)
            if isinstance(value, str):
                yield value
            elif isinstance(value, tuple):
                yield from (v for v in value if isinstance(v, str))


# --------------------------------------------------------------------------- API and golden files


def test_parse_feed_and_its_results_are_picklable() -> None:
    """It runs in worker processes: the function, its limits and its result cross process borders."""
    # our own bytes, not untrusted data: S301 does not apply
    assert pickle.loads(pickle.dumps(parse_feed)) is parse_feed  # noqa: S301
    limits = FieldLimits(title=10)
    assert pickle.loads(pickle.dumps(limits)) == limits  # noqa: S301
    feed = parse(rss(item(extra="<pubDate>Tue, 02 Jan 2024 10:00:00 GMT</pubDate>")))
    assert pickle.loads(pickle.dumps(feed)) == feed  # noqa: S301
    with pytest.raises(dataclasses.FrozenInstanceError):
        limits.title = 5  # type: ignore[misc]


def _golden(feed: ParsedFeed) -> dict[str, Any]:
    def encode(value: Any) -> Any:
        if isinstance(value, datetime):
            return value.isoformat()
        if isinstance(value, dict):
            return {k: encode(v) for k, v in value.items()}
        if isinstance(value, list | tuple):
            return [encode(v) for v in value]
        return value

    result: dict[str, Any] = encode(dataclasses.asdict(feed))
    return result


@pytest.mark.parametrize("name", ["kitchen_sink.rss", "kitchen_sink.atom", "kitchen_sink.json"])
def test_golden(data_dir: Path, name: str) -> None:
    source = data_dir / "parse" / name
    expected_path = source.with_name(name + ".expected.json")
    got = _golden(parse_feed(source.read_bytes(), url="https://sink.example/feed"))
    if os.environ.get("INGESTD_UPDATE_GOLDEN"):
        expected_path.write_text(json.dumps(got, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    assert got == json.loads(expected_path.read_text(encoding="utf-8"))


def test_dates_are_aware_utc() -> None:
    feed = parse(rss(item(extra="<pubDate>Tue, 02 Jan 2024 10:00:00 +0100</pubDate>")))
    published = feed.entries[0].published_at
    assert published == datetime(2024, 1, 2, 9, 0, tzinfo=UTC)
    assert published is not None
    assert published.utcoffset() == timedelta(0)


def test_rss_updated_is_not_invented_from_published() -> None:
    """feedparser maps ``updated`` to ``published`` (with a DeprecationWarning); we do not."""
    entry = parse(rss(item(extra="<pubDate>Tue, 02 Jan 2024 10:00:00 GMT</pubDate>"))).entries[0]
    assert entry.published_at is not None
    assert entry.updated_at is None


def test_summary_identical_to_content_is_not_repeated() -> None:
    """feedparser copies content into summary when there is no description."""
    entry = parse(rss(item(extra="<content:encoded><![CDATA[<p>body</p>]]></content:encoded>"))).entries[0]
    assert entry.content_html == "<p>body</p>"
    assert entry.summary_html == ""


def test_longest_content_wins() -> None:
    doc = (
        '<feed xmlns="http://www.w3.org/2005/Atom"><title>A</title><entry><id>x</id><title>t</title>'
        '<content type="html">&lt;p&gt;short&lt;/p&gt;</content>'
        '<content type="html">&lt;p&gt;the longer one&lt;/p&gt;</content></entry></feed>'
    )
    assert parse(doc).entries[0].content_html == "<p>the longer one</p>"


def test_multiple_authors_are_joined() -> None:
    extra = "<dc:creator>Ann</dc:creator><dc:creator>Bob</dc:creator><dc:creator>Ann</dc:creator>"
    assert parse(rss(item(extra=extra))).entries[0].author == "Ann, Bob"


def test_rss_ttl_and_generator() -> None:
    feed = parse(rss(item(), channel="<title>T</title><ttl>45</ttl><generator>Gen 1</generator>"))
    assert feed.ttl_seconds == 45 * 60
    assert feed.generator == "Gen 1"
    assert parse(rss(item(), channel="<title>T</title><ttl>soon</ttl>")).ttl_seconds is None


def test_feed_without_items_but_a_channel_is_not_an_error() -> None:
    feed = parse(rss(channel="<title>Quiet</title><link>https://q.example/</link>"))
    assert feed.title == "Quiet"
    assert feed.entries == ()
    assert feed.warning is None


def test_entries_without_identity_or_content_are_skipped_with_a_warning() -> None:
    feed = parse(rss("<item><title>  </title></item>", item("kept", "k")))
    assert [e.guid for e in feed.entries] == ["k"]
    assert feed.warning is not None
    assert "skipped 1 entries" in feed.warning


def test_custom_field_limits() -> None:
    limits = FieldLimits(title=5, author=3, guid=10, categories=2, category=4, content=7)
    extra = (
        "<author>Abcdefg</author><category>one</category><category>second</category>"
        "<category>third</category><description>0123456789</description>"
    )
    entry = parse(rss(item("Long title", "g" * 11, extra)), field_limits=limits).entries[0]
    assert entry.title == "Long"  # cut to 5, then stripped
    assert entry.author == "Abc"
    assert entry.guid is not None
    assert entry.guid.startswith("sha256:")
    assert entry.categories == ("one", "seco")
    assert entry.summary_html == "0123456"


# --------------------------------------------------------------------------- max_entries


def _dated(i: int, day: int | None) -> str:
    date = f"<pubDate>{day:02d} Jan 2024 00:00:00 GMT</pubDate>" if day else ""
    return item(f"item {i}", f"g{i}", date)


def test_max_entries_keeps_the_newest_in_document_order() -> None:
    doc = rss(_dated(0, None), _dated(1, 5), _dated(2, 20), _dated(3, None), _dated(4, 10), _dated(5, 1))
    feed = parse(doc, max_entries=3)
    assert [e.guid for e in feed.entries] == ["g1", "g2", "g4"]
    assert feed.warning == "kept the newest 3 of 6 entries"
    feed = parse(doc, max_entries=5)  # dated ones first, then undated in document order
    assert [e.guid for e in feed.entries] == ["g0", "g1", "g2", "g4", "g5"]
    assert parse(doc).warning is None


def test_max_entries_must_be_positive() -> None:
    with pytest.raises(ValueError, match="max_entries"):
        parse(rss(item()), max_entries=0)


# --------------------------------------------------------------------------- dates


FUTURE_DATES = [
    "Fri, 31 Dec 9999 23:59:59 GMT",
    "Sat, 01 Jan 2999 00:00:00 +0000",
    "Mon, 01 Jan 10000 00:00:00 GMT",
    "2038-01-19T03:14:08Z",
    "Thu, 01 Jan 1970 00:00:00 GMT",
    "Mon, 01 Jan 0001 00:00:00 GMT",
    "Fri, 30 Feb 2024 10:00:00 GMT",
    "not a date",
    "",
    "999999999999",
    "1e400",
    "-99999999999",
]


@pytest.mark.parametrize("date", FUTURE_DATES)
def test_absurd_or_broken_dates_are_none(date: str) -> None:
    """Never "now", never OverflowError: a date we cannot trust is no date."""
    entry = parse(rss(item(extra=f"<pubDate>{date}</pubDate><dc:date>{date}</dc:date>"))).entries[0]
    assert entry.published_at is None
    assert entry.updated_at is None


def test_offset_out_of_range_does_not_crash() -> None:
    entry = parse(rss(item(extra="<pubDate>Sun, 06 Nov 1994 08:49:37 +9999</pubDate>"))).entries[0]
    assert entry.published_at is None or entry.published_at.tzinfo is UTC


def test_near_future_is_kept_and_far_future_is_not() -> None:
    soon = (datetime.now(UTC) + timedelta(hours=20)).strftime("%a, %d %b %Y %H:%M:%S GMT")
    later = (datetime.now(UTC) + timedelta(days=5)).strftime("%a, %d %b %Y %H:%M:%S GMT")
    feed = parse(
        rss(item("a", "a", f"<pubDate>{soon}</pubDate>"), item("b", "b", f"<pubDate>{later}</pubDate>"))
    )
    assert feed.entries[0].published_at is not None
    assert feed.entries[1].published_at is None


def test_epoch_seconds_and_milliseconds() -> None:
    """feedparser reads a bare 1518478934 as the ISO ordinal date 2015-07-03; it is epoch seconds."""
    feed = parse(
        rss(
            item("s", "s", "<dc:date>1518478934</dc:date>"),
            item("m", "m", "<dc:date>1518478934000</dc:date>"),
        )
    )
    expected = datetime(2018, 2, 12, 23, 42, 14, tzinfo=UTC)
    assert [e.updated_at for e in feed.entries] == [expected, expected]


# --------------------------------------------------------------------------- URLs


@pytest.mark.parametrize(
    ("link", "expected"),
    [
        ("https://a.example/x", "https://a.example/x"),
        ("  http://a.example/x\n", "http://a.example/x"),
        ("/relative/path", "/relative/path"),
        ("javascript:alert(1)", None),
        ("JavaScript:alert(1)", None),
        ("java\tscript:alert(1)", None),
        ("data:text/html,<script>", None),
        ("file:///etc/passwd", None),
        ("vbscript:msgbox", None),
        ("https://a.example/" + "q" * 3000, None),
    ],
)
def test_links_are_http_or_relative(link: str, expected: str | None) -> None:
    escaped = link.replace("&", "&amp;").replace("<", "&lt;")
    assert parse(rss(item(extra=f"<link>{escaped}</link>"))).entries[0].link == expected


def test_unsafe_xml_base_falls_back_to_the_link() -> None:
    doc = (
        '<feed xmlns="http://www.w3.org/2005/Atom" xml:base="javascript:alert(1)//"><title>A</title>'
        '<entry><id>x</id><title>t</title><link href="https://a.example/post"/>'
        '<content type="html">&lt;a href="x"&gt;x&lt;/a&gt;</content></entry></feed>'
    )
    entry = parse(doc).entries[0]
    assert entry.base_url == "https://a.example/post"
    assert entry.link == "https://a.example/post"


def test_unsafe_enclosures_and_images_are_skipped() -> None:
    extra = (
        '<enclosure url="file:///etc/passwd" type="image/png" length="5"/>'
        '<enclosure url="https://a.example/ok.png" type="image/png" length="12"/>'
        '<itunes:image href="data:image/png;base64,AAAA"/>'
    )
    entry = parse(rss(item(extra=extra))).entries[0]
    assert [(x.url, x.length) for x in entry.enclosures] == [("https://a.example/ok.png", 12)]
    assert entry.image_url == "https://a.example/ok.png"


# --------------------------------------------------------------------------- errors


@pytest.mark.parametrize("body", [b"", b" \n\t ", b"\xef\xbb\xbf"])
def test_empty_document(body: bytes) -> None:
    with pytest.raises(ParseError, match=r"^empty document$") as info:
        parse(body)
    assert info.value.url == URL


def test_html_page_is_not_a_feed() -> None:
    page = (
        "<!DOCTYPE html><html><head><title>Blog</title>"
        '<link rel="alternate" type="application/rss+xml" href="/feed.xml"></head>'
        "<body><p>Hello</p></body></html>"
    )
    with pytest.raises(ParseError, match=r"^not a feed: got an HTML page$"):
        parse(page, headers={"content-type": "text/html; charset=utf-8"})


def test_binary_is_not_a_feed() -> None:
    import random

    body = b"\x89PNG\r\n\x1a\n" + random.Random(7).randbytes(10 * MiB)
    started = time.monotonic()
    with pytest.raises(ParseError, match=r"^not a feed: binary data$"):
        parse(body, headers={"content-type": "application/rss+xml"})
    assert time.monotonic() - started < HOSTILE_SECONDS  # chardet alone would take minutes


def test_xml_that_is_no_feed() -> None:
    opml = '<?xml version="1.0"?><opml version="2.0"><body><outline text="x"/></body></opml>'
    with pytest.raises(ParseError, match=r"^not a feed: "):
        parse(opml)


def test_broken_document_without_entries_or_title_names_the_parser_error() -> None:
    with pytest.raises(ParseError, match=r"^not a feed: SAXParseException: .*") as info:
        parse("<rss version='2.0'><channel><description>x</descr")
    assert "\n" not in str(info.value)


def test_truncated_document_keeps_what_was_recovered() -> None:
    feed = parse(rss(item("one", "1"), item("two", "2")).removesuffix("</channel></rss>\n"))
    assert [e.guid for e in feed.entries] == ["1", "2"]
    assert feed.warning is not None
    assert "malformed document" in feed.warning


def test_bytes_that_name_a_file_are_not_opened(tmp_path: Path) -> None:
    """``feedparser.parse(b"/some/path")`` opens and parses that file; we hand it a stream."""
    secret = tmp_path / "secret.xml"
    secret.write_text(rss(item("root:x:0:0 secret", "secret")), encoding="utf-8")
    for body in (str(secret).encode(), secret.as_uri().encode(), b"/etc/passwd"):
        with pytest.raises(ParseError) as info:
            parse(body)
        assert "secret" not in str(info.value)
        assert "root:" not in str(info.value)


# --------------------------------------------------------------------------- XML attacks


def _billion_laughs(oneline: bool) -> str:
    decls = ['<!ENTITY lol "lol">'] + [
        f'<!ENTITY lol{i} "' + f"&lol{i - 1 if i > 1 else ''};" * 10 + '">' for i in range(1, 10)
    ]
    sep = "" if oneline else "\n  "
    dtd = "<!DOCTYPE rss [" + sep + sep.join(decls) + ("" if oneline else "\n") + "]>\n"
    return rss(
        item("&lol9;", "lol-1", "<description>&lol9;</description>"),
        item("normal item after the bomb", "lol-2"),
        head=dtd,
    )


def _quadratic() -> str:
    head = '<!DOCTYPE rss [\n<!ENTITY a "' + "A" * 50_000 + '">\n]>\n'
    return rss(item("quadratic", "quad-1", "<description>" + "&a;" * 20_000 + "</description>"), head=head)


@pytest.mark.parametrize(
    "doc",
    [
        pytest.param(_billion_laughs(oneline=False), id="billion-laughs"),
        pytest.param(_billion_laughs(oneline=True), id="billion-laughs-oneline"),
        pytest.param(_quadratic(), id="quadratic-blowup"),
        pytest.param(
            "<!-- <rss> in a comment --><!DOCTYPE rss [<!ENTITY a '"
            + "A" * 50_000
            + "'>]>"
            + rss(item("q", "q", "<description>" + "&a;" * 20_000 + "</description>")).split("\n", 1)[1],
            id="behind-a-comment",
        ),
        pytest.param(_quadratic().encode("utf-16"), id="utf-16"),
        pytest.param(
            '<!DOCTYPE rss [<!ENTITY a "x]>y'
            + "A" * 50_000
            + '">]>'
            + rss(item("q", "q", "<description>" + "&a;" * 20_000 + "</description>")).split("\n", 1)[1],
            id="bracket-in-entity-value",
        ),
    ],
)
def test_entity_expansion_is_bounded(doc: str | bytes) -> None:
    started = time.monotonic()
    try:
        feed = parse(doc)
    except ParseError:
        return
    assert time.monotonic() - started < HOSTILE_SECONDS
    assert sum(len(t) for t in texts(feed)) < 1_000_000  # literal text at most, never the expansion
    assert all("lollollol" not in t and "AAAAAAAAAA" not in t for t in texts(feed))


def test_unterminated_doctype() -> None:
    with pytest.raises(ParseError):
        parse('<?xml version="1.0"?><!DOCTYPE rss [<!ENTITY a "' + "A" * 100_000)


def test_doctype_without_internal_subset_is_kept_for_netscape_rss() -> None:
    doc = (
        '<?xml version="1.0"?>\n<!DOCTYPE rss PUBLIC "-//Netscape Communications//DTD RSS 0.91//EN" '
        '"http://my.netscape.com/publish/formats/rss-0.91.dtd"><rss version="0.91"><channel><title>N</title>'
        "<item><title>x</title><link>https://n.example/x</link></item></channel></rss>"
    )
    assert parse(doc).format == "rss091n"


@pytest.fixture
def listener() -> Iterator[tuple[int, list[bytes]]]:
    """A listening socket on 127.0.0.1 that records every connection.

    Stricter than a closed port: a fetch attempt is seen, not merely refused.
    """
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(8)
    server.settimeout(0.2)
    seen: list[bytes] = []
    stop = threading.Event()

    def accept() -> None:
        while not stop.is_set():
            try:
                conn, _ = server.accept()
            except TimeoutError:
                continue
            with conn:
                conn.settimeout(1)
                try:
                    seen.append(conn.recv(4096) or b"(connected)")
                except OSError:
                    seen.append(b"(connected)")

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    yield server.getsockname()[1], seen
    stop.set()
    thread.join(5)
    server.close()


def test_external_entities_and_dtds_are_never_fetched(listener: tuple[int, list[bytes]]) -> None:
    port, seen = listener
    base = f"http://127.0.0.1:{port}"
    docs = [
        rss(
            item("passwd: &xxe;", "xxe-1", "<description>&xxe;</description>"),
            item("net: &xxenet;", "xxe-2", "<description>&xxenet;</description>"),
            head=(
                '<!DOCTYPE rss [\n  <!ENTITY xxe SYSTEM "file:///etc/passwd">\n'
                f'  <!ENTITY xxenet SYSTEM "{base}/xxe-entity">\n]>\n'
            ),
        ),
        rss(
            item("dtd", "xxe-dtd-1"),
            head=f'<!DOCTYPE rss SYSTEM "{base}/xxe-dtd" [\n'
            f'  <!ENTITY % remote SYSTEM "{base}/xxe-param">\n  %remote;\n]>\n',
        ),
        rss(item("external dtd only", "xxe-dtd-2"), head=f'<!DOCTYPE rss SYSTEM "{base}/only.dtd">\n'),
        rss(item("public dtd", "xxe-dtd-3"), head=f'<!DOCTYPE rss PUBLIC "-//X//Y//EN" "{base}/p.dtd">\n'),
    ]
    for doc in docs:
        try:
            feed = parse(doc)
        except ParseError:
            continue
        assert all("root:" not in t for t in texts(feed))
    time.sleep(0.3)  # a connection attempt would have been accepted by now
    assert seen == []


# --------------------------------------------------------------------------- oversized fields


def _long_fields() -> str:
    big = item(
        "T" * MiB,
        "g" * 65536,
        "<link>https://feed.example/a?" + "q" * 65536 + "</link>"
        "<pubDate>Mon, 01 Jan 2024 12:00:00 GMT</pubDate><description>long fields</description>"
        "<author>" + "a" * 102400 + "</author>" + "".join(f"<category>c{i}</category>" for i in range(10000)),
    )
    normal = item(
        "normal item next to long fields", "long-fields-normal", "<link>https://feed.example/b</link>"
    )
    return rss(big, normal)


def test_long_fields_are_capped() -> None:
    started = time.monotonic()
    feed = parse(_long_fields())
    assert time.monotonic() - started < HOSTILE_SECONDS
    big, normal = feed.entries
    assert big.title == "T" * 1000
    assert big.guid is not None
    assert big.guid.startswith("sha256:")
    assert len(big.guid) == 7 + 64
    assert big.link is None  # a URL is useless cut: it is dropped
    assert big.author == "a" * 500
    assert big.categories == tuple(f"c{i}" for i in range(50))
    assert normal.guid == "long-fields-normal"
    assert normal.link == "https://feed.example/b"


def test_long_guids_stay_distinct() -> None:
    feed = parse(rss(item("a", "x" * 5000 + "1"), item("b", "x" * 5000 + "2")))
    assert len({e.guid for e in feed.entries}) == 2


@pytest.mark.parametrize(
    "element",
    [
        "<author>{}</author>",
        "<dc:creator>{}</dc:creator>",
        "<itunes:author>{}</itunes:author>",
        "<author><![CDATA[{}]]></author>",
        "<author>x<![CDATA[{}]]></author>",
        "<dc:publisher>{}</dc:publisher>",
    ],
)
def test_a_100_kib_author_does_not_stall_feedparser(element: str) -> None:
    """feedparser's e-mail regex in ``_sync_author_detail`` is quadratic: 84 s for 100 KiB."""
    started = time.monotonic()
    feed = parse(rss(item(extra=element.format("a" * 102400))))
    assert time.monotonic() - started < HOSTILE_SECONDS
    assert len(feed.entries[0].author) <= 500


def test_a_new_namespace_prefix_per_element_is_refused_quickly() -> None:
    """feedparser scans every declared prefix for each element of an unknown namespace."""
    items = "".join(
        f'<item><p{i}:x xmlns:p{i}="http://ns.example/{i}">v</p{i}:x><title>t{i}</title></item>'
        for i in range(20_000)
    )
    started = time.monotonic()
    with pytest.raises(ParseError, match=r"declares 20,003 XML namespace prefixes \(at most 256"):
        parse(rss(items))
    assert time.monotonic() - started < HOSTILE_SECONDS


def test_feeds_with_a_few_dozen_prefixes_and_many_redeclarations_parse() -> None:
    prefixes = " ".join(f'xmlns:ext{i}="http://ns.example/{i}"' for i in range(40))
    redeclared = "".join(
        f'<item><title>t{i}</title><ext1:x xmlns:ext1="http://ns.example/1">v</ext1:x></item>'
        for i in range(400)
    )
    feed = parse(rss(redeclared).replace("<rss ", f"<rss {prefixes} ", 1))
    assert len(feed.entries) == 400


def test_author_cut_keeps_entities_and_cdata_sane() -> None:
    text = "Tom &amp; Jerry " * 100
    entry = parse(rss(item(extra=f"<author>{text}</author>"))).entries[0]
    assert entry.author.startswith("Tom & Jerry Tom & Jerry")
    assert len(entry.author) <= 500


def test_a_1_mib_title() -> None:
    feed = parse(rss(item("  " + "T" * MiB)))
    assert feed.entries[0].title == "T" * 1000


# --------------------------------------------------------------------------- characters


def test_c0_controls_and_surrogates_are_removed() -> None:
    bad = (
        b"NUL[\x00] C0[\x01\x02\x08\x0b\x0c\x1f] ref[&#0;&#x0;] surrogate[\xed\xa0\x80] "
        b"trunc[\xe2\x82] noncharacter[\xef\xbf\xbe] zw[\xe2\x80\x8b\xe2\x80\x8d] tab[\t]"
    )
    head = rss().split("</channel>")[0].encode()
    body = (
        head
        + b"<item><title>ctl "
        + bad
        + b"</title><guid>ctl-1</guid><description>"
        + bad
        + b"</description></item><item><title>clean item</title><guid>ctl-2</guid>"
        b"<description>clean &#xD800; ref &#55357;&#56832; &#x1F600;</description></item></channel></rss>"
    )
    feed = parse(body, headers={"content-type": "application/rss+xml; charset=utf-8"})
    assert [e.guid for e in feed.entries] == ["ctl-1", "ctl-2"]
    for text in texts(feed):
        assert not any(ord(c) < 32 and c not in "\t\n\r" for c in text)
        assert not any(0xD800 <= ord(c) <= 0xDFFF for c in text)
        text.encode("utf-8")  # would raise on a surrogate
    assert "NUL[] C0[]" in feed.entries[0].title
    assert feed.entries[1].summary_html == "clean \ufffd ref \U0001f600 \U0001f600"


def test_wrong_charset_declared_utf8_but_cp1252() -> None:
    title = "Caf\u00e9 \u201cquoted\u201d \u2014 \u20ac1"
    body = rss(item(title, "cp1252-1")).encode("cp1252")
    feed = parse(body, headers={"content-type": "application/rss+xml; charset=utf-8"})
    assert feed.entries[0].title == title
    assert feed.warning is not None
    assert "declared as utf-8" in feed.warning


def test_utf8_bytes_win_over_a_declared_legacy_charset() -> None:
    body = rss(item("Caf\u00e9 \u20ac \u00fcber", "u")).replace("UTF-8", "ISO-8859-1").encode("utf-8")
    feed = parse(body)
    assert feed.entries[0].title == "Caf\u00e9 \u20ac \u00fcber"
    assert feed.warning == "document declared as iso-8859-1, but its bytes are UTF-8"


def test_content_type_charset_steers_decoding() -> None:
    doc = rss(item("\u041f\u0440\u0438\u043c\u0435\u0440 \u043d\u043e\u0432\u043e\u0441\u0442\u0438", "c"))
    body = doc.replace(' encoding="UTF-8"', "").encode("cp1251")
    feed = parse(body, headers={"content-type": "application/rss+xml; charset=windows-1251"})
    assert (
        feed.entries[0].title
        == "\u041f\u0440\u0438\u043c\u0435\u0440 \u043d\u043e\u0432\u043e\u0441\u0442\u0438"
    )
    assert feed.warning is None


def test_bom_and_leading_blank_line_are_not_errors() -> None:
    feed = parse(b"\xef\xbb\xbf" + rss(item("bom", "b")).encode())
    assert (feed.entries[0].title, feed.warning) == ("bom", None)
    feed = parse("\n\n  " + rss(item("blank", "b")))
    assert (feed.entries[0].title, feed.warning) == ("blank", None)


def test_utf16_document() -> None:
    feed = parse(rss(item("\u00fcber \u4e2d\u6587", "u16")).replace("UTF-8", "UTF-16").encode("utf-16"))
    assert feed.entries[0].title == "\u00fcber \u4e2d\u6587"


# --------------------------------------------------------------------------- JSON Feed


def _json_feed(**extra: Any) -> bytes:
    doc = {"version": "https://jsonfeed.org/version/1", "title": "J", "items": [{"id": "1", "title": "t"}]}
    return json.dumps({**doc, **extra}).encode()


def test_json_feed_is_detected_by_content_not_content_type() -> None:
    for content_type in ("text/plain", "application/json", "application/rss+xml", "text/html"):
        feed = parse(b"  \n" + _json_feed(), headers={"content-type": content_type})
        assert (feed.format, feed.entries[0].guid) == ("json1", "1")


def test_json_feed_1_0_author_and_numbers() -> None:
    items = [{"id": 7, "url": "https://j.example/7", "content_text": "a < b", "author": {"name": "Old"}}]
    entry = parse(_json_feed(items=items, author={"name": "Feed"})).entries[0]
    assert (entry.guid, entry.author, entry.content_html) == ("7", "Old", "<p>a &lt; b</p>")


def test_json_feed_with_bom_and_nul() -> None:
    feed = parse(b"\xef\xbb\xbf" + _json_feed(title="A\u0000B"))
    assert feed.title == "AB"


@pytest.mark.parametrize(
    ("body", "message"),
    [
        (b'{"version": "https://jsonfeed.org/version/1", "items": [', "^invalid JSON feed: "),
        (b'{"rss": {"channel": {"item": []}}}', "^not a feed: JSON without a JSON Feed version$"),
        (b'{"version": 1}', "^not a feed: JSON without a JSON Feed version$"),
        (b"{" + b'"a":[' * 100_000, "^invalid JSON feed: "),
        (b'{"version": "https://jsonfeed.org/version/1", "n": ' + b"9" * 5000 + b"}", "^invalid JSON feed: "),
    ],
)
def test_json_errors(body: bytes, message: str) -> None:
    with pytest.raises(ParseError, match=message):
        parse(body)


def test_deeply_nested_json_feed_fails_cleanly() -> None:
    body = b'{"version": "https://jsonfeed.org/version/1", "x": ' + b"[" * 200_000 + b"]" * 200_000 + b"}"
    with pytest.raises(ParseError, match=r"^invalid JSON feed: "):
        parse(body)


# --------------------------------------------------------------------------- the real-world corpus


def _corpus(shared_dir: Path) -> list[Path]:
    feeds = shared_dir / "corpus" / "feeds"
    return sorted(p for p in feeds.iterdir() if p.suffix not in (".opml", ".md"))


# Files that are not (usable) feeds: the message ParseError must start with.
CORPUS_ERRORS = {
    "jsonfeed_allthis_truncated_invalid.json": "invalid JSON feed: ",
    "json_scriptingnews_rss_in_json_not_jsonfeed.json": "not a feed: JSON without a JSON Feed version",
    "substack_zejiac99_cloudflare_challenge_NOT_A_FEED.rss": "not a feed: got an HTML page",
}
# Files whose channel parses but which hold no usable entry.
CORPUS_EMPTY = {
    "rss2_illformed_incomplete_cdata.xml",  # truncated inside its only <item>'s CDATA title
    "rss2_windows-1252_bytes_utf8_declared_wrong_tiny.xml",  # a channel title, no <item> at all
}
# Synthetic regression files whose items carry content but neither guid nor link.
CORPUS_ANONYMOUS = {
    "atom_utf8_bytes_declared_iso8859-1_tiny.xml",
    "rss2_win1252_byte_no_decl_demoronize.xml",
    "rss_bozo_encoding_mismatch_crash.xml",
}


def _parse_or_error(path: Path) -> ParsedFeed | ParseError:
    try:
        return parse_feed(path.read_bytes(), url=f"https://corpus.example/{path.name}")
    except ParseError as e:
        return e


def test_corpus_every_file(shared_dir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    rows: list[tuple[str, str, str, str]] = []
    for path in _corpus(shared_dir):
        name = path.name
        feed = _parse_or_error(path)
        if isinstance(feed, ParseError):
            assert name in CORPUS_ERRORS, f"{name}: unexpected ParseError: {feed}"
            assert str(feed).startswith(CORPUS_ERRORS[name]), f"{name}: {feed}"
            rows.append((name, "ERROR", "-", str(feed)))
            continue
        assert name not in CORPUS_ERRORS, f"{name}: expected ParseError, got {feed.format}"
        rows.append((name, feed.format, str(len(feed.entries)), feed.warning or ""))
        if name in CORPUS_EMPTY:
            assert feed.entries == (), name
            continue
        assert feed.entries, f"{name}: no entries"
        for entry in feed.entries:
            if name not in CORPUS_ANONYMOUS:
                assert entry.guid or entry.link, f"{name}: entry without guid or link: {entry.title!r}"
            assert entry.title or entry.content_html or entry.summary_html, (
                f"{name}: empty entry {entry.guid}"
            )
            for when in (entry.published_at, entry.updated_at):
                assert when is None or when.tzinfo is UTC
    with capsys.disabled():
        print(f"\n{'file':56} {'format':8} {'entries':>7}  warning")
        for name, fmt, count, warning in rows:
            print(f"{name[:56]:56} {fmt:8} {count:>7}  {warning[:90]}")


def test_corpus_titles_are_clean_text(shared_dir: Path) -> None:
    for path in _corpus(shared_dir):
        feed = _parse_or_error(path)
        if isinstance(feed, ParseError):
            continue
        for title in [feed.title] + [e.title for e in feed.entries]:
            assert "<![CDATA[" not in title, path.name
            assert title == title.strip(), f"{path.name}: {title!r}"
            assert "\ufffd" not in title, f"{path.name}: {title!r}"


@pytest.mark.parametrize(
    ("name", "needle"),
    [
        ("rss2_iso8859-1_golem_de.xml", "ä"),
        ("rss2_windows-1251_ibash_ru.xml", "Цитата"),
        ("rss2_koi8r_tiny.xml", "Первая новость"),
        ("rss2_gb2312_chinese_dvbbs.xml", "纪念"),
        ("rss2_latin1_bytes_no_encoding_decl_fr.xml", "é"),
        ("rss2_slovak_aktuality.xml", "ý"),
        ("atom_utf8_bytes_declared_iso8859-1_tiny.xml", "Café"),
        ("rss2_urdu_bbc_rtl.xml", "پاکستان"),
    ],
)
def test_corpus_charsets_come_out_as_text(shared_dir: Path, name: str, needle: str) -> None:
    feed = parse_feed((shared_dir / "corpus" / "feeds" / name).read_bytes(), url=URL)
    titles = " ".join([feed.title] + [e.title for e in feed.entries])
    assert needle in titles
    assert "Ã" not in titles
    assert "Ð" not in titles


def test_corpus_mojibake_tiny_files(shared_dir: Path) -> None:
    feeds = shared_dir / "corpus" / "feeds"
    atom = parse_feed((feeds / "atom_utf8_bytes_declared_iso8859-1_tiny.xml").read_bytes(), url=URL)
    assert (atom.title, atom.entries[0].title) == ("테스트 피드", "Café")
    rss2 = parse_feed((feeds / "rss2_windows-1252_bytes_utf8_declared_wrong_tiny.xml").read_bytes(), url=URL)
    assert rss2.title == "Euro €"
    demoronize = parse_feed((feeds / "rss2_win1252_byte_no_decl_demoronize.xml").read_bytes(), url=URL)
    assert demoronize.entries[0].summary_html == "don\u2019t"


def test_corpus_decisions_for_broken_files(shared_dir: Path) -> None:
    """What we do with each broken file in the corpus, and why.

    * rss2_illformed_incomplete_cdata.xml: the channel is valid, its only item
      ends inside ``<![CD``. Not an error: the feed's metadata and a warning,
      no entries (the item has nothing to store).
    * rss2_truncated_invalid_dates.xml: no ``</rss>``; both items recovered,
      with a warning. The epoch ``dc:date`` is read as epoch seconds.
    * rss_bozo_encoding_mismatch_crash.xml: a stray non-UTF-8 byte; feedparser's
      fallback charset reads it, the one item is kept, the warning says so.
    * jsonfeed_allthis_truncated_invalid.json: invalid JSON -> ParseError.
      Partial JSON is not recovered: there is no safe way to know what was cut.
    * json_scriptingnews_rss_in_json_not_jsonfeed.json: RSS-in-JSON is one
      publisher's format, also served as RSS -> ParseError, not mapped.
    * substack_zejiac99_cloudflare_challenge_NOT_A_FEED.rss: Cloudflare's HTML
      challenge -> ParseError "got an HTML page", so the feed keeps its items
      and records the error.
    """
    feeds = shared_dir / "corpus" / "feeds"

    def load(name: str) -> ParsedFeed:
        return parse_feed((feeds / name).read_bytes(), url=URL)

    cdata = load("rss2_illformed_incomplete_cdata.xml")
    assert (cdata.title, cdata.language, cdata.entries) == ("can feedparser read this xml", "en-us", ())
    assert cdata.warning is not None
    assert "malformed document" in cdata.warning

    truncated = load("rss2_truncated_invalid_dates.xml")
    assert [e.link for e in truncated.entries] == ["http://example.com/item0", "http://example.com/item1"]
    first = truncated.entries[0]
    assert first.published_at == datetime(2017, 10, 16, 15, 10, tzinfo=UTC)
    assert first.updated_at == datetime(2018, 2, 12, 23, 42, 14, tzinfo=UTC)
    assert truncated.warning is not None
    assert "no element found" in truncated.warning

    crash = load("rss_bozo_encoding_mismatch_crash.xml")
    assert len(crash.entries) == 1
    assert crash.entries[0].summary_html.startswith('<a href="http://www.example.com/">')
    assert crash.warning is not None
    assert "declared as utf-8" in crash.warning

    for name, message in CORPUS_ERRORS.items():
        with pytest.raises(ParseError, match=r"^" + message):
            load(name)


def test_corpus_mapping_details(shared_dir: Path) -> None:
    feeds = shared_dir / "corpus" / "feeds"

    def load(name: str) -> ParsedFeed:
        return parse_feed((feeds / name).read_bytes(), url=URL)

    burner = load("atom_typepad_feedburner_xhtml_content.xml").entries[0]
    assert burner.orig_link == "http://www.rotoauthority.com/2014/04/stock-watch-aprils-finest.html"
    assert burner.content_html.startswith("<p>")
    podcast = load("rss2_podcast_atp_squarespace_large.xml")
    assert len(podcast.entries) == 100
    assert podcast.entries[0].enclosures[0].type == "audio/mpeg"
    assert isinstance(podcast.entries[0].enclosures[0].length, int)
    urdu = load("rss2_urdu_bbc_rtl.xml")
    assert urdu.entries[0].image_url is not None
    assert urdu.entries[0].image_url.startswith("http://")
    assert (urdu.language, urdu.ttl_seconds) == ("ur", 900)
    substack = load("substack_harmonbhasin_minimal_en.xml")
    assert substack.generator == "Substack"
    assert substack.entries[0].author == "Harmon Bhasin"
    fireball = load("atom_daringfireball_served_with_rss_extension.xml")
    assert fireball.format == "atom10"
    assert fireball.entries[0].base_url == "http://daringfireball.net/linked/"
    alerts = load("atom_google_alerts.xml")
    assert alerts.entries[0].title_is_html
    youtube = load("atom_youtube_channel_leading_newline.xml")
    assert youtube.warning is None  # the blank line before <?xml is forgiven
    json11 = load("jsonfeed_fboes_v1_1_de.json")
    assert (json11.format, json11.language, json11.entries[0].author) == ("json11", "de-de", "Frank Boës")


def test_entries_are_parsed_entries(shared_dir: Path) -> None:
    feed = parse_feed((shared_dir / "corpus" / "feeds" / "substack_zejiac99_en.xml").read_bytes(), url=URL)
    assert all(type(e) is ParsedEntry for e in feed.entries)


# -- re-encoding: UTF-8 that decodes is not decoded and encoded again ----------------------------

_UTF8_CASES = [
    b"<?xml version='1.0' encoding='utf-8'?><rss/>",
    b'<?xml version="1.0" encoding="UTF-8" standalone="yes" ?>\n<rss>caf\xc3\xa9</rss>',
    b'<?xml version="1.0"\n   encoding="iso-8859-1"?><feed/>',  # whatever it says, these bytes are UTF-8
    b"\xef\xbb\xbf<?xml version='1.0'?><rss/>",  # a BOM
    b"\xef\xbb\xbf<rss>no declaration</rss>",
    b"<rss>no declaration \xe2\x80\x9cquoted\xe2\x80\x9d</rss>",
    b"  <?xml version='1.0'?><rss/>",  # not at the very start: not a declaration
    b"<?xml-stylesheet href='a.xsl'?><rss/>",
    b"<\x00?\x00x\x00m\x00l\x00>\x00",  # looks like UTF-16 without a BOM, but is valid UTF-8
    b"<?xml version='1.0'",  # no end
    b"",
]


def _feedparsers_reencoding(content: bytes) -> bytes:
    from feedparser.encodings import convert_to_utf8

    data: bytes = convert_to_utf8({"content-type": "application/xml; charset=utf-8"}, content, {})
    return data


@pytest.mark.parametrize("content", _UTF8_CASES)
def test_utf8_is_reencoded_exactly_as_feedparser_does(content: bytes) -> None:
    from ingestd.pipeline import xmlsafe

    assert xmlsafe._to_utf8(content, "utf-8", decodes=True) == _feedparsers_reencoding(content)
    assert xmlsafe._to_utf8(content, "UTF8", decodes=True) == _feedparsers_reencoding(content)


def test_utf8_documents_of_the_corpus_are_reencoded_exactly_as_feedparser_does(shared_dir: Path) -> None:
    from ingestd.pipeline import xmlsafe

    checked = 0
    for path in sorted((shared_dir / "corpus" / "feeds").iterdir()):
        content = path.read_bytes()
        if xmlsafe._decodes(content, "utf-8"):
            ours = xmlsafe._to_utf8(content, "utf-8", decodes=True)
            assert ours == _feedparsers_reencoding(content), path.name
            checked += 1
    assert checked >= 30
