"""Benchmark: curation's dedup indexes against exact answers and peers, on the same data in one run.

Perceptual hashes (`filters.image_dedup.PerceptualHashIndex`, the production path: `prefetch` the
pass, then query each hash in order and add it, as curation does) against numpy brute force over all
pairs with a vectorised popcount (the exact answer and the peer), at distances 4 and 10 for 10k and
100k hashes. The hashes are random 64-bit values plus near copies (0-12 flipped bits) of others.
Beside them, imagededup (the peer) on the same hashes as hex strings, through its own search
(`Hashing.find_duplicates(encoding_map=..., max_distance_threshold=d)`, default `brute_force_cython`
over `cpu_count()` worker processes; `bench/dedup_imagededup_check.py`): every query at 10k, a seeded
sample of `--imagededup-sample` queries at 100k (and at 10k with `--quick`) extrapolated to all, with
the pairs checked against ours (for the sampled queries). imagededup cannot go in the bench extra:
its PyPI dependencies pull torchvision, a CUDA build that does not load beside our CPU torch and
whose resolution replaces torch. So the bench installs it into a venv of its own on first use
(`--imagededup-venv`, default .bench-venvs/imagededup in the checkout, reused): imagededup and its
light dependencies pinned, `--no-deps`, the project venv's packages visible through a .pth file.
That first install needs PyPI; `--no-imagededup` skips the peer.

Prompt near-duplicates (`filters.prompt_dedup.PromptDedupIndex`) on 20k prompts, a template-heavy
set and a diverse one (sentences of the offline Wikipedia summaries), each with planted edits:
recall of the pairs at Jaccard >= threshold against exact all-pairs Jaccard (prefix-filtered
AllPairs, verified exactly), beside `datasketch` (MinHash + MinHashLSH with the same bands, exact
verification of its candidates).

    python -m bench.dedup                 # everything (several minutes: 100k brute force, imagededup at 10k)
    python -m bench.dedup --quick         # 10k hashes (imagededup sampled), 4k prompts
    python -m bench.dedup --quick --no-imagededup
"""

from __future__ import annotations

import argparse
import math
import os
import re
import shutil
import subprocess
import sys
import sysconfig
import tempfile
import time
from collections import Counter, defaultdict
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from filters.image_dedup import PerceptualHashIndex  # noqa: E402
from filters.prompt_dedup import PromptDedupIndex, jaccard, lsh_bands, shingle_hashes, words  # noqa: E402

# --- perceptual hashes ----------------------------------------------------------------------------


def synthetic_hashes(count: int, seed: int = 0) -> np.ndarray:
    """80% random 64-bit hashes, 20% near copies of earlier ones with 0-12 random bits flipped."""
    generator = np.random.default_rng(seed)
    values = generator.integers(0, np.iinfo(np.uint64).max, size=count, dtype=np.uint64, endpoint=True)
    for index in np.flatnonzero(generator.random(count) < 0.2):
        if index == 0:
            continue
        source = int(values[generator.integers(0, index)])
        for bit in generator.choice(64, size=int(generator.integers(0, 13)), replace=False):
            source ^= 1 << int(bit)
        values[index] = source
    return values


def ours(values: np.ndarray, radius: int) -> tuple[float, set[tuple[int, int]]]:
    started = time.perf_counter()
    index = PerceptualHashIndex(radius)
    hexes = [f"{int(value):016x}" for value in values]
    index.prefetch(hexes)
    pairs = set()
    for number, phash in enumerate(hexes):
        for other, _ in index.query(phash):
            pairs.add((int(other), number))
        index.add(str(number), phash)
    return time.perf_counter() - started, pairs


def brute_force(values: np.ndarray, radius: int, block: int = 1024) -> tuple[float, set[tuple[int, int]]]:
    started = time.perf_counter()
    pairs = set()
    for start in range(0, values.size, block):
        rows = values[start : start + block]
        distances = np.bitwise_count(rows[:, None] ^ values[None, : start + block])
        left, right = np.nonzero(distances <= radius)
        left += start
        keep = right < left
        pairs.update(zip(right[keep].tolist(), left[keep].tolist(), strict=True))
    return time.perf_counter() - started, pairs


PEER_PACKAGES = [  # installed --no-deps: torch, numpy, scipy, Pillow, PyWavelets, tqdm come from our venv
    "imagededup==0.3.3.post2",
    "scikit-learn==1.9.1",
    "joblib==1.6.0",
    "threadpoolctl==3.8.0",
    "narwhals==2.29.0",
]
PEER_CHECK = ROOT / "bench" / "dedup_imagededup_check.py"
DEFAULT_PEER_VENV = Path(__file__).resolve().parent.parent / ".bench-venvs" / "imagededup"


def installed_imagededup_python(venv: Path) -> Path | None:
    """The peer venv's python if `imagededup_python` installed the current `PEER_PACKAGES` there."""
    python, marker = venv / "bin" / "python", venv / "groundgen-peer-packages.txt"
    if python.exists() and marker.exists() and marker.read_text(encoding="utf-8") == "\n".join(PEER_PACKAGES):
        return python
    return None


def imagededup_python(venv: Path) -> Path:
    """The python of a venv holding imagededup that sees this project's packages through a .pth file.

    imagededup's PyPI dependencies would pull torchvision and a CUDA torch that replaces our CPU build,
    so it lives in its own venv (kept and reused at `venv`), installed without dependencies."""
    installed = installed_imagededup_python(venv)
    if installed is not None:
        return installed
    python = venv / "bin" / "python"
    if venv.is_dir() and any(venv.iterdir()) and not (venv / "pyvenv.cfg").exists():
        raise OSError(f"{venv} exists and is not a venv: pass another --imagededup-venv")
    shutil.rmtree(venv, ignore_errors=True)  # an older or half-installed peer venv
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, capture_output=True, text=True)
    site = subprocess.run(
        [python, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
        check=True,
        capture_output=True,
        text=True,
    ).stdout.strip()
    (Path(site) / "zz_groundgen.pth").write_text(f"{sysconfig.get_paths()['purelib']}\n", encoding="utf-8")
    subprocess.run(
        [python, "-m", "pip", "install", "-q", "--no-deps", *PEER_PACKAGES],
        check=True,
        capture_output=True,
        text=True,
    )
    (venv / "groundgen-peer-packages.txt").write_text("\n".join(PEER_PACKAGES), encoding="utf-8")
    return python


def imagededup_pairs(
    python: Path, values: np.ndarray, radius: int, queries: np.ndarray | None = None
) -> tuple[float, set[tuple[int, int]]]:
    """imagededup's own search on the same hashes as hex strings, in its venv: (its seconds, its pairs).

    Without `queries`, `Hashing().find_duplicates(encoding_map=...)` over all hashes; with them, only
    those keys are queried (through the same `HashEval`) against all hashes. The time is measured around
    imagededup's call inside that process, without start-up and file transfer."""
    with tempfile.TemporaryDirectory(prefix="groundgen-imagededup-") as temp:
        hashes, out = Path(temp) / "hashes.txt", Path(temp) / "pairs.txt"
        hashes.write_text("\n".join(f"{int(value):016x}" for value in values), encoding="ascii")
        command = [str(python), str(PEER_CHECK), str(hashes), str(radius), str(out)]
        if queries is not None:
            (Path(temp) / "queries.txt").write_text("\n".join(str(int(q)) for q in queries), encoding="ascii")
            command += ["--queries", str(Path(temp) / "queries.txt")]
        result = subprocess.run(command, capture_output=True, text=True)
        match = re.search(r"seconds=([\d.]+)", result.stdout)
        if result.returncode != 0 or not match:
            raise RuntimeError(f"imagededup check failed (exit {result.returncode}): {result.stderr[-2000:]}")
        pairs = {
            (int(first), int(second))
            for first, second in (line.split() for line in out.read_text(encoding="ascii").splitlines())
        }
    return float(match.group(1)), pairs


def peer_line(
    python: Path, values: np.ndarray, radius: int, our_seconds: float, our_pairs: set, sample: int
) -> str:
    """imagededup on the same hashes: every query when `sample` covers them, else a sample extrapolated."""
    workers = os.cpu_count()
    if sample >= values.size:
        seconds, pairs = imagededup_pairs(python, values, radius)
        return (
            f"imagededup find_duplicates (brute_force_cython, {workers} workers): {seconds:.2f} s, "
            f"time ratio imagededup/ours {seconds / our_seconds:,.1f}x, same pairs as ours: {pairs == our_pairs}"
        )
    queries = np.random.default_rng(1).choice(values.size, size=sample, replace=False)
    seconds, pairs = imagededup_pairs(python, values, radius, queries)
    estimate = seconds * values.size / sample
    asked = set(queries.tolist())
    ours_for_sample = {pair for pair in our_pairs if pair[0] in asked or pair[1] in asked}
    return (
        f"imagededup HashEval (brute_force_cython, {workers} workers), {sample:,} sampled queries of "
        f"{values.size:,}: {seconds:.2f} s, extrapolated to all {estimate:,.0f} s, time ratio "
        f"imagededup/ours {estimate / our_seconds:,.1f}x, same pairs as ours for the sampled queries: "
        f"{pairs == ours_for_sample}"
    )


def bench_phash(sizes: list[int], peer_venv: Path | None, peer_sample: dict[int, int]) -> None:
    print("perceptual-hash dedup: production index (prefetch + ordered query/add) vs numpy brute force")
    python = None
    if peer_venv is None:
        print("  imagededup peer skipped (--no-imagededup)")
    else:
        started = time.perf_counter()
        try:
            python = imagededup_python(peer_venv)
        except (OSError, subprocess.CalledProcessError) as error:
            detail = getattr(error, "stderr", "") or str(error)
            print(
                f"  imagededup peer venv could not be installed in {peer_venv} ({detail.strip()[-500:]}); "
                "it needs PyPI once, or pass --no-imagededup"
            )
        else:
            print(f"  imagededup peer venv ready in {time.perf_counter() - started:.1f} s: {peer_venv}")
    for count in sizes:
        values = synthetic_hashes(count)
        for radius in (4, 10):
            our_seconds, our_pairs = ours(values, radius)
            brute_seconds, brute_pairs = brute_force(values, radius)
            print(
                f"  n={count:>7,} d={radius:>2}: ours {our_seconds:6.2f} s, brute force {brute_seconds:6.2f} s, "
                f"speed-up {brute_seconds / our_seconds:6.1f}x, pairs {len(our_pairs):,}, "
                f"identical to brute force: {our_pairs == brute_pairs}"
            )
            if python is not None:
                line = peer_line(
                    python, values, radius, our_seconds, our_pairs, peer_sample.get(count, count)
                )
                print(f"           {line}")


# --- prompts --------------------------------------------------------------------------------------

TEMPLATES = [
    "Draw a detailed poster of {a} showing {b} in the background, with the year it was founded written "
    "at the top in large gold letters and a small caption at the bottom naming the city where it stands",
    "Create an infographic about {a} with a timeline of {b}, the exact dates labelled on every milestone, "
    "a portrait of the most important person involved and a short quotation printed beneath it",
    "Paint {a} as seen from {b} on a clear summer morning, with its official name in gold letters, its "
    "height in metres and the names of the architects engraved on a stone plaque in the foreground",
    "Illustrate the life of {a} next to {b} as a comic strip of six panels, each panel with a caption "
    "naming the place and the year, and the final panel showing the most famous achievement",
    "Design a museum placard for {a} featuring {b}, listing three verified facts, one number with its "
    "unit, the date of the first public exhibition and a small map of where it was discovered",
]


def corpus_sentences() -> list[str]:
    from extractors.wiki_offline import load_summaries

    sentences = []
    for article in load_summaries().values():
        text = article.get("extract") or article.get("summary") or ""
        sentences += [s.strip() for s in re.split(r"(?<=[.!?])\s+", str(text)) if len(words(s)) >= 20]
    return sentences


def corpus_titles() -> list[str]:
    from extractors.wiki_offline import load_summaries

    return sorted(load_summaries())


def planted(texts: list[str], count: int, generator: np.random.Generator) -> list[str]:
    """`count` texts with 1-3 word edits each (near duplicates of random earlier texts)."""
    out = []
    for _ in range(count):
        tokens = texts[int(generator.integers(0, len(texts)))].split()
        for position in generator.choice(
            len(tokens), size=min(len(tokens), int(generator.integers(1, 4))), replace=False
        ):
            tokens[position] = f"edit{int(generator.integers(0, 10**6))}"
        out.append(" ".join(tokens))
    return out


def prompt_sets(total: int, seed: int = 0) -> dict[str, list[str]]:
    generator = np.random.default_rng(seed)
    titles = corpus_titles()
    templated = [
        TEMPLATES[int(generator.integers(0, len(TEMPLATES)))].format(
            a=titles[int(generator.integers(0, len(titles)))],
            b=titles[int(generator.integers(0, len(titles)))],
        )
        for _ in range(int(total * 0.9))
    ]
    sentences = corpus_sentences()
    diverse = [
        sentences[int(i)]
        for i in generator.choice(len(sentences), size=min(len(sentences), int(total * 0.9)), replace=False)
    ]
    return {
        "template-heavy": templated + planted(templated, total - len(templated), generator),
        "diverse": diverse + planted(diverse, total - len(diverse), generator),
    }


def exact_pairs(shingles: list[np.ndarray], threshold: float) -> set[tuple[int, int]]:
    """Every pair with Jaccard >= threshold, exactly: prefix filtering (AllPairs) then verification."""
    frequency = Counter(int(token) for tokens in shingles for token in tokens)
    ordered = [sorted((int(t) for t in tokens), key=lambda t: (frequency[t], t)) for tokens in shingles]
    by_token: defaultdict[int, list[int]] = defaultdict(list)
    pairs = set()
    for number in sorted(range(len(ordered)), key=lambda n: len(ordered[n])):
        tokens = ordered[number]
        if not tokens:
            continue
        prefix = len(tokens) - math.ceil(threshold * len(tokens)) + 1
        candidates = {other for token in tokens[:prefix] for other in by_token[token]}
        for other in candidates:
            if jaccard(shingles[number], shingles[other]) >= threshold:
                pairs.add((min(number, other), max(number, other)))
        for token in tokens[:prefix]:
            by_token[token].append(number)
    return pairs


def ours_prompts(texts: list[str], threshold: float) -> tuple[float, set[tuple[int, int]]]:
    started = time.perf_counter()
    index = PromptDedupIndex(threshold)
    pairs = set()
    for number, text in enumerate(texts):
        for other, _ in index.query(text):
            pairs.add((int(other), number))
        index.add(str(number), text)
    return time.perf_counter() - started, pairs


def datasketch_prompts(
    texts: list[str], shingles: list[np.ndarray], threshold: float
) -> tuple[float, set[tuple[int, int]]]:
    from datasketch import MinHash, MinHashLSH

    bands, rows = lsh_bands(threshold, 128)
    started = time.perf_counter()
    lsh = MinHashLSH(num_perm=128, params=(bands, rows))
    pairs = set()
    for number, tokens in enumerate(shingles):
        if tokens.size == 0:
            continue
        minhash = MinHash(num_perm=128)
        minhash.update_batch([int(t).to_bytes(8, "little") for t in tokens])
        for other in lsh.query(minhash):
            if jaccard(tokens, shingles[int(other)]) >= threshold:
                pairs.add((int(other), number))
        lsh.insert(str(number), minhash)
    return time.perf_counter() - started, pairs


def bench_prompts(total: int, threshold: float = 0.8) -> None:
    bands, rows = lsh_bands(threshold, 128)
    print(
        f"prompt near-dup at Jaccard >= {threshold} ({bands} bands x {rows} rows), recall vs exact all-pairs Jaccard"
    )
    for name, texts in prompt_sets(total).items():
        shingles = [shingle_hashes(text, 3) for text in texts]
        truth = exact_pairs(shingles, threshold)
        our_seconds, our_pairs = ours_prompts(texts, threshold)
        line = (
            f"  {name:>14} ({len(texts):,} prompts, {len(truth):,} true pairs): ours recall "
            f"{len(our_pairs & truth) / max(1, len(truth)):.4f} in {our_seconds:.1f} s"
        )
        try:
            peer_seconds, peer_pairs = datasketch_prompts(texts, shingles, threshold)
            line += (
                f"; datasketch recall {len(peer_pairs & truth) / max(1, len(truth)):.4f} in {peer_seconds:.1f} s"
                f"; time ratio ours/datasketch {our_seconds / peer_seconds:.2f}"
            )
        except ImportError:
            line += "; datasketch not installed (pip install -e '.[bench]')"
        assert our_pairs <= truth, "every reported pair is verified exactly"
        print(line)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="10k hashes and 4k prompts only")
    parser.add_argument(
        "--imagededup-venv",
        type=Path,
        default=DEFAULT_PEER_VENV,
        help=f"where the imagededup peer venv is installed and reused (default {DEFAULT_PEER_VENV})",
    )
    parser.add_argument("--no-imagededup", action="store_true", help="skip the imagededup peer")
    parser.add_argument(
        "--imagededup-sample",
        type=int,
        default=1_000,
        help="queries timed for imagededup at 100k (and at 10k with --quick), extrapolated to all",
    )
    args = parser.parse_args()
    sample = {100_000: args.imagededup_sample, 10_000: args.imagededup_sample if args.quick else 10_000}
    peer_venv = None if args.no_imagededup else args.imagededup_venv
    bench_phash([10_000] if args.quick else [10_000, 100_000], peer_venv, sample)
    bench_prompts(4_000 if args.quick else 20_000)


if __name__ == "__main__":
    main()
