"""Whole runs against a scripted OpenAI-compatible server on 127.0.0.1 that goes away mid-run (the
circuit breaker stops the stage with one line; the next run, with the server back, finishes every row
with the rows of an uninterrupted run) or starts refusing the key mid-run (a fatal error: the stage
stops at once, no failure rows)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from typer.testing import CliRunner

from flows.cli import app
from testkit.servers.openai_policy import TEACHER, CompetentPolicy, role_of
from testkit.servers.openai_server import RecordedRequest, Reset, ScriptedOpenAIServer
from warehouse.pending import failed_rows_sql
from warehouse.store import Warehouse

pytestmark = pytest.mark.slow

KEY_ENV = "GROUNDGEN_OUTAGE_KEY"
KEY = "sk-outage-5e2b"
TABLES = ("topics", "prompts", "trajectories", "images", "judgements", "samples")


def write_config(path: Path, workdir: Path, base_url: str) -> Path:
    def endpoint(model: str, concurrency: int) -> str:
        return (
            f'base_url = "{base_url}"\nmodel = "{model}"\napi_key_env = "{KEY_ENV}"\n'
            f"max_concurrency = {concurrency}\nmax_retries = 1\ntimeout_s = 20\n"
        )

    path.write_text(
        f'workdir = "{workdir}"\nbatch_size = 16\nmax_attempts = 3\nbreaker_threshold = 2\n\n'
        "[sizes]\nsft = 2\nrl = 1\noversample = 1.0\n\n"
        '[writer]\nkind = "llm"\n\n[teacher]\nkind = "llm"\nbrowse_summary = true\n\n'
        '[judge]\nkind = "llm"\n\n[search]\nprovider = "local"\n\n'
        # the teacher's calls one at a time: the outage hits a known request
        f"[llm.writer]\n{endpoint('writer-model', 4)}\n"
        f"[llm.teacher]\n{endpoint('teacher-model', 1)}\n"
        f"[llm.summary]\n{endpoint('summary-model', 1)}\n"
        f"[llm.judge]\n{endpoint('judge-model', 4)}\n"
    )
    return path


class Scripted:
    """CompetentPolicy, plus something that happens at the n-th teacher request."""

    def __init__(self, at_teacher_call: int, event):
        self.policy = CompetentPolicy()
        self.at = at_teacher_call
        self.event = event
        self.teacher_calls = 0
        self.server: ScriptedOpenAIServer | None = None

    def __call__(self, request: RecordedRequest):
        if role_of(request) == TEACHER:
            self.teacher_calls += 1
            if self.teacher_calls == self.at:
                reply = self.event(self.server)
                if reply is not None:
                    return reply
        return self.policy(request)


def go_down(server):
    server.go_down()
    return Reset()


def run(config_path: Path, *stages: str):
    options = [arg for stage in stages for arg in ("--stage", stage)]
    return CliRunner().invoke(app, ["run", "--config", str(config_path), "--quiet", *options])


def table(workdir: Path, name: str, sql: str | None = None) -> list[dict]:
    with Warehouse(workdir / "warehouse.duckdb", read_only=True) as warehouse:
        return warehouse.query(sql or f"select * from {name} order by id").to_pylist()


def ids(workdir: Path) -> dict[str, list[str]]:
    return {name: [row["id"] for row in table(workdir, name)] for name in TABLES}


@pytest.fixture(autouse=True)
def api_key(monkeypatch):
    monkeypatch.setenv(KEY_ENV, KEY)


def test_outage_stops_on_the_breaker_and_the_next_run_finishes_like_an_uninterrupted_one(
    tmp_path, prefect_server
):
    # an uninterrupted run, for the rows every run of this config must end with
    # (the same port: the endpoint URL is part of the backend fingerprints, and so of the row ids)
    with ScriptedOpenAIServer(respond=CompetentPolicy()) as server:
        clean = run(write_config(tmp_path / "clean.toml", tmp_path / "clean", server.base_url))
        port = server.port
    assert clean.exit_code == 0, clean.output + repr(clean.exception)

    # the server goes away at the 2nd trajectory's first teacher call (4 teacher calls per trajectory)
    script = Scripted(at_teacher_call=5, event=go_down)
    with ScriptedOpenAIServer(respond=script, port=port) as server:
        script.server = server
        workdir = tmp_path / "work"
        config = write_config(tmp_path / "c.toml", workdir, server.base_url)
        first = run(config)
        assert server.down
        assert first.exit_code == 1, first.output + repr(first.exception)
        stop = re.search(
            r"Error: stage trajectories stopped: endpoint (\S+) unreachable since (\d\d:\d\d); "
            r"(\d+) rows waiting; rerun when it is back",
            first.output,
        )
        assert stop, first.output
        assert stop.group(1) == server.base_url and stop.group(3) == "2"
        assert "no dataset version: the run stopped at stage trajectories" in first.output
        assert len(table(workdir, "trajectories")) == 1
        failures = table(workdir, "failures")
        assert {(f["stage"], f["kind"]) for f in failures} == {("trajectories", "transient")}
        assert len(failures) == 2, "the 2 rows whose failures opened the breaker"
        (first_run,) = table(workdir, "runs")
        assert first_run["status"] == "failed"
        assert table(workdir, "versions") == [] and table(workdir, "images") == []

        server.come_back()
        second = run(config)
        assert second.exit_code == 0, second.output + repr(second.exception)
        assert "dataset version v1" in second.output

    assert ids(workdir) == ids(tmp_path / "clean"), "the same rows as the uninterrupted run"
    assert [(v["sft_rows"], v["rl_rows"]) for v in table(workdir, "versions")] == [
        (v["sft_rows"], v["rl_rows"]) for v in table(tmp_path / "clean", "versions")
    ]
    assert table(workdir, "failed", failed_rows_sql(3)) == [], "nothing is left failed"
    status = CliRunner().invoke(app, ["status", "-w", str(workdir)])
    assert status.exit_code == 0 and "failed rows" in status.output


def refuse_the_key(server):
    server.api_key = "sk-rotated"  # from now on the server refuses the configured key
    return None


def test_a_key_refused_mid_run_stops_the_stage_without_failure_rows(tmp_path, prefect_server):
    script = Scripted(at_teacher_call=3, event=refuse_the_key)
    with ScriptedOpenAIServer(respond=script, api_key=KEY) as server:
        script.server = server
        workdir = tmp_path / "work"
        result = run(
            write_config(tmp_path / "c.toml", workdir, server.base_url), "topics", "prompts", "trajectories"
        )
        teacher_requests = sum(role_of(r) == TEACHER for r in server.chat_requests())
    assert result.exit_code == 1, result.output + repr(result.exception)
    assert (
        f"Error: stage trajectories stopped: {server.base_url} refused the credentials (HTTP 401); "
        f"check {KEY_ENV}"
    ) in result.output
    assert table(workdir, "failures") == [], "a fatal error writes no failure rows"
    assert len(table(workdir, "prompts")) == 3 and table(workdir, "trajectories") == []
    assert table(workdir, "runs")[0]["status"] == "failed"
    assert teacher_requests == 4, "3 answered, 1 refused; then the latched breaker made no more calls"
