"""Main-content extraction: groundgen against trafilatura (default and `fast=True`) and resiliparse, on
the same pages, in one run.

    python -m bench.extraction [--benchmark DIR] [--rounds 3] [--limit N]

1. The public article-extraction benchmark (181 real pages with hand-checked bodies, MIT, read from
   `../shared/extraction-benchmark/` next to the repository or `--benchmark DIR`; skipped with a
   message when absent): precision, recall and F1 scored by the benchmark's own `evaluate.py`, and
   pages/s (best of `--rounds` passes over all pages, extractors interleaved; the machine is shared,
   so compare the ratios printed, not the absolute numbers).
2. Answer recall of `relevant_passages` on the same pages: (page, question, answer) triples built
   from the benchmark's bodies (a sentence with a number or a name in it; the question is the
   sentence's rarest other words, the answer the number or name), asked of groundgen's extracted
   text; the share whose answer lies in the passages returned within the browse budget (4,000
   characters), beside "the first 4,000 characters" and beside the whole extracted text (the ceiling).
3. Labelled facts (tests/fixtures/facts: hand-written pages with infobox and table values, lists,
   captions and dates): the share of facts each extractor keeps (word sequences, so that table and
   list formatting does not count).

Peers are benchmark-only dependencies (`pip install -e '.[bench]'`); a missing one is skipped with
the reason.
"""

from __future__ import annotations

import argparse
import gzip
import importlib.util
import json
import os
import random
import re
import sys
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from types import ModuleType

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from extractors.html_extract import extract_main_content  # noqa: E402
from extractors.passages import relevant_passages  # noqa: E402

DEFAULT_BENCHMARK = ROOT.parent / "shared" / "extraction-benchmark"
FACTS = ROOT / "tests" / "fixtures" / "facts"
BROWSE_BUDGET = 4000
_WORD = re.compile(r"\w+", re.UNICODE)
_SENTENCE = re.compile(r"(?<=[.!?])\s+(?=[A-Z\"“])")
_NUMBER = re.compile(r"\b\d[\d,.:]*\d\b|\b\d\b")
_NAME = re.compile(r"(?<!^)(?<![.!?] )\b[A-Z][a-z]{2,}(?: [A-Z][a-z]{2,})*")
Extractor = Callable[[bytes, str], str]
Page = tuple[str, bytes, str]  # id, html, url


# --- extractors ------------------------------------------------------------------------------------


def groundgen(html: bytes, url: str) -> str:
    return extract_main_content(html, url).text


def _trafilatura(fast: bool) -> Extractor:
    import trafilatura

    def extract(html: bytes, url: str) -> str:
        return trafilatura.extract(html, url=url, fast=fast) or ""

    return extract


def _resiliparse() -> Extractor:
    from resiliparse.extract.html2text import extract_plain_text
    from resiliparse.parse.encoding import detect_encoding
    from resiliparse.parse.html import HTMLTree

    def extract(html: bytes, _url: str) -> str:
        tree = HTMLTree.parse_from_bytes(html, detect_encoding(html))
        return str(extract_plain_text(tree, main_content=True))

    return extract


def extractors() -> dict[str, Extractor]:
    """groundgen and every installed peer; a missing peer is reported and left out."""
    chosen: dict[str, Extractor] = {"groundgen": groundgen}
    peers: list[tuple[str, Callable[[], Extractor]]] = [
        ("trafilatura", lambda: _trafilatura(False)),
        ("trafilatura fast", lambda: _trafilatura(True)),
        ("resiliparse", _resiliparse),
    ]
    for name, build in peers:
        try:
            chosen[name] = build()
        except ImportError as error:
            print(f"skipped {name}: {error} (pip install -e '.[bench]')")
    return chosen


# --- the public benchmark --------------------------------------------------------------------------


def load_evaluate(folder: Path) -> ModuleType:
    """The benchmark's own scoring script, imported from its folder (not copied)."""
    spec = importlib.util.spec_from_file_location("extraction_benchmark_evaluate", folder / "evaluate.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def load_benchmark(folder: Path, limit: int | None) -> tuple[list[Page], dict[str, dict[str, str]]]:
    truth: dict[str, dict[str, str]] = json.loads((folder / "ground-truth.json").read_text(encoding="utf-8"))
    ids = sorted(truth)[:limit] if limit else sorted(truth)
    pages = [
        (key, gzip.decompress((folder / "html" / f"{key}.html.gz").read_bytes()), truth[key]["url"])
        for key in ids
    ]
    return pages, {key: truth[key] for key in ids}


def timed_outputs(
    chosen: dict[str, Extractor], pages: list[Page], rounds: int
) -> tuple[dict[str, dict[str, str]], dict[str, tuple[float, float]]]:
    """Each extractor's text per page and its speed: (pages per wall second, pages per CPU second of
    this process), best of `rounds` passes, interleaved so that load from other processes falls on
    every extractor alike. CPU seconds are the steadier measure on a shared machine."""
    outputs: dict[str, dict[str, str]] = {name: {} for name in chosen}
    wall: dict[str, float] = {name: float("inf") for name in chosen}
    cpu: dict[str, float] = {name: float("inf") for name in chosen}
    for _ in range(rounds):
        for name, extract in chosen.items():
            started, started_cpu = time.perf_counter(), time.process_time()
            texts = {key: extract(html, url) for key, html, url in pages}
            wall[name] = min(wall[name], time.perf_counter() - started)
            cpu[name] = min(cpu[name], max(time.process_time() - started_cpu, 1e-9))
            outputs[name] = texts
    return outputs, {name: (len(pages) / wall[name], len(pages) / cpu[name]) for name in chosen}


def public_benchmark(folder: Path, chosen: dict[str, Extractor], rounds: int, limit: int | None) -> None:
    evaluate = load_evaluate(folder)
    pages, truth = load_benchmark(folder, limit)
    outputs, speed = timed_outputs(chosen, pages, rounds)
    print(f"\n## Public benchmark: {len(pages)} pages from {folder} (scored by its evaluate.py)\n")
    print(
        f"{'extractor':<18}{'F1':>14}{'precision':>11}{'recall':>9}{'pages/s':>10}{'pages/CPU-s':>13}"
        f"{'CPU speed ratio':>17}"
    )
    goal = ""
    for name in chosen:
        prediction = {key: {"articleBody": outputs[name][key]} for key in truth}
        metrics = evaluate.evaluate(truth, prediction, 200)
        wall, cpu = speed[name]
        if name == "groundgen":
            met = metrics["f1"] >= 0.96 and metrics["recall"] >= 0.97
            goal = (
                f"goal F1 >= 0.96 and recall >= 0.97: {'met' if met else 'NOT met'}; "
                f">= 100 pages/s: {cpu:.0f} per CPU second, {wall:.0f} per wall second under this load"
            )
        ratio = speed["groundgen"][1] / cpu
        print(
            f"{name:<18}{metrics['f1']:>8.3f} ±{metrics['f1_std']:.3f}{metrics['precision']:>11.3f}"
            f"{metrics['recall']:>9.3f}{wall:>10.1f}{cpu:>13.1f}{ratio:>16.2f}x"
        )
    print(
        "(CPU speed ratio: groundgen's pages per CPU second over the row's; above 1 = groundgen is faster. "
        f"Load average now: {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores)"
    )
    print(
        "(groundgen's text is ExtractedPage.text: the body; the headline is its title, shown first by browse)"
    )
    print(goal)


# --- answer recall of relevant_passages ------------------------------------------------------------


def answer_triples(
    truth: dict[str, dict[str, str]], per_page: int = 3, seed: int = 11
) -> list[tuple[str, str, str]]:
    """(page id, question, answer): sentences of each body holding a number or a name; the answer is
    that number or name, the question the sentence's six rarest other words (rarest across all
    bodies, as a searcher would pick them)."""
    document_frequency: Counter[str] = Counter()
    for item in truth.values():
        document_frequency.update({word.lower() for word in _WORD.findall(item["articleBody"])})
    rng = random.Random(seed)
    triples = []
    for key in sorted(truth):
        sentences = [s for s in _SENTENCE.split(truth[key]["articleBody"]) if len(_WORD.findall(s)) >= 8]
        rng.shuffle(sentences)
        chosen = 0
        for sentence in sentences:
            found = _NUMBER.search(sentence) or _NAME.search(sentence)
            if found is None:
                continue
            answer = found.group(0)
            answer_words = {word.lower() for word in _WORD.findall(answer)}
            words = [
                w for w in dict.fromkeys(w.lower() for w in _WORD.findall(sentence)) if w not in answer_words
            ]
            question = " ".join(sorted(words, key=lambda w: (document_frequency[w], w))[:6])
            triples.append((key, question, answer))
            chosen += 1
            if chosen == per_page:
                break
    return triples


def answer_recall(truth: dict[str, dict[str, str]], texts: dict[str, str]) -> None:
    triples = answer_triples(truth)
    long_pages = {key for key, text in texts.items() if len(text) > BROWSE_BUDGET}
    rows = {"relevant_passages (4,000 chars)": 0, "first 4,000 characters": 0, "whole extracted text": 0}
    long_rows = dict.fromkeys(rows, 0)
    long_count = 0
    for key, question, answer in triples:
        text = texts[key]
        found = {
            "relevant_passages (4,000 chars)": answer
            in relevant_passages(text, question, max_chars=BROWSE_BUDGET),
            "first 4,000 characters": answer in text[:BROWSE_BUDGET],
            "whole extracted text": answer in text,
        }
        long_count += key in long_pages
        for name, hit in found.items():
            rows[name] += hit
            long_rows[name] += hit and key in long_pages
    print(
        f"\n## Answer recall: {len(triples)} (page, question, answer) triples from the bodies, "
        f"{long_count} on the {len(long_pages)} pages whose extracted text exceeds {BROWSE_BUDGET:,} characters\n"
    )
    print(f"{'what the teacher reads':<34}{'all pages':>11}{'long pages':>12}")
    for name in rows:
        print(f"{name:<34}{rows[name] / len(triples):>11.3f}{long_rows[name] / max(1, long_count):>12.3f}")
    example = next(((k, q, a) for k, q, a in triples if k in long_pages), None)
    if example:
        print(f"(example question: {example[1]!r} -> answer {example[2]!r})")


# --- labelled facts --------------------------------------------------------------------------------


def _words(text: str) -> str:
    return " " + " ".join(word.lower() for word in _WORD.findall(text)) + " "


def labelled_facts(chosen: dict[str, Extractor]) -> None:
    pages = sorted(FACTS.glob("*.html"))
    kept = dict.fromkeys(chosen, 0)
    leaked = dict.fromkeys(chosen, 0)
    total_kept = total_dropped = 0
    for path in pages:
        lines = path.with_suffix(".facts.txt").read_text(encoding="utf-8").splitlines()
        facts = [_words(line[2:]) for line in lines if line.startswith("+ ")]
        boilerplate = [_words(line[2:]) for line in lines if line.startswith("- ")]
        total_kept += len(facts)
        total_dropped += len(boilerplate)
        for name, extract in chosen.items():
            text = _words(extract(path.read_bytes(), f"https://example.org/{path.name}"))
            kept[name] += sum(fact in text for fact in facts)
            leaked[name] += sum(line in text for line in boilerplate)
    print(f"\n## Labelled facts: {len(pages)} hand-written pages in {FACTS.relative_to(ROOT)}\n")
    print(f"{'extractor':<18}{'facts kept':>12}{'boilerplate kept':>18}")
    for name in chosen:
        print(f"{name:<18}{kept[name] / total_kept:>12.3f}{leaked[name] / total_dropped:>18.3f}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--benchmark", type=Path, default=DEFAULT_BENCHMARK, help="the benchmark's folder")
    parser.add_argument("--rounds", type=int, default=3, help="timed passes per extractor (best is kept)")
    parser.add_argument("--limit", type=int, default=None, help="only the first N pages (a quick check)")
    args = parser.parse_args(argv)
    chosen = extractors()
    if (args.benchmark / "ground-truth.json").is_file():
        public_benchmark(args.benchmark, chosen, max(1, args.rounds), args.limit)
        pages, truth = load_benchmark(args.benchmark, args.limit)
        # what browse reads: the headline, then the body
        answer_recall(truth, {key: extract_main_content(html, url).full_text for key, html, url in pages})
    else:
        print(
            f"skipped the public benchmark and answer recall: no ground-truth.json in {args.benchmark} "
            "(it lives in the shared folder next to the repository; pass --benchmark DIR)"
        )
    labelled_facts(chosen)
    return 0


if __name__ == "__main__":
    sys.exit(main())
