"""The consumers' change feed: seq is gap-safe under concurrent writers; the view; search."""

from __future__ import annotations

import sqlite3
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from ingestd.exceptions import StorageError
from ingestd.store import Store, open_store
from ingestd.store.search import fts5_query
from tests.store.helpers import item, ok, prose

WRITERS = 4
POLLS = 40


@pytest.fixture
def db_url(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path / 'ingestd.db'}"


@pytest.fixture
def store(db_url: str) -> Iterator[Store]:
    s = open_store(db_url)
    yield s
    s.close()


@pytest.mark.integration
def test_tailing_reader_sees_every_change_once_in_order_while_writers_commit(
    store: Store, db_url: str
) -> None:
    feeds = [store.add_feed(f"http://w{i}.test/feed")[0] for i in range(WRITERS)]
    errors: list[BaseException] = []
    done = threading.Event()

    def writer(n: int) -> None:
        own = open_store(db_url, migrate=False)  # a separate engine: its own connections and locks
        try:
            for p in range(POLLS):
                items = [item(f"g{n}-{p}-{k}", f"https://w{n}.test/{p}/{k}") for k in range(2)]
                if p % 5 == 4:  # and now and then an update of an earlier story: a new seq for an old row
                    items.append(item(f"g{n}-{p - 4}-0", f"https://w{n}.test/{p - 4}/0", text=f"edit {p}"))
                own.save_poll(feeds[n], ok(), items)
        except BaseException as e:
            errors.append(e)
        finally:
            own.close()

    seen: list[tuple[int, int]] = []

    def reader() -> None:
        own = open_store(db_url, migrate=False)
        cursor = 0
        try:
            while True:
                finished = done.is_set()  # read once more after the last writer committed
                before = cursor
                for row in own.changes(after_seq=cursor, page_size=7):
                    seen.append((row["id"], row["seq"]))
                    cursor = row["seq"]
                if finished:
                    return
                if cursor == before:
                    # Caught up: wait a moment, as a real tail does. A reader spinning on the GIL
                    # starves the writer threads of this same process (not of other processes).
                    time.sleep(0.005)
        except BaseException as e:
            errors.append(e)
        finally:
            own.close()

    threads = [threading.Thread(target=writer, args=(n,)) for n in range(WRITERS)]
    tail = threading.Thread(target=reader)
    tail.start()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    done.set()
    tail.join(timeout=60)
    assert not errors, errors
    seqs = [s for _, s in seen]
    assert seqs == sorted(set(seqs)), "seq must be strictly increasing as read, each change once"
    final = {a["id"]: a["seq"] for a in store.list_articles(limit=None)}
    assert len(final) == WRITERS * POLLS * 2
    last_seen: dict[int, int] = {}
    for article_id, seq in seen:
        last_seen[article_id] = seq
    assert last_seen == final, "every story, in its latest version, reached the consumer"
    # Every insert was read at least once (an article updated twice between two reads shows once, latest).
    assert len(seen) >= len(final)


def test_view_has_no_raw_html_and_lists_sources(store: Store, db_url: str) -> None:
    f1, _ = store.add_feed("http://a.test/feed")
    f2, _ = store.add_feed("http://b.test/feed")
    store.save_poll(f1, ok(), [item("1", "https://a.test/story")])
    store.save_poll(f2, ok(), [item("9", "https://www.a.test/story/")])
    conn = sqlite3.connect(db_url.removeprefix("sqlite:///"))
    columns = [r[1] for r in conn.execute("PRAGMA table_info(articles_public)")]
    assert "raw_html" not in columns
    assert {"seq", "feed_url", "source_feed_ids", "content_text"} <= set(columns)
    (row,) = store.changes()
    assert sorted(row["source_feed_ids"]) == [f1, f2]
    assert row["feed_url"] == "http://a.test/feed"


def test_changes_pages_through_everything_after_a_cursor(store: Store) -> None:
    fid, _ = store.add_feed("http://a.test/feed")
    store.save_poll(fid, ok(), [item(f"g{i}", f"https://a.test/{i}") for i in range(23)])
    assert [r["seq"] for r in store.changes(after_seq=5, page_size=4)] == list(range(6, 24))
    assert list(store.changes(after_seq=store.max_seq())) == []


def test_search_ranks_title_matches_first_and_folds_accents(store: Store) -> None:
    fid, _ = store.add_feed("http://a.test/feed")
    store.save_poll(
        fid,
        ok(),
        [
            item(
                "1",
                "https://a.test/1",
                title="Il caffè di Napoli",
                text="Una tazzina al bancone. " + prose(1, 60),
            ),
            item(
                "2",
                "https://a.test/2",
                title="Other news",
                text="Someone mentioned caffè once. " + prose(2, 200),
            ),
            item("3", "https://a.test/3", title="Tea", text=prose(3, 60)),
        ],
    )
    hits = store.search("caffe")
    assert [h["url"] for h in hits] == ["https://a.test/1", "https://a.test/2"]
    assert "[caffè]" in hits[1]["snippet"]
    assert store.search('"tazzina al bancone"')[0]["url"] == "https://a.test/1"
    assert store.search("caffe", feed_id=fid + 1) == []
    # Kept in sync by triggers: an edit and a delete show at once.
    store.save_poll(fid, ok(), [item("3", "https://a.test/3", title="Tea and caffè", text=prose(3, 60))])
    assert len(store.search("caffe")) == 3
    store.delete_article(hits[0]["id"])
    assert len(store.search("caffe")) == 2


def test_search_queries_are_never_fts_syntax(store: Store) -> None:
    assert (
        fts5_query('covid-19 AND "grain corridor" title:x *')
        == '"covid-19" "AND" "grain corridor" "title:x" "*"'
    )
    assert store.search('NEAR( "unbalanced') == []
    assert store.search("   ") == []


def test_search_elsewhere_is_a_clear_error(tmp_path: Path) -> None:
    from sqlalchemy import create_engine

    from ingestd.store import search

    class Fake:
        class dialect:
            name = "mysql"

    with pytest.raises(StorageError, match="search needs SQLite FTS5 or PostgreSQL"):
        search.search(Fake(), "x")  # type: ignore[arg-type]
    create_engine("sqlite://").dispose()
