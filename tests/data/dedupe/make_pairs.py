"""Writes pairs.jsonl: the labelled near-duplicate set (our own synthetic text).

Run from the repository root: ``python tests/data/dedupe/make_pairs.py``.
Deterministic (seeded); the output is committed so a change shows in review.

label 1 (near-duplicate): the same story republished with small edits — typo
fixes, a reworded or dropped sentence, an "Update:" note, a new intro or
sign-off, a changed title line — at most ~10 % of its words touched.
label 0 (distinct): other stories on the same topic from the same sentence
templates, stories sharing a long newsletter header and footer (up to a third of
their words), a follow-up that quotes a paragraph of the first, short texts
sharing their stock phrases.
"""

from __future__ import annotations

import json
import random
from pathlib import Path

OUT = Path(__file__).with_name("pairs.jsonl")

SUBJECTS = [
    "the city council",
    "the regional government",
    "the central bank",
    "a small startup in Turin",
    "the union of rail workers",
    "the ministry of health",
    "the football club",
    "local farmers",
    "the new mayor",
    "a group of researchers",
    "the water utility",
    "the energy regulator",
    "il consiglio comunale",
    "la banca centrale",
    "una piccola startup di Bari",
    "i ricercatori",
    "the school board",
    "the port authority",
    "a coalition of publishers",
    "the housing agency",
]
VERBS = [
    "approved",
    "rejected",
    "postponed",
    "quietly revised",
    "defended",
    "questioned",
    "announced",
    "cut",
    "doubled",
    "published",
    "leaked",
    "renegotiated",
    "ha approvato",
    "ha rinviato",
    "criticized",
]
OBJECTS = [
    "the budget for public schools",
    "a plan to rebuild the old bridge",
    "the tariff on imported steel",
    "new rules on data retention",
    "the contract for the night buses",
    "a study on river pollution",
    "the price of monthly subscriptions",
    "the timetable of regional trains",
    "il piano per la sanità",
    "a reform of the pension system",
    "the merger of two local banks",
    "the grain corridor agreement",
    "the rent cap in the historic centre",
    "a tax on short-term rentals",
    "the closure of the steel plant",
]
TAILS = [
    "after a long and confused debate",
    "despite strong protests",
    "without consulting anyone",
    "as I wrote back in March",
    "while everyone was looking elsewhere",
    "and markets noticed at once",
    "according to documents seen by this newsletter",
    "dopo mesi di trattative",
    "for the third time this year",
    "in a vote that surprised most observers",
    "with a majority of just two votes",
    "behind closed doors",
]
OPENERS = ["Meanwhile,", "Last week,", "Oddly,", "In short,", "Nel frattempo,", "Still,", "As expected,", ""]
NUMBERS = ["3 percent", "12 million euros", "two thousand households", "40 days", "a quarter of the budget"]

HEADER = (
    "Good morning and welcome back to the Thursday briefing. If a friend forwarded this email, you can "
    "subscribe for free and get it every week. This issue is supported by our paying members, thank you. "
    "Here is what happened this week and why it matters for the rest of us. "
)
FOOTER = (
    "That is all for this week. Reply to this email if you have a tip, a correction or a complaint; I read "
    "every message even when I cannot answer. If you liked this issue, share it with one person who would "
    "enjoy it. Paid members get the archive, the monthly call and the data behind every chart. See you next "
    "Thursday, and thank you for reading. "
)


def sentence(rng: random.Random) -> str:
    s = f"{rng.choice(OPENERS)} {rng.choice(SUBJECTS)} {rng.choice(VERBS)} {rng.choice(OBJECTS)} "
    s += f"{rng.choice(TAILS)}"
    if rng.random() < 0.4:
        s += f", a change worth {rng.choice(NUMBERS)}"
    return s.strip().capitalize() + "."


def story(rng: random.Random, words: int) -> list[str]:
    """Sentences until about ``words`` words."""
    out: list[str] = []
    while sum(len(s.split()) for s in out) < words:
        out.append(sentence(rng))
    return out


def text(sentences: list[str]) -> str:
    paragraphs = [" ".join(sentences[i : i + 4]) for i in range(0, len(sentences), 4)]
    return "\n\n".join(paragraphs)


def typo(rng: random.Random, sentences: list[str], share: float) -> list[str]:
    words = " ".join(sentences).split(" ")
    for _ in range(max(1, int(len(words) * share))):
        i = rng.randrange(len(words))
        w = words[i]
        if len(w) > 3:
            j = rng.randrange(len(w) - 1)
            words[i] = w[:j] + w[j + 1] + w[j] + w[j + 2 :]
    return [" ".join(words)]


def small_edit(rng: random.Random, base: list[str]) -> list[str]:
    kind = rng.choice(["typos", "reword", "drop", "update", "intro", "mixed"])
    s = list(base)
    n = len(s)
    if kind == "typos":
        return typo(rng, s, 0.02)
    if kind == "reword":
        for _ in range(max(1, n // 15)):
            s[rng.randrange(n)] = sentence(rng)
        return s
    if kind == "drop":
        del s[rng.randrange(n)]
        return s
    if kind == "update":
        return [*s, f"Update: {sentence(rng)}"]
    if kind == "intro":
        return ["Editor's note: this piece first ran last week and has been lightly edited.", *s]
    s[rng.randrange(n)] = sentence(rng)
    s = typo(rng, s, 0.01)
    return [*s, "Thanks to the readers who wrote in with corrections."]


def pairs(rng: random.Random) -> list[dict[str, object]]:
    out: list[dict[str, object]] = []

    def add(kind: str, label: int, a: list[str], b: list[str]) -> None:
        out.append({"kind": kind, "label": label, "a": text(a), "b": text(b)})

    for _ in range(120):
        base = story(rng, rng.choice([60, 120, 200, 350]))
        add("small-edit", 1, base, small_edit(rng, base))
    for _ in range(60):
        add("same-templates", 0, story(rng, 200), story(rng, 200))
    for _ in range(50):
        body_a, body_b = story(rng, 150), story(rng, 150)
        add("shared-boilerplate", 0, [HEADER, *body_a, FOOTER], [HEADER, *body_b, FOOTER])
    for _ in range(40):
        first = story(rng, 300)
        add("follow-up-quotes", 0, first, [*story(rng, 220), *first[:4]])
    for _ in range(30):
        add("short-stock-phrases", 0, story(rng, 60), story(rng, 60))
    return out


def main() -> None:
    rng = random.Random(20261129)
    with OUT.open("w", encoding="utf-8") as f:
        for p in pairs(rng):
            f.write(json.dumps(p, ensure_ascii=False) + "\n")


if __name__ == "__main__":
    main()
