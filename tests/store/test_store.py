"""The store on a real SQLite file."""

from __future__ import annotations

import dataclasses
import sqlite3
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from ingestd.exceptions import StorageError
from ingestd.models import CleanArticle, FeedUpdate, IdentityKeys, Image
from ingestd.store import Store, open_store


@pytest.fixture
def store(tmp_path: Path) -> Store:
    s = open_store(f"sqlite:///{tmp_path / 'db' / 'ingestd.db'}")
    yield s
    s.close()


def _item(guid: str, url: str | None, text: str = "body", title: str = "T", ehash: str | None = None):
    article = CleanArticle(guid=guid, url=url, title=title, canonical_url=url, content_text=text)
    return article, IdentityKeys(guid, url, f"c-{title}-{text}", ehash or f"e-{guid}-{title}-{text}")


def _ok(minutes: int = 30, etag: str | None = '"v1"') -> FeedUpdate:
    now = datetime.now(UTC)
    return FeedUpdate("new", now, now + timedelta(minutes=minutes), etag=etag, http_status=200)


def test_fresh_database_has_wal_and_schema(store: Store, tmp_path: Path) -> None:
    conn = sqlite3.connect(tmp_path / "db" / "ingestd.db")
    assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    tables = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type='table'")}
    assert {"feeds", "articles", "article_sources", "fetch_log", "alembic_version"} <= tables
    assert conn.execute("SELECT version_num FROM alembic_version").fetchone()[0] == "0004"


def test_head_revision_is_alembics_head() -> None:
    """The shortcut that skips alembic on an up-to-date database must know the real head."""
    from alembic.config import Config
    from alembic.script import ScriptDirectory

    from ingestd.store import MIGRATIONS, head_revision

    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS))
    assert head_revision() == ScriptDirectory.from_config(cfg).get_current_head()


def test_reopening_an_up_to_date_database_skips_alembic(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'ingestd.db'}"
    open_store(url).close()
    code = (
        "import sys; from ingestd.store import open_store\n"
        f"open_store({url!r}).close(); print('alembic' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


def test_a_database_behind_the_head_is_upgraded(tmp_path: Path) -> None:
    from alembic import command
    from alembic.config import Config

    from ingestd.store import MIGRATIONS, head_revision, make_engine

    url = f"sqlite:///{tmp_path / 'ingestd.db'}"
    engine = make_engine(url)
    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS))
    with engine.begin() as conn:
        cfg.attributes["connection"] = conn
        command.upgrade(cfg, "0001")
    engine.dispose()
    open_store(url).close()
    conn = sqlite3.connect(tmp_path / "ingestd.db")
    assert conn.execute("SELECT version_num FROM alembic_version").fetchone()[0] == head_revision()
    assert conn.execute("SELECT name FROM sqlite_master WHERE name = 'articles_fts'").fetchone()


def test_add_feed_twice_is_one_feed(store: Store) -> None:
    a = store.add_feed("http://example.test/feed")
    b = store.add_feed("http://example.test/feed")
    assert a == (1, True)
    assert b == (1, False)
    assert len(store.list_feeds()) == 1


def test_save_then_repoll_unchanged_keeps_seq(store: Store) -> None:
    fid, _ = store.add_feed("http://example.test/feed")
    items = [_item("g1", "http://example.test/1"), _item("g2", "http://example.test/2")]
    assert store.save_poll(fid, _ok(), items).new == 2
    seqs = [a["seq"] for a in store.list_articles(newest_first=False)]
    stats = store.save_poll(fid, _ok(), items)
    assert (stats.new, stats.unchanged, stats.updated) == (0, 2, 0)
    assert [a["seq"] for a in store.list_articles(newest_first=False)] == seqs
    assert store.count_articles() == 2


def test_changed_entry_updates_in_place_and_bumps_seq(store: Store) -> None:
    fid, _ = store.add_feed("http://example.test/feed")
    store.save_poll(fid, _ok(), [_item("g1", "http://example.test/1")])
    before = store.list_articles()[0]
    stats = store.save_poll(fid, _ok(), [_item("g1", "http://example.test/1", text="new body")])
    after = store.list_articles()[0]
    assert stats.updated == 1
    assert after["id"] == before["id"]
    assert after["seq"] > before["seq"]
    assert after["content_text"] == "new body"
    assert store.count_articles() == 1


def test_same_canonical_url_across_feeds_is_one_story_with_two_sources(store: Store) -> None:
    f1, _ = store.add_feed("http://a.test/feed")
    f2, _ = store.add_feed("http://b.test/feed")
    store.save_poll(f1, _ok(), [_item("a-1", "http://a.test/story")])
    stats = store.save_poll(f2, _ok(), [_item("b-9", "http://a.test/story")])
    assert stats.merged == 1
    assert store.count_articles() == 1
    article = store.get_article(store.list_articles()[0]["id"])
    assert article is not None
    assert {(s["feed_id"], s["guid_key"]) for s in article["sources"]} == {(f1, "a-1"), (f2, "b-9")}


def test_validators_commit_with_articles(store: Store) -> None:
    fid, _ = store.add_feed("http://example.test/feed")
    store.save_poll(fid, _ok(etag='"v1"'), [_item("g1", "http://example.test/1")])
    feed = store.find_feed(fid)
    assert feed is not None
    assert feed.etag == '"v1"'
    # An article that cannot be written rolls back the validator too.
    bad = _item("g2", "http://example.test/2")
    broken = (bad[0], IdentityKeys("g2", "http://example.test/2", None, "e"))  # type: ignore[arg-type]
    with pytest.raises(Exception):  # noqa: B017, PT011 - any database error
        store.save_poll(fid, _ok(etag='"v2"'), [broken])
    feed = store.find_feed(fid)
    assert feed is not None
    assert feed.etag == '"v1"'
    assert store.count_articles() == 1


def test_failures_are_recorded_and_reset_by_success(store: Store) -> None:
    fid, _ = store.add_feed("http://example.test/feed")
    now = datetime.now(UTC)
    store.save_poll(
        fid, FeedUpdate("error", now, now + timedelta(hours=1), error="HTTP 500", http_status=500)
    )
    store.save_poll(
        fid, FeedUpdate("error", now, now + timedelta(hours=1), error="HTTP 500", http_status=500)
    )
    feed = store.find_feed(fid)
    assert feed is not None
    assert (feed.status, feed.error_count, feed.last_error) == ("failing", 2, "HTTP 500")
    store.save_poll(fid, _ok(), [])
    feed = store.find_feed(fid)
    assert feed is not None
    assert (feed.status, feed.error_count, feed.last_error) == ("active", 0, None)
    store.save_poll(fid, FeedUpdate("gone", now, now + timedelta(days=1), error="HTTP 410", http_status=410))
    feed = store.find_feed(fid)
    assert feed is not None
    assert feed.status == "gone"


def test_claim_leases_feeds_once(store: Store) -> None:
    for i in range(3):
        store.add_feed(f"http://example.test/{i}")
    first = store.claim(limit=2, lease_seconds=60)
    second = store.claim(limit=10, lease_seconds=60)
    assert len(first) == 2
    assert [f.id for f in second] == [3]
    assert store.claim(limit=10, lease_seconds=60) == []
    # An expired lease is claimable again (a worker that died).
    later = datetime.now(UTC) + timedelta(seconds=120)
    assert len(store.claim(limit=10, lease_seconds=60, now=later)) == 3


def test_paused_and_gone_feeds_are_not_claimed(store: Store) -> None:
    a, _ = store.add_feed("http://example.test/a")
    store.add_feed("http://example.test/b")
    store.set_paused(a, True)
    assert [f.url for f in store.claim(limit=10, lease_seconds=1)] == ["http://example.test/b"]


def test_a_feed_paused_during_its_poll_stays_paused_and_loses_its_lease(store: Store) -> None:
    paused, _ = store.add_feed("http://example.test/paused")
    active, _ = store.add_feed("http://example.test/active")
    assert len(store.claim(limit=10, lease_seconds=600)) == 2
    store.set_paused(paused, True)  # while its poll is in flight
    store.save_poll(paused, _ok(), [_item("p", "http://example.test/p")])
    store.save_poll(active, _ok(), [_item("a", "http://example.test/a")])
    conn = sqlite3.connect(str(store.engine.url.database))
    rows = dict(conn.execute("SELECT url, status || ' ' || COALESCE(lease_until, 'no lease') FROM feeds"))
    assert rows == {
        "http://example.test/paused": "paused no lease",
        "http://example.test/active": "active no lease",
    }
    assert conn.execute("SELECT COUNT(*) FROM fetch_log").fetchone()[0] == 2
    assert store.count_articles() == 2


def test_nul_and_controls_are_stripped(store: Store) -> None:
    fid, _ = store.add_feed("http://example.test/feed")
    article = CleanArticle(
        guid="g\x00", url="http://example.test/x", title="a\x00b\x07c", content_text="x\x00y\tz"
    )
    store.save_poll(fid, _ok(), [(article, IdentityKeys("g\x00", None, "c", "e"))])
    row = store.list_articles()[0]
    assert row["title"] == "abc"
    assert row["content_text"] == "xy\tz"


def test_remove_feed_keeps_stories_other_feeds_carry(store: Store) -> None:
    f1, _ = store.add_feed("http://a.test/feed")
    f2, _ = store.add_feed("http://b.test/feed")
    store.save_poll(f1, _ok(), [_item("1", "http://a.test/shared"), _item("2", "http://a.test/own")])
    store.save_poll(f2, _ok(), [_item("9", "http://a.test/shared")])
    assert store.remove_feed(f1) == 1
    assert [a["url"] for a in store.list_articles()] == ["http://a.test/shared"]
    assert store.integrity_ok()


def test_fetch_log_keeps_the_last_outcomes(store: Store) -> None:
    fid, _ = store.add_feed("http://example.test/feed")
    for _ in range(30):
        store.save_poll(fid, _ok(), [])
    with store.engine.connect() as conn:
        n = conn.exec_driver_sql("SELECT COUNT(*) FROM fetch_log WHERE feed_id = ?", (fid,)).scalar()
    assert n == 20


def test_housekeeping_runs(store: Store) -> None:
    fid, _ = store.add_feed("http://example.test/feed")
    store.save_poll(fid, _ok(), [_item("g1", "http://example.test/1")])
    assert store.housekeeping(retention_days=0) == 0
    assert store.count_articles() == 1


def test_retention_per_feed_keeps_the_newest_and_tombstones_the_rest(store: Store) -> None:
    f1, _ = store.add_feed("http://a.test/feed")
    f2, _ = store.add_feed("http://b.test/feed")
    day = datetime(2024, 1, 1, tzinfo=UTC)

    def dated(guid: str, n: int):  # type: ignore[no-untyped-def]
        article, keys = _item(guid, f"http://a.test/{guid}")
        return dataclasses.replace(article, published_at=day + timedelta(days=n)), keys

    store.save_poll(f1, _ok(), [dated(f"a{n}", n) for n in range(5)])
    store.save_poll(f2, _ok(), [dated(f"b{n}", n) for n in range(2)])
    assert store.housekeeping(per_feed=3) == 2
    kept = sorted(a["guid"] for a in store.list_articles(limit=None))
    assert kept == ["a2", "a3", "a4", "b0", "b1"]
    # A retired story stays retired when its feed carries it again.
    stats = store.save_poll(f1, _ok(), [dated(f"a{n}", n) for n in range(5)])
    assert stats.new == 0
    assert store.count_articles() == 5


def test_feed_states_are_saved_together_or_not_at_all(store: Store) -> None:
    a, _ = store.add_feed("http://example.test/a")
    b, _ = store.add_feed("http://example.test/b")
    now = datetime.now(UTC)
    unchanged = FeedUpdate("not_modified", now, now + timedelta(hours=1), etag='"v2"', http_status=304)
    failed = FeedUpdate("error", now, now + timedelta(hours=2), error="HTTP 500", http_status=500)
    store.save_feed_states([(a, unchanged), (b, failed)])
    fa, fb = store.find_feed(a), store.find_feed(b)
    assert fa is not None
    assert fb is not None
    assert (fa.status, fa.etag, fa.error_count) == ("active", '"v2"', 0)
    assert (fb.status, fb.last_error, fb.error_count) == ("failing", "HTTP 500", 1)
    # A batch naming a feed that does not exist fails whole: the other feed's poll is not half-recorded.
    later = FeedUpdate("not_modified", now, now + timedelta(hours=5), etag='"v3"', http_status=304)
    with pytest.raises(StorageError):
        store.save_feed_states([(a, later), (999, later)])
    fa = store.find_feed(a)
    assert fa is not None
    assert fa.etag == '"v2"'
    with store.engine.connect() as conn:
        assert conn.exec_driver_sql("SELECT count(*) FROM fetch_log").scalar() == 2


def test_images_are_stored_as_json_objects_of_every_field(store: Store) -> None:
    fid, _ = store.add_feed("http://example.test/img")
    images = (
        Image("http://example.test/a.png", "an alt", "a caption", 640, 480),
        Image("http://example.test/b.png"),
    )
    article, keys = _item("img1", "http://example.test/img1")
    store.save_poll(fid, _ok(), [(dataclasses.replace(article, images=images), keys)])
    (stored,) = store.list_articles(limit=None)
    full = store.get_article(stored["id"])
    assert full is not None
    assert full["images"] == [dataclasses.asdict(i) for i in images]
