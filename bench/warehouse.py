"""Warehouse work at scale: pending queries, failure records, inserts and a curation pass over 100k rows.

Builds a synthetic warehouse through the production insert path (about `--rows` rows per stage table:
topics, prompts, trajectories, ground-truth images with distinct tiny PNG blobs, judgements scored as
the judge stage scores them, with their evidence rows, failures of every kind), then times the
production code: each stage's pending query (budget 1 s; `pending_curation` decides readiness and
returns ids, the pass reads each batch's rows with `curation_inputs`), the curation stage
(`flows.curation.curate_pending`, budget 60 s for 100k candidates, row reads included),
`record_failures` and `insert`. Prints seconds, rows/s and seconds / budget (≤ 1.00 meets it).

    python -m bench.warehouse                 # 100k rows per table (a few minutes on 2 cores)
    python -m bench.warehouse --rows 10000    # a quick look
"""

from __future__ import annotations

import argparse
import io
import random
import shutil
import tempfile
import time
from pathlib import Path

from filters.quality_scores import score_judgement
from flows.curation import curate_pending
from flows.workspace import Workspace
from schemas.config import Config
from schemas.errors import RowError
from schemas.rows import Image, Judgement, Message, Prompt, ToolCall, Topic, Trajectory
from warehouse import pending
from warehouse.blobs import BlobStore
from warehouse.store import Warehouse

WORDS = [f"w{number}" for number in range(5000)]
CHUNK = 20_000


def tiny_png(rng: random.Random) -> bytes:
    from PIL import Image as PILImage

    image = PILImage.frombytes("L", (16, 16), bytes(rng.getrandbits(8) for _ in range(256)))
    out = io.BytesIO()
    image.save(out, format="PNG")
    return out.getvalue()


def insert_chunked(warehouse: Warehouse, rows: list) -> float:
    started = time.perf_counter()
    for start in range(0, len(rows), CHUNK):
        warehouse.insert(rows[start : start + CHUNK])
    return time.perf_counter() - started


def build(warehouse: Warehouse, config: Config, rows: int, seed: int = 0) -> dict[str, float]:
    """About `rows` rows per table; returns insert seconds per table."""
    rng = random.Random(seed)
    writer, teacher = config.writer_fingerprint(), config.teacher_fingerprint()
    painter, judge = config.painter_fingerprint(), config.judge_fingerprint()
    blobs = BlobStore(Workspace(config.workdir).create().blobs)
    n_topics, n_prompts, n_images, n_judged = (
        int(rows * 1.1),
        int(rows * 1.05),
        int(rows * 0.95),
        int(rows * 0.9),
    )
    timings = {}
    topics = [
        Topic(id=f"t{i:07d}", source="bench", title=f"topic {i}", text="text", category="science")
        for i in range(n_topics)
    ]
    timings["topics"] = insert_chunked(warehouse, topics)
    prompts = [
        Prompt(
            id=f"p{i:07d}",
            topic_ids=[f"t{i:07d}"],
            category="science",
            difficulty="easy",
            prompt=" ".join(rng.choice(WORDS) for _ in range(24)),
            writer=writer,
        )
        for i in range(n_prompts)
    ]
    timings["prompts"] = insert_chunked(warehouse, prompts)
    trajectories = [
        Trajectory(
            id=f"r{i:07d}",
            prompt_id=f"p{i:07d}",
            teacher=teacher,
            messages=[Message(role="user", content="q"), Message(role="assistant", content="a")],
            tool_calls=[
                ToolCall(round=1, name="search", arguments_json="{}", ok=True),
                ToolCall(round=2, name="image_search", arguments_json="{}", ok=True),
            ],
            ending="answer" if i % 20 else "no_answer",
            gen_prompt=prompts[i].prompt,
        )
        for i in range(rows)
    ]
    timings["trajectories"] = insert_chunked(warehouse, trajectories)
    images = []
    pictures = []
    for i in range(n_images):
        pictures.append(tiny_png(rng))
        sha = blobs.put(pictures[-1])
        images.append(
            Image(
                id=f"i{i:07d}",
                kind="ground_truth",
                sha256=sha,
                width=16,
                height=16,
                format="PNG",
                phash=f"{rng.getrandbits(64):016x}",
                trajectory_id=f"r{i:07d}",
                painter=painter,
            )
        )
    timings["images"] = insert_chunked(warehouse, images)
    # as the judge stage writes them (flows/tasks.py `judge_images`): the verdict with the deterministic
    # scores curation reads (grounding, subject match, image std) and the evidence rows behind them
    judgements, evidence = [], []
    for i in range(n_judged):
        verdict = Judgement(
            id=f"j{i:07d}", image_id=f"i{i:07d}", trajectory_id=f"r{i:07d}", judge=judge, keep=True
        )
        scored, facts = score_judgement(
            verdict, trajectories[i], prompts[i].prompt, [topics[i].title], pictures[i]
        )
        judgements.append(scored)
        evidence += facts
    timings["judgements"] = insert_chunked(warehouse, judgements)
    insert_chunked(warehouse, evidence)
    # failures: the missing images and judgements fail (some for good, some transiently)
    started = time.perf_counter()
    errors: dict[str, list[RowError]] = {"images": [], "judgements": []}
    for i in range(n_images, rows):
        error = RowError(f"r{i:07d}", "PainterError", "x", kind="permanent" if i % 2 else "transient")
        errors["images"] += [error] * config.max_attempts
    for i in range(n_judged, n_images):
        errors["judgements"] += [RowError(f"i{i:07d}", "ModelOutputError", "x", kind="permanent")] * (
            config.max_attempts if i % 2 else 1
        )
    recorded = 0
    for stage, stage_errors in errors.items():
        for start in range(0, len(stage_errors), CHUNK):
            recorded += len(warehouse.record_failures(stage, stage_errors[start : start + CHUNK], "bench"))
    timings["failures"] = time.perf_counter() - started
    timings["failures_rows"] = recorded
    return timings


def timed(call) -> tuple[float, int]:  # type: ignore[no-untyped-def]
    started = time.perf_counter()
    result = call()
    return time.perf_counter() - started, len(result)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--rows", type=int, default=100_000, help="rows per stage table (trajectories)")
    parser.add_argument("--keep", action="store_true", help="keep the work directory")
    args = parser.parse_args()
    root = Path(tempfile.mkdtemp(prefix="groundgen-bench-warehouse-"))
    config = Config(workdir=root)
    writer, teacher = config.writer_fingerprint(), config.teacher_fingerprint()
    painter, judge = config.painter_fingerprint(), config.judge_fingerprint()
    attempts = config.max_attempts
    try:
        with Warehouse(Workspace(root).create().database) as warehouse:
            built = time.perf_counter()
            timings = build(warehouse, config, args.rows)
            print(
                f"synthetic warehouse, {args.rows} trajectories, built in {time.perf_counter() - built:.1f} s"
            )
            print(f"\n{'insert (production path)':<28}{'rows':>9}{'s':>8}{'rows/s':>11}")
            for table in ("topics", "prompts", "trajectories", "images", "judgements"):
                count = warehouse.count(table)
                print(f"{table:<28}{count:>9}{timings[table]:>8.2f}{count / timings[table]:>11.0f}")
            failures = int(timings["failures_rows"])
            print(
                f"{'failures (record_failures)':<28}{failures:>9}{timings['failures']:>8.2f}"
                f"{failures / timings['failures']:>11.0f}"
            )
            queries = {
                "pending_topics": lambda: pending.pending_topics(warehouse, writer, attempts),
                "pending_prompts": lambda: pending.pending_prompts(warehouse, writer, teacher, attempts),
                "pending_paintings": lambda: pending.pending_paintings(
                    warehouse, writer, teacher, painter, attempts
                ),
                "pending_judgements": lambda: pending.pending_judgements(warehouse, painter, judge, attempts),
                "pending_curation": lambda: pending.pending_curation(
                    warehouse, writer, teacher, painter, judge, config.curation_fingerprint(), attempts
                ),
            }
            queries["pending_curation (SQL only)"] = lambda: warehouse.query(
                pending.CURATION_SQL, [teacher, writer, config.curation_fingerprint(), painter, judge]
            )
            print(f"\n{'pending query':<28}{'rows':>9}{'s':>8}{'rows/s':>11}{'s / 1 s budget':>16}")
            for name, query in queries.items():
                seconds, rows = timed(query)
                print(f"{name:<28}{rows:>9}{seconds:>8.2f}{rows / seconds:>11.0f}{seconds / 1.0:>16.3f}")
            started = time.perf_counter()
            counts = curate_pending(warehouse, config, "bench")
            seconds = time.perf_counter() - started
            print(
                f"\ncuration pass (flows.curation.curate_pending): {counts.inputs} candidates, "
                f"{counts.rows_written} samples in {seconds:.1f} s, {counts.inputs / seconds:.0f} candidates/s, "
                f"{seconds / 60:.3f} of the 60 s budget (scaled to 100k: "
                f"{seconds * 100_000 / max(counts.inputs, 1) / 60:.3f})"
            )
            kept = warehouse.count("samples", "status = 'kept'")
            print(f"samples kept {kept}, dropped {warehouse.count('samples') - kept}")
    finally:
        if not args.keep:
            shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
