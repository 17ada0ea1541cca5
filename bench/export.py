"""Benchmark: groundgen's export versus `datasets` (`Dataset.from_generator(...).to_parquet`) on the same rows.

Builds a warehouse of N curated samples with 512x512 images (SFT rows carry two reference images,
RL rows one ground-truth image; 10:6 like the release), then exports it twice, each in a fresh
subprocess so peak RSS is measured per exporter: groundgen's `export_version` and a `datasets`
generator with the same features written with `to_parquet`. Prints rows/s and peak RSS for both and
the ratios. Targets (issue 5): groundgen at least as fast as `datasets`, peak RSS <= 1 GiB.

    python bench/export.py --rows 2000          # a couple of minutes on 2 cores
    python bench/export.py                      # 16,000 rows (about 1.5 GB of images on disk)
    python bench/export.py --workdir W --reuse --only groundgen   # re-measure one exporter
"""

from __future__ import annotations

import argparse
import functools
import io
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

CURATOR = "bench-curator"
SIDE = 512


@functools.cache
def _pixels():
    import numpy as np

    y, x = np.mgrid[0:SIDE, 0:SIDE]
    base = np.stack([x % 256, (y * 2) % 256, (x + y) % 256], axis=-1).astype("uint8")
    noise = np.random.default_rng(0).integers(0, 24, size=(SIDE, SIDE, 3), dtype="uint8")
    return base, noise


def _image(seed: int) -> bytes:
    """A distinct 512x512 JPEG per seed (shifted gradient plus shifted noise)."""
    import numpy as np
    from PIL import Image

    base, noise = _pixels()
    pixels = np.roll(base, seed % SIDE, axis=1) + np.roll(noise, seed // SIDE, axis=0)
    pixels[0, :8] = np.frombuffer(seed.to_bytes(24, "little"), dtype="uint8").reshape(8, 3)
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="JPEG", quality=90)
    return buffer.getvalue()


def build(workdir: Path, rows: int) -> None:
    from schemas.rows import ChosenReference, Image, Message, Prompt, ReferenceImage, Sample, Trajectory
    from warehouse.blobs import BlobStore
    from warehouse.store import Warehouse

    blobs = BlobStore(workdir / "blobs")
    prompts, trajectories, images, samples = [], [], [], []
    for n in range(rows):
        sft = n % 16 < 10
        prompt = Prompt(
            id=f"p{n:06d}",
            topic_ids=[],
            category="history",
            difficulty="medium",
            prompt=f"Draw landmark {n} with its opening year and height written on a plaque.",
            writer="w",
        )
        refs = []
        if sft:
            for k in (1, 2):
                sha = blobs.put(_image(n * 3 + k))
                refs.append(
                    ReferenceImage(img_id=f"IMG_00{k}", sha256=sha, url=f"http://127.0.0.1/{n}/{k}.jpg")
                )
        messages = [
            Message(
                role="system", content="You are a search agent with tools search, image_search, browse. " * 20
            ),
            Message(role="user", content=prompt.prompt),
            Message(
                role="assistant", content='<think>look it up</think><tool_call>{"name": "search"}</tool_call>'
            ),
            Message(
                role="user",
                content="<tool_response>" + "[a result](http://x) snippet " * 40 + "</tool_response>",
            ),
            Message(
                role="assistant",
                content='<think>images</think><tool_call>{"name": "image_search"}</tool_call>',
            ),
            Message(
                role="user",
                content="<tool_response>IMG_001 IMG_002</tool_response>\n<image>\n<image>" if sft else "none",
                image_ids=["IMG_001", "IMG_002"] if sft else [],
            ),
            Message(role="assistant", content='<answer>{"gen_prompt": "..."}</answer>'),
        ]
        trajectories.append(
            Trajectory(
                id=f"t{n:06d}",
                prompt_id=prompt.id,
                teacher="t",
                messages=messages,
                references=refs,
                ending="answer",
                gen_prompt=f"Landmark {n} at dusk, plaque reading its year, like the first reference image.",
                chosen_references=[ChosenReference(img_id="IMG_001")] if sft else [],
            )
        )
        image_id = ""
        if not sft:
            sha = blobs.put(_image(10_000_000 + n))
            image_id = f"gt{n:06d}"
            images.append(
                Image(
                    id=image_id,
                    kind="ground_truth",
                    sha256=sha,
                    width=SIDE,
                    height=SIDE,
                    format="JPEG",
                    phash="0" * 16,
                    trajectory_id=f"t{n:06d}",
                )
            )
        prompts.append(prompt)
        samples.append(
            Sample(
                id=f"s{n:06d}",
                trajectory_id=f"t{n:06d}",
                prompt_id=prompt.id,
                image_id=image_id,
                category="history",
                status="kept",
                split="sft" if sft else "rl",
                curator=CURATOR,
            )
        )
    with Warehouse(workdir / "warehouse.duckdb") as warehouse:
        for batch in (prompts, trajectories, images, samples):
            for start in range(0, len(batch), 1000):
                warehouse.insert(batch[start : start + 1000])


def run_groundgen(workdir: Path) -> dict:
    import shutil

    from schemas.config import Config
    from warehouse.blobs import BlobStore
    from warehouse.export import export_version
    from warehouse.store import Warehouse

    shutil.rmtree(workdir / "exports", ignore_errors=True)  # every rep writes a fresh version folder
    with Warehouse(workdir / "warehouse.duckdb") as warehouse:
        start = time.perf_counter()
        version = export_version(
            warehouse,
            BlobStore(workdir / "blobs"),
            workdir / "exports",
            Config(),
            curator=CURATOR,
            code_version="bench",
        )
        elapsed = time.perf_counter() - start
        warehouse.connection.execute("DELETE FROM versions").fetchall()
    return {"rows": version.sft_rows + version.rl_rows, "seconds": elapsed}


def generate_rows(database: str, blob_root: str, config: str):
    """The `datasets` generator: the same rows groundgen exports, from the same query and blob store."""
    from warehouse.blobs import BlobStore
    from warehouse.parquet_shards import RL, SFT, query_rows
    from warehouse.store import Warehouse

    spec = SFT if config == "sft" else RL
    blobs = BlobStore(blob_root)
    with Warehouse(database, read_only=True) as warehouse:
        for row in query_rows(warehouse.connection, spec.query, [CURATOR], 100):
            yield spec.to_record(row, blobs)


def run_datasets(workdir: Path) -> dict:
    import shutil

    import datasets

    from warehouse.parquet_shards import RL, SFT

    shutil.rmtree(workdir / "hf-cache", ignore_errors=True)  # no rep reuses the peer's Arrow cache
    rows = 0
    start = time.perf_counter()
    for spec in (SFT, RL):
        dataset = datasets.Dataset.from_generator(
            generate_rows,
            features=datasets.Features.from_dict(spec.features),
            cache_dir=str(workdir / "hf-cache"),
            gen_kwargs={
                "database": str(workdir / "warehouse.duckdb"),
                "blob_root": str(workdir / "blobs"),
                "config": spec.name,
            },
        )
        dataset.to_parquet(str(workdir / f"datasets-{spec.name}.parquet"))
        rows += dataset.num_rows
    return {"rows": rows, "seconds": time.perf_counter() - start}


def _rss_anon_kib() -> int:
    """Anonymous resident memory of this process (heap, not memory-mapped files), from /proc."""
    try:
        with open("/proc/self/status", encoding="ascii") as status:
            for line in status:
                if line.startswith("RssAnon:"):
                    return int(line.split()[1])
    except OSError:
        pass
    return 0


def child(role: str, workdir: Path) -> None:
    import threading

    peak_anon = [_rss_anon_kib()]
    done = threading.Event()

    def sample() -> None:
        while not done.wait(0.02):
            peak_anon[0] = max(peak_anon[0], _rss_anon_kib())

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    result = run_groundgen(workdir) if role == "groundgen" else run_datasets(workdir)
    done.set()
    sampler.join()
    result["peak_rss_mib"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    result["peak_anon_mib"] = max(peak_anon[0], _rss_anon_kib()) / 1024
    print(json.dumps(result))


def measure(role: str, workdir: Path) -> dict:
    output = subprocess.run(
        [sys.executable, __file__, "--child", role, "--workdir", str(workdir)],
        check=True,
        capture_output=True,
        text=True,
        env={**os.environ, "HF_DATASETS_DISABLE_PROGRESS_BARS": "1", "HF_HUB_OFFLINE": "1"},
    ).stdout
    return json.loads(output.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--rows", type=int, default=16_000, help="curated samples to export (default 16000)")
    parser.add_argument("--workdir", type=Path, default=None, help="where to build (default: a temp dir)")
    parser.add_argument(
        "--only", choices=["groundgen", "datasets"], help="measure one exporter (default: both)"
    )
    parser.add_argument(
        "--reuse", action="store_true", help="export the warehouse already in --workdir (no build)"
    )
    parser.add_argument("--reps", type=int, default=3, help="reps per exporter, in alternating order")
    parser.add_argument("--child", choices=["groundgen", "datasets"], help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(args.child, args.workdir)
        return
    workdir = args.workdir or Path(tempfile.mkdtemp(prefix="groundgen-bench-export-"))
    if not (args.reuse and (workdir / "warehouse.duckdb").exists()):
        start = time.perf_counter()
        build(workdir, args.rows)
        print(
            f"built {args.rows} samples with {SIDE}x{SIDE} images in {time.perf_counter() - start:.1f}s ({workdir})"
        )
    roles = [args.only] if args.only else ["groundgen", "datasets"]
    runs: dict[str, list[dict]] = {role: [] for role in roles}
    for rep in range(args.reps):
        for role in roles if rep % 2 == 0 else list(reversed(roles)):
            runs[role].append(measure(role, workdir))
    results = {role: _summary(reps) for role, reps in runs.items()}
    for role, result in results.items():
        rate = result["rows"] / result["seconds"]
        print(
            f"{role:>9}: {result['rows']} rows, median {result['seconds']:.1f}s of {args.reps} reps = {rate:,.0f} rows/s, "
            f"peak RSS {result['peak_rss_mib']:,.0f} MiB, peak anonymous RSS {result['peak_anon_mib']:,.0f} MiB"
        )
    if "groundgen" in results:
        peak = results["groundgen"]["peak_rss_mib"]
        print(f"groundgen peak RSS / 1 GiB target: {peak / 1024:.2f} (target <= 1.0)")
    if len(results) < 2:
        return
    ours, theirs = results["groundgen"], results["datasets"]
    speed = (ours["rows"] / ours["seconds"]) / (theirs["rows"] / theirs["seconds"])
    print(f"speed ratio groundgen/datasets: {speed:.2f} (target >= 1.0)")
    print(f"peak RSS ratio groundgen/datasets: {ours['peak_rss_mib'] / theirs['peak_rss_mib']:.2f}")
    print(
        f"peak anonymous RSS ratio groundgen/datasets: {ours['peak_anon_mib'] / theirs['peak_anon_mib']:.2f}"
    )


def _summary(reps: list[dict]) -> dict:
    """Median seconds; the highest memory peaks of the reps."""
    import statistics

    return {
        "rows": reps[0]["rows"],
        "seconds": statistics.median(r["seconds"] for r in reps),
        "peak_rss_mib": max(r["peak_rss_mib"] for r in reps),
        "peak_anon_mib": max(r["peak_anon_mib"] for r in reps),
    }


if __name__ == "__main__":
    main()
