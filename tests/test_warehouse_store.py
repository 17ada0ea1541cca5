from datetime import UTC, datetime

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from schemas.errors import RowError
from schemas.rows import (
    ChosenReference,
    Image,
    Message,
    Prompt,
    ReferenceImage,
    Sample,
    ToolCall,
    Topic,
    Trajectory,
)
from warehouse.blobs import BlobStore
from warehouse.pending import (
    curation_inputs,
    pending_curation,
    pending_paintings,
    pending_prompts,
    pending_topics,
)
from warehouse.store import Warehouse

text = st.text(st.characters(blacklist_categories=("Cs",)), max_size=40)


@pytest.fixture
def warehouse(tmp_path):
    with Warehouse(tmp_path / "w.duckdb") as store:
        yield store


def make_topic(topic_id="t1"):
    return Topic(id=topic_id, source="test", title="Title " + topic_id, text="Some text.", category="art")


def make_prompt(prompt_id="p1", topic_id="t1", writer="W"):
    return Prompt(
        id=prompt_id,
        topic_ids=[topic_id],
        category="art",
        difficulty="easy",
        prompt="Draw it.",
        writer=writer,
    )


def make_trajectory(trajectory_id="r1", prompt_id="p1", teacher="T", ending="answer"):
    return Trajectory(
        id=trajectory_id,
        prompt_id=prompt_id,
        teacher=teacher,
        messages=[
            Message(role="system", content="sys"),
            Message(role="user", content="task"),
            Message(role="user", content="<tool_response><image></tool_response>", image_ids=["IMG_001"]),
        ],
        tool_calls=[ToolCall(round=1, name="search", arguments_json='{"queries": ["q"]}', ok=True)],
        references=[ReferenceImage(img_id="IMG_001", sha256="a" * 64, url="http://x/y.png")],
        ending=ending,
        gen_prompt="A picture.",
        chosen_references=[ChosenReference(img_id="IMG_001", note="the subject")],
    )


@settings(max_examples=40, deadline=None)
@given(title=text, body=text, linked=st.lists(text, max_size=3), description=text)
def test_topic_round_trips_through_duckdb_unchanged(tmp_path_factory, title, body, linked, description):
    topic = Topic(
        id="x",
        source="s",
        title=title,
        text=body,
        description=description,
        category="art",
        linked_titles=linked,
        updated_at=datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC),
    )
    with Warehouse(tmp_path_factory.mktemp("w") / "w.duckdb") as store:
        store.insert([topic])
        assert store.rows(Topic) == [topic]


def test_nested_trajectory_round_trips(warehouse):
    trajectory = make_trajectory()
    warehouse.insert([trajectory])
    assert warehouse.rows(Trajectory) == [trajectory]


def test_insert_is_insert_if_absent(warehouse):
    assert warehouse.insert([make_topic(), make_topic()]) == 1
    changed = make_topic().model_copy(update={"text": "other"})
    assert warehouse.insert([changed]) == 0
    assert warehouse.rows(Topic)[0].text == "Some text."


def test_failures_count_attempts_and_exhaust_pending(warehouse):
    warehouse.insert([make_topic("t1"), make_topic("t2")])
    assert [t.id for t in pending_topics(warehouse, "W", max_attempts=2)] == ["t1", "t2"]
    for _ in range(2):
        warehouse.record_failures("prompts", [RowError("t1", "ModelOutputError", "not JSON")], "run")
    attempts = warehouse.query("select attempt from failures order by attempt").column("attempt").to_pylist()
    assert attempts == [1, 2]
    assert [t.id for t in pending_topics(warehouse, "W", max_attempts=2)] == ["t2"]
    assert [t.id for t in pending_topics(warehouse, "W", max_attempts=3)] == ["t1", "t2"]


def test_pending_queries_are_anti_joins_per_fingerprint(warehouse):
    warehouse.insert([make_topic()])
    warehouse.insert([make_prompt()])
    assert pending_topics(warehouse, "W", 3) == []
    assert [t.id for t in pending_topics(warehouse, "OTHER-WRITER", 3)] == ["t1"]
    assert [p.id for p in pending_prompts(warehouse, "W", "T", 3)] == ["p1"]
    warehouse.insert([make_trajectory()])
    assert pending_prompts(warehouse, "W", "T", 3) == []
    assert [t.id for t in pending_paintings(warehouse, "W", "T", "P", 3)] == ["r1"]
    warehouse.insert(
        [make_trajectory("r2", ending="no_answer").model_copy(update={"prompt_id": "p1", "teacher": "T2"})]
    )
    assert [t.id for t in pending_paintings(warehouse, "W", "T2", "P", 3)] == []
    # a non-answer ending is ready for curation at once; an answer waits for its image and judgement
    ready = pending_curation(warehouse, "W", "T2", "P", "J", "C", 3)
    assert [(item.trajectory_id, item.image_id) for item in ready] == [("r2", None)]
    assert [(item.trajectory.id, item.image) for item in curation_inputs(warehouse, ready)] == [("r2", None)]
    assert pending_curation(warehouse, "W", "T", "P", "J", "C", 3) == []
    warehouse.record_failures("images", [RowError("r1", "PainterError", "boom")] * 1, "run")
    assert pending_curation(warehouse, "W", "T", "P", "J", "C", 1)[0].missing == "painter_failed"


def test_views_resolve_image_placeholders_to_blobs(warehouse):
    warehouse.insert([make_topic()])
    warehouse.insert([make_prompt()])
    warehouse.insert([make_trajectory()])
    warehouse.insert(
        [
            Image(
                id="g1",
                kind="ground_truth",
                sha256="b" * 64,
                width=8,
                height=8,
                format="PNG",
                phash="0" * 16,
                trajectory_id="r1",
                painter="P",
            )
        ]
    )
    warehouse.insert(
        [
            Sample(
                id="s1",
                trajectory_id="r1",
                prompt_id="p1",
                image_id="g1",
                category="art",
                status="kept",
                split="sft",
                curator="C",
            )
        ]
    )
    row = warehouse.query("select * from sft_rows").to_pylist()[0]
    assert row["images"] == ["a" * 64]
    assert row["gt_image"] == "b" * 64
    assert [m["role"] for m in row["messages"]] == ["system", "user", "user"]
    assert warehouse.query("select count(*) n from rl_rows").column("n").to_pylist() == [0]
    funnel = {
        (r["stage"], r["outcome"]): r["rows"] for r in warehouse.query("select * from funnel").to_pylist()
    }
    assert funnel[("samples", "kept_sft")] == 1
    assert funnel[("trajectories", "answer")] == 1


def test_blob_store_is_content_addressed_and_atomic(tmp_path):
    blobs = BlobStore(tmp_path)
    digest = blobs.put(b"hello")
    assert digest == "2cf24dba5fb0a30e26e83b2ac5b9e29e1b161e5c1fa7425e73043362938b9824"
    assert blobs.put(b"hello") == digest
    assert blobs.read(digest) == b"hello"
    assert not list(tmp_path.rglob(".tmp-*"))
    with pytest.raises(ValueError):
        blobs.path("../../etc/passwd")
