"""Where a page's main content lives: the element that holds most of its body text.

Readability's idea over lxml: every paragraph-like block gives its length to the element that holds
it (and half to that element's parent); the best-scored holder is the article body. The content root
is then its nearest `article`, `main` or `role=main` ancestor (where the article's own header, byline
and figures live), or the body when there is none. Pure functions over a parsed document.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from lxml import etree

from extractors.boilerplate import INLINE_TAGS, boilerplate_kind, tag_of

PARAGRAPH_TAGS = ("p", "pre", "blockquote")
DIRECT_TEXT_TAGS = frozenset({"div", "td", "section", "article", "main", "font", "center"})
MIN_PARAGRAPH_CHARS = 25
MIN_DIRECT_TEXT_CHARS = 50
MIN_LINE_CHARS = 10
HINTED_WEIGHT = 0.3
SIBLING_SHARE = 0.2
MIN_SIBLING_SCORE = 10
MIN_SIBLING_PARAGRAPH_CHARS = 80
SUBHEADING_TAGS = frozenset({"h2", "h3", "h4", "h5", "h6"})
WRAPPER_TAGS = frozenset({"div", "section"})
WRAPPED_DATA_TAGS = ("table", "dl")
DATA_BLOCK_TAGS = frozenset({"table", "ul", "ol", "dl", "figure", "pre"})  # kept beside the body
LEAD_TAGS = frozenset({"h1", "h2", "h3", "figure", "time"})
MAX_LEAD_CHARS = 150
PARTS_SHARE = 0.9  # read only the body's parts when they hold this share of the article's text
_YEAR = re.compile(r"\b(?:1[89]|20)\d\d\b")
COMMENT_NAMES = re.compile(r"(?:^|[\s_\-])comments?(?:$|[\s_\-])", re.IGNORECASE)


def _length(text: str | None) -> int:
    """Characters of `text` with its whitespace runs counted as one space."""
    if not text:
        return 0
    words = text.split()
    return sum(map(len, words)) + len(words) - 1 if words else 0


def _direct_text_chars(element: etree._Element) -> int:
    """Text directly inside an element or in its inline children (a post of `<br>`-separated lines
    or of `<span>`s), not in its block children."""
    chars = _length(element.text)
    for child in element:
        tag = tag_of(child)
        if tag in INLINE_TAGS and tag != "a":
            chars += _length(child.text_content())
        chars += _length(child.tail)
    return chars


def paragraph_chars(element: etree._Element) -> int:
    """Characters of paragraph-like text under an element (what a reader would call body text)."""
    return sum(_length(p.text_content()) for p in element.iter(*PARAGRAPH_TAGS))


def _own_chars(element: etree._Element) -> int:
    """Text length of a paragraph outside its links."""
    chars = _length(element.text_content())
    for link in element.iter("a"):
        chars -= _length(link.text_content())
    return chars


def holder_scores(body: etree._Element) -> dict[etree._Element, float]:
    """Each element that holds paragraph text, scored with it (and half its children's). Text inside
    hard boilerplate (hidden, navigation, comments, consent banners...) does not count; text under a
    boilerplate class/id hint, or in an article inside an article (teasers of other posts), counts
    at `HINTED_WEIGHT`."""
    scores: dict[etree._Element, float] = {}
    stack: list[tuple[etree._Element, float, bool]] = [(child, 1.0, False) for child in reversed(body)]
    while stack:
        element, weight, in_article = stack.pop()
        tag = tag_of(element)
        kind = boilerplate_kind(element, in_article=True)
        if kind == "hard" or (tag == "article" and not _is_content_section(element)):
            continue
        if kind == "hint" or (tag == "article" and in_article):
            weight = HINTED_WEIGHT
        in_article = in_article or tag == "article"
        if tag in PARAGRAPH_TAGS:
            chars = _own_chars(element)
            holder = element.getparent()
            if chars < MIN_PARAGRAPH_CHARS or holder is None:
                continue
        else:
            stack.extend((child, weight, in_article) for child in reversed(element))
            if tag not in DIRECT_TEXT_TAGS:
                continue
            chars = _direct_text_chars(element)
            holder = element
            if chars < MIN_DIRECT_TEXT_CHARS:
                # a short line of a post written as one <div> per line counts for the post
                holder = element.getparent()
                if chars < MIN_LINE_CHARS or holder is None:
                    continue
        scores[holder] = scores.get(holder, 0.0) + chars * weight
        grandparent = holder.getparent()
        if grandparent is not None:
            scores[grandparent] = scores.get(grandparent, 0.0) + chars * weight / 2
    return scores


def _is_content_section(element: etree._Element) -> bool:
    tag = tag_of(element)
    if tag == "main" or (element.get("role") or "").lower() == "main":
        return True
    if tag != "article":
        return False
    names = f"{element.get('class') or ''} {element.get('id') or ''}"
    return not COMMENT_NAMES.search(names)


@dataclass(frozen=True)
class ContentRoot:
    """Where to read: `element`, or only `parts` of it (the text holder and its sibling blocks of
    body text, when the page has no article/main around its text); `in_article`: inside an article
    or main (whose <header> is the article's own)."""

    element: etree._Element
    in_article: bool
    parts: list[etree._Element] | None = None
    holder: etree._Element | None = None


def body_parts(
    holder: etree._Element, top: etree._Element, scores: dict[etree._Element, float]
) -> list[etree._Element]:
    """The holder, and at each level from it up to `top`: the siblings that hold body text too (a
    body split around an advert) and, before it, the article's lead (headline, byline, figure).
    What follows the body without being body text (tags, author boxes, teasers) is left out."""
    threshold = max(MIN_SIBLING_SCORE, scores.get(holder, 0.0) * SIBLING_SHARE)
    parts = [holder]
    child = holder
    while child is not top:
        parent = child.getparent()
        if parent is None:
            break
        before: list[etree._Element] = []
        after: list[etree._Element] = []
        siblings = [sibling for sibling in parent if sibling is not child]
        position = next(n for n, sibling in enumerate(parent) if sibling is child)
        kept = [_is_body_sibling(sibling, threshold, scores) for sibling in siblings]
        for number, sibling in enumerate(siblings):
            seen = number >= position
            keep = kept[number] or (not seen and _is_lead(sibling))
            # a heading that introduces a kept table or list ("Key figures")
            if not keep and tag_of(sibling) in SUBHEADING_TAGS and number + 1 < len(siblings):
                keep = kept[number + 1] and number + 1 != position
            if keep:
                (after if seen else before).append(sibling)
        parts = [*before, *parts, *after]
        child = parent
    return parts


def _is_body_sibling(element: etree._Element, threshold: float, scores: dict[etree._Element, float]) -> bool:
    """A sibling of the body holder that is body too: scored text, a long paragraph, or a table,
    list or figure (alone or in a wrapper) that is not a list of links."""
    tag = tag_of(element)
    if scores.get(element, 0.0) >= threshold:
        return True
    if tag == "p":
        return _length(element.text_content()) >= MIN_SIBLING_PARAGRAPH_CHARS
    if tag in DATA_BLOCK_TAGS:
        return not _link_heavy(element)
    if tag not in WRAPPER_TAGS:
        return False
    # a wrapper that is mostly a table (`<div class="table-wrap">`)
    text = _length(element.text_content())
    table_text = sum(_length(table.text_content()) for table in element.iter(*WRAPPED_DATA_TAGS))
    return table_text * 2 >= text > 0 and not _link_heavy(element)


def _link_heavy(element: etree._Element) -> bool:
    """Half or more of the text is link text (teaser and tag lists)."""
    text = _length(element.text_content())
    link_chars = sum(_length(link.text_content()) for link in element.iter("a"))
    return not text or link_chars * 2 >= text


def _is_lead(element: etree._Element) -> bool:
    """What stands before an article's body: its headline, lead figure, and a short line with a
    date in it (the byline and date line); not kickers, share bars or "Image 1 of 5"."""
    tag = tag_of(element)
    if tag in LEAD_TAGS:
        return True
    content = element.text_content()
    text = _length(content)
    if not text or text > MAX_LEAD_CHARS:
        return False
    if element.find(".//time") is None and not _YEAR.search(content):
        return False
    return not _link_heavy(element)


def choose_root(document: etree._Element) -> ContentRoot:
    """The element holding the main content: the nearest article/main around the best text holder,
    else that holder with its sibling blocks of body text, else the body."""
    body = document.find("body")
    if body is None:
        body = document
    scores = holder_scores(body)
    if not scores:
        return ContentRoot(body, False)
    holder = max(scores, key=lambda element: scores[element])
    for element in (holder, *holder.iterancestors()):
        if element is body:
            break
        if _is_content_section(element):
            parts = body_parts(holder, element, scores)
            whole = paragraph_chars(element)
            if sum(paragraph_chars(part) for part in parts) >= whole * PARTS_SHARE:
                return ContentRoot(element, True, parts, holder)
            return ContentRoot(element, True, holder=holder)
    parent = holder.getparent()
    if holder is body or parent is None:
        return ContentRoot(body, False, holder=holder)
    return ContentRoot(parent, False, body_parts(holder, parent, scores), holder)
