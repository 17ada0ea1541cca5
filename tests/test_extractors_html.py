"""Main-content extraction against fixture pages (tests/fixtures/pages/*.html -> *.expected.txt),
decoding, and query-relevant passage selection."""

from __future__ import annotations

from pathlib import Path

import pytest

from extractors.html_extract import decode_html, extract_main_content, relevant_passages

PAGES = Path(__file__).parent / "fixtures" / "pages"
BASE_URL = "https://example.org/section/page.html"
# charset the HTTP header declared for a fixture (default: none)
DECLARED_CHARSET = {"cp1252_wrong_header.html": "utf-8"}


def render(path: Path) -> str:
    """The extraction of a fixture in the expected-file format."""
    page = extract_main_content(path.read_bytes(), BASE_URL, charset=DECLARED_CHARSET.get(path.name, ""))
    lines = [f"title: {page.title}", "", page.text, "", "images:"]
    lines += [f"- {image.url} | {image.alt} | {image.caption}" for image in page.images]
    return "\n".join(line.rstrip() for line in "\n".join(lines).split("\n")) + "\n"


FIXTURES = sorted(PAGES.glob("*.html"))


def test_fixtures_exist():
    assert len(FIXTURES) >= 6
    assert all(path.with_suffix(".expected.txt").is_file() for path in FIXTURES)


@pytest.mark.parametrize("path", FIXTURES, ids=[p.stem for p in FIXTURES])
def test_fixture_extraction(path: Path):
    expected = path.with_suffix(".expected.txt").read_text(encoding="utf-8")
    assert render(path) == expected


def test_boilerplate_is_dropped():
    page = extract_main_content((PAGES / "news_article.html").read_bytes(), BASE_URL)
    for boilerplate in (
        "cookies",
        "Most read",
        "All rights reserved",
        "Share",
        "Read more",
        "Tags:",
        "Related",
    ):
        assert boilerplate not in page.text
    assert "logo.png" not in {image.url.rsplit("/", 1)[-1] for image in page.images}


def test_str_input_and_no_body():
    page = extract_main_content(
        "<p>Only a paragraph &amp; an <a href='/x'>inline link</a> in it.</p>", BASE_URL
    )
    assert page.text == "Only a paragraph & an inline link in it."
    assert extract_main_content("   ", BASE_URL).text == ""
    assert extract_main_content(b"\x00\x01<p>ok</p>", BASE_URL).text == "ok"


@pytest.mark.parametrize(
    ("data", "declared", "expected"),
    [
        ("café".encode(), "", "café"),
        ("café".encode("cp1252"), "", "café"),  # not UTF-8: cp1252 fallback
        ("café".encode("cp1252"), "utf-8", "café"),  # wrong header skipped
        ("café".encode(), "iso-8859-1", "café"),  # UTF-8 mislabelled as Latin-1
        ("<meta charset='koi8-r'>мир".encode("koi8_r"), "", "<meta charset='koi8-r'>мир"),
        ("\ufeffhé".encode(), "cp1252", "hé"),  # BOM wins
        ("hé".encode(), "no-such-charset", "hé"),
    ],
)
def test_decode_html(data: bytes, declared: str, expected: str):
    assert decode_html(data, declared) == expected


TEXT = """# Saturn V

The Saturn V is a retired American super heavy-lift launch vehicle.

## Design

The rocket had three stages with F-1 and J-2 engines.

## Launches

Thirteen vehicles were launched from 1967 to 1973.

## Legacy

Museums display three surviving vehicles."""


def test_relevant_passages_keeps_order_and_headings():
    assert relevant_passages(TEXT, "how many engines did each stage have", max_chars=80) == (
        "## Design\n\nThe rocket had three stages with F-1 and J-2 engines."
    )
    assert relevant_passages(TEXT, "engines launched", max_chars=140) == (
        "## Design\n\nThe rocket had three stages with F-1 and J-2 engines.\n\n"
        "## Launches\n\nThirteen vehicles were launched from 1967 to 1973."
    )


def test_relevant_passages_whole_page_when_it_fits():
    assert relevant_passages(TEXT, "museums", max_chars=4000) == TEXT


def test_relevant_passages_nothing_relevant():
    assert relevant_passages(TEXT, "chocolate cake recipe", max_chars=80) == ""
    assert relevant_passages("", "anything") == ""


def test_relevant_passages_empty_query_gives_the_lead():
    assert relevant_passages(TEXT, "the of", max_chars=90) == (
        "# Saturn V\n\nThe Saturn V is a retired American super heavy-lift launch vehicle."
    )
