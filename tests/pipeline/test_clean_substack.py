"""Substack rules: our own fixture, the cleaner notes' posts, and every Substack post in the corpus.

The expectations for the three annotated posts come from the
``*.cleaner-notes.md`` files beside them in ``<shared>/corpus/feeds``.
"""

from __future__ import annotations

import re
from collections import Counter
from pathlib import Path

import pytest
from bs4 import BeautifulSoup, Tag

from ingestd.models import CleanArticle, FeedContext, ParsedEntry
from ingestd.pipeline.clean import clean_entry
from ingestd.pipeline.clean.substack import is_substack

from .test_clean import GOLDEN, assert_in_order, load_feed

SUBSTACK = FeedContext(url="https://example.substack.com/feed", generator="Substack")
S3 = "https://substack-post-media.s3.amazonaws.com/public/images/"


def _clean(html: str, feed: FeedContext = SUBSTACK) -> CleanArticle:
    return clean_entry(
        ParsedEntry(guid="g", link="https://example.substack.com/p/post", content_html=html), feed
    )


def _corpus_posts(shared: Path, name: str) -> tuple[FeedContext, list[ParsedEntry]]:
    return load_feed((shared / "corpus" / "feeds" / name).read_bytes(), "https://" + name + ".example/feed")


# -- our own fixture -------------------------------------------------------------


def test_widgets_fixture() -> None:
    article = _clean((GOLDEN / "substack_widgets.html").read_text(encoding="utf-8"))
    html, text = article.content_html, article.content_text
    assert html.count("<figure>") == 1
    assert html.count("<img") == 1
    assert html.count("<figcaption>") == 1
    assert article.images[0].url == S3 + "original_1200x800.png"
    assert (article.images[0].width, article.images[0].height, article.images[0].alt) == (
        1200,
        800,
        "A chart",
    )
    assert article.images[0].caption == "Growth of everything, 2020–2025."
    chrome = [
        "substackcdn",
        "srcset",
        "<button",
        "<svg",
        "Subscribe",
        "Type your email",
        "Thanks for reading",
    ]
    chrome += ["Get more from this newsletter", "Share", "poll", "noise", "header-anchor"]
    for gone in chrome:
        assert gone not in html, gone
        assert gone not in text, gone
    assert "<h3>Section one</h3>" in html
    assert "footnote[1] and a Jane Writer mention." in text
    assert text.endswith("1. The footnote body.")
    assert '<a href="https://forms.example.org/join"' in html  # an off-platform CTA is author content
    assert "<blockquote><p>A pulled quote worth repeating.</p></blockquote>" in html
    assert '<code class="language-latex">E = mc^2</code>' in html
    assert '<code class="language-python">print("# not a heading")' in html
    assert '```python\nprint("# not a heading")\nx = 1\n```' in article.content_markdown
    assert "YouTube video: https://www.youtube.com/watch?v=CO59YZ_o_Mo" in text
    assert "> Tweets are short." in text
    assert 'href="https://twitter.com/someone/status/123456"' in html
    assert '<a href="https://other.substack.com/p/older-post"' in html
    assert "It began like this." in text


def test_paywall_markers() -> None:
    jump = _clean('<p>Visible part.</p><div class="paywall-jump" data-component-name="PaywallToDOM"></div>')
    assert jump.is_paywalled
    assert jump.content_text == "Visible part."
    more = _clean('<p>Visible part.</p><p><a href="https://example.substack.com/p/post">Read more</a></p>')
    assert more.is_paywalled
    assert more.content_text == "Visible part."
    assert not _clean("<p>Read more about it in <a href='https://x.org'>this book</a>.</p>").is_paywalled


def test_detection() -> None:
    entry = ParsedEntry(guid="g", link="https://someone.substack.com/p/x")
    assert is_substack(entry, FeedContext(url="https://custom.example/feed"), "")
    plain = ParsedEntry(guid="g", link="https://blog.example/p/x")
    assert is_substack(plain, FeedContext(url="https://blog.example/feed", substack_header=True), "")
    assert is_substack(
        plain, FeedContext(url="https://blog.example/feed"), '<div class="captioned-image-container">'
    )
    assert not is_substack(plain, FeedContext(url="https://blog.example/feed", generator="Hugo"), "<p>x</p>")


# -- the cleaner notes ---------------------------------------------------------------


@pytest.mark.shared
def test_notes_amorehead(shared_dir: Path) -> None:
    feed, entries = _corpus_posts(shared_dir, "substack_amorehead_ai4science_en.xml")
    article = clean_entry(entries[0], feed)
    html, text = article.content_html, article.content_text
    assert article.title == "A bittersweet lesson in the learning"
    assert article.subtitle == "(Highly subjective) AI4Science highlights of July 2026"
    assert not text.startswith("(Highly subjective)")  # the subtitle is not put in front of the body
    assert_in_order(
        text,
        [
            "Unearthing the foundations of continuous data",
            "GenCeption from Google DeepMind recently proposed",
            "Diffusion models can both generate and represent continuous data well.",
            "This approach currently provides both high performance and wide coverage",
            "Discovering physical laws (through language)",
            "Can large language models (LLMs) deduce the physical laws of novel simulated worlds",
            "In the DiscoverPhysics benchmark, LLMs have to uncover (new) physical laws.",
            "DiscoverPhysics has a convenient leaderboard",
            "Reflections",
            "Or do we first need to find the right architecture to scale"
            " (as for DeepMind’s GenCeption model)?",
        ],
    )
    assert (html.count("<h3>"), html.count("<p>"), html.count("<figure>"), html.count("<a ")) == (3, 5, 2, 5)
    assert "<ul" not in html
    assert "<blockquote" not in html
    assert "<ol" not in html
    assert '<a href="https://genception.github.io/"' in html
    assert "<em>dense</em>" in html
    assert [image.url for image in article.images] == [
        S3 + "79c6e021-dc21-463a-a14d-38b194a5796b_3264x1132.png",
        S3 + "a3047f37-3576-42ba-8ee3-f24462d84d78_6096x2437.png",
    ]
    assert all(image.alt == "" for image in article.images)
    assert (
        article.images[1].caption
        == "In the DiscoverPhysics benchmark, LLMs have to uncover (new) physical laws."
    )
    assert article.image_url == article.images[0].url  # the cover is figure 1, not a second image
    for gone in (
        "Subscribe",
        "Type your email",
        "Thanks for reading",
        "substackcdn",
        "srcset",
        "<button",
        "<svg",
    ):
        assert gone not in text
        assert gone not in html
    assert "&#8217;" not in html
    assert "’" in text
    older = next(e for e in entries if e.title.startswith("AI4Science: The why and the how"))
    assert "Subscribe now" not in clean_entry(older, feed).content_text


@pytest.mark.shared
def test_notes_pennspark(shared_dir: Path) -> None:
    feed, entries = _corpus_posts(shared_dir, "substack_pennspark_newsletter_en.xml")
    article = clean_entry(entries[1], feed)
    html, text = article.content_html, article.content_text
    assert article.title == "Sparksgiving Season"
    assert article.subtitle == "Penn Spark Newsletter | November 2025"
    assert "<h" not in html.replace("<hr", "")  # no headings invented or lost
    assert_in_order(
        text,
        [
            "As always, the end of the semester is fast approaching",
            "🎉 YOU’RE INVITED – Showcase!",
            "Dec 6 @ 5pm in Wu and Chen Auditorium, Levine Hall",
            "> Penn Pulse:",
            "> Pent Up:",
            "SphereUS",
            "And the Blue projects",
            "> Sync’d:",
            "🏈 Homecoming",
            "🦃 Spark x Labs x Hack x Upgrade Friendsgiving potluck",
            "📌 Spark updates",
            "📈 Spring 2026 applications",
            "💕 Your turn",
            "Interested in hosting an event",
            "👀 Please email me at upennspark@gmail.com",
            "Stay thankful. Enjoy the long weekend. See you at showcase!",
            "With love,",
            "Meiling Mathur",
            "Co-President, Penn Spark 💌",
        ],
    )
    assert "💕 Your turn\n\nInterested in hosting an event" in text  # the poll leaves nothing behind
    assert not re.search("[\ud800-\udfff]", text)  # astral characters, not surrogate pairs
    assert all(emoji in text for emoji in "🎉🏈🦃📌📈💕💌👀")
    assert [image.url for image in article.images] == [
        S3 + "a4186e2b-0f05-4d91-9e3f-195347ecce45_1638x2048.png",
        S3 + "f3477ccf-90a9-49cd-b803-c5d8fae2dba7_1200x1600.jpeg",
    ]
    assert all(image.caption == "" and image.alt == "" for image in article.images)
    assert "mailto:upennspark@gmail.com" in html
    assert "pennspark.org" in html
    for gone in (
        "Subscribe",
        "Thanks for reading Penn Spark",
        "Type your email",
        "poll",
        "substackcdn",
        "srcset",
    ):
        assert gone not in text
        assert gone not in html


@pytest.mark.shared
def test_notes_valentinguigon(shared_dir: Path) -> None:
    feed, entries = _corpus_posts(shared_dir, "substack_valentinguigon_en.xml")
    article = clean_entry(entries[0], feed)
    html, text = article.content_html, article.content_text
    assert article.title == "Supervising LLMs in multi-step projects is a governance problem"
    assert article.subtitle == "Building a governance workflow for complex AI-assisted work in the repo."
    assert text.startswith("LLMs are incredibly useful in dense, complex, multi-step projects")
    numbered = [f"{n}) " for n in range(1, 7)]
    assert_in_order(
        text, ["1) Clear separation of decision-making", *numbered[1:5], "6) The existence of a system"]
    )
    assert "\n\n2) " in text  # six lines, not one run-on paragraph
    headings = re.findall(r"<(h[234])>(.*?)</h[234]>", html)
    assert headings == [
        ("h3", "The problem of unmanaged delegation"),
        ("h3", "The problem of project memory"),
        ("h3", "What complex AI-assisted work needs"),
        ("h2", "Introducing SUPLEX: a supervised, layered execution workflow"),
        ("h3", "Handoffs open a pass"),
        ("h3", "Execution reports close the pass"),
        ("h3", "Control memory preserves state across passes"),
        ("h3", "Scope and limits"),
    ]
    assert html.count("<p>") == 53 + 2  # 53 body paragraphs and the 2 footnote bodies
    assert html.count("<a ") == 5
    codes = re.findall(r'<pre><code class="language-(\w+)">', html)
    assert codes == ["shell", "markdown", "markdown", "markdown"]
    assert "irm " in text
    assert "curl -fsSL" in text
    assert "let’s [...]" in text
    assert "# Portfolio Public Surface Implementation Pass" in text
    assert "# Execution Report" in text
    assert "<h1" not in html
    assert "\n# Portfolio" in article.content_markdown
    assert [image.url for image in article.images] == [
        S3 + "0d359d90-aaa3-4caa-af9c-c11dc8311391_2360x991.webp"
    ]
    assert article.images[0].caption == ""
    assert "<figcaption>" not in html
    assert "across the handoffs.[1]" in text
    assert "documentation set.[2]" in text
    assert "set.2" not in text
    assert_in_order(
        text,
        [
            "Finally, SUPLEX is not a replacement for existing good coding practices.",
            "1. This architecture also helps localizing sources of failure.",
            "2. Alongside checkpoints, validation ledgers, discrepancy logs,",
        ],
    )
    for gone in ("Subscribe now", "Leave a comment", "substackcdn", "srcset", "<button", "<svg"):
        assert gone not in text
        assert gone not in html


# -- every Substack post in the corpus ------------------------------------------------

_WIDGET_CLASSES = re.compile(
    r"^(subscription-widget.*|subscribe-widget|button-wrapper|captioned-button-wrap|poll-embed|image-link-expand"
    r"|header-anchor-parent|footnote-anchor|footnote-number|paywall-jump)$"
)
_COUNTED = ["p", "li", "blockquote", "h1", "h2", "h3", "h4", "h5", "h6", "figcaption"]


def _expected_words(raw_html: str) -> Counter[str]:
    """Words of the content elements, computed independently of the cleaner (bs4 on the raw HTML)."""
    soup = BeautifulSoup(raw_html, "lxml")
    for widget in soup.find_all(class_=_WIDGET_CLASSES):
        if isinstance(widget, Tag):
            widget.decompose()
    words: Counter[str] = Counter()
    for element in soup.find_all(_COUNTED):
        if element.find_parent(_COUNTED) is None:
            words.update(re.findall(r"\w+", element.get_text(" ").lower()))
    return words


def _substack_files(shared: Path) -> list[Path]:
    feeds = sorted((shared / "corpus" / "feeds").glob("substack_*.xml"))
    return [path for path in feeds if "NOT_A_FEED" not in path.name] + [
        shared / "seed" / "seed_substack_feed.xml"
    ]


@pytest.mark.shared
def test_every_substack_post(shared_dir: Path) -> None:
    ratios: dict[str, float] = {}
    for path in _substack_files(shared_dir):
        feed, entries = load_feed(path.read_bytes(), "https://example.substack.com/feed")
        kept = total = 0
        for entry in entries:
            article = clean_entry(entry, feed)
            html, text = article.content_html, article.content_text
            for banned in (
                "substackcdn.com/image/fetch",
                "srcset",
                "Subscribe now",
                "Leave a comment",
                "Type your email",
            ):
                assert banned not in text, (path.name, entry.guid, banned)
            assert "srcset" not in html
            assert "substackcdn.com/image/fetch" not in html
            expected = _expected_words(entry.content_html)
            got = Counter(re.findall(r"\w+", text.lower()))
            kept += sum(min(count, got[word]) for word, count in expected.items())
            total += sum(expected.values())
            containers = BeautifulSoup(entry.content_html, "lxml").select("div.captioned-image-container")
            captions = [c.figcaption.get_text(" ", strip=True) for c in containers if c.figcaption]
            assert html.count("<figure>") == len(containers) == len(article.images), (path.name, entry.guid)
            assert [re.findall(r"\w+", i.caption) for i in article.images if i.caption] == [
                re.findall(r"\w+", c) for c in captions if c
            ]
        ratios[path.name] = kept / total if total else 1.0
    print("\nword retention (content words kept in content_text):")
    for name, ratio in ratios.items():
        print(f"  {ratio:7.2%}  {name}")
    assert all(ratio >= 0.98 for ratio in ratios.values()), ratios
