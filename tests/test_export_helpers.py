"""A tiny curated warehouse built from schema rows, shared by the export, formats and Hub tests."""

from __future__ import annotations

import io
from pathlib import Path

import pytest
from PIL import Image as PILImage

from schemas.ids import content_id
from schemas.rows import (
    ChosenReference,
    Image,
    Message,
    Prompt,
    ReferenceImage,
    Sample,
    Topic,
    Trajectory,
)
from warehouse.blobs import BlobStore
from warehouse.store import Warehouse

CURATOR = "curator-a"
CATEGORIES = ("astronomy", "biology", "history")


def png_bytes(seed: int, size: int = 8) -> bytes:
    """A tiny, distinct, deterministic PNG."""
    image = PILImage.new("RGB", (size, size))
    image.putdata(
        [((seed * 37 + i) % 256, (seed * 11 + 3 * i) % 256, (seed * 5) % 256) for i in range(size * size)]
    )
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


def add_samples(
    warehouse: Warehouse, blobs: BlobStore, start: int, stop: int, curator: str = CURATOR
) -> None:
    """Insert samples `start`..`stop-1`: even ones SFT, odd ones RL, each with two reference images."""
    for n in range(start, stop):
        category = CATEGORIES[n % len(CATEGORIES)]
        topic = Topic(
            id=f"topic-{n:03d}",
            source="wiki_offline",
            title=f"Topic {n}",
            text=f"Fact number {n}.",
            category=category,
            license="CC BY-SA 4.0",
        )
        prompt = Prompt(
            id=f"prompt-{n:03d}",
            topic_ids=[topic.id],
            category=category,
            difficulty="medium",
            prompt=f"Draw the thing from fact {n}, with its year written on it.",
            writer="writer-a",
        )
        references = []
        images = []
        for k in (1, 2):
            data = png_bytes(n * 10 + k)
            sha = blobs.put(data)
            references.append(
                ReferenceImage(img_id=f"IMG_00{k}", sha256=sha, url=f"http://127.0.0.1/img/{n}/{k}.png")
            )
            images.append(
                Image(
                    id=content_id("reference", sha),
                    kind="reference",
                    sha256=sha,
                    width=8,
                    height=8,
                    format="PNG",
                    phash="0" * 16,
                    source_url=f"http://127.0.0.1/img/{n}/{k}.png",
                )
            )
        trajectory = Trajectory(
            id=f"trajectory-{n:03d}",
            prompt_id=prompt.id,
            teacher="teacher-a",
            messages=[
                Message(role="system", content="You are a search agent. Today is 2026-11-25."),
                Message(role="user", content=prompt.prompt),
                Message(
                    role="assistant",
                    content='<think>search</think><tool_call>{"name": "image_search"}</tool_call>',
                ),
                Message(
                    role="user",
                    content="<tool_response>IMG_001 IMG_002</tool_response>\n<image>\n<image>",
                    image_ids=["IMG_001", "IMG_002"],
                ),
                Message(
                    role="assistant",
                    content=f'<think>done</think><answer>{{"gen_prompt": "fact {n}"}}</answer>',
                ),
            ],
            references=references,
            ending="answer",
            gen_prompt=f"A picture of fact {n} with the year in large letters, like the first reference image.",
            chosen_references=[ChosenReference(img_id="IMG_001")],
        )
        gt_sha = blobs.put(png_bytes(1000 + n, size=16))
        gt_image = Image(
            id=f"gt-{n:03d}",
            kind="ground_truth",
            sha256=gt_sha,
            width=16,
            height=16,
            format="PNG",
            phash="0" * 16,
            trajectory_id=trajectory.id,
            painter="painter-a",
            model="tiny-sd",
        )
        sample = Sample(
            id=f"sample-{n:03d}",
            trajectory_id=trajectory.id,
            prompt_id=prompt.id,
            image_id=gt_image.id,
            category=category,
            status="kept",
            split="sft" if n % 2 == 0 else "rl",
            curator=curator,
        )
        warehouse.insert([topic])
        warehouse.insert([prompt])
        warehouse.insert([trajectory])
        warehouse.insert(images)
        warehouse.insert([gt_image])
        warehouse.insert([sample])


@pytest.fixture
def curated(tmp_path: Path):
    """(warehouse, blobs) with 12 kept samples (6 SFT, 6 RL) of CURATOR and 2 of another curator."""
    blobs = BlobStore(tmp_path / "blobs")
    with Warehouse(tmp_path / "warehouse.duckdb") as warehouse:
        add_samples(warehouse, blobs, 0, 12)
        add_samples(warehouse, blobs, 100, 102, curator="curator-b")
        yield warehouse, blobs
