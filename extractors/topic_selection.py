"""Choosing which topics to mine: balanced across categories, deterministic, prefix-stable.

Topics are interleaved round-robin over categories (sorted by name), each category in id order (ids
are content hashes, so this is a fixed pseudo-random order). Asking for more topics later extends the
earlier selection instead of replacing it, which is what incremental runs need.
"""

from __future__ import annotations

from collections.abc import Iterable

from schemas.rows import Topic


def interleave_by_category(topics: Iterable[Topic]) -> list[Topic]:
    by_category: dict[str, list[Topic]] = {}
    for topic in topics:
        by_category.setdefault(topic.category, []).append(topic)
    queues = [sorted(group, key=lambda t: t.id) for _, group in sorted(by_category.items())]
    ordered: list[Topic] = []
    depth = 0
    while any(depth < len(queue) for queue in queues):
        ordered.extend(queue[depth] for queue in queues if depth < len(queue))
        depth += 1
    return ordered


def select_topics(topics: Iterable[Topic], wanted: int) -> list[Topic]:
    """The first `wanted` topics of the category-interleaved order."""
    return interleave_by_category(topics)[:wanted]
