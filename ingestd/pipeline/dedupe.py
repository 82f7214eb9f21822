"""Identity keys: how a story is recognised across polls and across feeds.

Within a feed an entry is its guid (else its link, else a hash of what it
says); across feeds a story is its canonical URL. ``entry_hash`` fingerprints
the raw entry so an unchanged entry costs no cleaning and no write.
"""

from __future__ import annotations

import hashlib
import re
import unicodedata

from ingestd.models import ParsedEntry

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
    normal = _SPACE.sub(" ", unicodedata.normalize("NFKC", text)).strip().casefold()
    return _digest(normal)
