"""Acceptance: the bench farm (200 feeds, seed 7) stored exactly as expected.json says, twice.

Pass 1: every story once, every planted duplicate merged. ``farm.py mutate``
adds one new item to 10 % of the feeds; pass 2 stores exactly those, and
``articles tail --after-seq <max before pass 2>`` prints exactly them.
"""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess
import sys
import threading
from collections.abc import Iterator
from functools import partial
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

pytestmark = [pytest.mark.integration, pytest.mark.shared, pytest.mark.slow]


class _Quiet(SimpleHTTPRequestHandler):
    """Static files with Last-Modified and If-Modified-Since (so pass 2 gets its 304s)."""

    def log_message(self, format: str, *args: object) -> None:
        pass


@pytest.fixture
def farm_server(tmp_path: Path) -> Iterator[tuple[ThreadingHTTPServer, Path]]:
    root = tmp_path / "farm"
    root.mkdir()
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), partial(_Quiet, directory=str(root)))
    httpd.daemon_threads = True
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    try:
        yield httpd, root
    finally:
        httpd.shutdown()
        httpd.server_close()


def _run(*args: str, cwd: Path) -> str:
    # ingestd refuses unknown INGESTD_* variables, and conftest's INGESTD_SHARED_DIR is one.
    env = {k: v for k, v in os.environ.items() if not k.startswith("INGESTD_")}
    proc = subprocess.run(
        [sys.executable, "-m", "ingestd", *args],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    assert proc.returncode == 0, f"ingestd {' '.join(args)} exited {proc.returncode}: {proc.stderr[-2000:]}"
    return proc.stdout


def _stored(db: Path) -> tuple[list[str], int]:
    conn = sqlite3.connect(db)
    try:
        urls = [r[0] for r in conn.execute("SELECT canonical_url FROM articles")]
        sources = conn.execute("SELECT COUNT(*) FROM article_sources").fetchone()[0]
        return urls, int(sources)
    finally:
        conn.close()


def _check(db: Path, expected: dict[str, object], label: str) -> set[str]:
    urls, sources = _stored(db)
    want = {e["key"] for e in expected["entries"]}  # type: ignore[attr-defined, index]
    got = set(urls)
    assert len(urls) == len(got), f"{label}: {len(urls) - len(got)} stories stored twice"
    assert got == want, f"{label}: missing {sorted(want - got)[:5]}, unexpected {sorted(got - want)[:5]}"
    assert len(urls) == expected["unique_entries"]
    assert sources == expected["per_feed_unique"], f"{label}: article_sources"
    return got


def test_farm_is_stored_exactly_as_expected_twice(
    shared_dir: Path, farm_server: tuple[ThreadingHTTPServer, Path]
) -> None:
    httpd, root = farm_server
    port = httpd.server_address[1]
    farm = shared_dir / "bench" / "farm.py"
    subprocess.run(
        [sys.executable, str(farm), "generate", "--feeds", "200", "--seed", "7", "--out", str(root),
         "--force", "--port", str(port), "--host", "127.0.0.1"],
        check=True, capture_output=True, timeout=120,
    )  # fmt: skip
    work = root.parent
    db = work / "ingestd.db"
    config = work / "ingestd.toml"
    config.write_text(
        f'[database]\nurl = "sqlite:///{db}"\n\n[fetch]\nallowed_hosts = ["127.0.0.1:{port}"]\n'
    )
    base = ("--config", str(config), "-q")

    _run(*base, "feeds", "import", str(root / "farm.opml"), cwd=work)
    _run(*base, "poll", "--all", cwd=work)
    before = _check(db, json.loads((root / "expected.json").read_text()), "pass 1")
    conn = sqlite3.connect(db)
    max_seq = conn.execute("SELECT MAX(seq) FROM articles").fetchone()[0]
    conn.close()

    subprocess.run(
        [sys.executable, str(farm), "mutate", "--dir", str(root), "--fraction", "0.1"],
        check=True, capture_output=True, timeout=120,
    )  # fmt: skip
    _run(*base, "poll", "--all", cwd=work)
    after = _check(db, json.loads((root / "expected.json").read_text()), "pass 2")
    new = after - before
    assert len(new) == 20  # ceil(0.1 * 200) feeds got one new item each

    lines = _run(*base, "articles", "tail", "--after-seq", str(max_seq), cwd=work).splitlines()
    rows = [json.loads(line) for line in lines]
    assert [r["canonical_url"] for r in rows if r["canonical_url"] in new] == [
        r["canonical_url"] for r in rows
    ]
    assert sorted(r["canonical_url"] for r in rows) == sorted(new), "tail prints exactly the new stories"
    assert [r["seq"] for r in rows] == sorted(r["seq"] for r in rows)
    assert all("raw_html" not in r and "content_text" in r for r in rows)
