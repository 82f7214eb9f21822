"""URL rules of the clean stage: canonical URLs, resolution, tracking parameters, image proxies."""

from __future__ import annotations

import pytest

from ingestd.pipeline.clean import canonical_url
from ingestd.pipeline.clean.urls import (
    embed_link,
    is_share_link,
    is_tracker,
    largest_srcset,
    original_image_url,
    resolve,
    safe_base,
    strip_tracking,
)


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("HTTPS://Example.COM/Path/To?x=1", "https://example.com/Path/To?x=1"),
        ("http://example.com:80/a", "http://example.com/a"),
        ("https://example.com:443/a", "https://example.com/a"),
        ("https://example.com:8443/a", "https://example.com:8443/a"),
        ("https://example.com/a/#section", "https://example.com/a/"),
        ("https://example.com/a/", "https://example.com/a/"),  # trailing slash kept as is
        ("https://example.com/a", "https://example.com/a"),
        ("https://example.com", "https://example.com"),
        ("https://example.com/p?utm_source=rss&utm_medium=email&utm_campaign=x", "https://example.com/p"),
        ("https://example.com/p?b=2&utm_source=x&a=1", "https://example.com/p?b=2&a=1"),  # order kept
        ("https://example.com/p?UTM_Source=x&id=1", "https://example.com/p?id=1"),
        ("https://example.com/p?q=a%20b&utm_term=z", "https://example.com/p?q=a%20b"),  # encoding kept
        ("https://example.com/p?flag&utm_x=1", "https://example.com/p?flag"),
        ("https://user@Example.com/p", "https://user@example.com/p"),
        ("https://[2001:DB8::1]:443/p", "https://[2001:db8::1]/p"),
        ("  https://example.com/p  ", "https://example.com/p"),
        ("ftp://example.com/p", None),
        ("mailto:a@example.com", None),
        ("javascript:alert(1)", None),
        ("/relative/path", None),
        ("", None),
        (None, None),
        ("https://example.com:99999/p", None),
        ("https:///no-host", None),
    ],
)
def test_canonical_url(url: str | None, expected: str | None) -> None:
    assert canonical_url(url) == expected


@pytest.mark.parametrize(
    "key",
    [
        "fbclid",
        "gclid",
        "dclid",
        "msclkid",
        "mc_cid",
        "mc_eid",
        "ref_src",
        "_hsenc",
        "_hsmi",
        "igshid",
        "yclid",
    ],
)
def test_canonical_url_drops_click_ids(key: str) -> None:
    assert canonical_url(f"https://example.com/p?keep=1&{key}=abc") == "https://example.com/p?keep=1"


def test_canonical_url_keeps_other_parameters() -> None:
    url = "https://example.com/watch?v=abc&ref=home&s=1&source=feed"
    assert canonical_url(url) == url


def test_strip_tracking_keeps_fragment_and_other_params() -> None:
    assert strip_tracking("https://e.com/p?a=1&utm_source=x#frag") == "https://e.com/p?a=1#frag"
    assert strip_tracking("https://e.com/p?utm_source=x") == "https://e.com/p"
    assert strip_tracking("https://e.com/p") == "https://e.com/p"


@pytest.mark.parametrize(
    ("href", "expected"),
    [
        ("page.html", "https://example.org/dir/page.html"),
        ("/root", "https://example.org/root"),
        ("//cdn.example/x.png", "https://cdn.example/x.png"),
        ("https://other.example/a?utm_source=x&b=2", "https://other.example/a?b=2"),
        ("mailto:a@example.org", "mailto:a@example.org"),
        ("javascript:alert(1)", None),
        (" JaVaScRiPt:alert(1)", None),
        ("java\tscript:alert(1)", None),
        ("java\nscript:alert(1)", None),
        ("\x01javascript:alert(1)", None),
        ("vbscript:msgbox(1)", None),
        ("data:text/html;base64,PHNjcmlwdD4=", None),
        ("file:///etc/passwd", None),
        ("#footnote-1", None),
        ("", None),
        (None, None),
        ("http://", None),
    ],
)
def test_resolve(href: str | None, expected: str | None) -> None:
    assert resolve(href, "https://example.org/dir/index.html") == expected


def test_resolve_without_base_keeps_only_absolute_urls() -> None:
    assert resolve("page.html", None) is None
    assert resolve("https://example.org/a", None) == "https://example.org/a"


def test_safe_base_skips_script_and_relative_bases() -> None:
    assert (
        safe_base("javascript:alert(1)//", "relative", None, "https://example.org/feed")
        == "https://example.org/feed"
    )
    assert safe_base(None, "") is None


def test_original_image_url_decodes_substack_proxy() -> None:
    signed = (
        "https://substackcdn.com/image/fetch/$s_!Ugc_!,w_1456,c_limit,f_auto,q_auto:good,fl_progressive:steep/"
        "https%3A%2F%2Fsubstack-post-media.s3.amazonaws.com%2Fpublic%2Fimages%2F07c2_1338x806.png"
    )
    assert (
        original_image_url(signed)
        == "https://substack-post-media.s3.amazonaws.com/public/images/07c2_1338x806.png"
    )
    old_style = "https://substackcdn.com/image/fetch/w_256,c_limit/https%3A%2F%2Fimages.unsplash.com%2Fphoto-1%3Fw%3D1080"
    assert original_image_url(old_style) == "https://images.unsplash.com/photo-1?w=1080"
    assert original_image_url("https://example.org/a.png") == "https://example.org/a.png"
    hostile = "https://substackcdn.com/image/fetch/w_1/javascript%3Aalert(1)"
    assert original_image_url(hostile) == hostile  # not decoded into a script URL


def test_largest_srcset() -> None:
    assert largest_srcset("a.jpg 400w, b.jpg 1200w, c.jpg 800w") == "b.jpg"
    assert largest_srcset("a.jpg 1x, b.jpg 2x") == "b.jpg"
    assert largest_srcset("only.jpg") == "only.jpg"
    assert largest_srcset("") is None
    assert largest_srcset(None) is None


def test_embed_links() -> None:
    assert embed_link("https://www.youtube-nocookie.com/embed/CO59YZ_o_Mo?rel=0", None) == (
        "https://www.youtube.com/watch?v=CO59YZ_o_Mo",
        "YouTube video: https://www.youtube.com/watch?v=CO59YZ_o_Mo",
    )
    assert embed_link("https://player.vimeo.com/video/123456", None) == (
        "https://vimeo.com/123456",
        "Vimeo video: https://vimeo.com/123456",
    )
    assert embed_link("https://ads.example/frame", None) is None
    assert embed_link("javascript:alert(1)", None) is None


def test_share_and_tracker_detection() -> None:
    assert is_share_link("https://twitter.com/intent/tweet?url=x")
    assert is_share_link("https://www.facebook.com/sharer/sharer.php?u=x")
    assert is_share_link("http://feeds.feedburner.com/~ff/Example?a=1")
    assert not is_share_link("https://twitter.com/someone/status/1")
    assert is_tracker("http://feeds.feedburner.com/~r/Example/~4/abc")
    assert is_tracker("https://pixel.wp.com/g.gif?blog=1")
    assert is_tracker("https://medium.com/_/stat?event=post.clientViewed")
    assert is_tracker("https://stats.wordpress.com/b.gif")
    assert not is_tracker("https://example.org/photo.jpg")
