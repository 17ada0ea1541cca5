"""Scheduled refreshes on a real Prefect server: `groundgen schedule --interval` serves a deployment, a
scheduled refresh run completes and exports a version, `groundgen status` shows both, SIGTERM stops it."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import duckdb
import pytest
from typer.testing import CliRunner

from flows.cli import app
from flows.schedule import deployment_name, prefect_status
from schemas.config import Config

REPO = Path(__file__).resolve().parent.parent

CONFIG = """
workdir = "{workdir}"
batch_size = 4

[sizes]
sft = 3
rl = 2

[topics]
source_categories = ["Technology"]
categories = ["history", "politics", "sports"]
"""


def test_schedule_needs_a_server_and_one_schedule(monkeypatch, tmp_path):
    monkeypatch.delenv("PREFECT_API_URL", raising=False)
    result = CliRunner().invoke(app, ["schedule", "--interval", "5", "-w", str(tmp_path)])
    assert result.exit_code == 2
    assert "schedules need a Prefect server: start a Prefect server (prefect server start" in result.output
    monkeypatch.setenv("PREFECT_API_URL", "http://127.0.0.1:9/api")
    both = CliRunner().invoke(
        app, ["schedule", "--interval", "5", "--cron", "* * * * *", "-w", str(tmp_path)]
    )
    assert both.exit_code == 2 and "give exactly one of --cron or --interval" in both.output
    name = deployment_name(Config(workdir=tmp_path / "data"))
    assert name.startswith("groundgen-refresh-data-") and len(name) == len("groundgen-refresh-data-") + 8
    # same name, another place: another deployment (serving one never replaces the other's)
    assert deployment_name(Config(workdir=tmp_path / "elsewhere" / "data")) != name
    assert deployment_name(Config(workdir=tmp_path / "data")) == name


def _completed_runs(deployment: str) -> list[dict]:
    """Completed runs of this deployment (other tests' in-process refresh runs share the server)."""
    found = prefect_status()
    ids = {d["id"] for d in found["schedules"] if d["deployment"] == deployment}
    return [r for r in found["flow_runs"] if r["state"] == "Completed" and r["deployment_id"] in ids]


@pytest.mark.slow
def test_scheduled_refresh_runs_and_exports_a_version(tmp_path, prefect_server):
    workdir = tmp_path / "sched"
    config_file = tmp_path / "refresh.toml"
    config_file.write_text(CONFIG.format(workdir=workdir))
    # other tests serve a work dir named "sched" on the same Prefect server: the path keeps them apart
    deployment = deployment_name(Config(workdir=workdir))
    assert deployment.startswith("groundgen-refresh-sched-")
    log = open(tmp_path / "serve.log", "wb")
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "flows.cli",
            "schedule",
            "-c",
            str(config_file),
            "--interval",
            "8",
            "--topics",
            "5",
        ],
        cwd=REPO,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    try:
        deadline = time.monotonic() + 280
        while time.monotonic() < deadline and not _completed_runs(deployment):
            assert process.poll() is None, (tmp_path / "serve.log").read_text()
            time.sleep(1)
        completed = _completed_runs(deployment)
        assert completed, f"no scheduled refresh completed: {prefect_status()['flow_runs']}"
        # the runner still tracks a run's process for a moment after its state is Completed; a SIGTERM
        # right then marks it Cancelled (Prefect 3.9), so let that process exit first
        time.sleep(3)
        schedules = prefect_status()["schedules"]
        assert {
            "deployment": deployment,
            "schedule": "every 8 s",
            "active": "True",
        } in [{k: v for k, v in d.items() if k != "id"} for d in schedules]
    finally:
        os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()
        log.close()
    assert process.returncode is not None

    # a refresh run cancelled by the shutdown holds the database until its process has exited (Prefect
    # cancels it, our ledger records it killed); on a loaded CI machine that has taken over 30 s
    deadline = time.monotonic() + 90
    while True:
        try:
            connection = duckdb.connect(str(workdir / "warehouse.duckdb"), read_only=True)
            break
        except duckdb.IOException:
            assert time.monotonic() < deadline
            time.sleep(0.5)
    try:
        versions = connection.execute("select id from versions order by id").fetchall()
        kept = {r[0] for r in connection.execute("select id from samples where status = 'kept'").fetchall()}
        runs = connection.execute(
            "select counts_json from runs where command = 'refresh' and status = 'completed'"
        ).fetchall()
    finally:
        connection.close()
    assert versions[0] == ("v1",)
    refreshes = [json.loads(counts)["refresh"] for (counts,) in runs]
    assert {"new_topics": 5, "new_samples": len(kept), "version": "v1"} in refreshes
    assert all(
        r == {"new_topics": 0, "new_samples": 0, "version": None} for r in refreshes if r["version"] != "v1"
    )
    manifest = json.loads((workdir / "exports" / "v1" / "manifest.json").read_text())
    assert set(manifest["changes"]["sft"]["added"]) | set(manifest["changes"]["rl"]["added"]) == kept

    status = CliRunner().invoke(app, ["status", "-c", str(config_file)], env={"COLUMNS": "200"})
    assert status.exit_code == 0, status.output
    assert deployment in status.output and "every 8 s" in status.output
    assert any("Completed" in line and line.rstrip().endswith(" v1") for line in status.output.splitlines())
