"""SIGKILL at random moments while the daemon polls and writes: nothing half-written, nothing lost.

Each feed's poll is one transaction and a claim is a lease that expires, so a
restarted daemon simply carries on. 60 feeds of 20 items keep it busy; feeds
are due again every second and grow between trials, so kills land while
articles are being written, not only while it idles.
"""

from __future__ import annotations

import random
import signal
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from tests.daemon.helpers import (
    NotifySocket,
    count,
    daemon,
    ingestd,
    kill_group,
    make_env,
    query,
    rss,
    wait_for,
)
from tests.feedserver import FeedServer, serve

pytestmark = [pytest.mark.integration, pytest.mark.slow]

FEEDS = 60
ITEMS = 20
TRIALS = 20
SEED = 20240501


def test_sigkill_at_random_moments_loses_and_duplicates_nothing(tmp_path: Path) -> None:
    rng = random.Random(SEED)
    sizes = dict.fromkeys(range(FEEDS), ITEMS)
    with serve(FeedServer()) as server:
        for i in range(FEEDS):
            server.files[f"f{i}.xml"] = rss(f"f{i}", ITEMS)
        env, db = make_env(tmp_path, server.port, 'tick = "0.2s"\nlease = "2s"\ngrace = "5s"')
        config = Path(env["INGESTD_CONFIG"])
        config.write_text(config.read_text() + '[schedule]\ndefault_interval = "1s"\nmin_interval = "1s"\n')
        ingestd(env, "feeds", "add", *[server.url(f"f{i}.xml") for i in range(FEEDS)])
        log = tmp_path / "stderr.log"
        notify = NotifySocket(tmp_path / "notify.sock")
        env["NOTIFY_SOCKET"] = str(notify.path)
        progressed = 0
        for _trial in range(TRIALS):
            before = count(db, "SELECT COUNT(*) FROM articles")
            with daemon(env, log) as proc:
                # Python needs most of a second to start: count from READY=1, when the polls begin.
                wait_for(lambda: "READY=1" in notify.drain(), 30, "READY=1")
                time.sleep(rng.uniform(0.05, 2.5))
                kill_group(proc)
                last_kill = datetime.now(UTC)
                notify.messages.clear()
                assert proc.returncode == -signal.SIGKILL
            after = count(db, "SELECT COUNT(*) FROM articles")
            progressed += after > before
            for i in rng.sample(range(FEEDS), 10):  # some feeds publish more between crashes
                sizes[i] += 3
                server.files[f"f{i}.xml"] = rss(f"f{i}", sizes[i])
        expected = sum(sizes.values())

        # The last start finishes the job; then a clean stop.
        with daemon(env, log) as proc:
            wait_for(
                lambda: count(db, "SELECT COUNT(*) FROM articles") >= expected, 60, f"{expected} articles"
            )
            proc.send_signal(signal.SIGTERM)
            assert proc.wait(timeout=30) == 0
            last_pid = proc.pid
        notify.close()

    guids = {f"f{i}-{n}" for i in range(FEEDS) for n in range(sizes[i])}
    stored = [g for (g,) in query(db, "SELECT guid FROM articles")]
    print(f"{TRIALS} kills, {progressed} during writes; {len(stored)} articles, expected {expected}")
    assert progressed >= TRIALS // 3, "too few kills landed while articles were being written"
    assert len(stored) == len(set(stored)) == expected  # every article exactly once
    assert set(stored) == guids
    assert count(db, "SELECT COUNT(*) FROM article_sources") == expected
    assert (
        count(db, "SELECT COUNT(*) FROM articles WHERE content_text NOT LIKE 'Paragraph one of post %'") == 0
    )
    assert count(db, "SELECT COUNT(*) FROM articles WHERE title = '' OR content_html = ''") == 0
    assert count(db, "SELECT COUNT(*) FROM articles a LEFT JOIN article_sources s ON s.article_id = a.id "
                     "WHERE s.id IS NULL") == 0  # fmt: skip
    assert count(db, "SELECT COUNT(DISTINCT seq) FROM articles") == expected
    assert query(db, "PRAGMA integrity_check") == [("ok",)]
    # The clean stop hands back every lease it held; a lease a killed daemon held may remain,
    # ending at most one lease term (2 s) after that kill: that is how a dead worker's claim
    # ends (the last daemon can finish sooner, when that feed had nothing left to store).
    assert count(db, f"SELECT COUNT(*) FROM feeds WHERE lease_owner LIKE '%:{last_pid}'") == 0  # noqa: S608 - an int
    leases = [until for (until,) in query(db, "SELECT lease_until FROM feeds WHERE lease_until IS NOT NULL")]
    term_end = last_kill + timedelta(seconds=2.5)
    assert all(datetime.fromisoformat(u).replace(tzinfo=UTC) <= term_end for u in leases), (leases, last_kill)
    assert count(db, "SELECT COUNT(*) FROM feeds WHERE status != 'active'") == 0
