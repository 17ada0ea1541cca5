"""SFT/RL split: deterministic, proportional per category, quota, incremental continuation."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from filters.split import SplitAssigner


def test_single_category_follows_ratio_exactly() -> None:
    assigner = SplitAssigner(sft=10, rl=5)
    assert [assigner.assign("art") for _ in range(16)] == [
        "sft", "rl", "sft", "sft", "rl", "sft", "sft", "rl", "sft", "sft", "rl", "sft", "sft", "rl", "sft", None,
    ]  # fmt: skip
    assert assigner.counts == {"art": {"sft": 10, "rl": 5}}


def test_one_split_full_sends_everything_to_the_other() -> None:
    assigner = SplitAssigner(sft=1, rl=3)
    assert [assigner.assign("film") for _ in range(5)] == ["rl", "sft", "rl", "rl", None]
    assert SplitAssigner(sft=0, rl=2).assign("film") == "rl"
    assert SplitAssigner(sft=0, rl=0).assign("film") is None


categories = st.sampled_from(["art", "film", "news", "physics"])


@given(sft=st.integers(0, 40), rl=st.integers(0, 40), stream=st.lists(categories, max_size=120))
def test_every_category_tracks_the_global_ratio_until_a_quota_fills(
    sft: int, rl: int, stream: list[str]
) -> None:
    assigner = SplitAssigner(sft=sft, rl=rl)
    for category in stream:
        both_open = not assigner.is_full("sft") and not assigner.is_full("rl")
        split = assigner.assign(category)
        if both_open:
            counts = assigner.counts[category]
            assigned = counts["sft"] + counts["rl"]
            assert abs(counts["sft"] * (sft + rl) - assigned * sft) < sft + rl  # off by < 1 row
        if split is None:
            assert assigner.is_full("sft") and assigner.is_full("rl")
    assert assigner.total("sft") <= sft and assigner.total("rl") <= rl
    assert assigner.total("sft") + assigner.total("rl") == min(len(stream), sft + rl)


@given(stream=st.lists(categories, max_size=80), cut=st.integers(0, 80))
def test_incremental_continuation_equals_one_run(stream: list[str], cut: int) -> None:
    whole = SplitAssigner(sft=30, rl=20)
    expected = [whole.assign(category) for category in stream]
    first = SplitAssigner(sft=30, rl=20)
    result = [first.assign(category) for category in stream[:cut]]
    second = SplitAssigner(sft=30, rl=20, counts=first.counts)
    result += [second.assign(category) for category in stream[cut:]]
    assert result == expected
