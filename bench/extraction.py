"""Main-content extraction: groundgen's extractor against trafilatura, on the same pages, in one run.

    python -m bench.extraction [--pages DIR ...] [--min-seconds 1.0]

For every `NAME.html` with a `NAME.expected.txt` beside it (the expected-file format of
tests/test_extractors_html.py: `title: ...`, blank line, the text, then an optional `images:` list),
both extractors run on the raw bytes; quality is token-level F1 of the extracted text against the
expected text (bag of lower-cased word tokens, the measure of trafilatura's own evaluation); speed is
pages per second over repeated passes of at least `--min-seconds`. Prints both and their ratio.

Default page sets: tests/fixtures/pages (the extractor's own regression fixtures: their expected files
were written against groundgen's output format, so they favour it) and bench/pages (pages with typical
boilerplate — cookie banners, navigation, sidebars, comments, related links, footers — whose expected
text was written by hand from what a reader would call the article). Means are printed per set.
trafilatura is a benchmark-only dependency (`pip install trafilatura`).
"""

from __future__ import annotations

import argparse
import re
import statistics
import sys
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

_TOKEN = re.compile(r"\w+", re.UNICODE)
Extractor = Callable[[bytes, str], str]


def expected_text(expected: str) -> str:
    """The text section of an expected file (without the `title:` line and the `images:` list)."""
    body = expected.split("\n", 1)[1] if expected.startswith("title:") else expected
    body = body.split("\nimages:\n", 1)[0]
    return body.strip()


def tokens(text: str) -> Counter[str]:
    return Counter(token.lower() for token in _TOKEN.findall(text))


def token_f1(predicted: str, gold: str) -> float:
    predicted_tokens, gold_tokens = tokens(predicted), tokens(gold)
    if not predicted_tokens and not gold_tokens:
        return 1.0
    overlap = sum((predicted_tokens & gold_tokens).values())
    if overlap == 0:
        return 0.0
    precision = overlap / sum(predicted_tokens.values())
    recall = overlap / sum(gold_tokens.values())
    return 2 * precision * recall / (precision + recall)


def groundgen_extract(html: bytes, url: str) -> str:
    from extractors.html_extract import extract_main_content

    return extract_main_content(html, url).text


def trafilatura_extract(html: bytes, url: str) -> str:
    import trafilatura

    return (
        trafilatura.extract(html, url=url, include_tables=True, include_comments=False, deduplicate=False)
        or ""
    )


def _label(folder: Path) -> str:
    resolved = folder.resolve()
    return str(resolved.relative_to(ROOT)) if resolved.is_relative_to(ROOT) else str(folder)


def load_pages(folder: Path) -> list[tuple[str, bytes, str]]:
    pages = []
    for html_path in sorted(folder.glob("*.html")):
        expected_path = html_path.with_suffix(".expected.txt")
        if expected_path.is_file():
            gold = expected_text(expected_path.read_text(encoding="utf-8"))
            pages.append((f"{_label(folder)}/{html_path.stem}", html_path.read_bytes(), gold))
    return pages


def pages_per_second(extract: Extractor, pages: list[tuple[str, bytes, str]], min_seconds: float) -> float:
    done, started = 0, time.perf_counter()
    while True:
        for name, html, _ in pages:
            extract(html, f"https://bench.example/{name}")
        done += len(pages)
        elapsed = time.perf_counter() - started
        if elapsed >= min_seconds:
            return done / elapsed


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--pages",
        type=Path,
        nargs="+",
        default=[ROOT / "tests" / "fixtures" / "pages", ROOT / "bench" / "pages"],
    )
    parser.add_argument("--min-seconds", type=float, default=1.0, help="timing window per extractor")
    args = parser.parse_args(argv)
    pages = [page for folder in args.pages for page in load_pages(folder)]
    if not pages:
        print(f"no NAME.html + NAME.expected.txt pairs in {args.pages}", file=sys.stderr)
        return 1
    try:
        import trafilatura
    except ImportError:
        print("trafilatura is not installed: pip install trafilatura", file=sys.stderr)
        return 1
    extractors: dict[str, Extractor] = {"groundgen": groundgen_extract, "trafilatura": trafilatura_extract}
    scores: dict[str, list[float]] = {name: [] for name in extractors}
    folders = ", ".join(str(folder) for folder in args.pages)
    print(f"{len(pages)} pages from {folders} (trafilatura {trafilatura.__version__})\n")
    print(f"{'page':<44}" + "".join(f"{name:>14}" for name in extractors))
    for name, html, gold in pages:
        row = f"{name:<44}"
        for extractor_name, extract in extractors.items():
            score = token_f1(extract(html, f"https://bench.example/{name}"), gold)
            scores[extractor_name].append(score)
            row += f"{score:>14.3f}"
        print(row)
    f1 = {name: statistics.fmean(values) for name, values in scores.items()}
    for folder in args.pages:
        chosen = [i for i, page in enumerate(pages) if page[0].startswith(_label(folder) + "/")]
        if chosen:
            means = [statistics.fmean(scores[name][i] for i in chosen) for name in extractors]
            print(f"{'mean F1 ' + _label(folder):<44}" + "".join(f"{m:>14.3f}" for m in means))
    speed = {name: pages_per_second(extract, pages, args.min_seconds) for name, extract in extractors.items()}
    print(f"\n{'mean token F1':<44}" + "".join(f"{f1[name]:>14.3f}" for name in extractors))
    print(f"{'pages/s':<44}" + "".join(f"{speed[name]:>14.1f}" for name in extractors))
    f1_ratio = f1["groundgen"] / f1["trafilatura"] if f1["trafilatura"] else float("inf")
    print(
        f"\nratio groundgen/trafilatura: F1 {f1_ratio:.2f}x, speed {speed['groundgen'] / speed['trafilatura']:.2f}x"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
