"""Main-content extraction: what a reader came for stays, the page's chrome goes."""

# ruff: noqa: E501 - HTML fixtures read best one element per line

from __future__ import annotations

import json
import pickle
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from ingestd.exceptions import ParseError
from ingestd.models import FeedContext, ParsedEntry
from ingestd.pipeline.clean import clean_entry
from ingestd.pipeline.fulltext import extract_main_html

BODY = (
    "<p>The harbour authority approved the new breakwater on Monday after three years of studies.</p>"
    "<p>Engineers expect the work to start in spring; the <code>wave-model</code> data is public.</p>"
    "<ul><li>Length: 420 metres of reinforced concrete</li><li>Budget: 38 million euros in total</li></ul>"
    "<h2>What changes for the fishermen</h2>"
    "<p>Boats will moor inside the new basin, sheltered from the winter storms that damaged the quay twice.</p>"
    "<p>Città e porto: «un’opera attesa», said the mayor, who had campaigned for it since the last election.</p>"
)


def page(body: str = BODY, charset: str = "utf-8") -> bytes:
    return f"""<!doctype html><html><head><meta charset="{charset}"><title>Breakwater | Port News</title>
<script>var tracker = 1;</script></head><body>
<header><nav><a href="/">Home</a> <a href="/sport">Sport</a> <a href="/weather">Weather forecast today</a></nav></header>
<main><article><h1>Breakwater approved</h1><div class="share">Share this on Twitter and Facebook now</div>
<div class="entry-content">{body}</div></article>
<section id="comments" class="comments"><h3>Comments</h3><div class="comment">
<p>Totally pointless spending of our taxes, the old pier was fine for decades honestly.</p></div></section></main>
<aside class="sidebar"><h3>Most read</h3><ul><li><a href="/a">Weekend traffic jams on the coast road</a></li></ul></aside>
<footer><p>Copyright Port News Group, all rights reserved. Privacy policy and cookie settings.</p></footer>
</body></html>""".encode(charset)


def test_keeps_the_article_and_drops_the_chrome() -> None:
    out = extract_main_html(page(), url="https://news.example/breakwater")
    assert "approved the new breakwater" in out
    assert "Length: 420 metres" in out
    assert "sheltered from the winter storms" in out
    for chrome in ("Weather forecast", "pointless spending", "Weekend traffic", "Copyright", "tracker"):
        assert chrome not in out, chrome
    assert not out.lstrip().startswith("<h1")  # the title is stored apart, never repeated in the body
    assert "<code>wave-model</code>" in out  # trafilatura's inline <pre> is put back to <code>


def test_cleaned_page_keeps_structure_and_accents() -> None:
    out = extract_main_html(page(), url="https://news.example/breakwater")
    entry = ParsedEntry(
        guid="g", link="https://news.example/breakwater", title="Breakwater", content_html=out
    )
    text = clean_entry(entry, FeedContext(url="https://news.example/feed")).content_text
    assert "- Length: 420 metres of reinforced concrete" in text
    assert "What changes for the fishermen" in text
    assert "Città e porto: «un’opera attesa»" in text


def test_charset_from_the_header_and_from_meta() -> None:
    latin = page(charset="windows-1252")
    assert "«un’opera attesa»" in extract_main_html(latin, url="https://x.example/", headers={})
    headers = {"Content-Type": "text/html; charset=windows-1252"}
    assert "«un’opera attesa»" in extract_main_html(latin, url="https://x.example/", headers=headers)


@pytest.mark.parametrize(
    "doc",
    [b"", b"<html><body></body></html>", b"<html><body><nav><a href='/'>Home</a></nav></body></html>"],
)
def test_nothing_usable_is_a_parse_error(doc: bytes) -> None:
    with pytest.raises(ParseError, match="no article text"):
        extract_main_html(doc, url="https://x.example/empty")


def test_is_picklable_for_worker_processes() -> None:
    assert pickle.loads(pickle.dumps(extract_main_html)) is extract_main_html  # noqa: S301 - our own bytes


# -- the hostile server's article pages -------------------------------------------------------------


@pytest.fixture(scope="module")
def hostile(shared_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, Path]]:
    script = shared_dir / "hostile" / "hostile_server.py"
    port_file = tmp_path_factory.mktemp("hostile") / "port.json"
    proc = subprocess.Popen(
        [
            sys.executable,
            str(script),
            "--port",
            "0",
            "--port-file",
            str(port_file),
            "--max-seconds",
            "120",
            "--quiet",
        ]
    )
    try:
        deadline = time.monotonic() + 15
        while not port_file.exists():
            if time.monotonic() > deadline or proc.poll() is not None:
                pytest.fail("the hostile server did not start")
            time.sleep(0.05)
        port = json.loads(port_file.read_text())["port"]
        yield f"http://127.0.0.1:{port}", script
    finally:
        proc.terminate()
        proc.wait(timeout=10)


def _get(url: str) -> bytes:
    assert url.startswith("http://127.0.0.1:")
    with urllib.request.urlopen(url, timeout=10) as response:
        return bytes(response.read())


def _clean(html: str, url: str) -> str:
    entry = ParsedEntry(guid=url, link=url, title="t", content_html=html, base_url=url)
    return clean_entry(entry, FeedContext(url=url)).content_html


@pytest.mark.integration
@pytest.mark.shared
@pytest.mark.parametrize("name", ["ok-3", "substack-2"])
def test_hostile_benign_articles(hostile: tuple[str, Path], name: str) -> None:
    base, _script = hostile
    number = name.split("-")[1]
    out = extract_main_html(_get(f"{base}/article/{name}.html"), url=f"{base}/article/{name}.html")
    assert f"Paragraph one of article {number}." in out
    assert "a link" in out
    assert "menu" not in out
    assert "footer" not in out


@pytest.mark.integration
@pytest.mark.shared
def test_hostile_xss_article_is_safe_once_cleaned(hostile: tuple[str, Path], tmp_path: Path) -> None:
    base, script = hostile
    url = f"{base}/article/xss.html"
    stored = _clean(extract_main_html(_get(url), url=url), url)
    target = tmp_path / "stored.html"
    target.write_text(stored)
    check = subprocess.run(
        [sys.executable, str(script), "--check-html", str(target)], capture_output=True, text=True, timeout=30
    )
    assert check.returncode == 0, check.stdout + check.stderr
    lowered = stored.lower()
    for vector in ("<script", "javascript:", "onerror=", "onload=", "<iframe", "<style", "<form"):
        assert vector not in lowered
