"""The store on a real PostgreSQL server, started here with initdb/pg_ctl (Unix socket only).

The same calls as the daemon's, on the dialect that several workers will share:
migrations, a poll's articles with near-duplicates inside one batch and across
batches (the candidate search runs on the driver's cursor), unchanged and
failed polls, a feed paused mid-poll, claims with SKIP LOCKED and the
consumers' ``seq``.
"""

from __future__ import annotations

import importlib.util
import os
import pwd
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from sqlalchemy import text

from ingestd.exceptions import StorageError
from ingestd.models import FeedUpdate
from ingestd.store import Store, open_store
from tests.store.helpers import item, ok, prose

PORT = 5432  # names the socket file only: the server listens on no TCP address


def _server_user() -> list[str]:
    """How to run initdb and postgres, which refuse to run as root."""
    if os.geteuid() != 0:
        return []
    try:
        pwd.getpwnam("postgres")
    except KeyError:
        pytest.skip("running as root and there is no 'postgres' user to start PostgreSQL as")
    return ["runuser", "-u", "postgres", "--"]


@pytest.fixture(scope="module")
def pg_url() -> Iterator[str]:
    if not (shutil.which("initdb") and shutil.which("pg_ctl")):
        pytest.skip("PostgreSQL's initdb and pg_ctl are not installed")
    if importlib.util.find_spec("psycopg") is None:
        pytest.skip("psycopg is not installed (pip install -e '.[test]')")
    as_user = _server_user()
    # Not under pytest's own temp dir: that one is private to us, and the server may run as another user.
    base = Path(tempfile.mkdtemp(prefix="ingestd-pg-"))
    data, sock = base / "data", base / "sock"
    sock.mkdir()
    if as_user:
        shutil.chown(base, "postgres")
        shutil.chown(sock, "postgres")

    def run(*args: str) -> None:
        done = subprocess.run([*as_user, *args], capture_output=True, text=True, timeout=120, check=False)
        if done.returncode:
            pytest.fail(f"{' '.join(args[:2])} failed ({done.returncode}): {done.stderr or done.stdout}")

    try:
        run("initdb", "--no-sync", "-A", "trust", "-U", "postgres", "-D", str(data))
        options = f"-k {sock} -p {PORT} -c listen_addresses='' -c fsync=off"
        run("pg_ctl", "-D", str(data), "-o", options, "-l", str(base / "server.log"), "-w", "start")
        try:
            run("createdb", "-h", str(sock), "-p", str(PORT), "-U", "postgres", "ingestd")
            yield f"postgresql://postgres@/ingestd?host={sock}&port={PORT}"
        finally:
            run("pg_ctl", "-D", str(data), "-m", "immediate", "stop")
    finally:
        shutil.rmtree(base, ignore_errors=True)


@pytest.fixture
def store(pg_url: str) -> Iterator[Store]:
    s = open_store(pg_url)
    yield s
    with s.engine.begin() as conn:  # every test starts from empty tables
        names = ", ".join(t for t in s.engine.dialect.get_table_names(conn) if t != "alembic_version")
        conn.execute(text(f"TRUNCATE {names} RESTART IDENTITY CASCADE"))
    s.close()


def _update(outcome: str, **kwargs: object) -> FeedUpdate:
    now = datetime.now(UTC)
    return FeedUpdate(outcome, now, now + timedelta(minutes=30), **kwargs)  # type: ignore[arg-type]


def test_migrations_and_a_poll_with_near_duplicates(store: Store) -> None:
    assert store.dialect == "postgresql"
    fid, _ = store.add_feed("http://example.test/feed")
    text_a = prose(1, 300)
    stats = store.save_poll(
        fid,
        ok(etag='"v1"'),
        [
            item("a", "https://a.test/a", text=text_a),
            item("b", "https://a.test/b", text=text_a + " One more sentence at the end."),  # same batch
            item("c", "https://a.test/c", text=prose(2, 300)),
        ],
    )
    assert stats.new == 3
    # A later poll: the candidate search reads the stored band index (the driver's cursor).
    store.save_poll(fid, ok(etag='"v2"'), [item("d", "https://a.test/d", text=text_a + " A correction.")])
    rows = {a["url"]: a for a in store.list_articles()}
    original = rows["https://a.test/a"]["id"]
    assert rows["https://a.test/b"]["near_duplicate_of"] == original
    assert rows["https://a.test/d"]["near_duplicate_of"] == original
    assert rows["https://a.test/c"]["near_duplicate_of"] is None
    assert sorted(a["seq"] for a in rows.values()) == [1, 2, 3, 4]
    assert set(store.entry_hashes(fid)) == {"a", "b", "c", "d"}
    feed = store.find_feed(fid)
    assert feed is not None
    assert feed.etag == '"v2"'


def test_unchanged_failed_and_paused_polls(store: Store) -> None:
    fid, _ = store.add_feed("http://example.test/feed")
    other, _ = store.add_feed("http://example.test/other")
    store.save_poll(fid, _update("not_modified", etag='"e"', http_status=304))
    store.save_poll(fid, _update("error", error="HTTP 500", http_status=500))
    store.save_poll(fid, _update("error", error="HTTP 500", http_status=500))
    feed = store.find_feed(fid)
    assert feed is not None
    assert (feed.status, feed.error_count, feed.last_error, feed.etag) == ("failing", 2, "HTTP 500", '"e"')
    # Claimed, then paused while its poll is in flight: it stays paused and loses its lease.
    assert {f.id for f in store.claim(limit=10, lease_seconds=600, due_only=False)} == {fid, other}
    store.set_paused(other, True)
    store.save_poll(other, ok())
    store.save_poll(fid, ok())
    with store.engine.connect() as conn:
        rows = dict(conn.execute(text("SELECT url, status FROM feeds WHERE lease_until IS NULL")).all())
    assert rows == {"http://example.test/feed": "active", "http://example.test/other": "paused"}


def test_claims_skip_locked_feeds_and_leased_ones(store: Store) -> None:
    for i in range(4):
        store.add_feed(f"http://example.test/{i}")
    first = store.claim(limit=3, lease_seconds=60)
    assert len(first) == 3
    assert [f.url for f in store.claim(limit=10, lease_seconds=60)] == ["http://example.test/3"]
    assert store.claim(limit=10, lease_seconds=60) == []
    later = datetime.now(UTC) + timedelta(seconds=120)
    assert len(store.claim(limit=10, lease_seconds=60, now=later)) == 4


def test_a_database_error_is_a_storage_error_and_keeps_nothing_half_done(store: Store) -> None:
    fid, _ = store.add_feed("http://example.test/feed")
    store.save_poll(fid, ok(), [item("a", "https://a.test/a")])
    with pytest.raises(StorageError, match="database error: IntegrityError"):
        store.save_poll(fid + 1000, ok(), [item("x", "https://a.test/x")])  # no such feed: a foreign key
    assert store.count_articles() == 1
    assert set(store.entry_hashes(fid)) == {"a"}
