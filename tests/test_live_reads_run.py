"""`groundgen sql` during a real run (a subprocess) and during a scheduled refresh on a Prefect server:
every query answers, counts never go down, the last answer equals the finished warehouse, and the
run writes the same rows as an undisturbed one."""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import duckdb
import pytest
from prefect.deployments import run_deployment

from flows.schedule import deployment_name, prefect_status
from schemas.config import Config
from tests.test_pipeline_offline import content, table_ids
from tests.test_schedule import CONFIG  # the same small refresh config

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parent.parent
COUNTS_SQL = (
    "select (select count(*) from topics) as topics, (select count(*) from prompts) as prompts, "
    "(select count(*) from trajectories) as trajectories, (select count(*) from images) as images, "
    "(select count(*) from judgements) as judgements, (select count(*) from samples) as samples, "
    "(select count(*) from failures) as failures"
)


def sql(workdir: Path) -> dict[str, int]:
    """One `groundgen sql` process; it must succeed whatever the writer is doing."""
    done = subprocess.run(
        [sys.executable, "-m", "flows.cli", "sql", COUNTS_SQL, "-w", str(workdir), "-f", "json"],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    return json.loads(done.stdout)


def final_counts(workdir: Path) -> dict[str, int]:
    connection = duckdb.connect(str(workdir / "warehouse.duckdb"), read_only=True)
    try:
        return connection.sql(COUNTS_SQL).to_arrow_table().to_pylist()[0]
    finally:
        connection.close()


def query_at_random_moments(workdir: Path, busy, count: int = 20, seed: int = 17) -> list[tuple[bool, dict]]:
    """`count` queries with random gaps; each answer with whether the writer was busy around it."""
    moments = random.Random(seed)
    answers = []
    for _ in range(count):
        time.sleep(moments.uniform(0.0, 1.0))
        before = busy()
        answer = sql(workdir)
        answers.append((before and busy(), answer))
    return answers


def assert_never_down(answers: list[tuple[bool, dict]]) -> None:
    for (_, earlier), (_, later) in zip(answers, answers[1:], strict=False):
        assert all(later[name] >= earlier[name] for name in earlier), (earlier, later)


def test_sql_during_a_run_always_answers_and_never_disturbs_it(tmp_path, prefect_server):
    reference, workdir = tmp_path / "undisturbed", tmp_path / "disturbed"
    command = [sys.executable, "-m", "flows.cli", "run", "--sft", "4", "--rl", "2", "--batch-size", "2", "-q"]
    # the undisturbed run goes alongside (its own work directory): same rows, half the test's time
    undisturbed = subprocess.Popen(
        [*command, "--workdir", str(reference)],
        cwd=REPO,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    log = open(tmp_path / "run.log", "wb")
    process = subprocess.Popen(
        [*command, "--workdir", str(workdir)], cwd=REPO, stdout=log, stderr=subprocess.STDOUT
    )
    try:
        deadline = time.monotonic() + 120
        while not (workdir / "warehouse.duckdb").exists() and process.poll() is None:
            assert time.monotonic() < deadline
            time.sleep(0.05)
        answers = query_at_random_moments(workdir, lambda: process.poll() is None)
        assert process.wait(timeout=600) == 0, (tmp_path / "run.log").read_text()
        assert undisturbed.wait(timeout=600) == 0
    finally:
        for started in (process, undisturbed):
            if started.poll() is None:
                started.kill()
                started.wait()
        log.close()
    during = [answer for busy, answer in answers if busy]
    assert len(during) >= 10, f"only {len(during)} of 20 queries ran during the run"
    assert_never_down(answers)
    last = sql(workdir)
    assert last == final_counts(workdir) and last["samples"] > 0
    assert all(answer["samples"] <= last["samples"] for _, answer in answers)
    assert table_ids(workdir) == table_ids(reference)
    assert content(workdir) == content(reference)
    assert "lock" not in (tmp_path / "run.log").read_text().lower()


def test_sql_during_a_scheduled_refresh(tmp_path, prefect_server):
    reference = tmp_path / "undisturbed"
    (tmp_path / "reference.toml").write_text(CONFIG.format(workdir=reference))
    undisturbed = subprocess.Popen(  # alongside, in its own work directory
        [
            sys.executable,
            "-m",
            "flows.cli",
            "refresh",
            "-c",
            str(tmp_path / "reference.toml"),
            "--topics",
            "5",
        ],
        cwd=REPO,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    workdir = tmp_path / "sched"
    (tmp_path / "refresh.toml").write_text(CONFIG.format(workdir=workdir))
    log = open(tmp_path / "serve.log", "wb")
    serve = subprocess.Popen(
        [sys.executable, "-m", "flows.cli", "schedule", "-c", str(tmp_path / "refresh.toml")]
        + ["--interval", "3600", "--topics", "5"],
        cwd=REPO,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    lock = workdir / "groundgen.lock"

    def refreshing() -> bool:
        try:
            return json.loads(lock.read_text()).get("command") == "refresh"
        except (OSError, ValueError):
            return False

    try:
        deadline = time.monotonic() + 240
        deployment = deployment_name(Config(workdir=workdir))
        while deployment not in [d["deployment"] for d in prefect_status()["schedules"]]:
            assert time.monotonic() < deadline and serve.poll() is None, (tmp_path / "serve.log").read_text()
            time.sleep(0.5)
        # a flow run of the served deployment now, instead of waiting for its first interval
        run_deployment(f"refresh/{deployment}", timeout=0)
        while not refreshing():
            assert time.monotonic() < deadline and serve.poll() is None, (tmp_path / "serve.log").read_text()
            time.sleep(0.05)
        answers = query_at_random_moments(workdir, refreshing)
        while refreshing():
            assert time.monotonic() < deadline + 300
            time.sleep(0.2)
        time.sleep(3)  # let the runner finish with the completed flow run before SIGTERM
        assert undisturbed.wait(timeout=600) == 0
    finally:
        if undisturbed.poll() is None:
            undisturbed.kill()
            undisturbed.wait()
        os.killpg(serve.pid, signal.SIGTERM)
        try:
            serve.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(serve.pid, signal.SIGKILL)
            serve.wait()
        log.close()
    during = [answer for busy, answer in answers if busy]
    assert len(during) >= 5, f"only {len(during)} of 20 queries ran during the refresh"
    assert_never_down(answers)
    last = sql(workdir)
    assert last == final_counts(workdir) and last["samples"] > 0
    for table in ("topics", "prompts", "trajectories", "images", "judgements", "samples"):
        assert table_ids(workdir)[table] == table_ids(reference)[table]
