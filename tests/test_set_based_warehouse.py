"""Set-based warehouse work: inserts count only new rows, a batch of failures is recorded with the
attempts one-by-one recording gave, and pending_curation decides readiness in SQL with the failure
kinds' rules (transient failures and re-queued ones do not use up attempts)."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from schemas.errors import RowError
from schemas.rows import Failure, Image, Judgement, Message, Prompt, Topic, Trajectory
from warehouse import pending
from warehouse.store import Warehouse


@pytest.fixture()
def warehouse(tmp_path):
    with Warehouse(tmp_path / "warehouse.duckdb") as store:
        yield store


def topic(i: int) -> Topic:
    return Topic(id=f"t{i}", source="test", title=f"T{i}", text="x", category="general")


def test_insert_returns_only_the_new_rows(warehouse):
    assert warehouse.insert([topic(0), topic(1)]) == 2
    assert warehouse.insert([topic(1), topic(2), topic(3)]) == 2
    assert warehouse.insert([topic(3)]) == 0
    assert warehouse.count("topics") == 4


def test_a_batch_of_failures_gets_the_attempts_of_one_by_one_recording(warehouse):
    warehouse.record_failures("images", [RowError("a", "PainterError", "x")], "run1")
    recorded = warehouse.record_failures(
        "images",
        [
            RowError("a", "PainterError", "y"),
            RowError("b", "PainterError", "z"),
            RowError("a", "PainterError", "w"),
        ],
        "run2",
    )
    assert [(f.row_id, f.attempt) for f in recorded] == [("a", 2), ("b", 1), ("a", 3)]
    stored = warehouse.rows(Failure, "stage = 'images'", order_by="row_id, attempt")
    assert [(f.row_id, f.attempt, f.message) for f in stored] == [
        ("a", 1, "x"),
        ("a", 2, "y"),
        ("a", 3, "w"),
        ("b", 1, "z"),
    ]
    assert warehouse.record_failures("images", [], "run3") == []


def build(warehouse: Warehouse) -> None:
    """r0: answered, painted, judged; r1: not answered; r2: painter failed 3 times for good;
    r3: painter failed transiently 5 times; r4: 3 painter failures, one re-queued; r5: painted, judge
    failed 3 times; r6: painted, two images (the greatest id wins), not judged yet."""
    warehouse.insert([topic(i) for i in range(7)])
    warehouse.insert(
        [
            Prompt(
                id=f"p{i}", topic_ids=[f"t{i}"], category="general", difficulty="easy", prompt="x", writer="w"
            )
            for i in range(7)
        ]
    )
    warehouse.insert(
        [
            Trajectory(
                id=f"r{i}",
                prompt_id=f"p{i}",
                teacher="t",
                messages=[Message(role="user", content="q")],
                ending="no_answer" if i == 1 else "answer",
            )
            for i in range(7)
        ]
    )

    def image(image_id: str, trajectory: str) -> Image:
        return Image(
            id=image_id,
            kind="ground_truth",
            sha256="0" * 64,
            width=8,
            height=8,
            format="PNG",
            phash="0" * 16,
            trajectory_id=trajectory,
            painter="p",
        )

    warehouse.insert([image("i0", "r0"), image("i5", "r5"), image("i6a", "r6"), image("i6b", "r6")])
    warehouse.insert([Judgement(id="j0", image_id="i0", trajectory_id="r0", judge="j", keep=True)])
    warehouse.record_failures("images", [RowError("r2", "PainterError", "x")] * 3, "run")
    warehouse.record_failures("images", [RowError("r3", "PainterError", "x", kind="transient")] * 5, "run")
    warehouse.record_failures("images", [RowError("r4", "PainterError", "x")] * 3, "run")
    warehouse.connection.execute(
        "UPDATE failures SET requeued_at = ? WHERE row_id = 'r4' AND attempt = 1", [datetime.now(UTC)]
    )
    warehouse.record_failures("judgements", [RowError("i5", "ModelOutputError", "x")] * 3, "run")


def test_pending_curation_keeps_the_failure_kind_rules(warehouse):
    build(warehouse)
    ready = pending.pending_curation(warehouse, "w", "t", "p", "j", "c", max_attempts=3)
    summary = [
        (
            item.trajectory.id,
            item.prompt.id,
            item.image.id if item.image else None,
            item.judgement.id if item.judgement else None,
            item.missing,
        )
        for item in pending.curation_inputs(warehouse, ready)
    ]
    assert [(t.trajectory_id, t.prompt_id, t.image_id, t.judgement_id, t.missing) for t in ready] == summary
    assert summary == [
        ("r0", "p0", "i0", "j0", ""),
        ("r1", "p1", None, None, ""),
        ("r2", "p2", None, None, "painter_failed"),
        ("r5", "p5", "i5", None, "judge_failed"),
    ]
    # r3 (transient only) and r4 (one of three re-queued) wait; r6 waits for the judgement of i6b
    assert pending.pending_curation(warehouse, "w", "t", "p", "j", "c", max_attempts=2)[2].missing == (
        "painter_failed"
    )
    assert {
        item.trajectory_id for item in pending.pending_curation(warehouse, "w", "t", "p", "j", "c", 2)
    } == {
        "r0",
        "r1",
        "r2",
        "r4",
        "r5",
    }
    warehouse.insert([Judgement(id="j6", image_id="i6b", trajectory_id="r6", judge="j", keep=True)])
    r6 = [
        item
        for item in pending.curation_inputs(
            warehouse, pending.pending_curation(warehouse, "w", "t", "p", "j", "c", 3)
        )
        if item.trajectory.id == "r6"
    ]
    assert r6 and r6[0].image is not None and r6[0].image.id == "i6b"
