"""``safe_text``: the one rule for text that reaches the database."""

from __future__ import annotations

import random

import pytest

from ingestd.models import _UNSAFE, _replace_unsafe, safe_text


def _reference(value: str) -> str:
    return _UNSAFE.sub(_replace_unsafe, value)


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("plain ascii\tkeeps\ntab, LF\r and CR", "plain ascii\tkeeps\ntab, LF\r and CR"),
        ("nul\x00 and bell\x07 go", "nul and bell go"),
        ("caf\xe9\x0b latin-1", "caf\xe9 latin-1"),
        ("\u201ccurly\u201d \x1f quotes", "\u201ccurly\u201d  quotes"),
        ("lone \ud800 surrogate", "lone \ufffd surrogate"),
        ("both \udfff and \x01", "both \ufffd and "),
        ("emoji \U0001f600 and DEL \x7f stay", "emoji \U0001f600 and DEL \x7f stay"),
        ("Hangul \ud7a3 \ud7fb (U+D7xx, not surrogates)", "Hangul \ud7a3 \ud7fb (U+D7xx, not surrogates)"),
        ("", ""),
    ],
)
def test_safe_text_drops_controls_and_replaces_lone_surrogates(value: str, expected: str) -> None:
    assert safe_text(value) == expected
    assert _UNSAFE.search(safe_text(value)) is None


def test_safe_text_returns_a_clean_value_itself() -> None:
    value = "un texte propre, \u201cpropre\u201d \u2014 " * 1000
    assert safe_text(value) is value


def test_safe_text_agrees_with_the_regex_on_random_text() -> None:
    """The fast check (UTF-8 bytes) must flag exactly what the regex would replace."""
    rng = random.Random(7)
    alphabet = [chr(c) for c in range(0x80)] + ["\xe9", "\u2014", "\ud800", "\udc00", "\ud7ff", "\U0001f600"]
    for _ in range(3000):
        value = "".join(rng.choice(alphabet) for _ in range(rng.randrange(0, 12)))
        assert safe_text(value) == _reference(value), repr(value)
