from __future__ import annotations

import hashlib
import json
from datetime import UTC, datetime
from pathlib import Path

import pytest

from ingestd.models import CleanArticle, ParsedEntry
from ingestd.pipeline import dedupe
from ingestd.store import identity, neardup

DATA = Path(__file__).resolve().parent.parent / "data" / "dedupe"


def test_guid_key_prefers_guid_then_link_then_content() -> None:
    assert dedupe.guid_key(ParsedEntry(guid=" g1 ", link="http://x/a")) == "g1"
    assert dedupe.guid_key(ParsedEntry(guid=None, link="http://x/a")) == "http://x/a"
    a = dedupe.guid_key(ParsedEntry(guid=None, link=None, title="t", content_html="<p>x</p>"))
    b = dedupe.guid_key(ParsedEntry(guid=None, link=None, title="t", content_html="<p>y</p>"))
    assert a.startswith("hash:")
    assert a != b


def test_entry_hash_changes_with_content_and_dates() -> None:
    base = ParsedEntry(guid="g", link="l", title="t", content_html="c")
    same = ParsedEntry(guid="g", link="l", title="t", content_html="c")
    assert dedupe.entry_hash(base) == dedupe.entry_hash(same)
    assert dedupe.entry_hash(base) != dedupe.entry_hash(
        ParsedEntry(guid="g", link="l", title="t2", content_html="c")
    )
    dated = ParsedEntry(
        guid="g", link="l", title="t", content_html="c", published_at=datetime(2020, 1, 1, tzinfo=UTC)
    )
    assert dedupe.entry_hash(base) != dedupe.entry_hash(dated)


def test_content_hash_ignores_spacing_case_and_unicode_form() -> None:
    assert dedupe.content_hash("Caffè  Latte\n") == dedupe.content_hash("caffe\u0300 latte")
    assert dedupe.content_hash("a b") != dedupe.content_hash("a c")


# -- url_key: an extra match key, never looser than the farm's story rule ----


def test_url_key_folds_www_amp_and_trailing_slash() -> None:
    same = [
        "https://www.example.com/2024/story/",
        "http://example.com/2024/story",
        "https://amp.example.com/2024/story/amp/",
        "https://example.com/2024/story/amp",
        "https://example.com/2024/story?amp=1",
        "https://www.example.com/2024/story/?amp",
    ]
    assert {dedupe.url_key(u) for u in same} == {"example.com/2024/story"}


def test_url_key_keeps_what_can_name_another_document() -> None:
    keys = {
        dedupe.url_key(u)
        for u in (
            "https://example.com/2024/Story",
            "https://example.com/2024/story",
            "https://example.com/2024/story?id=2",
            "https://example.com/2024/story?id=3",
            "https://news.example.com/2024/story",
            "https://example.com/2024/amplifier",
        )
    }
    assert len(keys) == 6
    assert dedupe.url_key("mailto:a@b.c") is None
    assert dedupe.url_key(None) is None


def test_url_key_meets_substack_custom_domain_through_the_guid() -> None:
    custom = dedupe.url_key(
        "https://www.slowlane.news/p/the-bridge", "https://slowlane.substack.com/p/the-bridge"
    )
    assert custom == dedupe.url_key("https://slowlane.substack.com/p/the-bridge/")
    # A repost: its own guid on another Substack, the original's link: keyed by the link, not the guid.
    repost = dedupe.url_key("https://orig.substack.com/p/the-bridge", "https://other.substack.com/p/repost-1")
    assert repost == "orig.substack.com/p/the-bridge"
    # A different slug in the guid proves nothing.
    assert (
        dedupe.url_key("https://www.slowlane.news/p/a", "https://slowlane.substack.com/p/b")
        == "slowlane.news/p/a"
    )


# -- near-duplicates: the threshold is measured here ----------------------------


def _measure(threshold: float) -> tuple[float, float, dict[str, float]]:
    """Precision and recall of (shares an LSH band) and (similarity >= threshold) on the labelled set."""
    tp = fp = fn = 0
    worst: dict[str, float] = {}
    for line in (DATA / "pairs.jsonl").read_text(encoding="utf-8").splitlines():
        pair = json.loads(line)
        a, b = dedupe.sketch(pair["a"]), dedupe.sketch(pair["b"])
        if a is None or b is None:
            found, sim = False, 0.0
        else:
            sim = dedupe.similarity(a, b)
            found = (
                bool(set(enumerate(dedupe.bands(a))) & set(enumerate(dedupe.bands(b)))) and sim >= threshold
            )
        kind = pair["kind"]
        worst[kind] = min(worst.get(kind, 1.0), sim) if pair["label"] else max(worst.get(kind, 0.0), sim)
        tp += found and pair["label"] == 1
        fp += found and pair["label"] == 0
        fn += not found and pair["label"] == 1
    return tp / max(1, tp + fp), tp / max(1, tp + fn), worst


def test_near_duplicate_threshold_is_measured_on_the_labelled_set(capsys: pytest.CaptureFixture[str]) -> None:
    precision, recall, worst = _measure(dedupe.NEAR_DUPLICATE_SIMILARITY)
    with capsys.disabled():
        print(
            f"\nnear-duplicates at similarity >= {dedupe.NEAR_DUPLICATE_SIMILARITY}: "
            f"precision {precision:.3f}, recall {recall:.3f}; worst similarity by kind: "
            + ", ".join(f"{k} {v:.2f}" for k, v in sorted(worst.items()))
        )
        for t in (0.5, 0.7):
            p, r, _ = _measure(t)
            print(f"  (at {t}: precision {p:.3f}, recall {r:.3f})")
    assert precision >= 0.99
    assert recall >= 0.9
    # The store decides with the same numbers (it cannot import the pipeline).
    assert identity.NEAR_DUPLICATE_SIMILARITY == dedupe.NEAR_DUPLICATE_SIMILARITY
    assert identity.MIN_WORDS == dedupe.MIN_WORDS


def test_a_looser_threshold_would_fail_precision() -> None:
    """The measurement can fail: at 0.3 shared boilerplate and quotes pass for duplicates."""
    precision, _recall, _ = _measure(0.3)
    assert precision < 0.99


def test_short_texts_have_no_sketch() -> None:
    assert dedupe.sketch("word " * 49) is None
    assert dedupe.sketch(" ".join(f"w{i}" for i in range(50))) is not None


def test_store_similarity_is_dedupe_similarity() -> None:
    a = dedupe.sketch(" ".join(f"w{i}" for i in range(300)))
    b = dedupe.sketch(" ".join(f"w{i}" for i in range(20, 320)))
    assert a is not None
    assert b is not None
    assert list(neardup.similarities(a, [b, a])) == [dedupe.similarity(a, b), 1.0]
    assert 0.8 < dedupe.similarity(a, b) < 1.0


def test_identity_keys_carry_url_key_and_sketch() -> None:
    article = CleanArticle(
        guid="g",
        url="https://www.x.test/a/",
        title="T",
        canonical_url="https://www.x.test/a/",
        content_text="word " * 60,
    )
    keys = dedupe.identity_keys("g", article, "e")
    assert (keys.guid_key, keys.url_key, keys.entry_hash) == ("g", "x.test/a", "e")
    assert keys.sketch is not None
    assert len(keys.bands) == dedupe.BANDS
    assert dedupe.BANDS * dedupe.BAND_ROWS <= dedupe.SKETCH_BINS
    assert keys.content_hash == dedupe.content_hash("T\n" + "word " * 60)


@pytest.mark.parametrize(
    ("title", "text"),
    [
        ("Ｃafé ΣΊΣΥΦΟΣ", "\u0301Straße “quoted” ﬁne " * 20),
        ("ascii title", "e\u0301 non-ASCII body, ﬀ ligatures and Ⅻ numerals " * 10),
        ("Tïtle e\u0301", "plain ascii text " * 30),
    ],
)
def test_identity_keys_fold_the_text_once_with_the_same_result(title: str, text: str) -> None:
    article = CleanArticle(guid="g", url="https://x.test/a", title=title, content_text=text)
    keys = dedupe.identity_keys("g", article, "e")
    assert keys.content_hash == dedupe.content_hash(title + "\n" + text)
    assert keys.sketch == dedupe.sketch(text)


def test_sketches_stay_comparable_with_stored_ones() -> None:
    """Sketches are stored: any change to how they are computed must come with a migration."""
    text = " ".join(f"word{i % 97} Straße “{i}”" for i in range(300))
    sk = dedupe.sketch(text)
    assert sk is not None
    pinned = "31361d96b848c29dcab1a450b04684ec47306ecaeb5a32933122068ee84cf75b"  # computed by 0.1.0
    assert hashlib.sha256(sk).hexdigest() == pinned
