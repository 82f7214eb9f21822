"""`ingestd status`, its 30-day sparkline, the statistics queries and the progress bars."""

from __future__ import annotations

import os
import pty
import select
import subprocess
import sys
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from click.testing import CliRunner

from ingestd.cli import main
from ingestd.daemon.report import outcome_marks, sparkline, status_lines
from ingestd.models import CleanArticle, FeedUpdate, IdentityKeys
from ingestd.store import Store, open_store, stats

NOW = datetime.now(UTC)


def test_sparkline_scales_to_the_busiest_day() -> None:
    assert sparkline([0, 0, 0]) == "▁▁▁"
    assert sparkline([0, 1, 7, 14]) == "▁▂▅█"
    assert sparkline([5]) == "█"
    assert sparkline([0, 1000, 1]) == "▁█▂"  # a quiet day is still visible next to a busy one


def _article(n: int) -> tuple[CleanArticle, IdentityKeys]:
    article = CleanArticle(
        guid=f"g{n}", url=f"https://example.test/{n}", title=f"Post {n}", content_text="text"
    )
    return article, IdentityKeys(f"g{n}", f"https://example.test/{n}", f"h{n}", f"e{n}")


def _store(tmp_path: Path) -> Store:
    store = open_store(f"sqlite:///{tmp_path / 'ingestd.db'}")
    busy, _ = store.add_feed("https://busy.example.test/feed", title="Busy")
    store.add_feed("https://quiet.example.test/feed", title="Quiet")
    broken, _ = store.add_feed("https://broken.example.test/feed")
    n = 0
    for days_ago, posts in ((40, 5), (29, 1), (10, 2), (1, 1), (0, 3)):  # 40 days ago: outside the window
        at = NOW - timedelta(days=days_ago)
        items = [_article(n + i) for i in range(posts)]
        n += posts
        store.save_poll(busy, FeedUpdate("new", polled_at=at, next_poll_at=NOW + timedelta(hours=1)), items)
    store.save_poll(
        broken,
        FeedUpdate(
            "error", polled_at=NOW, next_poll_at=NOW + timedelta(hours=2), error="HTTP 500\nServer Error"
        ),
    )
    return store


def test_daily_activity_and_snapshot(tmp_path: Path) -> None:
    store = _store(tmp_path)
    try:
        activity = stats.daily_new_articles(store, days=30, now=NOW)
        assert set(activity) == {1}
        assert len(activity[1]) == 30
        assert (activity[1][-1], activity[1][-2], activity[1][-11], activity[1][0]) == (3, 1, 2, 1)
        assert sum(activity[1]) == 7
        snap = stats.snapshot(store)
        assert snap.feeds_by_status == {"active": 2, "failing": 1}
        assert snap.articles == 12
        assert snap.due == 1  # the quiet feed, never polled
        assert snap.last_success.keys() == {1}
        assert abs((snap.last_success[1] - NOW).total_seconds()) < 1e-3
        assert stats.leased_feeds(store, now=NOW) == 0
        lines = status_lines(store.list_feeds(), activity, snap)
    finally:
        store.close()
    busy = next(line for line in lines if "Busy" in line)
    # 29 days ago 1, 10 days ago 2, yesterday 1, today 3 (the peak); 40 days ago is outside.
    # Then the POLLS column (empty: no fetch history was passed), then the feed.
    assert busy.endswith("  " + "▃" + "▁" * 18 + "▆" + "▁" * 8 + "▃█" + "  " + " " * 10 + "  Busy")
    broken = next(line for line in lines if "broken.example.test" in line)
    assert "failing" in broken
    assert "(HTTP 500 Server Error)" in broken
    totals = "\n".join(lines[lines.index("") :])
    assert "3 feeds (2 active, 1 failing); 1 due now; 0 being polled" in totals
    assert "12 articles; 7 entries seen in the last 30 days" in totals
    assert "the most overdue feed has waited" in totals


def test_status_command_prints_the_table(tmp_path: Path) -> None:
    _store(tmp_path).close()
    result = CliRunner().invoke(main, ["--db", f"sqlite:///{tmp_path / 'ingestd.db'}", "status"])
    assert result.exit_code == 0, result.output
    assert "LAST 30 DAYS" in result.output
    assert "Busy" in result.output
    assert "▁" in result.output
    assert "3 feeds (2 active, 1 failing)" in result.output


OPML = """<?xml version="1.0"?><opml version="2.0"><head><title>t</title></head><body>
{}
</body></opml>"""


def _opml(tmp_path: Path, n: int) -> Path:
    path = tmp_path / "feeds.opml"
    path.write_text(
        OPML.format(
            "\n".join(
                f'<outline type="rss" text="f{i}" xmlUrl="https://e{i}.example.test/feed"/>' for i in range(n)
            )
        )
    )
    return path


def _run_in_pty(args: list[str], env: dict[str, str]) -> str:
    """Run with stdout and stderr on a pseudo-terminal, as a person at a terminal would."""
    leader, follower = pty.openpty()
    proc = subprocess.Popen(args, env=env, stdin=subprocess.DEVNULL, stdout=follower, stderr=follower)
    os.close(follower)
    out = b""
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        ready, _, _ = select.select([leader], [], [], 0.2)
        if ready:
            try:
                chunk = os.read(leader, 65536)
            except OSError:  # the child closed the terminal
                break
            if not chunk:
                break
            out += chunk
        elif proc.poll() is not None:
            break
    proc.wait(timeout=30)
    os.close(leader)
    assert proc.returncode == 0, out.decode(errors="replace")
    return out.decode(errors="replace")


@pytest.mark.integration
def test_feeds_import_shows_progress_on_a_terminal_only(tmp_path: Path) -> None:
    opml = _opml(tmp_path, 40)
    env = {k: v for k, v in os.environ.items() if not k.startswith("INGESTD_")}
    env.update(INGESTD_DB=f"sqlite:///{tmp_path / 'a.db'}", TERM="xterm", COLUMNS="100")
    on_tty = _run_in_pty([sys.executable, "-m", "ingestd", "feeds", "import", str(opml)], env)
    assert "importing" in on_tty
    assert "40/40" in on_tty
    env["INGESTD_DB"] = f"sqlite:///{tmp_path / 'b.db'}"
    piped = subprocess.run(
        [sys.executable, "-m", "ingestd", "feeds", "import", str(opml)],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert piped.returncode == 0, piped.stderr
    assert piped.stdout == "imported 40 feeds (40 new)\n"
    assert piped.stderr == ""


def test_polls_column_shows_the_fetch_log_oldest_first() -> None:
    history = [{"outcome": o} for o in ("error", "not_modified", "new", "deferred", "gone")]  # newest first
    assert outcome_marks(history) == "gd+=x"
    assert outcome_marks([{"outcome": "new"}] * 15) == "+" * 10
