"""A synthetic warehouse for the report's tests and bench/report.py: every table the report reads,
hostile strings in model output, failures in every state, two versions, real PNG blobs."""

from __future__ import annotations

import io
import json
import random
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

from schemas.ids import sha256_bytes
from schemas.rows import (
    ChosenReference,
    Failure,
    Image,
    Judgement,
    Message,
    Prompt,
    ReferenceImage,
    Run,
    Sample,
    Topic,
    Trajectory,
    Version,
)
from warehouse.blobs import BlobStore
from warehouse.manifest import build_manifest, dumps_manifest
from warehouse.store import Warehouse

CURATOR = "curator-report"
CATEGORIES = ("astronomy", "history", "biology", "film", "geography")
DROP_REASONS = ("phash_duplicate", "rule_no_search", "judge_low_score", "split_quota_full")
HOSTILE_PROMPT = '<script>window.__xss = 1</script><img src=x onerror="window.__xss = 2"> draw $E=mc^2$'
HOSTILE_CATEGORY = "</script><b>art$x$</b>"
HOSTILE_TITLE = '"><svg onload="window.__xss = 3">'
STARTED = datetime(2026, 11, 1, 12, 0, tzinfo=UTC)


@dataclass
class SyntheticWarehouse:
    workdir: Path
    database: Path
    blobs: Path
    samples: int
    missing_sha: str = ""  # a ground-truth blob deleted from the store (when asked)


def png(side: int, rng: random.Random) -> bytes:
    """A small PNG that differs per call: a colour gradient with a random tint and noise."""
    import numpy as np
    from PIL import Image as PILImage

    tint = np.array([rng.randrange(256), rng.randrange(256), rng.randrange(256)], dtype=np.int32)
    ramp = np.arange(side, dtype=np.int32) * 255 // max(1, side - 1)
    pixels = np.empty((side, side, 3), dtype=np.int32)
    pixels[..., 0] = ramp[None, :]
    pixels[..., 1] = ramp[:, None]
    pixels[..., 2] = (ramp[None, :] + ramp[:, None]) // 2
    noise = np.random.default_rng(rng.randrange(1 << 30)).integers(0, 24, (side, side, 3))
    image = PILImage.fromarray(((pixels + tint + noise) % 256).astype(np.uint8), "RGB")
    buffer = io.BytesIO()
    image.save(buffer, format="PNG", compress_level=1)
    return buffer.getvalue()


def put_blob(blobs: BlobStore, data: bytes) -> str:
    """Like BlobStore.put without the fsync (thousands of synthetic blobs)."""
    digest = sha256_bytes(data)
    target = blobs.path(digest)
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_bytes(data)
    return digest


def messages_for(prompt: str, titles: list[str], gen_prompt: str) -> list[Message]:
    return [
        Message(role="system", content="You are a research assistant. Use <think>...</think> then a tool."),
        Message(role="user", content=prompt),
        Message(
            role="assistant",
            content='<think>I need facts.</think>\n<tool_call>{"name": "search", "arguments": '
            '{"queries": ["facts"]}}</tool_call>',
        ),
        Message(
            role="user", content="<tool_response>\n[Result](http://127.0.0.1/page) snippet\n</tool_response>"
        ),
        Message(
            role="assistant",
            content='<think>Now images.</think>\n<tool_call>{"name": "image_search", "arguments": '
            '{"query": "x"}}</tool_call>',
        ),
        Message(
            role="user",
            content="<tool_response>\n"
            + "\n".join(f"IMG_{i + 1:03d}: {t}" for i, t in enumerate(titles))
            + "\n</tool_response>",
            image_ids=[f"IMG_{i + 1:03d}" for i in range(len(titles))],
        ),
        Message(
            role="assistant",
            content="<think>Done.</think>\n<answer>"
            + json.dumps(
                {"gen_prompt": gen_prompt, "reference_images": [{"img_id": "IMG_001", "note": "main"}]}
            )
            + "</answer>",
        ),
    ]


def build(
    workdir: Path,
    samples: int,
    *,
    image_side: int = 48,
    references: int = 12,
    missing_blob: bool = False,
    seed: int = 0,
) -> SyntheticWarehouse:
    """`samples` samples (about 70 % kept, split 5:3, the rest dropped with reasons), one of them
    hostile, failures in every state, runs with model usage, versions v1 and v2."""
    rng = random.Random(seed)
    workdir.mkdir(parents=True, exist_ok=True)
    blobs = BlobStore(workdir / "blobs")
    ref_pool = []
    for number in range(references):
        sha = put_blob(blobs, png(image_side, rng))
        title = HOSTILE_TITLE if number == 1 else f"Reference photo {number}"
        ref_pool.append((sha, title))

    topics, prompts, trajectories, images, judgements, rows = [], [], [], [], [], []
    missing_sha = ""
    for n in range(samples):
        hostile = n == 3
        category = HOSTILE_CATEGORY if hostile else CATEGORIES[n % len(CATEGORIES)]
        prompt_text = (
            HOSTILE_PROMPT if hostile else f"Draw a labelled poster of subject {n} " + "with facts " * (n % 7)
        )
        gen_prompt = f"A poster of subject {n}, faithful to the first reference image."
        if hostile:
            gen_prompt = "</script><script>window.__xss = 4</script> gen"
        refs = [ref_pool[(n + k) % len(ref_pool)] for k in range(2)]
        reference_rows = [
            ReferenceImage(
                img_id=f"IMG_{k + 1:03d}", sha256=sha, url=f"http://127.0.0.1/img/{k}", title=title
            )
            for k, (sha, title) in enumerate(refs)
        ]
        topics.append(
            Topic(
                id=f"topic-{n:05d}", source="wiki_offline", title=f"Subject {n}", text="t", category=category
            )
        )
        prompts.append(
            Prompt(
                id=f"prompt-{n:05d}",
                topic_ids=[f"topic-{n:05d}"],
                category=category,
                difficulty=("easy", "medium", "hard")[n % 3],
                prompt=prompt_text,
                writer="writer-1",
            )
        )
        trajectories.append(
            Trajectory(
                id=f"traj-{n:05d}",
                prompt_id=f"prompt-{n:05d}",
                teacher="teacher-1",
                messages=messages_for(prompt_text, [title for _, title in refs], gen_prompt),
                references=reference_rows,
                ending="answer",
                gen_prompt=gen_prompt,
                chosen_references=[ChosenReference(img_id="IMG_001", note="main <b>subject</b>")]
                + ([ChosenReference(img_id="IMG_002")] if n % 2 else []),
            )
        )
        dropped_early = n % 10 == 9  # dropped before painting: no ground-truth image
        image_id = ""
        if not dropped_early:
            sha = put_blob(blobs, png(image_side, rng))
            if missing_blob and n == 0:
                missing_sha = sha
            image_id = f"image-{n:05d}"
            images.append(
                Image(
                    id=image_id,
                    kind="ground_truth",
                    sha256=sha,
                    width=image_side,
                    height=image_side,
                    format="PNG",
                    phash="0" * 16,
                    trajectory_id=f"traj-{n:05d}",
                    painter="painter-1",
                )
            )
            judgements.append(
                Judgement(
                    id=f"judge-{n:05d}",
                    image_id=image_id,
                    trajectory_id=f"traj-{n:05d}",
                    judge="judge-1",
                    overall=1.0,
                    keep=True,
                )
            )
        kept = n % 10 < 7
        rows.append(
            Sample(
                id=f"sample-{n:05d}",
                trajectory_id=f"traj-{n:05d}",
                prompt_id=f"prompt-{n:05d}",
                image_id=image_id,
                category=category,
                status="kept" if kept else "dropped",
                reason="" if kept else ("rule_<i>odd</i>" if n == 8 else DROP_REASONS[n % len(DROP_REASONS)]),
                split=("sft" if n % 8 < 5 else "rl") if kept else "",
                curator=CURATOR,
            )
        )
    if missing_sha:
        blobs.path(missing_sha).unlink()

    database = workdir / "warehouse.duckdb"
    with Warehouse(database) as warehouse:
        for batch in (topics, prompts, trajectories, images, judgements, rows):
            warehouse.insert(batch)
        warehouse.insert(
            [
                Image(
                    id=f"ref-{k}",
                    kind="reference",
                    sha256=sha,
                    width=image_side,
                    height=image_side,
                    format="PNG",
                    phash="0" * 16,
                    source_url=f"http://127.0.0.1/img/{k}",
                )
                for k, (sha, _title) in enumerate(ref_pool)
            ]
        )
        add_failures(warehouse, samples)
        add_runs(warehouse, samples)
        add_versions(warehouse, [row.id for row in rows if row.status == "kept"], rows)
    return SyntheticWarehouse(workdir, database, blobs.root, samples, missing_sha)


def add_failures(warehouse: Warehouse, samples: int) -> None:
    """Trajectories: prompt-gone failed 3 times (given up); images: traj-00001 failed once and has
    its image now (recovered); judgements: an image id with no judgement failed once (waiting)."""
    rows = [
        Failure(
            id=f"f-t-{a}",
            stage="trajectories",
            row_id="prompt-gone",
            error_class="ModelOutputError",
            message="not JSON: <b>teacher</b> wrote prose",
            attempt=a,
            run_id="run-1",
        )
        for a in (1, 2, 3)
    ]
    if samples > 1:
        rows.append(
            Failure(
                id="f-i-1",
                stage="images",
                row_id="traj-00001",
                error_class="PainterError",
                message="CUDA out of memory",
                attempt=1,
                run_id="run-2",
            )
        )
    rows.append(
        Failure(
            id="f-j-1",
            stage="judgements",
            row_id="image-lost",
            error_class="ModelOutputError",
            message="not JSON",
            attempt=1,
            run_id="run-2",
        )
    )
    warehouse.insert(rows)


def add_runs(warehouse: Warehouse, samples: int) -> None:
    def counts(scale: float) -> str:
        return json.dumps(
            {
                "prompts": {
                    "inputs": samples,
                    "rows_written": samples,
                    "failures": 0,
                    "batches": 1,
                    "usage": {
                        "writer": {
                            "calls": samples,
                            "prompt_tokens": 100 * samples,
                            "completion_tokens": 50 * samples,
                            "cost_usd": 0.001 * samples * scale,
                        }
                    },
                    "tables": {"prompts": samples},
                    "seconds": 2.0 * scale,
                },
                "trajectories": {
                    "inputs": samples,
                    "rows_written": samples,
                    "failures": 3,
                    "batches": 2,
                    "usage": {
                        "teacher": {
                            "calls": 4 * samples,
                            "prompt_tokens": 900 * samples,
                            "completion_tokens": 200 * samples,
                            "cost_usd": 0.01 * samples * scale,
                        }
                    },
                    "tables": {"trajectories": samples, "images": samples},
                    "seconds": 8.0 * scale,
                },
                "images": {
                    "inputs": samples,
                    "rows_written": samples,
                    "failures": 1,
                    "batches": 1,
                    "usage": {},
                    "tables": {"images": samples},
                    "seconds": 4.0 * scale,
                },
            }
        )

    warehouse.insert(
        [
            Run(
                id="run-1",
                started_at=STARTED,
                finished_at=STARTED + timedelta(seconds=14),
                status="completed",
                command="run",
                config_fingerprint="c",
                code_version="0.1.0",
                counts_json=counts(1.0),
            ),
            Run(
                id="run-2",
                started_at=STARTED + timedelta(hours=1),
                finished_at=STARTED + timedelta(hours=1, seconds=7),
                status="completed",
                command="refresh",
                config_fingerprint="c",
                code_version="0.1.0",
                counts_json=counts(0.5),
            ),
        ]
    )


def add_versions(warehouse: Warehouse, kept_ids: list[str], samples: list[Sample]) -> None:
    split = {row.id: row.split for row in samples}
    first = kept_ids[: max(0, len(kept_ids) - 3)]
    second = kept_ids[1:]
    versions = []
    parent_ids: dict[str, list[str]] = {"sft": [], "rl": []}
    for number, (name, ids) in enumerate((("v1", first), ("v2", second))):
        by_config = {config: [i for i in ids if split[i] == config] for config in ("sft", "rl")}
        manifest = build_manifest(
            version=name,
            parent="v1" if name == "v2" else "",
            curator=CURATOR,
            config_fingerprint="c",
            code_version="0.1.0",
            ids=by_config,
            parent_ids=parent_ids,
            files=[],
        )
        versions.append(
            Version(
                id=name,
                parent="v1" if name == "v2" else "",
                created_at=STARTED + timedelta(minutes=30 + 60 * number),
                sft_rows=len(by_config["sft"]),
                rl_rows=len(by_config["rl"]),
                config_fingerprint="c",
                code_version="0.1.0",
                path=f"exports/{name}",
                manifest_json=dumps_manifest(manifest),
            )
        )
        parent_ids = by_config
    warehouse.insert(versions)
