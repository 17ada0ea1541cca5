"""Checkable facts of a text, extracted deterministically: dates, years, quantities with units, other
numbers, and proper names — each with a canonical key so that "1,234" and "1234", "July 11, 1968"
and "11 July 1968", "2,000 m" and "2000 metres" compare equal.

Pure functions, no model, no I/O. The same extractor reads a gen_prompt (the claims) and a tool
response (what supports them), and `supports(fact, source)` compares keys, so both sides are
normalised the same way. Used by `filters.evidence`.
"""

from __future__ import annotations

import re
import unicodedata
from dataclasses import dataclass, field
from functools import cached_property

KINDS = ("date", "year", "quantity", "number", "name")

MONTHS = {
    name: index
    for index, names in enumerate(
        (
            ("january", "jan"),
            ("february", "feb"),
            ("march", "mar"),
            ("april", "apr"),
            ("may",),
            ("june", "jun"),
            ("july", "jul"),
            ("august", "aug"),
            ("september", "sep", "sept"),
            ("october", "oct"),
            ("november", "nov"),
            ("december", "dec"),
        ),
        start=1,
    )
    for name in names
}
_MONTH = r"(?P<month>" + "|".join(sorted(MONTHS, key=len, reverse=True)) + r")\.?"
_NUMBER = r"\d{1,3}(?:,\d{3})+(?:\.\d+)?|\d+(?:\.\d+)?"
_SCALE = {"thousand": 1e3, "million": 1e6, "billion": 1e9, "trillion": 1e12}

# unit spellings -> canonical unit (no conversions: 5 km and 5000 m are different claims)
UNITS = {
    "mm": "mm", "millimetre": "mm", "millimetres": "mm", "millimeter": "mm", "millimeters": "mm",
    "cm": "cm", "centimetre": "cm", "centimetres": "cm", "centimeter": "cm", "centimeters": "cm",
    "m": "m", "metre": "m", "metres": "m", "meter": "m", "meters": "m",
    "km": "km", "kilometre": "km", "kilometres": "km", "kilometer": "km", "kilometers": "km",
    "km2": "km2", "km²": "km2", "sq km": "km2", "square kilometres": "km2", "square kilometers": "km2",
    "mi": "mi", "mile": "mi", "miles": "mi", "sq mi": "mi2", "square miles": "mi2",
    "ft": "ft", "foot": "ft", "feet": "ft", "in": "in", "inch": "in", "inches": "in",
    "g": "g", "gram": "g", "grams": "g", "kg": "kg", "kilogram": "kg", "kilograms": "kg",
    "t": "t", "tonne": "t", "tonnes": "t", "ton": "t", "tons": "t", "lb": "lb", "lbs": "lb",
    "pounds": "lb", "l": "l", "litre": "l", "litres": "l", "liter": "l", "liters": "l",
    "%": "%", "percent": "%", "per cent": "%", "°c": "°c", "°f": "°f", "k": "k", "kelvin": "k",
    "km/h": "km/h", "mph": "mph", "m/s": "m/s", "hz": "hz", "mhz": "mhz", "ghz": "ghz",
    "w": "w", "kw": "kw", "mw": "mw", "gw": "gw", "v": "v", "kv": "kv", "mah": "mah", "kwh": "kwh",
    "years": "years", "year": "years", "days": "days", "day": "days", "hours": "hours",
    "minutes": "minutes", "seconds": "seconds", "people": "people", "inhabitants": "people",
    "species": "species", "chapters": "chapters", "volumes": "volumes", "episodes": "episodes",
    "seasons": "seasons", "issues": "issues", "members": "members", "languages": "languages",
    "copies": "copies", "units": "units", "votes": "votes", "speakers": "speakers",
}  # fmt: skip
_UNIT = r"(?P<unit>" + "|".join(re.escape(unit) for unit in sorted(UNITS, key=len, reverse=True)) + r")"

_FULL_DATE_MDY = re.compile(rf"(?i)\b{_MONTH}\s+(?P<day>\d{{1,2}})(?:st|nd|rd|th)?,?\s+(?P<year>\d{{3,4}})\b")
_FULL_DATE_DMY = re.compile(
    rf"(?i)\b(?P<day>\d{{1,2}})(?:st|nd|rd|th)?\s+(?:of\s+)?{_MONTH}\s*,?\s+(?P<year>\d{{3,4}})\b"
)
_ISO_DATE = re.compile(r"\b(?P<year>\d{4})-(?P<month>\d{2})-(?P<day>\d{2})\b")
_MONTH_YEAR = re.compile(rf"(?i)\b{_MONTH}\s+(?P<year>\d{{3,4}})\b")
_YEAR = re.compile(
    r"(?i)\b(?P<year>\d{3,4})(?:\s*(?P<era>BCE|BC|CE|AD)\b)?(?!\s*(?:,\d{3}|\.\d))"
    r"|\b(?P<era2>AD)\s+(?P<year2>\d{3,4})\b"
)
_QUANTITY = re.compile(
    rf"(?i)(?<![\w.,])(?P<number>{_NUMBER})(?:\s*(?P<scale>thousand|million|billion|trillion))?"
    rf"[\s\u00a0\u202f-]*{_UNIT}(?![\w])"
)
_PLAIN_NUMBER = re.compile(
    rf"(?i)(?<![\w.,])(?P<number>{_NUMBER})(?:\s+(?P<scale>thousand|million|billion|trillion))?(?![\w])"
)

# Proper names: runs of capitalised words (joined by small connectors). A run that starts a sentence
# loses a first word from this list; a one-word run at a sentence start is skipped (ambiguous).
_CONNECTORS = {"of", "the", "de", "von", "van", "da", "del", "du", "la", "le", "and", "y", "al", "bin"}
_NOT_NAMES = {
    "a", "an", "the", "this", "that", "these", "those", "it", "its", "he", "she", "his", "her", "they",
    "their", "there", "here", "in", "on", "at", "for", "with", "by", "from", "as", "and", "or", "but", "if",
    "create", "design", "draw", "make", "generate", "render", "produce", "show", "illustrate", "paint",
    "depict", "include", "label", "use", "add", "print", "verified", "facts", "fact", "every", "each",
    "all", "both", "one", "two", "three", "first", "second", "third", "next", "below", "above", "left",
    "right", "top", "bottom", "title", "caption", "note", "image", "reference", "style", "background",
    "monday", "tuesday", "wednesday", "thursday", "friday", "saturday", "sunday", "i", "we", "you",
    "bc", "bce", "ad", "ce", "no", "yes", "not", "also", "after", "before", "during", "since", "when",
    *MONTHS,
}  # fmt: skip


def fold(text: str) -> str:
    """Lower-case, diacritics removed, non-breaking/thin spaces as spaces: the text all lookups use."""
    text = unicodedata.normalize("NFKD", text)
    text = "".join(char for char in text if not unicodedata.combining(char))
    return text.replace("\u00a0", " ").replace("\u202f", " ").replace("\u2009", " ").casefold()


def name_tokens(text: str) -> list[str]:
    """Folded word tokens with possessives and plural endings removed, for comparing names."""
    tokens = []
    for token in re.findall(r"\w+", re.sub(r"['’]s\b", "", fold(text))):
        if len(token) > 4 and token.endswith("ies"):
            token = token[:-3] + "y"  # butterflies -> butterfly
        elif len(token) > 3 and token.endswith("s") and not token.endswith("ss"):
            token = token[:-1]
        tokens.append(token)
    return tokens


def number_value(number: str, scale: str | None = None) -> str:
    """Canonical text of a number: commas dropped, trailing zeros of decimals dropped, scale applied."""
    value = float(number.replace(",", ""))
    if scale:
        value *= _SCALE[scale.lower()]
    return f"{value:.6f}".rstrip("0").rstrip(".")


@dataclass(frozen=True)
class Fact:
    """One checkable fact: `text` as written, `kind` (see KINDS) and the canonical `key` it is
    compared by (a date "1968-07-11", a year "1968" or "-3100", a quantity "2000 m", a number "35.5",
    a name as its folded tokens)."""

    text: str
    kind: str
    key: str


def _year_key(year: str, era: str | None) -> str:
    value = int(year)
    return str(-value if era and era.upper() in ("BC", "BCE") else value)


@dataclass
class _Spans:
    taken: list[tuple[int, int]] = field(default_factory=list)

    def free(self, start: int, end: int) -> bool:
        return all(end <= a or start >= b for a, b in self.taken)

    def take(self, start: int, end: int) -> None:
        self.taken.append((start, end))


def _dates(text: str, spans: _Spans) -> list[Fact]:
    facts = []
    for pattern in (_FULL_DATE_MDY, _FULL_DATE_DMY, _ISO_DATE):
        for match in pattern.finditer(text):
            if not spans.free(*match.span()):
                continue
            month = match["month"]
            month_number = MONTHS[month.lower().rstrip(".")] if not month.isdigit() else int(month)
            day = int(match["day"])
            if not (1 <= month_number <= 12 and 1 <= day <= 31):
                continue
            spans.take(*match.span())
            key = f"{int(match['year']):04d}-{month_number:02d}-{day:02d}"
            facts.append((match.start(), Fact(match.group(0), "date", key)))
    for match in _MONTH_YEAR.finditer(text):
        if spans.free(*match.span()):
            spans.take(*match.span())
            key = f"{int(match['year']):04d}-{MONTHS[match['month'].lower().rstrip('.')]:02d}"
            facts.append((match.start(), Fact(match.group(0), "date", key)))
    return [fact for _, fact in sorted(facts, key=lambda item: item[0])]


def _numbers(text: str, spans: _Spans) -> list[tuple[int, Fact]]:
    found: list[tuple[int, Fact]] = []
    for match in _QUANTITY.finditer(text):
        if not spans.free(*match.span()):
            continue
        unit = UNITS[" ".join(match["unit"].lower().split())]
        if unit == "in" and not re.match(r"\s", text[match.end("number") : match.start("unit")] or " "):
            continue
        if unit in ("years",) and match["number"].isdigit() and 1000 <= int(match["number"]) <= 2100:
            continue  # "1969 years" is rare; "in 1969 years later" is noise
        spans.take(*match.span())
        key = f"{number_value(match['number'], match['scale'])} {unit}"
        found.append((match.start(), Fact(" ".join(match.group(0).split()), "quantity", key)))
    for match in _YEAR.finditer(text):
        year, era = (match["year"], match["era"]) if match["year"] else (match["year2"], match["era2"])
        start, end = match.span()
        if not spans.free(start, end):
            continue
        if not era and not (1000 <= int(year) <= 2100):
            continue
        spans.take(start, end)
        found.append((start, Fact(match.group(0), "year", _year_key(year, era))))
    for match in _PLAIN_NUMBER.finditer(text):
        if not spans.free(*match.span()):
            continue
        spans.take(*match.span())
        key = number_value(match["number"], match["scale"])
        found.append((match.start(), Fact(match.group(0), "number", key)))
    return found


_TOKEN = re.compile(r"[^\W_][\w'’-]*|\n|[^\w\s]")
_ENDS_SENTENCE = {"!", "?", ":", ";", "#", "\n", "|", "*"}
_ABBREVIATIONS = {"mr", "mrs", "ms", "dr", "st", "jr", "sr", "mt", "ft", "no", "vs", "co", "inc", "ltd"}


def _emit(text: str, run: list[tuple[str, int, int]], at_start: bool) -> Fact | None:
    words = list(run)
    while words and words[-1][0].lower() in _CONNECTORS:
        words.pop()
    if at_start and len(words) == 1:
        return None  # one capitalised word opening a sentence: ambiguous
    while words and (words[0][0].lower() in _NOT_NAMES or words[0][0].lower() in _CONNECTORS):
        words.pop(0)
    if not words:
        return None
    name = re.sub(r"['’]s$", "", text[words[0][1] : words[-1][2]])
    tokens = name_tokens(name)
    if not tokens or sum(len(token) for token in tokens) < 2:
        return None
    return Fact(name, "name", " ".join(tokens))


def _names(text: str, spans: _Spans) -> list[tuple[int, Fact]]:
    found: list[tuple[int, Fact]] = []
    run: list[tuple[str, int, int]] = []  # (word, start, end)
    run_at_start = False
    at_start = True

    def close() -> None:
        nonlocal run
        if run:
            fact = _emit(text, run, run_at_start)
            if fact is not None:
                found.append((run[0][1], fact))
        run = []

    previous = ""
    for match in _TOKEN.finditer(text):
        token, start, end = match.group(0), match.start(), match.end()
        if not spans.free(start, end):  # part of a date or number
            close()
            at_start = False
        elif token[0].isalpha():
            if token[0].isupper():
                if not run:
                    run_at_start = at_start
                run.append((token, start, end))
            elif run and token.lower() in _CONNECTORS:
                run.append((token, start, end))
            else:
                close()
            at_start = False
        elif token[0].isdigit():
            close()
            at_start = False
        elif token == ".":
            initial = len(previous) == 1 and previous.isupper()
            if not (initial or previous.lower() in _ABBREVIATIONS):
                close()
                at_start = True
        elif token in _ENDS_SENTENCE:
            close()
            at_start = True
        else:
            close()  # quotes, brackets, commas, dashes: a name does not run across them
        previous = token
    close()
    return found


@dataclass(frozen=True)
class FactSheet:
    """All facts of one text plus the lookup sets a claim is checked against."""

    text: str
    facts: tuple[Fact, ...]

    @cached_property
    def folded_tokens(self) -> str:
        return " " + " ".join(name_tokens(self.text)) + " "

    @cached_property
    def keys(self) -> dict[str, set[str]]:
        keys: dict[str, set[str]] = {kind: set() for kind in KINDS}
        keys["value"] = set()  # every numeric value, whatever its kind (for bare numbers and years)
        keys["month"] = set()  # year-month of every full date
        for fact in self.facts:
            keys[fact.kind].add(fact.key)
            if fact.kind == "date":
                keys["month"].add(fact.key[:7])
                keys["value"].add(str(int(fact.key[:4])))
            elif fact.kind == "quantity":
                keys["value"].add(fact.key.split(" ", 1)[0])
            elif fact.kind in ("year", "number"):
                keys["value"].add(fact.key)
        return keys


def extract_facts(text: str) -> FactSheet:
    """The facts of `text`, in order of appearance, de-duplicated by (kind, key)."""
    clean = re.sub(r"\[([^\]]*)\]\([^)]*\)", r"\1", text)  # markdown links: keep their text
    spans = _Spans()
    ordered: list[tuple[int, Fact]] = []
    ordered += [(clean.find(fact.text), fact) for fact in _dates(clean, spans)]
    ordered += _numbers(clean, spans)
    ordered += _names(clean, spans)
    seen: set[tuple[str, str]] = set()
    facts = []
    for _, fact in sorted(ordered, key=lambda item: item[0]):
        if (fact.kind, fact.key) not in seen:
            seen.add((fact.kind, fact.key))
            facts.append(fact)
    return FactSheet(text=clean, facts=tuple(facts))


def supports(source: FactSheet, fact: Fact) -> bool:
    """Whether `source` states `fact` (same canonical key; a year or number may appear in any form)."""
    keys = source.keys
    if fact.kind == "date":
        if len(fact.key) == 7:  # month and year
            return fact.key in keys["date"] or fact.key in keys["month"]
        return fact.key in keys["date"]
    if fact.kind == "quantity":
        return fact.key in keys["quantity"]
    if fact.kind in ("year", "number"):
        return fact.key in keys["value"]
    return f" {fact.key} " in source.folded_tokens
