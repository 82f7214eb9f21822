"""One story, one row: identity, unstable guids, revisions, tombstones, near-duplicates."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from ingestd.pipeline import dedupe
from ingestd.store import Store, neardup, open_store
from ingestd.store.migrations import bands as migration_bands
from tests.store.helpers import item, ok, prose


@pytest.fixture
def store(tmp_path: Path) -> Iterator[Store]:
    s = open_store(f"sqlite:///{tmp_path / 'ingestd.db'}")
    yield s
    s.close()


def _feeds(store: Store, n: int) -> list[int]:
    return [store.add_feed(f"http://f{i}.test/feed")[0] for i in range(n)]


def _sources(store: Store, article_id: int) -> set[tuple[int, str]]:
    article = store.get_article(article_id)
    assert article is not None
    return {(s["feed_id"], s["guid_key"]) for s in article["sources"]}


def test_url_variants_across_feeds_are_one_story(store: Store) -> None:
    variants = [
        "https://www.example.com/2024/story/",
        "https://example.com/2024/story",
        "https://amp.example.com/2024/story/amp/",
        "https://example.com/2024/story?amp=1",
    ]
    ids = _feeds(store, len(variants))
    for fid, url in zip(ids, variants, strict=True):
        store.save_poll(fid, ok(), [item(f"g-{fid}", url)])
    assert store.count_articles() == 1
    only = store.list_articles()[0]
    assert only["canonical_url"] == variants[0]  # as clean gave it; url_key is the extra match key
    assert len(_sources(store, only["id"])) == 4


def test_distinct_paths_and_queries_stay_distinct(store: Store) -> None:
    (fid,) = _feeds(store, 1)
    urls = [
        "https://example.com/a",
        "https://example.com/A",
        "https://example.com/a?id=2",
        "https://b.example.com/a",
    ]
    store.save_poll(fid, ok(), [item(f"g{i}", u) for i, u in enumerate(urls)])
    assert store.count_articles() == 4


def test_substack_custom_domain_meets_its_subdomain(store: Store) -> None:
    f1, f2 = _feeds(store, 2)
    store.save_poll(f1, ok(), [item("https://slow.substack.com/p/bridge", "https://www.slow.news/p/bridge")])
    stats = store.save_poll(f2, ok(), [item("p-1", "https://slow.substack.com/p/bridge")])
    assert stats.merged == 1
    assert store.count_articles() == 1


def test_same_long_text_across_feeds_merges_short_never(store: Store) -> None:
    f1, f2 = _feeds(store, 2)
    long_text, short_text = prose(1, 80), "Thanks for reading, see you next week."
    store.save_poll(
        f1,
        ok(),
        [item("a", "https://a.test/1", text=long_text), item("b", "https://a.test/2", text=short_text)],
    )
    stats = store.save_poll(
        f2,
        ok(),
        [
            item("x", "https://mirror.test/9", text=long_text),
            item("y", "https://mirror.test/8", text=short_text),
        ],
    )
    assert (stats.merged, stats.new) == (1, 1)
    assert store.count_articles() == 3


def test_same_guid_changed_text_is_a_revision_with_a_new_seq(store: Store) -> None:
    (fid,) = _feeds(store, 1)
    store.save_poll(fid, ok(), [item("g", "https://a.test/1", title="Draft", text="first words")])
    before = store.list_articles()[0]
    stats = store.save_poll(fid, ok(), [item("g", "https://a.test/1", title="Final", text="better words")])
    after = store.list_articles()[0]
    assert stats.updated == 1
    assert (after["id"], after["title"]) == (before["id"], "Final")
    assert after["seq"] > before["seq"]
    assert after["updated_at"] is not None
    (rev,) = store.revisions(after["id"])
    assert (rev["title"], rev["content_text"], rev["seq"]) == ("Draft", "first words", before["seq"])
    assert rev["content_html"] == "<p>first words</p>"


def test_repolling_and_cosmetic_rewrites_change_nothing(store: Store) -> None:
    (fid,) = _feeds(store, 1)
    items = [item(f"g{i}", f"https://a.test/{i}", text=f"body {i}") for i in range(5)]
    store.save_poll(fid, ok(), items)
    seqs = [a["seq"] for a in store.list_articles(newest_first=False)]
    assert store.save_poll(fid, ok(), items).unchanged == 5
    # Every raw entry rewritten (new dates, tracking tokens): the raw hash differs, the story does not.
    rewritten = [
        item(f"g{i}", f"https://a.test/{i}", text=f"body {i}", raw="lastBuildDate=now") for i in range(5)
    ]
    stats = store.save_poll(fid, ok(), rewritten)
    assert (stats.unchanged, stats.updated) == (5, 0)
    assert [a["seq"] for a in store.list_articles(newest_first=False)] == seqs
    assert all(store.revisions(a["id"]) == [] for a in store.list_articles())


def test_guids_changing_on_every_fetch_fall_back_to_links(store: Store) -> None:
    (fid,) = _feeds(store, 1)
    for fetch in range(3):
        stats = store.save_poll(
            fid, ok(), [item(f"rand-{fetch}-{i}", f"https://a.test/{i}") for i in range(10)]
        )
        assert stats.new == (10 if fetch == 0 else 0)
    assert store.count_articles() == 10
    assert _guid_mode(store, fid) == "link"


def test_a_guid_reused_for_different_items_is_not_an_update(store: Store) -> None:
    (fid,) = _feeds(store, 1)
    store.save_poll(fid, ok(), [item("same", "https://a.test/1", title="One")])
    stats = store.save_poll(fid, ok(), [item("same", "https://a.test/2", title="Two")])
    assert (stats.new, stats.updated) == (1, 0)
    assert sorted(a["title"] for a in store.list_articles()) == ["One", "Two"]
    # Reused within one document too, for most of the feed: the feed is keyed by link from now on.
    store.save_poll(fid, ok(), [item("same", f"https://a.test/{i}", title=f"T{i}") for i in range(3, 6)])
    assert _guid_mode(store, fid) == "link"
    assert store.count_articles() == 5


def test_a_slug_edit_under_the_same_guid_is_an_update(store: Store) -> None:
    (fid,) = _feeds(store, 1)
    store.save_poll(fid, ok(), [item("?p=1", "https://a.test/old-slug", title="Same", text="v1")])
    stats = store.save_poll(fid, ok(), [item("?p=1", "https://a.test/new-slug", title="Same", text="v2")])
    assert (stats.updated, store.count_articles()) == (1, 1)
    assert _guid_mode(store, fid) == "guid"


def _guid_mode(store: Store, fid: int) -> str:
    with store.engine.connect() as conn:
        return str(conn.exec_driver_sql("SELECT guid_mode FROM feeds WHERE id = ?", (fid,)).scalar())


def test_a_deleted_story_is_not_reingested(store: Store) -> None:
    f1, f2 = _feeds(store, 2)
    store.save_poll(f1, ok(), [item("g1", "https://a.test/1"), item("g2", "https://a.test/2")])
    victim = next(a for a in store.list_articles() if a["url"] == "https://a.test/1")
    assert store.delete_article(victim["id"])
    assert not store.delete_article(victim["id"])
    assert "g1" in store.entry_hashes(f1)  # the worker skips it before cleaning
    stats = store.save_poll(f1, ok(), [item("g1", "https://a.test/1"), item("g2", "https://a.test/2")])
    assert stats.new == 0
    # Nor through another feed carrying the same URL (here its www. variant).
    assert store.save_poll(f2, ok(), [item("x", "https://www.a.test/1/")]).new == 0
    assert [a["url"] for a in store.list_articles()] == ["https://a.test/2"]


def test_retention_tombstones_what_it_deletes(store: Store) -> None:
    (fid,) = _feeds(store, 1)
    old = datetime.now(UTC) - timedelta(days=400)
    items = [item("old", "https://a.test/old", published=old), item("new", "https://a.test/new")]
    store.save_poll(fid, ok(), items)
    assert store.housekeeping(retention_days=30) == 1
    assert store.save_poll(fid, ok(), items).new == 0
    assert [a["url"] for a in store.list_articles()] == ["https://a.test/new"]


def test_republished_with_small_edits_is_a_near_duplicate(store: Store) -> None:
    f1, f2 = _feeds(store, 2)
    text = prose(7, 300)
    edited = text.replace("alpha", "ALPHA-x", 3) + " Update: a correction was added."
    store.save_poll(f1, ok(), [item("o", "https://a.test/original", text=text)])
    store.save_poll(f2, ok(), [item("r", "https://b.test/republished", text=edited)])
    store.save_poll(f2, ok(), [item("u", "https://b.test/unrelated", text=prose(8, 300))])
    rows = {a["url"]: a for a in store.list_articles()}
    assert store.count_articles() == 3
    original = rows["https://a.test/original"]
    assert rows["https://b.test/republished"]["near_duplicate_of"] == original["id"]
    assert rows["https://b.test/unrelated"]["near_duplicate_of"] is None
    assert original["near_duplicate_of"] is None


def test_short_texts_are_never_near_duplicates(store: Store) -> None:
    (fid,) = _feeds(store, 1)
    text = prose(3, 40)
    store.save_poll(
        fid, ok(), [item("a", "https://a.test/1", text=text), item("b", "https://a.test/2", text=text + " x")]
    )
    assert [a["near_duplicate_of"] for a in store.list_articles()] == [None, None]


def test_near_duplicate_lookup_uses_the_band_index(store: Store) -> None:
    """Bounded cost: a primary-key search per band hash, read backwards (newest first), no scan, no sort."""
    with store.engine.connect() as conn:
        sql, params = neardup.band_statement(conn, list(range(16)))
        plan = [str(r[-1]) for r in conn.exec_driver_sql("EXPLAIN QUERY PLAN " + sql, params)]
    searches = [p for p in plan if p.startswith("SEARCH near_dup_bands")]
    assert searches == ["SEARCH near_dup_bands USING PRIMARY KEY (value=? AND band=?)"] * 16, plan
    assert not [p for p in plan if "TEMP B-TREE" in p or p.startswith("SCAN near_dup_bands")], plan


def test_near_duplicate_is_found_among_many_stories_sharing_boilerplate(store: Store) -> None:
    """Stories sharing a long header and footer meet in bands too; the republished copy (most bands
    shared) is still compared and found, however many of them came before."""
    f1, f2 = _feeds(store, 2)
    boiler_head, boiler_foot = prose(900, 70), prose(901, 70)  # 18 of the 30 share a band with the copy
    stories = [boiler_head + " " + prose(100 + n, 150) + " " + boiler_foot for n in range(30)]
    store.save_poll(f1, ok(), [item(f"s{n}", f"https://a.test/{n}", text=t) for n, t in enumerate(stories)])
    original = {a["url"]: a["id"] for a in store.list_articles(limit=None)}["https://a.test/3"]
    edited = stories[3].replace("alpha", "ALPHA-x", 2) + " Update: a correction."
    store.save_poll(f2, ok(), [item("r", "https://b.test/republished", text=edited)])
    rows = {a["url"]: a for a in store.list_articles(limit=None)}
    assert rows["https://b.test/republished"]["near_duplicate_of"] == original
    assert sum(a["near_duplicate_of"] is not None for a in rows.values()) == 1


def test_one_batch_sees_its_own_new_stories(store: Store) -> None:
    """New stories wait for one INSERT per batch; later entries of the batch must still see them."""
    (fid,) = _feeds(store, 1)
    text = prose(7, 300)
    edited = text.replace("alpha", "ALPHA-x", 3) + " Update: a correction was added."
    stats = store.save_poll(
        fid,
        ok(),
        [
            item("o", "https://a.test/original", text=text),
            item("r", "https://a.test/republished", text=edited),  # a near-duplicate of the first
            item("g", "https://a.test/2", title="Draft", text="first words"),
            item("g", "https://a.test/2", title="Final", text="better words"),  # the same guid, revised
            item("m", "https://www.a.test/original/", text="other words"),  # the first one's URL
        ],
    )
    assert (stats.new, stats.updated, stats.merged) == (3, 1, 1)
    rows = {a["url"]: a for a in store.list_articles()}
    original = rows["https://a.test/original"]
    assert rows["https://a.test/republished"]["near_duplicate_of"] == original["id"]
    assert rows["https://a.test/2"]["title"] == "Final"
    (rev,) = store.revisions(rows["https://a.test/2"]["id"])
    assert rev["title"] == "Draft"
    assert _sources(store, original["id"]) == {(fid, "o"), (fid, "m")}
    assert sorted(a["seq"] for a in rows.values()) == sorted({a["seq"] for a in rows.values()})
    # The next poll finds every source as written: nothing is new or changed.
    again = store.save_poll(fid, ok(), [item("o", "https://a.test/original", text=text)])
    assert (again.new, again.unchanged) == (0, 1)


def _alembic(store: Store, action: str, revision: str) -> None:
    from alembic import command
    from alembic.config import Config

    from ingestd.store import MIGRATIONS

    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS))
    with store.engine.begin() as conn:
        cfg.attributes["connection"] = conn
        getattr(command, action)(cfg, revision)


def _bands(store: Store) -> dict[int, list[tuple[int, int]]]:
    with store.engine.connect() as conn:
        rows = conn.exec_driver_sql("SELECT article_id, band, value FROM near_dup_bands ORDER BY 1, 2")
        out: dict[int, list[tuple[int, int]]] = {}
        for article_id, band, value in rows:
            out.setdefault(article_id, []).append((band, value))
        return out


def test_the_migrations_band_function_is_dedupes() -> None:
    """The migrations froze a copy of ``dedupe.bands``: rows they rebuild must be the rows new stories get."""
    for seed in range(5):
        sk = dedupe.sketch(prose(seed, 200))
        assert sk is not None
        assert migration_bands.band_hashes(sk, dedupe.BAND_ROWS, dedupe.BANDS) == list(dedupe.bands(sk))


def test_the_migrations_rebuild_the_band_index_from_the_sketches(store: Store) -> None:
    f1, f2 = _feeds(store, 2)
    text = prose(7, 300)
    store.save_poll(f1, ok(), [item("o", "https://a.test/original", text=text)])
    (original,) = store.list_articles()
    with store.engine.connect() as conn:
        sk = bytes(conn.exec_driver_sql("SELECT sketch FROM near_dup_sketches").scalar_one())

    def banding(rows: int, bands: int) -> dict[int, list[tuple[int, int]]]:
        return {original["id"]: list(enumerate(migration_bands.band_hashes(sk, rows, bands)))}

    _alembic(store, "downgrade", "0002")  # 32 bands of 4 bins
    assert _bands(store) == banding(4, 32)
    _alembic(store, "upgrade", "0003")  # 16 bands of 3 bins
    assert _bands(store) == banding(3, 16)
    _alembic(store, "upgrade", "0004")  # 8 bands of 2 bins
    assert _bands(store) == banding(2, 8)
    _alembic(store, "downgrade", "0003")
    assert _bands(store) == banding(3, 16)

    _alembic(store, "upgrade", "head")
    assert _bands(store) == {original["id"]: list(enumerate(dedupe.bands(sk)))}
    assert len(dedupe.bands(sk)) == 8
    # The rebuilt index finds the original for a republished copy.
    edited = text.replace("alpha", "ALPHA-x", 3) + " Update: a correction was added."
    store.save_poll(f2, ok(), [item("r", "https://b.test/republished", text=edited)])
    rows = {a["url"]: a for a in store.list_articles()}
    assert rows["https://b.test/republished"]["near_duplicate_of"] == original["id"]
