"""Is the answer about the prompt's subject, and is each chosen reference image?

The subject is what the prompt was written about: the titles of its topics (the first one is the
main subject, a multi-hop prompt adds its partner). `subject_aliases` adds the title without its
disambiguation ("Peter Pan (character)" -> "Peter Pan"). A text *names* a subject when the alias's
words appear in order, with at most two other words between (`filters.evidence.names_any`), after
folding case, diacritics, possessives and plural endings.

Pure functions over a trajectory, its task prompt and its evidence rows.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence

from filters.evidence import names_any, url_words
from filters.facts import extract_facts, fold, name_tokens
from schemas.rows import Evidence, Prompt, ReferenceImage, Trajectory

NON_SUBJECT_NAMES = {"verified"}  # words the scripted teacher's template capitalises


def subject_aliases(titles: Sequence[str]) -> list[str]:
    """Each title and the title without a trailing parenthetical, de-duplicated, in order."""
    aliases: list[str] = []
    for title in titles:
        for alias in (title, re.sub(r"\s*\([^)]*\)\s*$", "", title)):
            alias = alias.strip()
            if alias and alias not in aliases:
                aliases.append(alias)
    return aliases


def prompt_subjects(prompt: Prompt, topics: Mapping[str, tuple[str, list[str]]]) -> list[str]:
    """The titles of the prompt's topics (`topics`: id -> (title, linked titles)), main one first.

    A multi-hop prompt's partner is a topic linked from the main one that the warehouse may not hold
    as a row of its own; it is then found among the main topic's linked titles that the prompt's
    required facts name."""
    titles = [topics[topic_id][0] for topic_id in prompt.topic_ids if topic_id in topics]
    main = topics.get(prompt.topic_ids[0]) if prompt.topic_ids else None
    if len(titles) < len(prompt.topic_ids) and main is not None:
        facts = {fact.casefold() for fact in prompt.required_facts}
        titles += [title for title in main[1] if title.casefold() in facts and title not in titles]
    return titles


def added_text(gen_prompt: str, task_prompt: str) -> str:
    """What the teacher wrote beyond a verbatim copy of the task prompt (all of it when no copy)."""
    gen = " ".join(gen_prompt.split())
    task = " ".join(task_prompt.split())
    if task and fold(task) in fold(gen):
        start = fold(gen).index(fold(task))
        return (gen[:start] + " " + gen[start + len(task) :]).strip()
    return gen


def subject_match(
    trajectory: Trajectory, task_prompt: str, subjects: Sequence[str], evidence: Sequence[Evidence]
) -> float | None:
    """1.0 when the answer is about the subject, 0.0 when it is about something else; None without subjects.

    The score is the share of the gen_prompt's supported facts whose source (the hit, page or image
    stating it) names a subject, in its title, URL or text: facts taken from pages about something
    else make an answer about something else. Before that, the teacher's own text (the gen_prompt
    less a copy of the task prompt), when it names anything, must share a word with a subject's
    name ("Chaplin" for "Charlie Chaplin", "Quechua language family" for "Quechuan languages");
    otherwise the score is 0."""
    aliases = subject_aliases(subjects)
    if not aliases or not trajectory.gen_prompt.strip():
        return None
    own = added_text(trajectory.gen_prompt, task_prompt)
    names = [
        fact for fact in extract_facts(own).facts if fact.kind == "name" and fact.key not in NON_SUBJECT_NAMES
    ]
    if names and not shares_a_word(own, aliases):
        return 0.0
    supported = [row for row in evidence if row.supported]
    if not supported:
        return 1.0
    return round(sum(row.about_subject for row in supported) / len(supported), 4)


def shares_a_word(text: str, aliases: Sequence[str]) -> bool:
    """Whether `text` holds a significant word (4+ letters) of one of `aliases` (a loose naming)."""
    words = set(name_tokens(text))
    return any(len(token) >= 4 and token in words for alias in aliases for token in name_tokens(alias))


def reference_metadata(reference: ReferenceImage) -> str:
    """What names a reference image's subject: its title, its source page's and its file's words."""
    return f"{reference.title} {url_words(reference.page_url)} {url_words(reference.url)}"


def irrelevant_references(trajectory: Trajectory, subjects: Sequence[str]) -> list[str]:
    """Ids of chosen references whose title, source page or file name names no subject."""
    aliases = subject_aliases(subjects)
    by_id = {reference.img_id: reference for reference in trajectory.references}
    irrelevant = []
    for chosen in trajectory.chosen_references:
        reference = by_id.get(chosen.img_id)
        if reference is None or not names_any(reference_metadata(reference), aliases):
            irrelevant.append(chosen.img_id)
    return irrelevant


def reference_relevance(trajectory: Trajectory, subjects: Sequence[str]) -> float | None:
    """Share of chosen references about a subject; None when none is chosen or no subject is known."""
    if not trajectory.chosen_references or not subject_aliases(subjects):
        return None
    bad = len(irrelevant_references(trajectory, subjects))
    return round(1 - bad / len(trajectory.chosen_references), 4)
