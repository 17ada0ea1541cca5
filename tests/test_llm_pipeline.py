"""A whole `groundgen run --config FILE` with the LLM writer, teacher (+ browse summary) and judge
against ONE scripted OpenAI-compatible server on 127.0.0.1 whose policy answers each role like a
competent model (testkit/servers/openai_policy.py). Search, browse and images stay on the offline
corpus. Then the same run with faults injected, and reruns that must replay from the cache."""

from __future__ import annotations

import json
import logging
import shutil
from pathlib import Path

import pytest
from typer.testing import CliRunner

from flows.cli import app
from testkit.servers.openai_policy import JUDGE, SUMMARY, TEACHER, UNKNOWN_IMAGE, WRITER, CompetentPolicy
from testkit.servers.openai_server import ScriptedOpenAIServer, Status
from warehouse.store import Warehouse

pytestmark = pytest.mark.slow

KEY_ENV = "GROUNDGEN_TEST_LLM_KEY"
KEY = "sk-pipeline-secret-7f3a9c2e51"
TABLES = (
    "topics",
    "prompts",
    "trajectories",
    "images",
    "judgements",
    "samples",
    "failures",
    "runs",
    "versions",
)


def write_config(path: Path, workdir: Path, base_url: str, *, teacher_retries: int = 3) -> Path:
    def endpoint(model: str, concurrency: int, retries: int = 3) -> str:
        return (
            f'base_url = "{base_url}"\nmodel = "{model}"\napi_key_env = "{KEY_ENV}"\n'
            f"max_concurrency = {concurrency}\nmax_retries = {retries}\ntimeout_s = 20\n"
            "price_per_million_input = 2.0\nprice_per_million_output = 8.0\n"
        )

    path.write_text(
        f'workdir = "{workdir}"\nbatch_size = 16\nmax_attempts = 3\n\n'
        "[sizes]\nsft = 4\nrl = 2\noversample = 1.0\n\n"
        '[writer]\nkind = "llm"\nmulti_hop_share = 0.3\n\n'
        '[teacher]\nkind = "llm"\nbrowse_summary = true\n\n'
        '[judge]\nkind = "llm"\nkeep_threshold = 0.5\n\n'
        '[search]\nprovider = "local"\n\n'
        # the teacher's calls one at a time, so injected faults hit a known sequence of requests
        f"[llm.writer]\n{endpoint('writer-model', 4)}\n"
        f"[llm.teacher]\n{endpoint('teacher-model', 1, teacher_retries)}\n"
        f"[llm.summary]\n{endpoint('summary-model', 4)}\n"
        f"[llm.judge]\n{endpoint('judge-model', 4)}\n"
    )
    return path


def invoke_run(config_path: Path) -> str:
    result = CliRunner().invoke(app, ["run", "--config", str(config_path), "--quiet"])
    assert result.exit_code == 0, result.output + repr(result.exception)
    return result.output


def rows(workdir: Path, table: str) -> list[dict]:
    with Warehouse(workdir / "warehouse.duckdb", read_only=True) as warehouse:
        return warehouse.query(f"select * from {table} order by id").to_pylist()


def scalar(workdir: Path, sql: str) -> int:
    with Warehouse(workdir / "warehouse.duckdb", read_only=True) as warehouse:
        return warehouse.query(sql).to_pylist()[0]["n"]


def assert_key_not_in_files(folder: Path) -> None:
    files = [file for file in folder.rglob("*") if file.is_file()]
    assert files
    for file in files:
        assert KEY.encode() not in file.read_bytes(), f"API key written to {file}"


def assert_key_absent(workdir: Path, *texts: str) -> None:
    for table in TABLES:
        assert KEY not in json.dumps(rows(workdir, table), default=str), f"API key stored in {table}"
    assert_key_not_in_files(workdir)  # warehouse file, response caches, blobs, exports
    for text in texts:
        assert KEY not in text


def assert_nothing_dropped(workdir: Path) -> None:
    unexplained_prompts = scalar(
        workdir,
        "select count(*) n from prompts p where not exists (select 1 from trajectories t where t.prompt_id = p.id)"
        " and not exists (select 1 from failures f where f.row_id = p.id)",
    )
    assert unexplained_prompts == 0, "every prompt has a trajectory or a failures row"
    unsampled = scalar(
        workdir,
        "select count(*) n from trajectories t where t.ending = 'answer'"
        " and not exists (select 1 from samples s where s.trajectory_id = t.id)",
    )
    assert unsampled == 0, "every answered trajectory has a sample (kept or with a drop reason)"
    topics_without_prompts = scalar(
        workdir,
        "select count(*) n from topics t where not exists (select 1 from prompts p where list_contains(p.topic_ids, t.id))"
        " and not exists (select 1 from failures f where f.row_id = t.id)",
    )
    assert topics_without_prompts == 0, "every topic has a prompt or a failures row"


@pytest.fixture(autouse=True)
def api_key(monkeypatch):
    monkeypatch.setenv(KEY_ENV, KEY)


@pytest.fixture(scope="module")
def clean_run(tmp_path_factory, prefect_server):
    """One run without faults; the server and its policy stay up for the module's reruns."""
    policy = CompetentPolicy()
    base = tmp_path_factory.mktemp("llm-run")
    with ScriptedOpenAIServer(respond=policy) as server:
        mp = pytest.MonkeyPatch()
        mp.setenv(KEY_ENV, KEY)
        config_path = write_config(base / "config.toml", base / "work", server.base_url)
        output = invoke_run(config_path)
        mp.undo()
        yield base / "work", config_path, server, policy, output


def test_run_with_llm_backends_produces_a_version(clean_run):
    workdir, _, server, policy, output = clean_run
    assert not server.errors
    assert set(policy.counts) == {WRITER, TEACHER, SUMMARY, JUDGE}
    assert all(r.headers.get("authorization") == f"Bearer {KEY}" for r in server.chat_requests())
    assert "dataset version v1" in output
    versions = rows(workdir, "versions")
    assert [v["id"] for v in versions] == ["v1"]
    assert versions[0]["sft_rows"] + versions[0]["rl_rows"] > 0

    prompts = rows(workdir, "prompts")
    topics = rows(workdir, "topics")
    assert len(topics) == 6 and len(prompts) == 6
    trajectories = rows(workdir, "trajectories")
    assert len(trajectories) == len(prompts)
    for trajectory in trajectories:
        assert trajectory["ending"] == "answer"
        assert [call["name"] for call in trajectory["tool_calls"]] == ["search", "browse", "image_search"]
        # the policy chooses every IMG id the image search listed; the offline catalogue lists only
        # images whose captions match the subject, often none (then the answer chooses none)
        chosen = [reference["img_id"] for reference in trajectory["chosen_references"]]
        assert chosen == [reference["img_id"] for reference in trajectory["references"]]
        assert trajectory["model_calls"] == 4
        assert trajectory["prompt_tokens"] > 0 and trajectory["completion_tokens"] > 0
    judgements = rows(workdir, "judgements")
    assert len(judgements) == len(trajectories)
    assert {(j["faithfulness"], j["visual_correctness"], j["overall"], j["keep"]) for j in judgements} == {
        (1.0, 1.0, 1.0, True)
    }
    assert rows(workdir, "failures") == []
    assert_nothing_dropped(workdir)


def test_run_records_usage_per_llm_role(clean_run):
    workdir, _, _, policy, _ = clean_run
    (run,) = rows(workdir, "runs")
    counts = json.loads(run["counts_json"])
    usage = {}
    for stage in counts.values():
        for role, spent in stage.get("usage", {}).items():
            usage[role] = spent
    assert set(usage) == {WRITER, TEACHER, SUMMARY, JUDGE}
    for role, spent in usage.items():
        assert spent["calls"] == policy.counts[role], role
        assert spent["prompt_tokens"] > 0 and spent["completion_tokens"] > 0
        expected_cost = (spent["prompt_tokens"] * 2.0 + spent["completion_tokens"] * 8.0) / 1e6
        assert spent["cost_usd"] == pytest.approx(expected_cost)
        assert spent["latency_s"] > 0
    trajectory_tokens = sum(t["prompt_tokens"] for t in rows(workdir, "trajectories"))
    assert usage[TEACHER]["prompt_tokens"] == trajectory_tokens


def test_api_key_never_stored_exported_or_logged(clean_run, tmp_path, caplog):
    workdir, config_path, server, _, output = clean_run
    caplog.set_level(logging.DEBUG)
    lf = CliRunner().invoke(
        app, ["export", "-w", str(workdir), "-f", "llamafactory", "-o", str(tmp_path / "lf")]
    )
    assert lf.exit_code == 0, lf.output
    assert_key_absent(workdir, output, lf.output, caplog.text)
    assert_key_not_in_files(tmp_path / "lf")


def test_rerun_replays_from_the_cache(clean_run, tmp_path):
    """Same config, fresh warehouse, the run's response cache: identical rows, not one new request."""
    workdir, config_path, server, _, _ = clean_run
    before = len(server.chat_requests())
    replay_dir = tmp_path / "replay"
    shutil.copytree(workdir / "llm-cache", replay_dir / "llm-cache")
    replay_config = tmp_path / "replay.toml"
    replay_config.write_text(config_path.read_text().replace(str(workdir), str(replay_dir)))
    invoke_run(replay_config)
    assert len(server.chat_requests()) == before
    for table in ("prompts", "trajectories", "judgements", "samples"):
        assert rows(replay_dir, table) == rows(workdir, table), table

    again = CliRunner().invoke(app, ["run", "--config", str(config_path), "--quiet"])
    assert again.exit_code == 0, again.output
    assert "no new dataset version" in again.output
    assert len(server.chat_requests()) == before
    runs = rows(workdir, "runs")
    latest = max(runs, key=lambda run: run["started_at"])
    written = {stage: c["rows_written"] for stage, c in json.loads(latest["counts_json"]).items()}
    assert written == dict.fromkeys(written, 0)


def test_faults_end_in_retries_repairs_failure_rows_and_endings(tmp_path, prefect_server, caplog):
    caplog.set_level(logging.WARNING)
    policy = CompetentPolicy()
    policy.inject(WRITER, Status(429, retry_after="1"), Status(429, retry_after="0"), "Sure! Here are tasks.")
    policy.inject(JUDGE, Status(429, retry_after="0"))
    # the teacher's first call fails twice (503, then 429): retries exhausted -> a failure row, and the
    # prompt is retried in the next pass of the same run
    policy.inject(TEACHER, Status(503), Status(429, retry_after="0"), UNKNOWN_IMAGE)
    with ScriptedOpenAIServer(respond=policy) as server:
        config_path = write_config(
            tmp_path / "config.toml", tmp_path / "work", server.base_url, teacher_retries=1
        )
        output = invoke_run(config_path)
        workdir = tmp_path / "work"
        assert not server.errors
        assert policy.pending_faults() == 0
        assert policy.faults_served == {WRITER: 3, JUDGE: 1, TEACHER: 3}

        repairs = [
            r for r in server.chat_requests() if "Your last reply could not be used" in json.dumps(r.body)
        ]
        assert len(repairs) == 1, "the prose writer reply got one repair turn"
        failures = rows(workdir, "failures")
        assert [(f["stage"], f["error_class"]) for f in failures] == [("trajectories", "ModelCallError")]
        assert "HTTP 429" in failures[0]["message"]
        trajectories = rows(workdir, "trajectories")
        prompts = rows(workdir, "prompts")
        assert len(prompts) == 6 and len(trajectories) == 6
        assert failures[0]["row_id"] in {t["prompt_id"] for t in trajectories}, "retried in the next pass"
        endings = sorted(t["ending"] for t in trajectories)
        assert endings == ["answer"] * 5 + ["answer_parse_failed"]
        assert len(rows(workdir, "judgements")) == 5
        assert_nothing_dropped(workdir)
        assert_key_absent(workdir, output, caplog.text)

        requests = len(server.chat_requests())
        rerun = invoke_run(config_path)
        assert "no new dataset version" in rerun
        assert len(server.chat_requests()) == requests, "nothing pending: no model call"
        assert len(rows(workdir, "failures")) == 1
