"""`kill -9` during trajectories leaves an honest record and no orphan: the next command marks the run
`killed`, its usage and cost so far are in `runs`, and the temporary Prefect server is gone (by PID).

A real `groundgen run --config FILE` subprocess with the LLM writer, teacher and judge against the
scripted OpenAI-compatible server on 127.0.0.1, and no PREFECT_API_URL, so the command starts its own
temporary Prefect server."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from typer.testing import CliRunner

from flows.cli import app
from flows.ledger import process_alive
from testkit.servers.openai_policy import JUDGE, TEACHER, WRITER, CompetentPolicy
from testkit.servers.openai_server import ScriptedOpenAIServer
from tests.test_llm_pipeline import KEY, KEY_ENV, write_config
from tests.test_run_ledger import server_children, wait_gone
from warehouse.store import Warehouse

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc"),
]

REPO = Path(__file__).resolve().parent.parent


def test_sigkill_during_trajectories_leaves_a_killed_run_with_its_spend_and_no_server(tmp_path):
    policy = CompetentPolicy()
    workdir = tmp_path / "work"
    env = {k: v for k, v in os.environ.items() if k not in ("PREFECT_API_URL", "PREFECT_HOME")}
    env |= {KEY_ENV: KEY, "PREFECT_HOME": str(tmp_path / "prefect-home"), "PYTHONUNBUFFERED": "1"}
    with ScriptedOpenAIServer(respond=policy, latency_s=0.25) as server:
        config = write_config(tmp_path / "config.toml", workdir, server.base_url)
        command = [
            sys.executable,
            "-m",
            "flows.cli",
            "run",
            "--config",
            str(config),
            "--batch-size",
            "2",
            "-q",
        ]
        process = subprocess.Popen(
            command, env=env, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT
        )
        servers: set[int] = set()
        deadline = time.monotonic() + 300
        # kill mid-trajectories: the writer's batches are written, the teacher is half-way
        while time.monotonic() < deadline and process.poll() is None and policy.counts[TEACHER] < 12:
            servers.update(server_children(process.pid))
            time.sleep(0.05)
        servers.update(server_children(process.pid))
        assert process.poll() is None, "the run ended before it was killed: " + process.stdout.read().decode()
        assert policy.counts[JUDGE] == 0, "killed after the trajectories stage"
        os.kill(process.pid, signal.SIGKILL)
        process.wait()
        spent_writer_calls = policy.counts[WRITER]
    assert servers, "the run started a temporary Prefect server of its own"
    for pid in servers:
        assert wait_gone(pid), f"the temporary Prefect server {pid} outlived the killed run"

    status = CliRunner().invoke(app, ["status", "-w", str(workdir)])  # the next command
    assert status.exit_code == 0, status.output
    with Warehouse(workdir / "warehouse.duckdb", read_only=True) as warehouse:
        (run,) = warehouse.query("select * from runs").to_pylist()
    assert run["status"] == "killed" and run["pid"] == process.pid
    assert not process_alive(run["pid"], run["process_started"])
    usage = json.loads(run["usage_json"])
    assert usage["writer"]["calls"] == spent_writer_calls > 0
    assert usage["writer"]["prompt_tokens"] > 0 and run["cost_usd"] > 0
    assert run["cost_usd"] == pytest.approx(sum(role["cost_usd"] for role in usage.values()))
    assert run["batches"] >= 3  # the topics batch and the writer's batches of 2, each written as it ended
    assert "killed" in status.output
