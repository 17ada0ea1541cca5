"""Hostile or broken pages: each ends as a short clear result or a per-row `ExtractionError`, quickly,
never a hang or a crash -- both from `extract_main_content` and through `PageBrowser.browse`."""

from __future__ import annotations

import asyncio
import time

import pytest

from extractors.browse import PageBrowser
from extractors.html_extract import extract_main_content, looks_binary
from schemas.errors import ExtractionError
from schemas.protocols import FetchResult

URL = "https://example.org/page.html"
# generous: the 5 MB table takes about a second alone, several on a loaded 2-core machine
SECONDS = 30.0


class StaticFetcher:
    """A `Fetcher` that answers every URL with one body (what the safe fetcher let through)."""

    def __init__(self, body: bytes, content_type: str = "text/html", charset: str = ""):
        self.body, self.content_type, self.charset = body, content_type, charset

    async def fetch(self, url: str, *, accept: tuple[str, ...] = ()) -> FetchResult:
        return FetchResult(
            url=url,
            final_url=url,
            status=200,
            content_type=self.content_type,
            charset=self.charset,
            body=self.body,
        )


def browse(body: bytes, query: str = "anything", charset: str = ""):
    return asyncio.run(PageBrowser(StaticFetcher(body, charset=charset)).browse(URL, query))


def timed_extract(body: bytes, charset: str = ""):
    started = time.perf_counter()
    page = extract_main_content(body, URL, charset=charset)
    assert time.perf_counter() - started < SECONDS
    return page


@pytest.mark.parametrize(
    "body",
    [
        b"",
        b"   \n\t ",
        b"<html><head><title>t</title></head><body></body></html>",
        b"<html><head><script>var a = 1;</script></head>"
        b"<body><script>document.write('<p>made by script</p>')</script><noscript>Enable JS</noscript>"
        b"<style>p { color: red }</style></body></html>",
    ],
    ids=["empty", "whitespace", "empty-body", "script-only"],
)
def test_pages_without_text(body: bytes):
    page = timed_extract(body)
    assert page.text == ""
    with pytest.raises(ExtractionError, match="no content could be extracted"):
        browse(body)


def test_frameset_names_its_frames():
    body = (
        b"<html><head><title>Old site</title></head><frameset cols='20%,80%'>"
        b"<frame src='menu.html'><frame src='/content/main.html'><frame src='javascript:void(0)'>"
        b"<noframes><p>Your browser does not support frames.</p></noframes></frameset></html>"
    )
    page = timed_extract(body)
    assert page.title == "Old site"
    assert page.text == (
        "This page is a frameset; its content is in its frames:\n"
        "- https://example.org/menu.html\n"
        "- https://example.org/content/main.html"
    )
    assert "frameset" in browse(body, query="frames content").text


def test_frameset_without_frames_is_empty():
    assert timed_extract(b"<html><frameset></frameset></html>").text == ""


@pytest.mark.parametrize(
    ("declared", "meta"),
    [("utf-8", ""), ("", "<meta charset='utf-8'>"), ("iso-8859-1", "<meta charset='utf-8'>")],
    ids=["header-utf8", "meta-utf8", "both-wrong"],
)
def test_misdeclared_charset(declared: str, meta: str):
    text = "Crème brûlée at the Musée d’Orsay costs 12 € – a bargain."
    body = f"<html><head>{meta}</head><body><p>{text}</p></body></html>".encode("cp1252")
    assert timed_extract(body, charset=declared).text == text
    assert browse(body, query="Orsay price", charset=declared).text == text


def test_five_megabytes_of_one_table():
    rows = b"".join(b"<tr><td>row %d</td><td>%d kg</td></tr>" % (n, n * 7) for n in range(110_000))
    body = b"<html><body><table>" + rows + b"</table></body></html>"
    assert 4_500_000 < len(body) <= 5_000_000  # the fetcher's default size cap
    page = timed_extract(body)
    lines = page.text.split("\n")
    assert lines[0] == "row 0 | 0 kg" and lines[-1] == "row 109999 | 769993 kg"
    assert len(lines) == 110_000
    passages = browse(body, query="row 777").text
    assert 0 < len(passages) <= 4000


@pytest.mark.parametrize("tag", ["div", "b", "table"])
def test_fifty_thousand_levels_of_nesting(tag: str):
    opening, closing = f"<{tag}>".encode(), f"</{tag}>".encode()
    body = (
        b"<html><body><h1>Nested</h1><p>The introduction is written before the nesting starts.</p>"
        + opening * 50_000
        + b"deep text"
        + closing * 50_000
        + b"</body></html>"
    )
    page = timed_extract(body)
    # the parser stops at its depth limit: what came before the nesting survives
    assert "The introduction is written before the nesting starts." in page.text
    assert len(page.text) < 1000


def test_only_deep_nesting_is_a_per_row_error():
    body = b"<html><body>" + b"<div>" * 50_000 + b"deep" + b"</div>" * 50_000 + b"</body></html>"
    assert timed_extract(body).text == ""
    with pytest.raises(ExtractionError):
        browse(body)


@pytest.mark.parametrize(
    "body",
    [
        b"\x89PNG\r\n\x1a\n" + bytes(range(256)) * 40,
        b"%PDF-1.7\n" + b"stream\n" * 100,
        bytes(range(256)) * 4000,  # no magic, but a quarter of it is control bytes
    ],
    ids=["png", "pdf", "noise"],
)
def test_binary_served_as_html(body: bytes):
    assert looks_binary(body)
    with pytest.raises(ExtractionError, match="binary content"):
        timed_extract(body)
    with pytest.raises(ExtractionError, match="binary content"):
        browse(body)


def test_utf16_page_is_text_not_binary():
    page = "<html><body><p>Grüße aus Köln, 12 € das Stück.</p></body></html>" * 20
    for encoding in ("utf-16", "utf-16-be"):
        body = page.encode(encoding) if encoding == "utf-16" else b"\xfe\xff" + page.encode(encoding)
        assert not looks_binary(body)
        assert timed_extract(body).text.startswith("Grüße aus Köln, 12 € das Stück.")


def test_control_characters_in_a_short_page_are_not_binary():
    assert not looks_binary(b"\x00\x01<p>ok</p>")
    assert not looks_binary("<p>Grüße aus Köln – 10 €</p>".encode() * 100)
