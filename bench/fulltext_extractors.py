"""Which main-content extractor should ``--full-text`` use? Measured, not guessed.

For every entry of ``../shared/corpus/feeds`` that carries its full body
(``content:encoded`` / Atom ``content``, at least ``MIN_WORDS`` words), we
render a synthetic article page around that body, the way a CMS would: site
header and nav, breadcrumbs, share buttons, byline, tags, an author box,
related posts, a sidebar with popular posts, a newsletter form and an ad, a
comment thread, a cookie banner and a footer, plus inline ``<script>``,
``<style>`` and JSON-LD in the head. Each extractor gets the page bytes; its
HTML goes through ``clean_entry`` (what ingestd really stores), and we compare
the words of that ``content_text`` with the words of the entry cleaned from
the feed itself:

* recall: share of the feed body's words found in the extracted text;
* precision: share of the extracted words that belong to the feed body
  (bags of words, so a boilerplate "the" counts as noise once the body's are used up);
* structure: how alike the block structure of the two cleaned bodies is (paragraphs, list
  items, headings h2-h4, quotes, code, images, captions, tables: shared / union of the counts);
* leaks: share of pages where a given boilerplate block's marker sentence got through;
* failures: pages where the extractor returned nothing (ingestd keeps the feed's body then);
* time per page (extraction only) and the install footprint (the library plus the
  dependencies it adds on top of ingestd's own).

Run: ``python bench/fulltext_extractors.py [--shared DIR] [--json]``.
"""

from __future__ import annotations

import argparse
import html
import json
import os
import random
import re
import statistics
import sys
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path
from typing import Any

import feedparser

from ingestd.exceptions import ParseError
from ingestd.models import FeedContext, ParsedEntry
from ingestd.pipeline.clean import clean_entry
from ingestd.pipeline.fulltext import extract_main_html

MIN_WORDS = 50
WORD = re.compile(r"\w+", re.UNICODE)
BLOCK = re.compile(r"<(p|li|h[2-4]|blockquote|pre|code|img|figcaption|table)\b")
ROOT = Path(__file__).resolve().parent.parent

# ruff: noqa: E501 - the page template reads best one HTML line per source line
# One marker sentence per boilerplate block: if it shows up in the output, that block leaked.
MARKERS = {
    "nav": "Home World Politics Technology Science Culture Opinion Podcasts Archive About",
    "share": "Share this article on Twitter Facebook LinkedIn or by email",
    "byline": "Posted by the editorial desk in Long Reads with twelve comments",
    "tags": "Filed under analysis features and weekend reading",
    "bio": "The author writes about institutions and the people who keep them running",
    "related": "You might also enjoy these stories from our archive this month",
    "sidebar": "Most popular this week among our readers around the globe",
    "newsletter": "Get the best of our journalism delivered to your inbox every Sunday morning",
    "ad": "Advertisement sponsored content from our partners helps fund this site",
    "comments": "I disagree with the premise but the second half changed my mind completely",
    "cookies": "We use cookies to improve your experience and to measure our audience",
    "footer": "Copyright the Example Media Group all rights reserved privacy terms contact",
}

FILLER = [
    "A new report says the city council will vote on the housing plan next week.",
    "Researchers found that the old bridge needs repairs sooner than expected.",
    "The festival returns in June with a longer programme and cheaper tickets.",
    "Markets were calm on Tuesday as investors waited for the central bank.",
    "Why the small garden on the corner became the neighbourhood's favourite place.",
    "An interview with the chef who brought regional cooking back to the high street.",
    "Five lessons from a decade of building open source software in public.",
    "The library extends its opening hours during the exam season this year.",
]


def page_for(title: str, body: str, url: str, rng: random.Random) -> bytes:
    """A realistic article page around ``body`` (the feed's HTML, unchanged)."""
    links = lambda n: "".join(  # noqa: E731 - local shorthand
        f'<li><a href="/{i}/{rng.randrange(10**6)}">{html.escape(rng.choice(FILLER))}</a></li>'
        for i in range(n)
    )
    comments = "".join(
        f'<li class="comment"><div class="comment-author">reader{i}</div><div class="comment-body">'
        f"<p>{html.escape(rng.choice(FILLER))} {html.escape(rng.choice(FILLER))}</p>"
        + (f"<p>{MARKERS['comments']}.</p>" if i == 0 else "")
        + '<a class="reply" href="#reply">Reply</a></div></li>'
        for i in range(4)
    )
    t = html.escape(title)
    doc = f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>{t} | Example Media</title>
<meta name="viewport" content="width=device-width, initial-scale=1">
<meta property="og:title" content="{t}"><link rel="canonical" href="{html.escape(url)}">
<style>body{{font-family:serif}} .sidebar{{float:right}} .share a{{margin:0 4px}}</style>
<script>window.dataLayer=window.dataLayer||[];function gtag(){{dataLayer.push(arguments)}}gtag('js',new Date());</script>
<script type="application/ld+json">{{"@context":"https://schema.org","@type":"NewsArticle","headline":{json.dumps(title)}}}</script>
</head><body class="single-post">
<div class="cookie-banner" role="dialog"><p>{MARKERS["cookies"]}.</p><button>Accept all</button></div>
<header class="site-header"><a class="logo" href="/"><img src="/logo.png" alt="Example Media"></a>
<nav class="main-nav"><ul>{"".join(f'<li><a href="/{w.lower()}">{w}</a></li>' for w in MARKERS["nav"].split())}</ul></nav>
<form class="search" action="/search"><input name="q" placeholder="Search"></form></header>
<div class="breadcrumbs"><a href="/">Home</a> › <a href="/long-reads">Long Reads</a> › {t}</div>
<div class="layout"><main id="main">
<article class="post">
<header class="entry-header"><h1 class="entry-title">{t}</h1>
<p class="byline">{MARKERS["byline"]}. <time datetime="2025-11-27">27 November 2025</time></p>
<div class="share top"><span>{MARKERS["share"]}:</span> <a href="https://twitter.com/intent/tweet">Tweet</a>
<a href="https://www.facebook.com/sharer.php">Share</a> <a href="mailto:?subject={t}">Email</a></div></header>
<div class="entry-content">
{body}
</div>
<footer class="entry-footer"><p class="tags">{MARKERS["tags"]}: <a href="/tag/a">analysis</a>, <a href="/tag/b">features</a></p>
<div class="share bottom"><a href="https://twitter.com/intent/tweet">Share on Twitter</a> <a href="#">Copy link</a></div>
<div class="author-box"><img src="/avatar.jpg" alt=""><p>{MARKERS["bio"]}. Follow them for more.</p></div>
</footer></article>
<section class="related"><h2>Related</h2><p>{MARKERS["related"]}.</p><ul>{links(4)}</ul></section>
<section id="comments" class="comments"><h2>12 comments</h2><ol class="comment-list">{comments}</ol>
<form id="respond"><textarea name="comment"></textarea><button>Post comment</button></form></section>
</main>
<aside class="sidebar widget-area"><section class="widget popular"><h3>Popular</h3><p>{MARKERS["sidebar"]}.</p><ul>{links(6)}</ul></section>
<section class="widget newsletter"><h3>Newsletter</h3><p>{MARKERS["newsletter"]}.</p>
<form><input type="email" placeholder="Type your email"><button>Subscribe</button></form></section>
<div class="widget ad"><p>{MARKERS["ad"]}.</p><a href="https://ads.example.net/click"><img src="/ad.gif" alt=""></a></div></aside></div>
<footer class="site-footer"><ul>{links(5)}</ul><p>{MARKERS["footer"]}.</p></footer>
<script src="/assets/app.js" async></script></body></html>"""
    return doc.encode("utf-8")


@dataclass
class Case:
    name: str
    url: str
    title: str
    feed_ctx: FeedContext
    reference: Counter[str]
    blocks: Counter[str]
    page: bytes


def words(text: str) -> list[str]:
    return [w.casefold() for w in WORD.findall(text)]


def blocks(content_html: str) -> Counter[str]:
    """The structure of a cleaned body: how many paragraphs, items, headings, images..."""
    return Counter(BLOCK.findall(content_html))


def load_cases(shared: Path) -> list[Case]:
    rng = random.Random(1729)
    cases: list[Case] = []
    for path in sorted((shared / "corpus" / "feeds").iterdir()):
        if path.suffix not in (".xml", ".json", ".rss") or "NOT_A_FEED" in path.name:
            continue
        parsed = feedparser.parse(path.read_bytes())
        feed_ctx = FeedContext(
            url=f"https://feeds.example/{path.name}",
            site_url=parsed.feed.get("link"),
            language=parsed.feed.get("language"),
            generator=parsed.feed.get("generator", ""),
        )
        for i, e in enumerate(parsed.entries):
            contents = [c for c in e.get("content", []) if "html" in c.get("type", "html")]
            if not contents:
                continue
            body = contents[0].get("value", "")
            link = e.get("link") or f"https://site.example/{path.stem}/{i}"
            title = e.get("title", "")
            entry = ParsedEntry(guid=e.get("id"), link=link, title=title, content_html=body, base_url=link)
            try:
                clean = clean_entry(entry, feed_ctx)
            except Exception:  # noqa: S112 - a body our cleaner rejects is not a fair test case
                continue
            ref = clean.content_text
            if len(words(ref)) < MIN_WORDS:
                continue
            page = page_for(title, body, link, rng)
            cases.append(
                Case(
                    f"{path.name}#{i}",
                    link,
                    title,
                    feed_ctx,
                    Counter(words(ref)),
                    blocks(clean.content_html),
                    page,
                )
            )
    return cases


# -- the candidates ----------------------------------------------------------------------------------


def trafilatura_html(page: bytes, url: str) -> str | None:
    import trafilatura

    return trafilatura.extract(
        page,
        url=url,
        output_format="html",
        include_comments=False,
        include_links=True,
        include_images=True,
        include_tables=True,
        include_formatting=True,
        deduplicate=False,
    )


def trafilatura_recall_html(page: bytes, url: str) -> str | None:
    import trafilatura

    return trafilatura.extract(
        page,
        url=url,
        output_format="html",
        include_comments=False,
        include_links=True,
        include_images=True,
        include_tables=True,
        include_formatting=True,
        favor_recall=True,
    )


def readability_html(page: bytes, url: str) -> str | None:
    from readability import Document

    return str(Document(page, url=url).summary(html_partial=True))


def ingestd_html(page: bytes, url: str) -> str | None:
    try:
        return extract_main_html(page, url=url, headers={"content-type": "text/html; charset=utf-8"})
    except ParseError:
        return None


CANDIDATES: dict[str, tuple[Callable[[bytes, str], str | None], str]] = {
    "trafilatura": (trafilatura_html, "trafilatura"),
    "trafilatura favor_recall": (trafilatura_recall_html, "trafilatura"),
    "readability-lxml": (readability_html, "readability-lxml"),
    "ingestd extract_main_html": (ingestd_html, ""),
}


# -- install footprint -------------------------------------------------------------------------------


def _requires(dist: str) -> set[str]:
    names: set[str] = set()
    for req in metadata.requires(dist) or []:
        if "extra ==" in req:
            continue
        names.add(re.split(r"[ ;<>=!~\[(]", req, maxsplit=1)[0].lower().replace("_", "-"))
    return names


def _closure(dist: str) -> set[str]:
    seen: set[str] = set()
    todo = [dist.lower()]
    while todo:
        name = todo.pop()
        if name in seen:
            continue
        try:
            metadata.distribution(name)
        except metadata.PackageNotFoundError:
            continue
        seen.add(name)
        todo += _requires(name)
    return seen


def _size(dist: str) -> int:
    d = metadata.distribution(dist)
    total = 0
    for f in d.files or []:
        p = Path(str(d.locate_file(f)))
        if p.is_file():
            total += p.stat().st_size
    return total


def footprint(dist: str) -> tuple[int, list[str]]:
    """Bytes installed by ``dist`` and the dependencies ingestd does not already have."""
    base = _closure("ingestd") - {"ingestd"}
    extra = sorted(_closure(dist) - base)
    return sum(_size(d) for d in extra), extra


# -- the measurement ---------------------------------------------------------------------------------


@dataclass
class Score:
    recall: list[float] = field(default_factory=list)
    precision: list[float] = field(default_factory=list)
    structure: list[float] = field(default_factory=list)
    seconds: list[float] = field(default_factory=list)
    failures: int = 0
    leaks: Counter[str] = field(default_factory=Counter)
    worst: list[tuple[float, str]] = field(default_factory=list)


def measure(cases: list[Case], fn: Callable[[bytes, str], str | None]) -> Score:
    score = Score()
    marker_words = {k: " ".join(words(v)) for k, v in MARKERS.items()}
    for case in cases:
        started = time.perf_counter()
        try:
            out = fn(case.page, case.url)
        except Exception:  # an extractor crash counts as a failure
            out = None
        score.seconds.append(time.perf_counter() - started)
        text = ""
        shape: Counter[str] = Counter()
        if out and out.strip():
            entry = ParsedEntry(
                guid=case.url, link=case.url, title=case.title, content_html=out, base_url=case.url
            )
            clean = clean_entry(entry, case.feed_ctx)
            text, shape = clean.content_text, blocks(clean.content_html)
        got = Counter(words(text))
        if not got:
            score.failures += 1
            score.recall.append(0.0)
            score.precision.append(0.0)
            score.structure.append(0.0)
            score.worst.append((0.0, case.name))
            continue
        common = sum((got & case.reference).values())
        recall = common / sum(case.reference.values())
        score.recall.append(recall)
        score.precision.append(common / sum(got.values()))
        union = sum((shape | case.blocks).values())
        score.structure.append(sum((shape & case.blocks).values()) / union if union else 1.0)
        score.worst.append((recall, case.name))
        flat = " ".join(words(text))
        score.leaks.update(k for k, m in marker_words.items() if m in flat)
    score.worst.sort()
    return score


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--shared", type=Path, default=Path(os.environ.get("INGESTD_SHARED_DIR", ROOT.parent / "shared"))
    )
    parser.add_argument("--json", action="store_true", help="print the results as JSON too")
    args = parser.parse_args()
    cases = load_cases(args.shared)
    print(f"{len(cases)} pages (corpus entries with a full body of >= {MIN_WORDS} words)\n")
    rows: dict[str, dict[str, Any]] = {}
    header = (
        f"{'extractor':<27} {'recall':>7} {'p10 rec':>7} {'precis':>7} {'p10 pre':>7} {'failed':>6} "
        f"{'struct':>6} {'leaky':>6} {'ms/page':>8} {'p95 ms':>7} {'install':>8}"
    )
    print(header)
    print("-" * len(header))
    for name, (fn, dist) in CANDIDATES.items():
        fn(cases[0].page, cases[0].url)  # warm-up: imports and lazy models are not per-page costs
        s = measure(cases, fn)
        size, extra = footprint(dist) if dist else (0, [])
        leaky = sum(s.leaks.values()) / (len(cases) * len(MARKERS))
        q = statistics.quantiles
        row = {
            "recall_mean": statistics.fmean(s.recall),
            "recall_p10": q(s.recall, n=10)[0],
            "precision_mean": statistics.fmean(s.precision),
            "precision_p10": q(s.precision, n=10)[0],
            "structure_mean": statistics.fmean(s.structure),
            "failures": s.failures,
            "leaked_blocks": dict(s.leaks),
            "leak_rate": leaky,
            "ms_mean": 1000 * statistics.fmean(s.seconds),
            "ms_p95": 1000 * q(s.seconds, n=20)[-1],
            "install_bytes": size,
            "install_dists": extra,
            "worst": s.worst[:3],
        }
        rows[name] = row
        print(
            f"{name:<27} {row['recall_mean']:>7.1%} {row['recall_p10']:>7.1%} {row['precision_mean']:>7.1%} "
            f"{row['precision_p10']:>7.1%} {s.failures:>6} {row['structure_mean']:>6.1%} {leaky:>6.1%} {row['ms_mean']:>8.1f} "
            f"{row['ms_p95']:>7.1f} {size / 1e6:>6.1f}MB"
        )
    print()
    for name, row in rows.items():
        leaks = (
            ", ".join(f"{k} {v}" for k, v in sorted(row["leaked_blocks"].items(), key=lambda kv: -kv[1]))
            or "none"
        )
        print(f"{name}: leaked blocks (pages): {leaks}")
        print(f"  worst recall: {', '.join(f'{n} {r:.0%}' for r, n in row['worst'])}")
        if row["install_dists"]:
            print(f"  installs: {', '.join(row['install_dists'])}")
    if args.json:
        print(json.dumps(rows, indent=2, default=str))
    return 0


if __name__ == "__main__":
    sys.exit(main())
