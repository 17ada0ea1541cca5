"""The curation stage core: exact outcomes of a mixed batch, batch-boundary independence, rebuild."""

from __future__ import annotations

import io
import json
import random
from pathlib import Path

import pytest
from PIL import Image as PILImage
from PIL import ImageEnhance

from filters.base import Candidate
from filters.curate import CurationState, KeptRow, curate
from filters.decontamination import BenchmarkIndex
from filters.image_dedup import hamming_distance, phash_hex
from schemas.config import CurationConfig, SizesConfig
from schemas.ids import content_id
from schemas.rows import Judgement
from tests.test_filters_rules import make_candidate, picture
from warehouse.store import Warehouse

CURATOR = "curator-fingerprint"
BENCHMARK_PROMPT = (
    "Generate an image of the 2023 Nobel Prize in Physics laureates holding their medals on stage"
)
CONFIG = CurationConfig()
SIZES = SizesConfig(sft=4, rl=2)


def brighter(data: bytes) -> bytes:
    with PILImage.open(io.BytesIO(data)) as image:
        shifted = ImageEnhance.Brightness(image.convert("RGB")).enhance(1.08)
    buffer = io.BytesIO()
    shifted.save(buffer, format="PNG")
    return buffer.getvalue()


def batch() -> list[Candidate]:
    first = make_candidate(1, category="architecture")
    low = Judgement(id="j8", image_id="img008", trajectory_id="traj008", judge="judge", keep=False)
    return [
        first,
        make_candidate(2, category="film"),
        make_candidate(3, ending="error"),
        make_candidate(4, data=picture(1)),  # same bytes as traj001's image
        make_candidate(5, data=brighter(picture(2))),  # near copy of traj002's image
        make_candidate(6, text=first.prompt.prompt + "!"),  # same words as traj001's prompt
        make_candidate(7, text="As a poster: " + BENCHMARK_PROMPT),
        make_candidate(8, judgement=low),
        *(
            make_candidate(number, category=("architecture", "film")[number % 2 == 0])
            for number in range(9, 15)
        ),
    ]


def outcome(samples: list) -> list[tuple[str, str, str, str, str]]:
    return [(s.trajectory_id, s.status, s.reason, s.duplicate_of, s.split) for s in samples]


EXPECTED = [
    ("traj001", "kept", "", "", "sft"),
    ("traj002", "kept", "", "", "sft"),
    ("traj003", "dropped", "teacher_error", "", ""),
    ("traj004", "dropped", "exact_duplicate", "traj001", ""),
    ("traj005", "dropped", "phash_duplicate", "traj002", ""),
    ("traj006", "dropped", "prompt_near_duplicate", "traj001", ""),
    ("traj007", "dropped", "benchmark_contamination", "", ""),
    ("traj008", "dropped", "judge_low_score", "", ""),
    ("traj009", "kept", "", "", "rl"),
    ("traj010", "kept", "", "", "rl"),
    ("traj011", "kept", "", "", "sft"),
    ("traj012", "kept", "", "", "sft"),
    ("traj013", "dropped", "split_quota_full", "", ""),
    ("traj014", "dropped", "split_quota_full", "", ""),
]


def new_state() -> CurationState:
    return CurationState.empty(
        CONFIG, benchmark=BenchmarkIndex([BENCHMARK_PROMPT], CONFIG.decontamination_ngram)
    )


def test_fixture_images_are_what_the_test_claims() -> None:
    near = hamming_distance(phash_hex(picture(2)), phash_hex(brighter(picture(2))))
    assert 0 <= near <= CONFIG.phash_max_distance and brighter(picture(2)) != picture(2)
    hashes = [phash_hex(picture(number)) for number in [1, 2, 9, 10, 11, 12, 13, 14]]
    assert (
        min(hamming_distance(a, b) for a in hashes for b in hashes if a is not b) > CONFIG.phash_max_distance
    )


def test_mixed_batch_exact_outcomes(tmp_path: Path) -> None:
    candidates = batch()
    random.Random(3).shuffle(candidates)  # input order does not matter: sorted by trajectory id
    state = new_state()
    samples = curate(candidates, state, CONFIG, SIZES, CURATOR)
    assert outcome(samples) == EXPECTED
    first = samples[0]
    assert first.id == content_id("traj001", CURATOR)
    assert (first.prompt_id, first.image_id, first.category, first.curator) == (
        "prompt001", "img001", "architecture", CURATOR,
    )  # fmt: skip
    assert samples[2].image_id == "img003"
    assert state.split_counts == {"architecture": {"sft": 2, "rl": 1}, "film": {"sft": 2, "rl": 1}}
    assert sorted(state.kept_trajectories) == [
        "traj001",
        "traj002",
        "traj009",
        "traj010",
        "traj011",
        "traj012",
    ]
    with Warehouse(tmp_path / "w.duckdb") as warehouse:  # the funnel the card and `status` show
        warehouse.insert(samples)
        funnel = warehouse.query("SELECT outcome, rows FROM funnel WHERE stage = 'samples'").to_pylist()
    assert {row["outcome"]: row["rows"] for row in funnel} == {
        "kept_sft": 4,
        "kept_rl": 2,
        "split_quota_full": 2,
        "benchmark_contamination": 1,
        "exact_duplicate": 1,
        "judge_low_score": 1,
        "phash_duplicate": 1,
        "prompt_near_duplicate": 1,
        "teacher_error": 1,
    }


@pytest.mark.parametrize("cut", [0, 1, 4, 7, 9, 12, 14])
def test_two_batches_with_carried_state_equal_one_batch(cut: int) -> None:
    candidates = sorted(batch(), key=lambda candidate: candidate.id)
    state = new_state()
    samples = curate(candidates[:cut], state, CONFIG, SIZES, CURATOR)
    samples += curate(candidates[cut:], state, CONFIG, SIZES, CURATOR)
    assert samples == curate(candidates, new_state(), CONFIG, SIZES, CURATOR)


@pytest.mark.parametrize("cut", [1, 5, 9, 11])
def test_state_rebuilt_from_kept_rows_continues_identically(cut: int) -> None:
    candidates = sorted(batch(), key=lambda candidate: candidate.id)
    by_id = {candidate.id: candidate for candidate in candidates}
    earlier = curate(candidates[:cut], new_state(), CONFIG, SIZES, CURATOR)
    rows = [
        (sample, by_id[s].image.phash, by_id[s].image.sha256, by_id[s].prompt.prompt)
        for sample in earlier
        if sample.status == "kept"
        for s in [sample.trajectory_id]
    ]
    benchmark = BenchmarkIndex([BENCHMARK_PROMPT], CONFIG.decontamination_ngram)
    rebuilt = CurationState.from_kept(rows, CONFIG, benchmark=benchmark)
    later = curate(candidates[cut:], rebuilt, CONFIG, SIZES, CURATOR)
    assert outcome(earlier + later) == EXPECTED


def test_benchmark_read_from_config_files(tmp_path: Path) -> None:
    path = tmp_path / "knowgen.json"
    path.write_text(json.dumps([{"prompt": BENCHMARK_PROMPT}]))
    config = CurationConfig(decontamination_files=[str(path)])
    state = CurationState.empty(config)
    samples = curate([make_candidate(7, text=BENCHMARK_PROMPT)], state, config, SIZES, CURATOR)
    assert outcome(samples) == [("traj007", "dropped", "benchmark_contamination", "", "")]
    with pytest.raises(ValueError, match="no benchmark index"):
        curate(
            [make_candidate(8)], CurationState(state.phash_index, state.prompt_index), config, SIZES, CURATOR
        )


def test_misuse_raises() -> None:
    state = new_state()
    with pytest.raises(ValueError, match="appears twice"):
        curate([make_candidate(1), make_candidate(1)], state, CONFIG, SIZES, CURATOR)
    curate([make_candidate(1)], state, CONFIG, SIZES, CURATOR)
    with pytest.raises(ValueError, match="already kept"):
        curate([make_candidate(1)], state, CONFIG, SIZES, CURATOR)
    with pytest.raises(ValueError, match="phash_max_distance"):
        curate([make_candidate(2)], state, CurationConfig(phash_max_distance=6), SIZES, CURATOR)
    dropped = curate([make_candidate(3, ending="error")], state, CONFIG, SIZES, CURATOR)[0]
    with pytest.raises(ValueError, match="not a kept sample"):
        CurationState.from_kept([KeptRow(dropped, "0" * 16, "0" * 64, "text")], CONFIG)
