"""Where the body text is: layouts that made the old extractor return nothing or the wrong block
(each written here by hand after a pattern seen on real pages), through `extract_main_content`."""

from __future__ import annotations

import pytest

from extractors.content_root import choose_root
from extractors.html_extract import extract_main_content, parse_html

BODY = [
    "The committee approved the new bridge design on Tuesday after a two-hour debate in the town hall.",
    "Construction is expected to start in April and to last about eighteen months, the mayor said.",
    "The old bridge, built in 1931, will stay open for pedestrians until the new one is finished.",
]
PARAGRAPHS = "".join(f"<p>{text}</p>" for text in BODY)
NAV = "<ul><li><a href='/a'>Home</a></li><li><a href='/b'>News</a></li><li><a href='/c'>Sport</a></li></ul>"
TEASERS = (
    "<div class='teasers'><p><a href='/t1'>Mayor opens new playground in the east of town</a></p>"
    "<p><a href='/t2'>Library extends its opening hours for the winter months</a></p>"
    "<p><a href='/t3'>Football club signs a new goalkeeper from the second division</a></p></div>"
)

LAYOUTS = {
    # the body inside a class name that usually means a sidebar
    "sidebar-named-wrapper": f"<body><main><article><div class='l-sidebar-fixed l-article-body'>"
    f"{PARAGRAPHS}</div></article></main></body>",
    # page builders wrap everything in "widget" containers
    "widget-wrappers": f"<body><nav>{NAV}</nav><div class='elementor-widget-wrap'>"
    f"<div class='elementor-widget-container'>{PARAGRAPHS}</div></div></body>",
    # ASP.NET pages wrap the whole page in one form
    "form-wrapper": f"<body><form id='aspnetForm'><div id='content'>{PARAGRAPHS}</div></form></body>",
    # the first <article> is a comment, the story is in divs
    "comment-article-first": "<body><div class='story'>"
    + PARAGRAPHS
    + "</div><article class='comment-body'><p>I have lived here for forty years and this is the "
    "best news in a long time, well done to everyone involved!</p><p>Agreed, finally.</p></article></body>",
    # other posts' teasers nested inside the post's article (broken markup)
    "nested-teaser-articles": "<body><article class='post'>"
    + "".join(
        f"<article class='post teaser'><p>Another story number {n} with a long teaser paragraph that goes on "
        f"and on about something else entirely, to be clicked.</p></article>"
        for n in range(4)
    )
    + "</article><article class='post full'>"
    + PARAGRAPHS
    + "</article></body>",
    # text as <br>-separated lines in spans (old blog engines)
    "br-lines-in-spans": "<body><div class='widget Blog'><div class='post-body'>"
    + "<br>".join(f"<span>{text}</span>" for text in BODY)
    + f"</div></div><div class='sidebar'>{NAV}</div></body>",
}


@pytest.mark.parametrize("html", LAYOUTS.values(), ids=LAYOUTS.keys())
def test_the_body_is_found(html: str):
    text = extract_main_content(f"<html>{html}</html>", "https://example.org/").text
    for paragraph in BODY:
        assert paragraph in text
    for boilerplate in ("Home", "lived here for forty years", "Another story number", "Mayor opens"):
        assert boilerplate not in text


def test_body_split_around_an_advert_is_read_whole_without_what_follows():
    html = (
        "<html><body><div class='page'><div class='col'>"
        "<h1>Bridge approved</h1><p class='byline'>By Ana Ruiz, 4 March 2025</p>"
        f"<div class='body-part'>{''.join(f'<p>{t}</p>' for t in BODY[:2])}</div>"
        "<div class='ad'>Advertisement</div>"
        f"<div class='body-part'><p>{BODY[2]}</p><p>{BODY[0].replace('Tuesday', 'Monday')}</p></div>"
        "<div class='about'>Ana Ruiz covers local politics.</div>"
        f"{TEASERS}</div><div class='rail'>{NAV}</div></div></body></html>"
    )
    page = extract_main_content(html, "https://example.org/")
    assert page.title == "Bridge approved"
    assert page.text.startswith("By Ana Ruiz, 4 March 2025\n\n")
    assert all(paragraph in page.text for paragraph in BODY)
    for boilerplate in ("Advertisement", "Mayor opens", "Home"):
        assert boilerplate not in page.text


def test_no_text_means_the_body_is_the_root():
    document = parse_html("<html><body><div><a href='/x'>only a link</a></div></body></html>")
    assert document is not None
    root = choose_root(document)
    assert root.element.tag == "body" and root.parts is None
