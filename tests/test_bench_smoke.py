"""The README's benchmark commands run (at tiny sizes) and print their ratios. Timings are not
asserted: speed is measured by running the benchmarks by hand."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

pytestmark = pytest.mark.slow
REPO = Path(__file__).resolve().parent.parent


def run_bench(*args: str, timeout: int = 300) -> str:
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    result = subprocess.run(
        [sys.executable, "-m", *args], cwd=REPO, env=env, capture_output=True, text=True, timeout=timeout
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    return result.stdout


def test_pipeline_bench_prints_the_overhead_ratio(prefect_server):
    output = run_bench("bench.pipeline", "--prompts", "8", "--batch-size", "4")
    assert re.search(r"orchestration overhead \(prefect / direct wall time\): \d+\.\d{3}", output), output
    assert "same dataset sizes from both paths: True" in output


def test_extraction_bench_prints_f1_for_both_extractors():
    pytest.importorskip("trafilatura")
    output = run_bench("bench.extraction", "--rounds", "1", "--limit", "8")
    assert (
        re.search(r"^groundgen +\d\.\d{3} ±\d\.\d{3} .* 1\.00x$", output, re.M)
        or "skipped the public" in output
    )
    assert re.search(r"^trafilatura +\d\.\d{3}", output, re.M) or "skipped the public" in output
    assert re.search(r"^relevant_passages \(4,000 chars\) +\d\.\d{3}", output, re.M) or "skipped" in output
    assert re.search(r"^groundgen +1\.000 +0\.000$", output, re.M), output


def test_dedup_bench_prints_exactness_and_recall_beside_its_peers():
    # --no-imagededup: installing the peer's venv needs PyPI, and tests reach only loopback addresses
    output = run_bench("bench.dedup", "--quick", "--no-imagededup", timeout=600)
    assert output.count("identical to brute force: True") == 2, output
    assert "imagededup peer skipped (--no-imagededup)" in output, output
    assert re.search(r"ours recall 1\.0000|ours recall 0\.99\d\d", output), output


def test_imagededup_peer_finds_the_brute_force_pairs_on_the_same_hashes():
    from bench.dedup import (
        DEFAULT_PEER_VENV,
        brute_force,
        imagededup_pairs,
        installed_imagededup_python,
        synthetic_hashes,
    )

    python = installed_imagededup_python(DEFAULT_PEER_VENV)
    if python is None:
        pytest.skip(
            f"no imagededup peer venv at {DEFAULT_PEER_VENV}: `python -m bench.dedup --quick` installs it"
        )
    values = synthetic_hashes(1_500)
    for radius in (4, 10):
        _, truth = brute_force(values, radius)
        _, everything = imagededup_pairs(python, values, radius)
        assert everything == truth and truth
        queries = np.arange(0, values.size, 7)
        _, sampled = imagededup_pairs(python, values, radius, queries)
        asked = set(queries.tolist())
        assert sampled == {pair for pair in truth if pair[0] in asked or pair[1] in asked}


def test_image_cache_bench_prints_per_download_cost_with_and_without_the_cache():
    output = run_bench(
        "bench.image_cache", "--downloads", "12", "--distinct", "3", "--batch", "4", "--reps", "1"
    )
    assert re.search(r"^shared cache \(production\) +3 +3 +[\d.]+ +[\d.]+$", output, re.M), output
    assert re.search(r"^no cache \(before the cache\) +12 +12 +[\d.]+ +[\d.]+$", output, re.M), output
    assert re.search(r"per-download ratio no cache / shared cache: CPU [\d.]+x, wall [\d.]+x", output), output
    assert "same images from both modes: True" in output, output


def test_push_bench_prints_the_ratio_against_a_raw_put():
    output = run_bench("bench.push", "--gigabytes", "0.02", "--shard-mib", "8", "--chunk-mib", "4")
    assert re.search(r"throughput ratio \(push / raw PUT\): \d+\.\d{3}", output), output
    assert re.search(r"push peak RSS: \d+ MiB", output), output


def test_export_bench_alternates_reps_and_prints_both_memory_measures():
    output = run_bench("bench.export", "--rows", "32", "--reps", "2")
    assert re.search(r"groundgen: 32 rows, median [\d.]+s of 2 reps", output), output
    assert re.search(r"peak anonymous RSS ratio groundgen/datasets: \d+\.\d\d", output), output


def test_report_bench_prints_ratios_against_the_budget():
    output = run_bench("bench.report", "--samples", "40", "--browser-runs", "1")
    assert re.search(r"generation time / budget \(30 s\): \d+\.\d{3} wall, \d+\.\d{3} CPU", output), output
    assert re.search(r"size / budget \(300 MB\): \d+\.\d{3}", output), output
    assert re.search(
        r"first page / budget \(2 s\): \d+\.\d{3}|first gallery page in Chromium: skipped", output
    )


def test_aimd_bench_prints_goodput_and_rejections_for_every_mode():
    output = run_bench("bench.aimd", "--capacity", "4", "--base-latency", "0.05", "--seconds", "1.5")
    for mode in ("AIMD \\(ceiling 2x\\)", "fixed 0.5x", "fixed 1x", "fixed 2x"):
        assert re.search(
            rf"^{mode} +goodput/capacity \d+\.\d{{3}} +rejected share \d\.\d{{3}}", output, re.M
        ), output
    assert re.search(r"AIMD .* level final \d+ mean [\d.]+ backoffs \d+", output), output
    assert re.search(r"AIMD goodput / best fixed concurrency in this run: \d+\.\d{3}", output), output


def test_agent_throughput_bench_prints_efficiency_and_the_peer_ratio():
    output = run_bench(
        "bench.agent_throughput", "--trajectories", "12", "--concurrency", "4", "--single-turn-requests", "8"
    )
    assert re.search(r"endings \{'answer': 12, 'pages fetched': 12\}", output), output
    assert re.search(r"answered: [\d.]+ s; measured: [\d.]+ s; efficiency: \d+\.\d{3}", output), output
    assert re.search(
        r"peer ratio \(ours / distilabel\) \d+\.\d{3}|distilabel OpenAILLM not run \(.+\)", output
    ), output


def test_pipeline_latency_bench_prints_the_overlap_ratio(prefect_server):
    output = run_bench(
        "bench.pipeline",
        "--prompts",
        "8",
        "--batch-size",
        "4",
        "--latency",
        "--turn-s",
        "0.05",
        "--image-s",
        "0.02",
    )
    assert re.search(r"wall time / max\(stage busy time\): \d+\.\d{3} \(goal <= 1\.15", output), output
    assert re.search(r"^trajectories +8 +[\d.]+ +[\d.]+ +[\d.]+$", output, re.M), output
    assert "overlapped run exported a version: True" in output


def test_warehouse_bench_prints_pending_queries_and_the_curation_pass():
    output = run_bench("bench.warehouse", "--rows", "400")
    assert re.search(r"^pending_curation +\d+ +[\d.]+ +\d+ +[\d.]+$", output, re.M), output
    assert re.search(
        r"curation pass .*: \d+ candidates, \d+ samples in [\d.]+ s, \d+ candidates/s", output
    ), output


def test_live_mechanisms_bench_prints_each_mechanism_against_the_plain_insert():
    output = run_bench("bench.live_mechanisms", "--rows", "300", "--batches", "2")
    for mechanism in ("(a) reopen", "(b) socket", "(c) snapshot"):
        assert re.search(rf"{re.escape(mechanism)} +[\d.]+ +\d+\.\d\d", output), output


def test_quality_bench_prints_the_rules_precision_on_the_labelled_sample():
    output = run_bench("bench.quality", "--skip-run")
    assert re.search(r"rule_subject_mismatch +\d+ +\d+ +\d+ +\d+ +(\d\.\d{3}|n/a)", output), output
