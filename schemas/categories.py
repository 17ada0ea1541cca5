"""The Gen-Searcher / KnowGen categories, in their two evaluation groups."""

from __future__ import annotations

SCIENCE_AND_KNOWLEDGE: tuple[str, ...] = (
    "astronomy",
    "biology",
    "chemistry",
    "physics",
    "engineering",
    "medicine",
    "industry",
    "architecture",
    "history",
    "geography",
    "religion",
    "politics",
    "culture",
    "art",
    "sports",
)

POP_CULTURE_AND_NEWS: tuple[str, ...] = (
    "anime",
    "game",
    "film",
    "celebrities",
    "posters",
    "news",
    "multi_celebrities",
    "multi_anime",
    "multi_game",
)

CATEGORIES: tuple[str, ...] = SCIENCE_AND_KNOWLEDGE + POP_CULTURE_AND_NEWS


def category_group(category: str) -> str:
    """'science_and_knowledge' or 'pop_culture_and_news' (KnowGen averages each group first)."""
    if category in SCIENCE_AND_KNOWLEDGE:
        return "science_and_knowledge"
    if category in POP_CULTURE_AND_NEWS:
        return "pop_culture_and_news"
    raise ValueError(f"unknown category {category!r}; expected one of {', '.join(CATEGORIES)}")
