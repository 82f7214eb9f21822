"""The fast path must give exactly feedparser's result, or step aside.

Every comparison runs ``parse_feed`` twice, through ``fastparse`` and forced
through feedparser, and compares the whole ``ParsedFeed`` (or the ParseError
text). clean, dedupe and store are pure functions of it, so equal ParsedFeeds
mean equal stored articles. The corpus, a generated farm, hand-written edge
cases and seeded mutations of them are all checked; declines must fall back.
"""

from __future__ import annotations

import copy
import random
import subprocess
import sys
from pathlib import Path
from xml.parsers import expat

import feedparser
import pytest
from lxml import etree

from ingestd.exceptions import ParseError
from ingestd.models import FeedContext, ParsedFeed
from ingestd.pipeline import fastparse, parse
from ingestd.pipeline.clean import clean_entry
from ingestd.pipeline.fastparse import handlers
from ingestd.pipeline.parse import FieldLimits, parse_feed
from ingestd.pipeline.xmlsafe import prepare_xml

URL = "https://feed.example/rss"
NS = (
    'xmlns:content="http://purl.org/rss/1.0/modules/content/" xmlns:dc="http://purl.org/dc/elements/1.1/"'
    ' xmlns:media="http://search.yahoo.com/mrss/" xmlns:itunes="http://www.itunes.com/dtds/podcast-1.0.dtd"'
    ' xmlns:feedburner="http://rssnamespace.org/feedburner/ext/1.0" xmlns:atom="http://www.w3.org/2005/Atom"'
    ' xmlns:sy="http://purl.org/rss/1.0/modules/syndication/"'
)


def outcome(data: bytes, fast: bool, headers: dict[str, str] | None = None) -> ParsedFeed | str:
    try:
        return parse_feed(data, url=URL, headers=headers, fast_path=fast)
    except ParseError as e:
        return f"ParseError: {e}"


def takes_fast_path(data: bytes, headers: dict[str, str] | None = None) -> bool:
    lowered = {k.lower(): v for k, v in (headers or {}).items()}
    prepared, _ = prepare_xml(data, lowered, author_limit=FieldLimits().author, url=URL)
    return fastparse.parse_prepared(prepared, lowered) is not None


def assert_same(data: bytes, headers: dict[str, str] | None = None, name: str = "") -> bool:
    """Both paths agree; returns whether the fast path was taken."""
    fast, slow = outcome(data, True, headers), outcome(data, False, headers)
    assert fast == slow, name
    return takes_fast_path(data, headers)


def rss(items: str, channel: str = "<title>T</title><link>https://feed.example/</link>") -> bytes:
    doc = f'<?xml version="1.0" encoding="utf-8"?>\n<rss version="2.0" {NS}>'
    doc += f"<channel>{channel}{items}</channel></rss>"
    return doc.encode("utf-8")


def atom(entries: str, head: str = "<title>A</title>", attrs: str = "") -> bytes:
    doc = f'<?xml version="1.0" encoding="utf-8"?><feed xmlns="http://www.w3.org/2005/Atom" {attrs}>'
    doc += f"{head}{entries}</feed>"
    return doc.encode("utf-8")


# --------------------------------------------------------------------------- the port itself


def test_ported_handlers_match_feedparser_one_to_one() -> None:
    """A key has a start (end) handler here exactly when feedparser has one; the rest decline."""
    for key in handlers._PORTED:
        assert (key in handlers._STARTS) == (key in handlers._FP_START), key
        assert (key in handlers._ENDS) == (key in handlers._FP_END), key
    assert feedparser.__version__ in fastparse.VERIFIED_FEEDPARSER


def test_expat_rejects_all_that_python_utf8_rejects() -> None:
    """feedparser re-decodes with Python first; the fast path relies on expat being as strict."""
    for bad in (b"\xc0\x80", b"\xed\xa0\x80", b"\xf4\x90\x80\x80", b"\x80", b"\xe2\x82", b"\xff"):
        for doc in (b"<a>x" + bad + b"</a>", b'<a b="' + bad + b'"/>', b"<a><![CDATA[" + bad + b"]]></a>"):
            parser = expat.ParserCreate(None, " ")
            with pytest.raises(expat.ExpatError):
                parser.Parse(b"<?xml version='1.0' encoding='utf-8'?>" + doc, True)


def test_forced_feedparser_never_calls_the_fast_path(monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[bytes] = []
    monkeypatch.setattr(parse, "parse_prepared", lambda data, _headers: calls.append(data))
    assert parse_feed(rss("<item><title>x</title></item>"), url=URL, fast_path=False).entries[0].title == "x"
    monkeypatch.setattr(parse, "FAST_PATH", False)
    assert parse_feed(rss("<item><title>x</title></item>"), url=URL).entries[0].title == "x"
    assert calls == []
    monkeypatch.setattr(parse, "FAST_PATH", True)
    parse_feed(rss("<item><title>x</title></item>"), url=URL)
    assert len(calls) == 1


def test_a_fast_path_bug_falls_back_to_feedparser(monkeypatch: pytest.MonkeyPatch) -> None:
    data = rss("<item><title>x</title><guid>g</guid></item>")
    expected = outcome(data, False)

    def bug(*_args: object) -> None:
        raise RuntimeError("bug")

    monkeypatch.setattr(parse, "parse_prepared", bug)
    assert outcome(data, True) == expected


def test_exhausted_limits_are_not_retried_with_feedparser(monkeypatch: pytest.MonkeyPatch) -> None:
    """Memory or stack exhausted by a document is the worker's limit speaking, not a port bug."""
    data = rss("<item><title>x</title><guid>g</guid></item>")

    def exhausted(*_args: object) -> None:
        raise MemoryError

    monkeypatch.setattr(parse, "parse_prepared", exhausted)
    with pytest.raises(MemoryError):
        parse_feed(data, url=URL, fast_path=True)


def test_environment_switch_turns_the_fast_path_off() -> None:
    code = "from ingestd.pipeline import parse; print(parse.FAST_PATH)"
    env = {"INGESTD_FASTPARSE": "0", "PATH": "/usr/bin:/bin"}
    root = Path(__file__).resolve().parents[2]
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, env=env, cwd=root, check=True
    )
    assert out.stdout.strip() == "False"


# --------------------------------------------------------------------------- declines fall back

DECLINED = {
    "malformed": rss("<item><title>x</item>"),
    "unterminated cdata": rss("<item><title><![CDATA[x</title></item>"),
    "entity doctype": b'<?xml version="1.0"?><!DOCTYPE rss [<!ENTITY e "boom">]>'
    + rss("<item><title>&e;</title></item>").split(b"?>", 1)[1],
    "netscape doctype": b'<?xml version="1.0"?>\n<!DOCTYPE rss PUBLIC'
    b' "-//Netscape Communications//DTD RSS 0.91//EN" "http://my.netscape.com/publish/formats/rss-0.91.dtd">\n'
    b'<rss version="0.91"><channel><title>N</title>'
    b"<item><title>x</title></item></channel></rss>",
    "undefined entity": rss("<item><title>caf&eacute;</title></item>"),
    "undeclared prefix": rss("<item><title>x</title><wfw:commentRss>c</wfw:commentRss></item>"),
    "unknown root": b'<?xml version="1.0"?><opml version="2.0"><head/><body><outline/></body></opml>',
    "html page": b"<?xml version='1.0'?><html><head><title>t</title></head><body>x</body></html>",
    "markup in an rss title": rss("<item><title>a <b>bold</b> title</title></item>"),
    "typepad div in html content": atom(
        '<entry><id>i</id><content type="html"><div>x</div></content></entry>'
    ),
    "base64 content": atom('<entry><id>i</id><content type="image/png">eA==</content></entry>'),
    "georss": rss('<item xmlns:georss="http://www.georss.org/georss"><georss:point>1</georss:point></item>'),
    "source": rss('<item><title>x</title><source url="http://s.example/">S</source></item>'),
    "svg": atom('<entry><id>i</id><svg xmlns="http://www.w3.org/2000/svg"/></entry>'),
    "cdf attributes": rss('<item lastmod="2024-01-01"><title>x</title></item>'),
    "xhtml body": atom(
        '<entry><id>i</id><content type="xhtml"><div xmlns="http://www.w3.org/1999/xhtml">'
        "<body>b</body></div></content></entry>"
    ),
}


@pytest.mark.parametrize("name", sorted(DECLINED))
def test_declined_documents_give_feedparsers_result(name: str) -> None:
    assert not assert_same(DECLINED[name], name=name)


def test_hostile_entity_bomb_declines_quickly() -> None:
    lol = "".join(f'<!ENTITY l{i} "{f"&l{i - 1};" * 10}">' for i in range(1, 10))
    data = f'<?xml version="1.0"?><!DOCTYPE rss [<!ENTITY l0 "lol">{lol}]>'
    data += "<rss><channel><title>&l9;</title></channel></rss>"
    assert not assert_same(data.encode())


# --------------------------------------------------------------------------- edge cases it must take

XHTML_DIV = '<div xmlns="http://www.w3.org/1999/xhtml">'
TAKEN = {
    "xhtml unwrapped": atom(
        f'<entry><id>i</id><title type="xhtml">{XHTML_DIV}T <b>b</b></div></title>'
        f'<content type="xhtml">\n {XHTML_DIV}<p class="a&quot;b">x &amp; y &lt; z</p><br/>'
        '<a href="http://x.example/?a=1&amp;b=2">l</a></div>\n</content></entry>'
    ),
    "xhtml two divs kept": atom(
        f'<entry><id>i</id><summary type="xhtml">{XHTML_DIV}a</div>{XHTML_DIV}b</div></summary></entry>'
    ),
    "xhtml xml:base and lang": atom(
        '<entry xml:base="http://b.example/d/"><id>/i</id><content type="xhtml" xml:lang="fr_FR">'
        '<div xmlns="http://www.w3.org/1999/xhtml" xml:base="sub/"><p lang="de">x</p></div></content>'
        '<link href="rel"/></entry>'
    ),
    "c1 references and mojibake": rss(
        "<item><title>smart &#147;quotes&#148; &#150; dash</title><description>caf\u00c3\u00a9 \u00e9t\u00e9"
        "</description><guid>g</guid></item>"
    ),
    "description then content:encoded": rss(
        "<item><title>x</title><description>short</description><content:encoded><![CDATA[<p>long</p>]]>"
        "</content:encoded></item>"
    ),
    "description then itunes summary": rss(
        "<item><title>x</title><description>one</description>"
        "<itunes:summary>two &lt;b&gt;</itunes:summary></item>"
    ),
    "atom summary and text content": atom(
        '<entry><id>i</id><summary type="html">&lt;p&gt;s&lt;/p&gt;</summary>'
        "<content>a &lt; b</content></entry>"
    ),
    "guid is the link": rss('<item><guid isPermaLink="true">http://g.example/1</guid></item>'),
    "guid not a permalink": rss(
        '<item><guid isPermaLink="false">http://g.example/1</guid><link>/rel</link></item>'
    ),
    "relative links with content-location": rss("<item><title>x</title><link>/a?b=1&amp;c=2</link></item>"),
    "authors": rss(
        "<item><title>x</title><author>john@example.com (John Doe)</author><dc:creator>Ann</dc:creator>"
        "<dc:creator>Bob</dc:creator></item>"
    ),
    "atom authors": atom(
        "<entry><id>i</id><author><name>A</name><email>a@example.com</email></author>"
        "<author><name>B</name></author><contributor><name>C</name></contributor></entry>"
    ),
    "categories": rss(
        '<item><title>x</title><category domain="d">One</category><category>Two</category>'
        '<media:category>Three</media:category><itunes:category text="Four"/></item>'
    ),
    "atom categories": atom('<entry><id>i</id><category term="t" label="L"/><category label="o"/></entry>'),
    "enclosures and images": rss(
        '<item><title>x</title><enclosure url="http://e.example/a.mp3" length="12" type="Audio/MPEG"/>'
        '<enclosure url="http://e.example/i.jpg" type="image/jpeg"/><media:thumbnail url="http://t.example/t.jpg"/>'
        '<media:content url="http://m.example/m.jpg" medium="image"/><itunes:image href="http://i.example/i.png"/>'
        "<feedburner:origLink>http://o.example/1</feedburner:origLink></item>"
    ),
    "media group and title": rss(
        "<item><media:group><media:title>MT</media:title><media:thumbnail>http://t.example/x.jpg"
        "</media:thumbnail></media:group><title>T</title><guid>g</guid></item>"
    ),
    "title depth": rss(
        "<item><title></title><title>second</title><guid>g</guid></item><title>late channel title</title>",
        channel="<title>first</title><title>ignored</title>",
    ),
    "channel image and textinput": rss(
        "<item><title>x</title></item>",
        channel="<image><url>/logo.png</url><title>Logo</title><link>http://l.example/</link><width>88</width>"
        "</image><textInput><title>TI</title><foo/><link>http://ti.example/</link></textInput><title>T</title>",
    ),
    "image in an item": rss("<item><title>x</title><image><title>i</title><url>/i.png</url></image></item>"),
    "prefix bound to another namespace": rss(
        '<item xmlns:content="http://purl.org/dc/elements/1.1/"><content:creator>Eve</content:creator>'
        "<title>x</title></item>"
    ),
    "other prefix for content": rss(
        '<item xmlns:c="http://purl.org/rss/1.0/modules/content/"><title>x</title><c:encoded>&lt;p&gt;b'
        "</c:encoded></item>"
    ),
    "unknown default namespace": b'<?xml version="1.0"?><rss version="2.0" xmlns="http://unknown.example/">'
    b"<channel><title>U</title><item><title>x</title></item></channel></rss>",
    "unknown elements and keymap": rss(
        "<item><title>x</title><date>1518478934</date><x:thing xmlns:x='http://x.example/' a='1'>t</x:thing>"
        "<comments>/c</comments></item>",
        channel="<title>T</title><ttl>15</ttl><sy:updatePeriod>daily</sy:updatePeriod>"
        "<generator>gen</generator><language>pt_BR</language>",
    ),
    "atom generator and dates": atom(
        "<entry><id>tag:x,2024:1</id><published>2024-01-02T10:00:00+01:00</published>"
        '<updated>2024-13-45</updated><link rel="alternate" type="text/html" href="http://a.example/1"/>'
        '<link rel="enclosure" href="/e.mp3"/></entry>',
        head='<title type="html">A &amp;amp; B</title><link href="http://site.example/"/>'
        '<generator uri="http://g.example/" version="1">G</generator><subtitle>sub</subtitle>',
        attrs='xml:lang="en_GB" xml:base="http://base.example/"',
    ),
    "rdf": b'<?xml version="1.0"?><rdf:RDF xmlns:rdf="http://www.w3.org/1999/02/22-rdf-syntax-ns#"'
    b' xmlns="http://purl.org/rss/1.0/" xmlns:dc="http://purl.org/dc/elements/1.1/">'
    b'<channel rdf:about="http://r.example/"><title>R</title><link>http://r.example/</link></channel>'
    b'<item rdf:about="http://r.example/1"><title>x</title><dc:date>2024-01-02</dc:date></item></rdf:RDF>',
    "atom 0.3": b'<?xml version="1.0"?><feed version="0.3" xmlns="http://purl.org/atom/ns#"><title>o</title>'
    b'<entry><title>x</title><id>i</id><content type="text/html" mode="escaped">&lt;b&gt;'
    b"</content></entry></feed>",
    "rss 0.91 without doctype": b'<?xml version="1.0"?><rss version="0.91"><channel><title>N</title>'
    b"<item><title>x</title><description>&lt;b&gt;d&lt;/b&gt;</description></item></channel></rss>",
}
HEADERS = {"Content-Location": "http://loc.example/feed/", "Content-Language": "pt_BR"}


@pytest.mark.parametrize("name", sorted(TAKEN))
@pytest.mark.parametrize("headers", [None, HEADERS], ids=["plain", "headers"])
def test_edge_cases_take_the_fast_path_and_agree(name: str, headers: dict[str, str] | None) -> None:
    assert assert_same(TAKEN[name], headers, name), f"{name}: the fast path declined"


def _mutate(root: etree._Element, rnd: random.Random) -> bytes:
    """Shuffle, duplicate, rename and re-attribute elements: feedparser's quirks live there."""
    names = [
        "title", "link", "description", "summary", "guid", "id", "author", "name", "email", "category",
        "pubDate", "updated", "image", "url", "date", "{http://purl.org/rss/1.0/modules/content/}encoded",
        "{http://search.yahoo.com/mrss/}title", "{http://www.itunes.com/dtds/podcast-1.0.dtd}summary",
        "{http://purl.org/dc/elements/1.1/}creator", "{http://x.example/}title",
    ]  # fmt: skip
    xml = "{http://www.w3.org/XML/1998/namespace}"
    attrs = [("type", "html"), ("type", "text"), ("type", "xhtml"), ("isPermaLink", "false"), ("rel", "self"),
             ("href", "/h"), ("term", "t"), (xml + "base", "http://b.example/"),
             (xml + "lang", "")]  # fmt: skip
    texts = ["", " ", "x", "a &amp; b", "&lt;i&gt;i&lt;/i&gt;", "j@example.com (J)", "1518478934",
             "caf\u00c3\u00a9", "&#150;"]  # fmt: skip
    root = copy.deepcopy(root)
    for _ in range(rnd.randint(1, 8)):
        element = rnd.choice([e for e in root.iter() if isinstance(e.tag, str)])
        op = rnd.randrange(6)
        if op == 0 and element is not root:
            element.addnext(copy.deepcopy(element))
        elif op == 1 and element is not root:
            element.getparent().remove(element)  # type: ignore[union-attr]
        elif op == 2:
            element.tag = rnd.choice(names)
        elif op == 3:
            element.set(*rnd.choice(attrs))
        elif op == 4 and not len(element):
            element.text = rnd.choice(texts)
        elif op == 5 and element is not root and (nxt := element.getnext()) is not None:
            nxt.addnext(element)
    return bytes(etree.tostring(root, xml_declaration=True, encoding="utf-8"))


def test_seeded_mutations_agree() -> None:
    rnd = random.Random(20240102)
    roots = [etree.fromstring(doc) for doc in TAKEN.values()]
    taken = 0
    for i in range(800):
        data = _mutate(rnd.choice(roots), rnd)
        taken += assert_same(data, HEADERS if i % 3 == 0 else None, data.decode("utf-8", "replace"))
    assert taken > 300, taken  # most mutations stay on the fast path


# --------------------------------------------------------------------------- corpus and farm


def test_corpus_every_file_agrees(shared_dir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    files = sorted(p for p in (shared_dir / "corpus" / "feeds").iterdir() if p.is_file())
    taken = [p.name for p in files if assert_same(p.read_bytes(), name=p.name)]
    xml = [p for p in files if p.suffix in (".xml", ".rss")]
    with capsys.disabled():
        print(f"\nfastparse: corpus {len(taken)} of {len(files)} files ({len(xml)} XML) on the fast path")
    assert len(taken) >= len(xml) * 2 // 3, "the fast path declines most of the corpus"


@pytest.fixture(scope="module")
def farm(shared_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> list[Path]:
    out = tmp_path_factory.mktemp("farm")
    command = [sys.executable, str(shared_dir / "bench" / "farm.py"), "generate", "--feeds", "60"]
    command += ["--seed", "3", "--out", str(out), "--port", "18999", "--host", "127.0.0.1", "--force"]
    subprocess.run(command, check=True, capture_output=True, timeout=300)
    files = sorted(p for p in (out / "feeds").rglob("*") if p.is_file())
    assert len(files) == 60
    return files


@pytest.mark.slow
def test_farm_takes_the_fast_path_and_agrees(farm: list[Path], capsys: pytest.CaptureFixture[str]) -> None:
    taken, cleaned = 0, 0
    for path in farm:
        data = path.read_bytes()
        taken += assert_same(data, name=path.name)
        fast, slow = parse_feed(data, url=URL), parse_feed(data, url=URL, fast_path=False)
        context = FeedContext(url=URL, site_url=fast.site_url, title=fast.title, generator=fast.generator)
        for a, b in zip(fast.entries[:2], slow.entries[:2], strict=True):
            assert clean_entry(a, context) == clean_entry(b, context), path.name
            cleaned += 1
    with capsys.disabled():
        print(f"\nfastparse: farm {taken} of {len(farm)} feeds on the fast path, {cleaned} entries cleaned")
    assert taken >= len(farm) * 95 // 100
