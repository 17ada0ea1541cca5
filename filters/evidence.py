"""Evidence as rows: each checkable fact of a gen_prompt, and the tool response that supports it.

`tool_passages(trajectory)` splits what the tools returned in that trajectory into passages (a search
hit's title and snippet, a browsed page or its summary, an image's title and source page), each with
the index of its tool call in `trajectory.tool_calls` and its URL. `evidence_for(trajectory, prompt)`
extracts the facts of the gen_prompt (`filters.facts`) that the task prompt does not already state,
looks each up in the passages, and returns one `Evidence` row per fact. `grounding(rows)` is the share
of facts supported (1.0 when the gen_prompt claims nothing checkable: nothing is unsupported).

Deterministic and pure: same trajectory, same rows. The extractor name is part of each row (and its
id), so a different extractor (an LLM claim extractor, a new version) writes its own rows.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from functools import cached_property
from urllib.parse import unquote, urlsplit

from filters.facts import Fact, FactSheet, extract_facts, name_tokens, supports
from schemas.ids import content_id
from schemas.rows import Evidence, Trajectory

EXTRACTOR = "rules-v1"
_RESPONSE = re.compile(r"<tool_response>\n?(.*?)\n?</tool_response>", re.DOTALL)
_HIT = re.compile(r"^\[(?P<title>[^\]]*)\]\((?P<url>(?:[^()\s]|\([^()\s]*\))+)\) ?(?P<snippet>.*)$")
_BROWSE = re.compile(r'^### Content of (?P<url>\S+) relevant to ".*"$')
_IMAGE = re.compile(r"^(IMG_\d{3,}): (?P<title>.*?)( \(already shown earlier\))?$")


def url_words(url: str) -> str:
    """The words of a URL's path (its slug), e.g. `/wiki/Japanese_mythology` -> `wiki Japanese mythology`."""
    path = unquote(urlsplit(url).path)
    path = re.sub(r"\.(?:html?|php|aspx?|png|jpe?g|gif|webp|svg)$", "", path, flags=re.IGNORECASE)
    return " ".join(re.split(r"[/_\-.+]+", path)).strip()


@dataclass(frozen=True)
class Passage:
    """A piece of one tool response: `about` is what names its subject (a hit's title and URL, a
    browsed page's URL and first heading, an image's title and source page)."""

    tool_call_index: int
    url: str
    text: str
    about: str

    @cached_property
    def sheet(self) -> FactSheet:
        return extract_facts(self.text)

    def mentions(self, subjects: Sequence[str]) -> bool:
        """Whether this passage is about, or at least names, one of `subjects`."""
        return names_any(f"{self.about}\n{self.text}", subjects)


def tool_responses(trajectory: Trajectory) -> list[str]:
    """The body of each tool response, in order; the k-th belongs to `trajectory.tool_calls[k]`."""
    bodies: list[str] = []
    for message in trajectory.messages[2:]:
        if message.role == "user":
            bodies.extend(match.group(1) for match in _RESPONSE.finditer(message.content))
    return bodies


def _passages(index: int, body: str) -> list[Passage]:
    lines = body.strip().splitlines()
    header = lines[0] if lines else ""
    if header.startswith("ToolError:") or body.strip().startswith("The page ") and "no content" in body:
        return []
    browse = _BROWSE.match(header)
    if browse:
        content = "\n".join(lines[1:])
        heading = next((line.lstrip("# ") for line in lines[1:] if line.startswith("#")), "")
        url = browse["url"]
        return [Passage(index, url, content, f"{heading} {url_words(url)}")]
    if header.startswith("### Results for"):
        found = []
        for line in lines[1:]:
            hit = _HIT.match(line)
            if hit:
                text = f"{hit['title']}. {hit['snippet']}"
                found.append(Passage(index, hit["url"], text, f"{hit['title']} {url_words(hit['url'])}"))
        return found
    if header.startswith("### Images for"):
        found = []
        title = ""
        for line in lines[1:]:
            image = _IMAGE.match(line)
            if image:
                title = image["title"]
            elif line.startswith("source page: ") and title:
                page = line.removeprefix("source page: ").strip()
                page = "" if page == "unknown" else page
                found.append(Passage(index, page, title, f"{title} {url_words(page)}"))
                title = ""
        return found
    return [Passage(index, "", body, "")]  # a format this module does not know: the whole text


def tool_passages(trajectory: Trajectory) -> list[Passage]:
    passages: list[Passage] = []
    for index, body in enumerate(tool_responses(trajectory)):
        passages.extend(_passages(index, body))
    return passages


def names_any(text: str, aliases: Sequence[str]) -> bool:
    """Whether `text` names one of `aliases`: its words in order, at most five other words between
    consecutive ones ("Italian is a Romance language" names "Italian language")."""
    tokens = name_tokens(text)
    for alias in aliases:
        wanted = [token for token in name_tokens(alias) if token not in ("the", "a", "an")]
        if wanted and _in_order(tokens, wanted):
            return True
    return False


def _in_order(tokens: list[str], wanted: list[str], slack: int = 5) -> bool:
    for start, token in enumerate(tokens):
        if token != wanted[0]:
            continue
        position, matched = start, 1
        for next_token in wanted[1:]:
            window = tokens[position + 1 : position + 2 + slack]
            if next_token not in window:
                break
            position += 1 + window.index(next_token)
            matched += 1
        if matched == len(wanted):
            return True
    return False


def claimed_facts(gen_prompt: str, task_prompt: str) -> list[Fact]:
    """The gen_prompt's facts that the task prompt does not already state (those are given, not claimed)."""
    given = extract_facts(task_prompt)
    return [fact for fact in extract_facts(gen_prompt).facts if not supports(given, fact)]


def evidence_for(
    trajectory: Trajectory, task_prompt: str, subjects: Sequence[str] = (), extractor: str = EXTRACTOR
) -> list[Evidence]:
    """One row per claimed fact of the trajectory's gen_prompt. A supported fact names the first
    passage that states it, preferring one that names a subject (in its title, URL or text)."""
    if not trajectory.gen_prompt.strip():
        return []
    passages = tool_passages(trajectory)
    rows = []
    for fact in claimed_facts(trajectory.gen_prompt, task_prompt):
        supporting = [passage for passage in passages if supports(passage.sheet, fact)]
        about_subject = [passage for passage in supporting if subjects and passage.mentions(subjects)]
        ranked = about_subject or supporting
        best = ranked[0] if ranked else None
        rows.append(
            Evidence(
                id=content_id(trajectory.id, extractor, fact.kind, fact.key),
                trajectory_id=trajectory.id,
                fact=fact.text,
                kind=fact.kind,
                supported=best is not None,
                source_url=best.url if best is not None else "",
                tool_call_index=best.tool_call_index if best is not None else -1,
                extractor=extractor,
                about_subject=bool(about_subject),
            )
        )
    return rows


def grounding(rows: Sequence[Evidence]) -> float:
    """The share of claimed facts that a tool response supports; 1.0 when nothing is claimed."""
    if not rows:
        return 1.0
    return round(sum(row.supported for row in rows) / len(rows), 4)
