"""Which elements of a page are never its content: non-content tags, hidden elements, boilerplate
ARIA roles, and class/id names that mark menus, sidebars, banners, share bars, comments...

A class/id hint is only a hint: `boilerplate_kind` tells "hard" (never content) from "hint" (usually
boilerplate, but the writer keeps such an element when it holds most of the page's body text, as in
a `content-with-sidebar` or `elementor-widget` wrapper around the article)."""

from __future__ import annotations

import re

from lxml import etree

SKIP_TAGS = frozenset(
    "script style noscript template svg math iframe object embed canvas button input select textarea "
    "label nav aside footer dialog menu head link meta title base video audio source track map area".split()
)
BOILERPLATE_ROLES = frozenset(
    "navigation banner contentinfo complementary search dialog alertdialog menu menubar toolbar".split()
)
BOILERPLATE_HINTS = frozenset(
    "nav navbar navigation menu sidebar footer breadcrumb breadcrumbs cookie cookies consent banner "
    "advert advertisement ad ads adsbygoogle sponsor sponsored promo social share sharing subscribe "
    "newsletter popup modal related comment comments skip masthead toolbar pagination pager widget "
    "signup login disclaimer noprint hidden".split()
)
STRONG_HINTS = frozenset("comment comments cookie cookies consent".split())
INLINE_TAGS = frozenset(
    "a abbr b bdi bdo big cite code data del dfn em font i ins kbd mark nobr q rp rt ruby s samp small "
    "span strike strong sub sup time tt u var wbr img br".split()
)
HINT_TAGS = frozenset({"form"})  # ASP.NET pages wrap the whole page in one <form>
_HINT_SPLIT = re.compile(r"[\s_\-]+")
_HIDDEN_STYLE = re.compile(r"display\s*:\s*none|visibility\s*:\s*hidden", re.IGNORECASE)


def tag_of(element: etree._Element) -> str:
    return element.tag.lower() if isinstance(element.tag, str) else ""


def boilerplate_kind(element: etree._Element, in_article: bool) -> str:
    """ "" (content), "hard" (never content: a non-content tag, hidden, a boilerplate role or a strong
    class/id hint) or "hint" (a class/id name that usually marks boilerplate; the writer keeps such
    an element when it holds most of the page's paragraph text)."""
    tag = tag_of(element)
    if not tag or tag in SKIP_TAGS:
        return "hard"
    if tag == "header" and not in_article:
        return "hard"
    if element.get("hidden") is not None or element.get("aria-hidden") == "true":
        return "hard"
    style = element.get("style")
    if style and _HIDDEN_STYLE.search(style):
        return "hard"
    if (element.get("role") or "").lower() in BOILERPLATE_ROLES:
        return "hard"
    if tag in HINT_TAGS:
        return "hint"
    names = f"{element.get('class') or ''} {element.get('id') or ''}".lower()
    if not names.strip():
        return ""
    hints = {token for token in _HINT_SPLIT.split(names) if token in BOILERPLATE_HINTS}
    if hints & STRONG_HINTS:
        return "hard"
    return "hint" if hints else ""


def is_boilerplate(element: etree._Element, in_article: bool) -> bool:
    return bool(boilerplate_kind(element, in_article))
