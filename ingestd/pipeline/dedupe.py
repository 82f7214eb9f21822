"""Identity keys: how a story is recognised across polls and across feeds.

Within a feed an entry is its guid (else its link, else a hash of what it
says); across feeds a story is its canonical URL. ``entry_hash`` fingerprints
the raw entry so an unchanged entry costs no cleaning and no write.
"""

from __future__ import annotations

import functools
import hashlib
import re
import unicodedata
import zlib
from urllib.parse import urlsplit

import numpy as np

from ingestd.models import CleanArticle, IdentityKeys, ParsedEntry

_SPACE = re.compile(r"\s+")


def _digest(*parts: str) -> str:
    h = hashlib.blake2b(digest_size=16)
    for part in parts:
        h.update(part.encode("utf-8", "surrogatepass"))
        h.update(b"\x1f")
    return h.hexdigest()


def guid_key(entry: ParsedEntry) -> str:
    """The entry's identity within its feed: guid, else link, else its content."""
    if entry.guid and entry.guid.strip():
        return entry.guid.strip()
    if entry.link and entry.link.strip():
        return entry.link.strip()
    return "hash:" + _digest(entry.title, entry.content_html or entry.summary_html)


def entry_hash(entry: ParsedEntry) -> str:
    """Fingerprint of the raw entry: unchanged hash, unchanged article."""
    return _digest(
        entry.guid or "",
        entry.link or "",
        entry.title,
        entry.author,
        entry.summary_html,
        entry.content_html,
        entry.published_at.isoformat() if entry.published_at else "",
        entry.updated_at.isoformat() if entry.updated_at else "",
    )


def content_hash(text: str) -> str:
    """Hash of the cleaned text, insensitive to case, spacing and Unicode form."""
    return _folded_hash(_fold(text))


def _folded_hash(folded: str) -> str:
    return _digest(" ".join(folded.split()))


# -- match keys beyond the canonical URL --------------------------------------

#: Query parameters that only select the AMP rendering of the same page.
_AMP_PARAMS = frozenset({"amp", "outputtype"})
_AMP_VALUES = frozenset({"", "1", "true", "amp"})
_SUBSTACK_POST = re.compile(r"^/p/[^/]+$")


def _host_path_query(url: str) -> tuple[str, str, str] | None:
    try:
        parts = urlsplit(url.strip())
        host = (parts.hostname or "").lower()
    except ValueError:
        return None
    if parts.scheme.lower() not in ("http", "https") or not host:
        return None
    return host, parts.path, parts.query


def url_key(url: str | None, guid: str | None = None) -> str | None:
    """A looser URL identity used as an extra match key, next to ``canonical_url``.

    It folds the variants under which one page is published: scheme, a
    ``www.`` or ``amp.`` host prefix, a trailing slash, a ``/amp`` path suffix,
    ``?amp=1``. A Substack post on a custom domain (``/p/slug``) whose guid is
    the same post on ``*.substack.com`` is keyed by the Substack URL, so both
    renderings meet. Path case and other parameters are kept: they can name
    different documents.
    """
    if not url:
        return None
    hpq = _host_path_query(url)
    if hpq is None:
        return None
    host, path, query = hpq
    for prefix in ("www.", "amp."):
        if host.startswith(prefix) and host.count(".") >= 2:
            host = host[len(prefix) :]
    if path.endswith("/"):
        path = path.rstrip("/")
    if path.endswith("/amp") or path == "amp":
        path = path[: -len("amp")].rstrip("/")
    kept = []
    for part in query.split("&") if query else ():
        name, _, value = part.partition("=")
        if name.lower() in _AMP_PARAMS and value.lower() in _AMP_VALUES:
            continue
        if part:
            kept.append(part)
    if guid and not host.endswith("substack.com") and _SUBSTACK_POST.match(path):
        alias = _host_path_query(guid)
        if alias is not None and alias[0].endswith(".substack.com") and alias[1].rstrip("/") == path:
            host = alias[0]
    return host + path + ("?" + "&".join(kept) if kept else "")


# -- near-duplicate fingerprints (one-permutation MinHash, banded for LSH) ----

#: Texts shorter than this are never near-duplicates (nor merged by content) by text alone.
MIN_WORDS = 50
SKETCH_BINS = 128
#: LSH banding: 8 bands of 2 bins (the sketch's first 16). A pair meets in a band with
#: p = 1 - (1 - J^2)^8: 0.97 at Jaccard 0.6 (the threshold), 0.90 at 0.5, 0.995 at 0.7.
#: A quarter of the index rows of 32 bands of 4 bins (p = 0.99 at 0.6), half of 16 bands of
#: 3 (0.98), for the same recall on the labelled set; the store's index is its costliest part
#: (migrations 0003 and 0004 rebuilt it). Unrelated stories meet more often (0.53 at J = 0.3
#: against 0.35), which costs little: the store compares at most 8 candidates per story.
BAND_ROWS = 2
BANDS = 8
SHINGLE = 3
_VALUE_MASK = (1 << 57) - 1  # a bin value: the hash without its 7 bin bits
_EMPTY = 1 << 57
_GOLDEN = 0x9E3779B97F4A7C15
_WORD = re.compile(r"\w+")
_MASK63 = (1 << 63) - 1


def _fold(text: str) -> str:
    """NFKC and case-folded; ASCII text skips the (costly, and then idle) normalisation."""
    return (text if text.isascii() else unicodedata.normalize("NFKC", text)).casefold()


def words(text: str) -> list[str]:
    return _WORD.findall(_fold(text))


@functools.lru_cache(maxsize=1 << 16)
def _word_hash(word: str) -> int:
    """Two CRC-32s of a word (stable across processes, unlike ``hash()``); cached, since most
    words of an article are common words the worker has hashed before."""
    data = word.encode("utf-8", "surrogatepass")
    return zlib.crc32(data) | (zlib.crc32(data, 0x9E3779B9) << 32)


_K1 = np.uint64(0x9E3779B97F4A7C15)
_K2 = np.uint64(0xBF58476D1CE4E5B9)
_K3 = np.uint64(0x94D049BB133111EB)


def sketch(text: str) -> bytes | None:
    """A MinHash sketch of the text's word 3-shingles, or None for a short text.

    One-permutation hashing: each shingle is hashed once; the low 7 bits pick
    one of 128 bins, each bin keeps its minimum. Empty bins borrow from the
    next full bin (rotation densification), so the sketch is aligned and can
    be cut into LSH bands. Equal bins estimate the Jaccard similarity.
    """
    return _sketch(words(text))


def _sketch(tokens: list[str]) -> bytes | None:
    if len(tokens) < MIN_WORDS:
        return None
    # Word hashes come from _word_hash's cache (each distinct word is hashed once per worker;
    # mapping the tokens through it is faster than indexing the distinct words: 43 against
    # 75 us per article); the rest is vectorised (a pure-Python loop over 64-bit products
    # costs ~2 ms per 2,000-word article).
    arr = np.fromiter(map(_word_hash, tokens), dtype=np.uint64, count=len(tokens))
    # splitmix64's finaliser spreads the combined word hashes.
    z = arr[:-2] * _K1 + arr[1:-1] * _K2 + arr[2:]
    z = (z ^ (z >> np.uint64(30))) * _K2
    z = (z ^ (z >> np.uint64(27))) * _K3
    z ^= z >> np.uint64(31)
    minima = np.full(SKETCH_BINS, _EMPTY, dtype=np.uint64)
    np.minimum.at(minima, (z & np.uint64(SKETCH_BINS - 1)).astype(np.intp), z >> np.uint64(7))
    empty = np.flatnonzero(minima == np.uint64(_EMPTY))
    if len(empty):
        # An empty bin borrows the next full bin's value (cyclically), offset by its distance.
        full = np.flatnonzero(minima != np.uint64(_EMPTY))
        donor = full[np.searchsorted(full, empty) % len(full)]
        step = ((donor - empty) % SKETCH_BINS).astype(np.uint64)
        minima[empty] = (minima[donor] + step * np.uint64(_GOLDEN)) & np.uint64(_VALUE_MASK)
    return minima.astype(">u8").tobytes()


def bands(sk: bytes) -> tuple[int, ...]:
    """LSH band hashes of a sketch: two sketches sharing one band are candidates."""
    size = 8 * BAND_ROWS
    return tuple(
        int.from_bytes(hashlib.blake2b(sk[i : i + size], digest_size=8).digest()) & _MASK63
        for i in range(0, size * BANDS, size)
    )


def similarity(a: bytes, b: bytes) -> float:
    """Estimated Jaccard similarity of two sketches: the share of equal bins."""
    if len(a) != len(b) or not a:
        return 0.0
    same = sum(a[i : i + 8] == b[i : i + 8] for i in range(0, len(a), 8))
    return same / (len(a) // 8)


#: Estimated Jaccard of word 3-shingles at or above which a text nearly duplicates another;
#: chosen on the labelled set in tests/data/dedupe (see tests/pipeline/test_dedupe.py): precision
#: 1.0 / recall 0.925 there; distinct stories sharing a long header and footer reach 0.50, so 0.6
#: keeps a margin (0.5 would let them through).
NEAR_DUPLICATE_SIMILARITY = 0.6


def identity_keys(guid_key_: str, article: CleanArticle, entry_hash_: str) -> IdentityKeys:
    """Every key the store matches a cleaned entry on, computed once in the worker."""
    # The text is folded once for both keys (the fold of title + "\n" + text is the two folds
    # joined: NFKC composes nothing across a line break, casefold is per character).
    text = _fold(article.content_text)
    sk = _sketch(_WORD.findall(text))
    return IdentityKeys(
        guid_key=guid_key_,
        canonical_url=article.canonical_url,
        content_hash=_folded_hash(_fold(article.title) + "\n" + text),
        entry_hash=entry_hash_,
        url_key=url_key(article.canonical_url or article.url, article.guid),
        sketch=sk,
        bands=bands(sk) if sk is not None else (),
    )
