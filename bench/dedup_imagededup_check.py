"""imagededup's own duplicate search on hashes given as hex strings; run by `bench/dedup.py` in its peer venv.

    python bench/dedup_imagededup_check.py HASHES.txt RADIUS OUT.txt [--queries QUERIES.txt]

HASHES.txt holds one 16-hex-character hash per line; the key of line i is "i". Without --queries this is
`Hashing().find_duplicates(encoding_map=..., max_distance_threshold=RADIUS)` over every hash, exactly as
a user calls it (its default search, `brute_force_cython`, over a pool of `cpu_count()` workers). With
--queries, only the keys listed there (one line number per line) are queried against all the hashes,
through the same `HashEval` that `find_duplicates` builds (it passes the encoding map as both test and
queries), so the time of a sample scales to every query. Prints `seconds=S queries=Q` and writes the pairs found, one
"i j" with i < j per line, to OUT.txt.

The `__init__`s of `imagededup.methods` and `imagededup.utils` import its CNN code, and so torchvision,
whose PyPI build (a CUDA build) does not load beside the CPU torch build. The hashing and search code
do not use it, so this script registers those two as bare packages and imports
`imagededup.methods.hashing` and `imagededup.handlers.search.retrieval` unchanged from the wheel.
"""

from __future__ import annotations

import argparse
import sys
import time
import types
import warnings
from pathlib import Path


def import_hashing() -> tuple[type, type]:
    import imagededup

    for name in ("methods", "utils"):  # their __init__s import the CNN code, and so torchvision
        package = types.ModuleType(f"imagededup.{name}")
        package.__path__ = [str(Path(imagededup.__file__).parent / name)]
        sys.modules[package.__name__] = package
    from imagededup.handlers.search.retrieval import HashEval
    from imagededup.methods.hashing import Hashing

    return Hashing, HashEval


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("hashes", type=Path)
    parser.add_argument("radius", type=int)
    parser.add_argument("out", type=Path)
    parser.add_argument(
        "--queries", type=Path, help="query only these keys (one per line) against all hashes"
    )
    args = parser.parse_args()
    Hashing, HashEval = import_hashing()
    lines = args.hashes.read_text(encoding="ascii").split()
    encodings = {str(number): phash for number, phash in enumerate(lines)}
    hashing = Hashing(verbose=False)
    warnings.simplefilter("ignore")  # find_duplicates warns that num_enc_workers is unused with encodings
    if args.queries:
        queries = {key: encodings[key] for key in args.queries.read_text(encoding="ascii").split()}
        started = time.perf_counter()
        evaluation = HashEval(
            test=encodings,
            queries=queries,
            distance_function=hashing.hamming_distance,
            verbose=False,
            threshold=args.radius,
        )
        seconds = time.perf_counter() - started
        found = evaluation.retrieve_results(scores=False)
    else:
        started = time.perf_counter()
        found = hashing.find_duplicates(encoding_map=encodings, max_distance_threshold=args.radius)
        seconds = time.perf_counter() - started
    pairs = {tuple(sorted((int(key), int(other)))) for key, others in found.items() for other in others}
    args.out.write_text("".join(f"{first} {second}\n" for first, second in sorted(pairs)), encoding="ascii")
    print(f"seconds={seconds:.4f} queries={len(found)}")


if __name__ == "__main__":
    main()
