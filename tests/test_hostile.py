"""Acceptance for the hostile internet: every endpoint of ../shared/hostile through `ingestd poll --all`.

The guard is on, with only the hostile server's main port allow-listed; the
SSRF canary on its second port must never see a request. Every URL the
server hands out points at 127.0.0.1 or a non-http scheme.
"""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from tests.hostile import OFF_LIMITS_VARIANTS, SAME_PORT_VARIANT

pytestmark = [pytest.mark.integration, pytest.mark.shared, pytest.mark.slow]

SSRF_VARIANTS = (*OFF_LIMITS_VARIANTS, SAME_PORT_VARIANT)
CONTROL = {
    "/ok/rss.xml?via=control": 10,
    "/ok/atom.xml": 10,
    "/ok/substack.xml": 5,
    "/delay": 10,
    "/etag": 10,
}
# Entity bombs: the DOCTYPE is stripped, so at most the literal text is stored, never an expansion.
XML_BOMBS = ("/billion-laughs", "/billion-laughs-oneline", "/quadratic-blowup", "/xxe", "/xxe-dtd")
RETRY_AFTER = ("/429", "/503-retry-after-date", "/retry-after-huge", "/retry-after-garbage")
NOTHING_STORED = [
    "/slowloris",
    "/slow-headers",
    "/stall",
    "/reset",
    "/truncated",
    "/truncated-chunked",
    "/garbage-response",
    "/huge-headers",
    "/huge",
    "/huge-content-length",
    "/100k-entries",
    "/gzip-bomb",
    "/deflate-bomb",
    "/gzip-bomb-nested",
    "/brotli-bomb",
    "/zstd-bomb",
    "/redirect-loop",
    "/html-not-feed",
    "/not-xml-binary",
    "/empty-200",
    "/500",
    "/429",
    "/503-retry-after-date",
    "/retry-after-huge",
    "/retry-after-garbage",
    "/410",
    "/304-unconditional",
    "/billion-laughs",
    "/billion-laughs-oneline",
    "/quadratic-blowup",
    "/xxe-dtd",
]
NOTHING_STORED = [p for p in NOTHING_STORED if p not in XML_BOMBS] + [
    f"/redirect-to-private/{v}" for v in OFF_LIMITS_VARIANTS
]
POLL_BOUND = 150
# Runs a command and prints the peak RSS (KiB) of its largest process: the command and its
# workers only, not every process this test session has started.
PEAK_RSS = (
    "import resource, subprocess, sys; r = subprocess.run(sys.argv[1:]); "
    "print(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss); sys.exit(r.returncode)"
)  # seconds for the whole pass; the slowest endpoints stop at the 8 s deadline


@pytest.fixture(scope="module")
def hostile(shared_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    port_file = tmp_path_factory.mktemp("hostile-server") / "port.json"
    proc = subprocess.Popen(
        [
            sys.executable,
            str(shared_dir / "hostile" / "hostile_server.py"),
            *(
                "--port",
                "0",
                "--port-file",
                str(port_file),
                "--max-seconds",
                "400",
                "--slow-cap",
                "30",
                "--quiet",
            ),
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 30
        while not port_file.exists() and time.monotonic() < deadline:
            time.sleep(0.05)
        info = json.loads(port_file.read_text())
        yield {
            "port": info["port"],
            "canary_port": info["canary_port"],
            "base": f"http://127.0.0.1:{info['port']}",
        }
    finally:
        proc.terminate()
        proc.wait(timeout=10)


def _stats(base: str) -> dict[str, Any]:
    with urllib.request.urlopen(f"{base}/__stats", timeout=10) as answer:
        data: dict[str, Any] = json.load(answer)
    return data


@pytest.fixture(scope="module")
def polled(
    hostile: dict[str, Any], shared_dir: Path, tmp_path_factory: pytest.TempPathFactory
) -> dict[str, Any]:
    base = hostile["base"]
    with urllib.request.urlopen(f"{base}/__catalogue", timeout=10) as answer:
        catalogue = json.load(answer)
    paths = [e["path"] for e in catalogue["endpoints"]]
    subscribed = [
        p for p in paths if not p.startswith(("/__", "/article/")) and p not in ("/", "/redirect-to-private*")
    ]
    subscribed = [p for p in subscribed if p != "/ok/rss.xml"] + ["/ok/rss.xml?via=control"]
    subscribed += [f"/redirect-to-private/{v}" for v in SSRF_VARIANTS] + ["/redirect-to-private"]
    # A Retry-After pauses every feed of its host, and all these endpoints share one host:
    # those feeds are polled after the others, each by its own `poll ID`.
    subscribed = [p for p in subscribed if p not in RETRY_AFTER] + list(RETRY_AFTER)
    urls = [base + p for p in subscribed]
    canary = hostile["canary_port"]
    urls += [f"http://127.0.0.1:{canary}/feed", f"http://localhost:{canary}/feed"]

    tmp = tmp_path_factory.mktemp("hostile")
    opml = tmp / "hostile.opml"
    outlines = "\n".join(f'<outline type="rss" xmlUrl="{u.replace("&", "&amp;")}"/>' for u in urls)
    opml.write_text(f'<?xml version="1.0"?><opml version="2.0"><head/><body>{outlines}</body></opml>')
    config = tmp / "ingestd.toml"
    config.write_text(
        f'[fetch]\nallowed_hosts = ["127.0.0.1:{hostile["port"]}"]\ntimeout = 8\nconnect_timeout = 3\n'
        "concurrency = 24\nper_host_concurrency = 12\n"
    )
    db = tmp / "ingestd.db"
    env = {k: v for k, v in os.environ.items() if not k.startswith("INGESTD_")}
    env.update(INGESTD_CONFIG=str(config), INGESTD_DB=f"sqlite:///{db}")
    subprocess.run(
        [sys.executable, "-m", "ingestd", "feeds", "import", str(opml)], env=env, check=True, timeout=60
    )
    urllib.request.urlopen(f"{base}/__reset", timeout=10).close()
    before = datetime.now(UTC)
    started = time.monotonic()
    first = len(urls) - len(RETRY_AFTER) - 2
    proc = subprocess.run(
        [
            sys.executable,
            "-c",
            PEAK_RSS,
            sys.executable,
            "-m",
            "ingestd",
            "poll",
            *[str(i) for i in range(1, first + 1)],
            *map(str, (len(urls) - 1, len(urls))),
        ],
        env=env,
        capture_output=True,
        text=True,
        timeout=POLL_BOUND * 2,
    )
    elapsed = time.monotonic() - started
    for feed_id in range(first + 1, first + 1 + len(RETRY_AFTER)):
        subprocess.run(
            [sys.executable, "-m", "ingestd", "poll", str(feed_id)],
            env=env,
            capture_output=True,
            check=True,
            timeout=60,
        )
    peak_kb = int(proc.stdout.strip().splitlines()[-1])
    return {
        "proc": proc,
        "elapsed": elapsed,
        "peak_mb": peak_kb / 1024,
        "db": db,
        "base": base,
        "before": before,
        "stats": _stats(base),
        "canary_port": canary,
        "env": env,
        "shared": shared_dir,
        "tmp": tmp,
    }


def _feeds(db: Path) -> dict[str, dict[str, Any]]:
    conn = sqlite3.connect(db)
    conn.row_factory = sqlite3.Row
    rows = conn.execute(
        "SELECT f.*, (SELECT COUNT(*) FROM article_sources s WHERE s.feed_id = f.id) AS stored FROM feeds f"
    ).fetchall()
    out = {}
    for row in rows:
        url = row["url"]
        path = "/" + url.split("/", 3)[3] if url.count("/") >= 3 else url
        out[path] = dict(row)
        out[url] = dict(row)
    return out


def test_poll_ends_in_bound_exits_0_and_stays_small(polled: dict[str, Any]) -> None:
    proc = polled["proc"]
    print(f"hostile pass: {polled['elapsed']:.1f} s, peak RSS {polled['peak_mb']:.0f} MB")
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert polled["elapsed"] < POLL_BOUND
    assert polled["peak_mb"] < 300
    assert "Traceback" not in proc.stderr


def test_canary_never_reached(polled: dict[str, Any]) -> None:
    assert polled["stats"]["canary"]["total"] == 0, polled["stats"]["canary"]


def test_control_feeds_are_stored(polled: dict[str, Any]) -> None:
    feeds = _feeds(polled["db"])
    for path, count in CONTROL.items():
        assert feeds[path]["stored"] == count, (path, feeds[path])
        assert feeds[path]["status"] == "active", (path, feeds[path]["last_error"])


def test_attack_endpoints_store_nothing_and_fail_clearly(polled: dict[str, Any]) -> None:
    feeds = _feeds(polled["db"])
    for path in NOTHING_STORED:
        feed = feeds[path]
        assert feed["stored"] == 0, path
        if path != "/304-unconditional":
            assert feed["status"] in ("failing", "gone"), (path, feed["status"])
            assert feed["last_error"], path
            assert "\n" not in feed["last_error"]
    canary_port = polled["canary_port"]
    for url in (f"http://127.0.0.1:{canary_port}/feed", f"http://localhost:{canary_port}/feed"):
        assert feeds[url]["stored"] == 0
        assert "refused" in (feeds[url]["last_error"] or ""), url


def test_each_endpoint_ends_in_its_prescribed_state(polled: dict[str, Any]) -> None:
    feeds = _feeds(polled["db"])
    before = polled["before"]

    def next_poll(path: str) -> datetime:
        return datetime.fromisoformat(feeds[path]["next_poll_at"]).replace(tzinfo=UTC)

    assert feeds["/410"]["status"] == "gone"
    assert next_poll("/429") >= before + timedelta(seconds=120)
    assert next_poll("/503-retry-after-date") >= before + timedelta(seconds=299)
    assert next_poll("/retry-after-huge") <= datetime.now(UTC) + timedelta(days=1, hours=3)
    assert next_poll("/retry-after-garbage") > before
    assert next_poll("/500") >= before + timedelta(minutes=5)
    for path in ("/slowloris", "/slow-headers", "/stall"):
        assert "timed out" in feeds[path]["last_error"], (path, feeds[path]["last_error"])
    for path in ("/gzip-bomb", "/deflate-bomb", "/gzip-bomb-nested", "/huge", "/huge-content-length"):
        assert "too large" in feeds[path]["last_error"], (path, feeds[path]["last_error"])
    assert "empty" in feeds["/empty-200"]["last_error"]
    assert "not a feed" in feeds["/html-not-feed"]["last_error"]
    assert "redirect" in feeds["/redirect-loop"]["last_error"]
    # 301: the subscription follows the permanent redirect; 302 does not move it.
    base = polled["base"]
    assert f"{base}/301-permanent" not in feeds
    assert feeds[f"{base}/ok/rss.xml"]["stored"] == 10
    assert feeds["/302-temporary"]["stored"] == 10
    assert feeds["/redirect-chain"]["stored"] == 10
    # The one redirect to this machine the harness allow-lists (its own port) is followed.
    assert feeds["/redirect-to-private/same-port"]["stored"] == 10
    # Each story is stored once even though several feeds carry it.
    conn = sqlite3.connect(polled["db"])
    assert conn.execute("SELECT COUNT(*) FROM articles WHERE url LIKE '%/ok/rss%'").fetchone()[0] <= 10


def test_tolerated_content_is_stored_clean(polled: dict[str, Any]) -> None:
    feeds = _feeds(polled["db"])
    for path in ("/xss", "/xss-atom", "/wrong-charset", "/control-chars", "/future-dates", "/dup-guids"):
        assert feeds[path]["stored"] > 0, (path, feeds[path]["last_error"])
    assert feeds["/long-fields"]["stored"] >= 1
    assert feeds["/deep-nesting"]["stored"] >= 1
    assert feeds["/changing"]["stored"] == polled["stats"]["paths"]["/changing"]["count"]
    conn = sqlite3.connect(polled["db"])
    dump = "\n".join(
        str(v)
        for row in conn.execute("SELECT title, author, content_text, content_html, url FROM articles")
        for v in row
    )
    assert "root:" not in dump
    assert "lollol" not in dump
    for path in XML_BOMBS:
        assert feeds[path]["status"] == "active", (path, feeds[path]["last_error"])
    longest = conn.execute("SELECT MAX(LENGTH(content_text)) FROM articles").fetchone()[0]
    assert longest < 1_000_000
    assert "\x00" not in dump
    assert "SSRF-CANARY" not in dump


def test_stored_html_passes_the_xss_oracle(polled: dict[str, Any]) -> None:
    conn = sqlite3.connect(polled["db"])
    html = "\n".join(r[0] for r in conn.execute("SELECT content_html FROM articles"))
    out = polled["tmp"] / "stored.html"
    out.write_text(html)
    check = subprocess.run(
        [sys.executable, str(polled["shared"] / "hostile" / "hostile_server.py"), "--check-html", str(out)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert check.returncode == 0, check.stdout[-3000:]


def test_fetch_log_shows_in_feeds_list_and_status(polled: dict[str, Any]) -> None:
    cmd = [sys.executable, "-m", "ingestd"]
    listed = subprocess.run(
        [*cmd, "feeds", "list", "--json"],
        env=polled["env"],
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    )
    feeds = {f["url"].rsplit("/", 1)[-1]: f for f in map(json.loads, listed.stdout.splitlines())}
    gone = feeds["410"]["fetch_log"]
    assert gone[0]["outcome"] == "gone"
    assert gone[0]["http_status"] == 410
    assert feeds["atom.xml"]["fetch_log"][0]["outcome"] == "new"
    assert feeds["atom.xml"]["fetch_log"][0]["new"] == 10
    status = subprocess.run(
        [*cmd, "status"], env=polled["env"], capture_output=True, text=True, check=True, timeout=60
    )
    row = next(
        line for line in status.stdout.splitlines() if line.rstrip().endswith("/410)") or "/410 " in line
    )
    assert " g " in row
