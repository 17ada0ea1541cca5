"""Labelled pages (tests/fixtures/facts/NAME.html, written by hand) whose facts must survive main-content
extraction: infobox and table values, list items, figure captions and dates (`+` lines of
NAME.facts.txt must be in the extracted text), while their boilerplate must not (`-` lines); a `=`
line is the page's title (the headline, kept apart from the body text)."""

from __future__ import annotations

from pathlib import Path

import pytest

from extractors.html_extract import extract_main_content

FACTS = Path(__file__).parent / "fixtures" / "facts"
PAGES = sorted(FACTS.glob("*.html"))


def title_of(path: Path) -> str | None:
    lines = path.with_suffix(".facts.txt").read_text(encoding="utf-8").splitlines()
    return next((line[2:] for line in lines if line.startswith("= ")), None)


def labelled(path: Path) -> tuple[list[str], list[str]]:
    kept, dropped = [], []
    for line in path.with_suffix(".facts.txt").read_text(encoding="utf-8").splitlines():
        if line.startswith("+ "):
            kept.append(line[2:])
        elif line.startswith("- "):
            dropped.append(line[2:])
    return kept, dropped


def test_labelled_pages_exist():
    assert len(PAGES) >= 5
    assert all(len(labelled(path)[0]) >= 5 for path in PAGES)


@pytest.mark.parametrize("path", PAGES, ids=[p.stem for p in PAGES])
def test_facts_survive_extraction(path: Path):
    page = extract_main_content(path.read_bytes(), f"https://example.org/{path.name}")
    text = page.text
    kept, dropped = labelled(path)
    if title_of(path) is not None:
        assert page.title == title_of(path)
        assert page.full_text.startswith(f"# {page.title}\n\n")
    lost = [fact for fact in kept if fact not in text]
    leaked = [boilerplate for boilerplate in dropped if boilerplate in text]
    assert not lost, f"facts lost from {path.name}:\n{text}"
    assert not leaked, f"boilerplate kept in {path.name}:\n{text}"


def test_figure_captions_stay_with_their_images():
    page = extract_main_content((FACTS / "museum_gallery.html").read_bytes(), "https://example.org/m/")
    captions = {image.url: image.caption for image in page.images}
    assert captions["https://example.org/m/images/winter_mill.jpg"] == (
        "The Winter Mill, tempera, 1907 (inv. NM 5020)"
    )
