"""Main-content extraction: an HTML page reduced to clean text, its images, and the passages that
matter for a query. Pure functions (bytes or text in, values out) over lxml; nothing here fetches.

Where to read: `extractors/content_root.py` finds the element that holds the body text (and, inside
an article, only the body's parts with the headline, byline and lead figure before them).
What is dropped (`extractors/boilerplate.py`): non-content tags (script, style, nav, aside, footer,
header outside the article...), hidden elements, boilerplate ARIA roles, class/id names of menus,
sidebars, banners, share bars, comments (a hint only, when the element holds the body text), and
link-dense blocks (navigation lists, teaser lists, "read more" links).
What is kept, in document order: headings as `#`-prefixed lines, paragraphs, list items as `- item`
(nested lists indented), tables as `a | b | c` rows, figure captions, and images (absolute URLs, alt
text, captions). Blocks are separated by a blank line. The leading <h1> is the page's `title`, not
part of `text`; `full_text` puts it back in front, as browse shows it.
Binary bodies raise `ExtractionError`; a frameset names its frames.
"""

from __future__ import annotations

import codecs
import re
from dataclasses import dataclass, field
from urllib.parse import urljoin, urlsplit

import lxml.html
from lxml import etree

from extractors.boilerplate import INLINE_TAGS, boilerplate_kind
from extractors.content_root import choose_root, paragraph_chars
from extractors.passages import heading_level
from extractors.passages import relevant_passages as relevant_passages  # re-exported
from schemas.errors import ExtractionError
from schemas.protocols import PageImage

HEADINGS = {"h1": 1, "h2": 2, "h3": 3, "h4": 4, "h5": 5, "h6": 6}
LISTS = frozenset({"ul", "ol"})
LINK_DENSE_MAX_OWN_TEXT = 300
MIN_REPEATED_LINE_CHARS = 30
HEADLINE_WITHIN_BLOCKS = 5  # a leading <h1> among the first blocks is the title, not body text
REPEAT_WINDOW_LINES = 4
_BARE_URL = re.compile(r"\s*https?://\S+\s*")
LINK_DENSE_TAGS = frozenset({"div", "section", "ul", "ol", "dl", "table", "p", "center"})
_META_CHARSET = re.compile(rb"""<meta[^>]+charset\s*=\s*["']?\s*([A-Za-z0-9._:\-]+)""", re.IGNORECASE)
_XML_DECLARATION = re.compile(r"^\s*<\?xml[^>]*>")
BINARY_MAGIC = (
    b"\x89PNG",
    b"\xff\xd8\xff",
    b"GIF8",
    b"%PDF",
    b"PK\x03\x04",
    b"\x1f\x8b",
    b"RIFF",
    b"\x7fELF",
    b"\x00\x00",
)  # also what the fetcher refuses as a binary body (extractors/fetcher.py)
MIN_BINARY_SNIFF_BYTES = 256
_CONTROL_BYTES = [bytes([code]) for code in (*range(0, 9), 11, 12, *range(14, 32), 127)]
_CONTROL = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f]")
_SPACE = re.compile(r"[ \t\r\f\v\u00a0\u200b]+")
_CITATION = re.compile(r"\[(?:\d{1,3}|[a-z]|note \d{1,3}|citation needed)\]")
_WINDOWS_1252_LABELS = {"ascii": "cp1252", "latin_1": "cp1252", "iso8859-1": "cp1252"}
_SINGLE_BYTE_WESTERN = frozenset({"latin_1", "iso8859-1", "cp1252", "ascii", "iso8859-15"})


@dataclass(frozen=True)
class ExtractedPage:
    """`title`: the headline (the article's leading <h1>, else the page's <title>); `text`: the body,
    without that headline (as in the article-body datasets extraction is scored on)."""

    title: str
    text: str
    images: list[PageImage] = field(default_factory=list)

    @property
    def full_text(self) -> str:
        """What a reader sees: the headline as a `#` heading, then the body ("" without a body)."""
        if not self.text or not self.title:
            return self.text
        return f"# {self.title}\n\n{self.text}"


# --- decoding -------------------------------------------------------------------------------------


def _codec(name: str) -> str | None:
    try:
        return codecs.lookup(name.strip().strip("\"'")).name
    except (LookupError, ValueError):
        return None


def decode_html(data: bytes, declared: str = "") -> str:
    """Bytes to text: BOM, then the declared charset, then <meta charset>, then UTF-8, then cp1252.
    A candidate that fails to decode is skipped (a wrong header does not garble the page); a declared
    Western single-byte charset loses to UTF-8 when the bytes are valid UTF-8 with non-ASCII in them."""
    for bom, codec in (
        (codecs.BOM_UTF8, "utf-8-sig"),
        (codecs.BOM_UTF16_LE, "utf-16"),
        (codecs.BOM_UTF16_BE, "utf-16"),
    ):
        if data.startswith(bom):
            return data.decode(codec, errors="replace")
    candidates = [declared] if declared else []
    meta = _META_CHARSET.search(data[:4096])
    if meta:
        candidates.append(meta.group(1).decode("ascii", "replace"))
    codecs_to_try = [c for c in (_codec(name) for name in candidates) if c]
    # as browsers do (WHATWG Encoding): the ASCII and Latin-1 labels mean windows-1252
    codecs_to_try = [_WINDOWS_1252_LABELS.get(c, c) for c in codecs_to_try]
    if codecs_to_try and codecs_to_try[0] in _SINGLE_BYTE_WESTERN and not data.isascii():
        codecs_to_try.insert(0, "utf-8")
    for codec in [*codecs_to_try, "utf-8"]:
        try:
            return data.decode(codec)
        except (UnicodeDecodeError, LookupError):
            continue
    return data.decode("cp1252", errors="replace")


def parse_html(html: bytes | str, charset: str = "") -> etree._Element | None:
    text = decode_html(html, charset) if isinstance(html, bytes) else html
    text = _CONTROL.sub("", _XML_DECLARATION.sub("", text, count=1))
    if not text.strip():
        return None
    parser = lxml.html.HTMLParser(remove_comments=True, remove_pis=True)
    try:
        return lxml.html.document_fromstring(text, parser=parser)
    except (etree.ParserError, ValueError):
        return None


# --- helpers --------------------------------------------------------------------------------------


def _tag(element: etree._Element) -> str:
    return element.tag.lower() if isinstance(element.tag, str) else ""


def _clean(text: str) -> str:
    lines = (_SPACE.sub(" ", line).strip() for line in text.split("\n"))
    return "\n".join(line for line in lines if line)


def _inline(text: str) -> str:
    return _SPACE.sub(" ", text.replace("\n", " ")).strip()


def _is_citation_mark(element: etree._Element) -> bool:
    """A footnote marker such as <sup>[1]</sup> or <sup>[a]</sup>."""
    return _tag(element) == "sup" and bool(_CITATION.fullmatch(_inline(element.text_content())))


def _link_dense(element: etree._Element) -> bool:
    """More than half of the text is link text, with several links or little text, and little text
    outside the links (menus, tag lists, "read more" paragraphs; not a container that also holds an
    article's paragraphs)."""
    links = element.findall(".//a")
    if not links:
        return False
    text = _inline(element.text_content())
    if not text:
        return False
    link_chars = sum(len(_inline(link.text_content())) for link in links)
    return (
        link_chars / len(text) > 0.5
        and (len(links) >= 3 or len(text) < 100)
        and (_tag(element) in LISTS or len(text) - link_chars < LINK_DENSE_MAX_OWN_TEXT)
    )


# --- serialisation --------------------------------------------------------------------------------


class _Writer:
    def __init__(self, base_url: str, main_chars: int = 0, holder: etree._Element | None = None):
        self.base_url = base_url
        self.main_chars = main_chars  # paragraph text of the whole content root
        self.holder = holder  # the element that holds most of the body text
        self.blocks: list[str] = []
        self.buffer: list[str] = []
        self.images: list[PageImage] = []
        self._image_urls: set[str] = set()

    def flush(self) -> None:
        text = _clean("".join(self.buffer))
        self.buffer = []
        if text:
            self.blocks.append(text)

    def add_image(self, element: etree._Element, caption: str) -> None:
        source = element.get("src") or element.get("data-src") or ""
        if not source and element.get("srcset"):
            source = element.get("srcset", "").split(",")[0].strip().split(" ")[0]
        source = source.strip()
        if not source or source.startswith("data:"):
            return
        if element.get("width") == "1" and element.get("height") == "1":
            return  # tracking pixel
        url = urljoin(self.base_url, source)
        if urlsplit(url).scheme not in ("http", "https") or url in self._image_urls:
            return
        self._image_urls.add(url)
        self.images.append(PageImage(url=url, alt=_inline(element.get("alt") or ""), caption=caption))

    def dropped(self, element: etree._Element, in_article: bool) -> bool:
        """Boilerplate, except a hinted element that holds most of the root's paragraph text (an
        article body in a `content-with-sidebar` or `elementor-widget` wrapper) or captioned figures
        (a `gallery-widget`)."""
        kind = boilerplate_kind(element, in_article)
        if kind != "hint":
            return bool(kind)
        if self.holder is not None and (
            element is self.holder or any(a is element for a in self.holder.iterancestors())
        ):
            return False
        if element.find(".//figcaption") is not None and not _link_dense(element):
            return False
        return not (self.main_chars and paragraph_chars(element) * 2 >= self.main_chars)

    def plain_text(
        self, element: etree._Element, in_article: bool, caption: str, skip: frozenset[str] = frozenset()
    ) -> str:
        """Inline text of an element (its images recorded), leaving out `skip` tags."""
        parts = [element.text or ""]
        for child in element:
            tag = _tag(child)
            if tag == "img":
                self.add_image(child, caption)
            elif tag == "br":
                parts.append(" ")
            elif (
                tag
                and tag not in skip
                and not self.dropped(child, in_article)
                and not _is_citation_mark(child)
            ):
                parts.append(" " if tag not in INLINE_TAGS else "")
                parts.append(self.plain_text(child, in_article, caption, skip))
                parts.append(" " if tag not in INLINE_TAGS else "")
            parts.append(child.tail or "")
        return "".join(parts)

    def list_lines(self, element: etree._Element, in_article: bool, caption: str, depth: int) -> list[str]:
        lines = []
        for item in element:
            if _tag(item) in LISTS:
                lines.extend(self.list_lines(item, in_article, caption, depth + 1))
                continue
            if _tag(item) != "li" or self.dropped(item, in_article):
                continue
            text = _inline(self.plain_text(item, in_article, caption, skip=LISTS))
            if text:
                lines.append(f"{'  ' * depth}- {text}")
            for nested in item:
                if _tag(nested) in LISTS and not self.dropped(nested, in_article) and not _link_dense(nested):
                    lines.extend(self.list_lines(nested, in_article, caption, depth + 1))
        return lines

    def table_rows(self, table: etree._Element, in_article: bool, caption: str) -> list[str]:
        rows = []
        for row in table.iter("tr"):
            if next(row.iterancestors("table"), None) is not table:
                continue  # rows of nested tables are flattened into their cell
            cells = [
                _inline(self.plain_text(cell, in_article, caption))
                for cell in row
                if _tag(cell) in ("td", "th")
            ]
            if any(cells):
                rows.append(" | ".join(cells))
        return rows

    def walk(self, element: etree._Element, in_article: bool, caption: str = "") -> None:
        # source line breaks are spaces; only <br> breaks a line
        self.buffer.append((element.text or "").replace("\n", " "))
        for child in element:
            self.visit(child, in_article, caption)
            self.buffer.append((child.tail or "").replace("\n", " "))

    def visit(self, element: etree._Element, in_article: bool, caption: str) -> None:
        tag = _tag(element)
        if self.dropped(element, in_article):
            return
        if tag == "img":
            self.add_image(element, caption)
            return
        if tag == "br":
            self.buffer.append("\n")
            return
        if _is_citation_mark(element):
            return
        if tag in INLINE_TAGS:
            self.walk(element, in_article, caption)
            return
        if tag in LINK_DENSE_TAGS and _link_dense(element):
            return
        self.flush()
        inside = in_article or tag in ("article", "main")
        if tag in HEADINGS:
            text = _inline(self.plain_text(element, inside, caption))
            if text:
                self.blocks.append(f"{'#' * HEADINGS[tag]} {text}")
        elif tag in LISTS:
            lines = self.list_lines(element, inside, caption, 0)
            if lines:
                self.blocks.append("\n".join(lines))
        elif tag == "table":
            rows = self.table_rows(element, inside, caption)
            if rows:
                self.blocks.append("\n".join(rows))
        elif tag == "pre":
            text = "\n".join(line.rstrip() for line in element.text_content().strip("\n").split("\n"))
            if text.strip():
                self.blocks.append(text)
        elif tag == "figure":
            figcaption = next((c for c in element.iter("figcaption")), None)
            figure_caption = _inline(figcaption.text_content()) if figcaption is not None else caption
            for child in element:
                if _tag(child) != "figcaption":
                    self.visit(child, inside, figure_caption)
            self.flush()
            if figcaption is not None and figure_caption and not self.dropped(figcaption, inside):
                self.blocks.append(figure_caption)
        else:
            self.walk(element, inside, caption)
        self.flush()


def _drop_orphan_headings(blocks: list[str]) -> list[str]:
    """Headings followed by nothing but deeper-or-equal headings (their section's content was dropped)."""
    kept: list[str] = []
    for number, block in enumerate(blocks):
        level = heading_level(block)
        if level:
            following = next((b for b in blocks[number + 1 :]), None)
            next_level = heading_level(following) if following is not None else 1
            if following is None or (next_level and next_level <= level):
                continue
        kept.append(block)
    return kept


def _drop_bare_urls(blocks: list[str]) -> list[str]:
    """Blocks that are nothing but a URL (the text of share widgets and "copy link" boxes)."""
    return [block for block in blocks if not _BARE_URL.fullmatch(block)]


def _drop_near_repeats(blocks: list[str]) -> list[str]:
    """A line repeated within the next few lines (a slideshow's caption shown two or three times);
    lines a page repeats further apart (a recipe's "1 cup rice" each day) stay."""
    recent: list[str] = []
    kept: list[str] = []
    for block in blocks:
        lines = []
        for line in block.split("\n"):
            key = line.strip(" -|#").casefold()
            if len(key) >= MIN_REPEATED_LINE_CHARS and key in recent:
                continue
            recent = [*recent[-(REPEAT_WINDOW_LINES - 1) :], key]
            lines.append(line)
        if lines:
            kept.append("\n".join(lines))
    return kept


def looks_binary(data: bytes) -> bool:
    """An image, archive or PDF (by its magic bytes), or bytes of which more than a tenth of the
    first 4 KiB are control characters: not a page, whatever its content type says."""
    if data.startswith(BINARY_MAGIC):
        return True
    if data.startswith((codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE)):
        return False  # UTF-16 text: every other byte of ASCII is a NUL
    head = data[:4096]
    if len(head) < MIN_BINARY_SNIFF_BYTES:
        return False
    return sum(head.count(byte) for byte in _CONTROL_BYTES) * 10 > len(head)


def _frameset_page(document: etree._Element, base_url: str) -> ExtractedPage | None:
    """A frameset page has no text of its own: say so, and where its frames are."""
    if document.find(".//frameset") is None:
        return None
    title_element = document.find(".//title")
    title = _inline(title_element.text_content()) if title_element is not None else ""
    frames = [urljoin(base_url, frame.get("src", "").strip()) for frame in document.iter("frame")]
    frames = [url for url in dict.fromkeys(frames) if urlsplit(url).scheme in ("http", "https")]
    lines = ["This page is a frameset; its content is in its frames:", *(f"- {url}" for url in frames)]
    return ExtractedPage(title=title, text="\n".join(lines) if frames else "", images=[])


def extract_main_content(html: bytes | str, base_url: str, charset: str = "") -> ExtractedPage:
    """The main content of a page. `charset`: the one the HTTP header declared (bytes input only).
    Raises `ExtractionError` for a binary body (an image or archive served as HTML)."""
    if isinstance(html, bytes) and looks_binary(html):
        raise ExtractionError(f"binary content, not a page ({len(html)} bytes)")
    document = parse_html(html, charset)
    if document is None:
        return ExtractedPage(title="", text="", images=[])
    base = document.find(".//base[@href]")
    if base is not None:
        base_url = urljoin(base_url, base.get("href", "").strip())
    frameset = _frameset_page(document, base_url)
    if frameset is not None:
        return frameset
    content = choose_root(document)
    root, in_article = content.element, content.in_article
    writer = _Writer(base_url, paragraph_chars(root), content.holder)
    if content.parts is None:
        writer.walk(root, in_article)
    else:
        for part in content.parts:
            writer.visit(part, in_article, "")
    writer.flush()
    blocks = _drop_orphan_headings(_drop_near_repeats(_drop_bare_urls(writer.blocks)))
    headline = next(
        (n for n, block in enumerate(blocks[:HEADLINE_WITHIN_BLOCKS]) if heading_level(block) == 1), None
    )
    if headline is not None:
        title = blocks.pop(headline)[2:]
    else:
        heading = root.find(".//h1")
        title = _inline(heading.text_content()) if heading is not None else ""
    if not title:
        title_element = document.find(".//title")
        title = _inline(title_element.text_content()) if title_element is not None else ""
    return ExtractedPage(title=title, text="\n\n".join(blocks), images=writer.images)
