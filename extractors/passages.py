"""Passages of an extracted page that matter for a query, within the browse budget: BM25 over its
blocks (each scored with its section heading), kept in page order with their headings."""

from __future__ import annotations

import re

from extractors.local_search import bm25_passage_scores, shorten, tokenize

_HEADING = re.compile(r"^(#{1,6}) ")


def heading_level(block: str) -> int:
    match = _HEADING.match(block)
    return len(match.group(1)) if match and "\n" not in block else 0


def relevant_passages(text: str, query: str, max_chars: int = 4000) -> str:
    """The blocks of `text` most relevant to `query` (BM25 over blocks, each scored with its section
    heading), in their original order and with their section headings, within `max_chars`. A page
    that fits whole is returned whole when anything in it is relevant. "" when nothing is relevant.
    A query without search terms gets the page's leading blocks."""
    blocks = [block for block in text.split("\n\n") if block.strip()]
    if not blocks:
        return ""
    if not tokenize(query):
        return _leading(blocks, max_chars)
    section_of: list[int] = []
    current = -1
    for number, block in enumerate(blocks):
        if heading_level(block):
            current = number
        section_of.append(current)
    candidates = [n for n, block in enumerate(blocks) if not heading_level(block)]
    scored_text = [
        (blocks[section_of[n]] + "\n" if section_of[n] >= 0 else "") + blocks[n] for n in candidates
    ]
    scores = bm25_passage_scores(query, scored_text)
    relevant = [(score, n) for score, n in zip(scores, candidates, strict=True) if score > 0]
    if not relevant:
        return ""
    if len(text) <= max_chars:
        return text
    chosen: set[int] = set()
    used = 0
    for _score, number in sorted(relevant, key=lambda pair: (-pair[0], pair[1])):
        heading = section_of[number]
        cost = (
            len(blocks[number])
            + 2
            + (len(blocks[heading]) + 2 if heading >= 0 and heading not in chosen else 0)
        )
        if used + cost > max_chars:
            continue
        chosen.add(number)
        if heading >= 0:
            chosen.add(heading)
        used += cost
    if not chosen:
        best = min(relevant, key=lambda pair: (-pair[0], pair[1]))[1]
        return shorten(blocks[best], max_chars)
    return "\n\n".join(blocks[n] for n in sorted(chosen))


def _leading(blocks: list[str], max_chars: int) -> str:
    kept: list[str] = []
    used = 0
    for block in blocks:
        if used + len(block) + 2 > max_chars:
            break
        kept.append(block)
        used += len(block) + 2
    return "\n\n".join(kept) if kept else shorten(blocks[0], max_chars)
