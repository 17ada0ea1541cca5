"""Preflight (`groundgen check`, and `run`/`refresh` before any work) against a scripted
OpenAI-compatible server on 127.0.0.1 that checks the key and serves a fixed set of models, and
config values that could only fail at run time, refused when the config is loaded."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
from typer.testing import CliRunner

from flows.cli import app
from flows.preflight import preflight
from schemas.config import Config
from testkit.servers.openai_server import ScriptedOpenAIServer

runner = CliRunner()

KEY_ENV = "GROUNDGEN_PREFLIGHT_KEY"
KEY = "sk-preflight-4c1d"
MODELS = ["writer-model", "teacher-model", "judge-model"]


def write_config(
    path: Path, base_url: str, *, teacher_model: str = "teacher-model", key_env: str = KEY_ENV
) -> Path:
    def endpoint(model: str) -> str:
        return f'base_url = "{base_url}"\nmodel = "{model}"\napi_key_env = "{key_env}"\ntimeout_s = 5\n'

    path.write_text(
        f'workdir = "{path.parent / "work"}"\n'
        "[sizes]\nsft = 2\nrl = 1\n\n"
        '[writer]\nkind = "llm"\n\n[teacher]\nkind = "llm"\n\n[judge]\nkind = "llm"\n\n'
        f"[llm.writer]\n{endpoint('writer-model')}\n"
        f"[llm.teacher]\n{endpoint(teacher_model)}\n"
        f"[llm.judge]\n{endpoint('judge-model')}\n"
    )
    return path


def invoke(*args: str):
    started = time.monotonic()
    result = runner.invoke(app, list(args))
    return result, time.monotonic() - started


def error_lines(output: str) -> list[str]:
    return [line for line in output.splitlines() if line.startswith("Error: ")]


@pytest.fixture()
def server():
    with ScriptedOpenAIServer(respond=lambda request: "unused", models=MODELS, api_key=KEY) as scripted:
        yield scripted


def assert_nothing_ran(config_path: Path, server: ScriptedOpenAIServer) -> None:
    assert server.chat_requests() == [], "no paid call"
    assert not (config_path.parent / "work" / "warehouse.duckdb").exists(), "no run started: no failure rows"


def test_check_passes_against_a_good_endpoint(server, tmp_path, monkeypatch):
    monkeypatch.setenv(KEY_ENV, KEY)
    config = write_config(tmp_path / "c.toml", server.base_url)
    result, _ = invoke("check", "--config", str(config))
    assert result.exit_code == 0, result.output
    assert "check passed" in result.output
    assert [r.path for r in server.requests] == ["/v1/models"], "one GET /models for the shared endpoint"


def test_wrong_key_stops_check_and_run_in_seconds_with_one_line(server, tmp_path, monkeypatch):
    monkeypatch.setenv(KEY_ENV, "sk-wrong")
    config = write_config(tmp_path / "c.toml", server.base_url)
    for command in ("check", "run"):
        result, seconds = invoke(command, "--config", str(config))
        assert result.exit_code == 2, result.output
        assert seconds < 10
        assert error_lines(result.output) == [
            f"Error: llm.writer: {server.base_url} refused the key in {KEY_ENV} (HTTP 401); set a valid key"
        ]
    assert_nothing_ran(config, server)


def test_unknown_model_stops_check_and_run(server, tmp_path, monkeypatch):
    monkeypatch.setenv(KEY_ENV, KEY)
    config = write_config(tmp_path / "c.toml", server.base_url, teacher_model="gpt-nope")
    for command in ("check", "run"):
        result, seconds = invoke(command, "--config", str(config))
        assert result.exit_code == 2, result.output
        assert seconds < 10
        assert error_lines(result.output) == [
            f"Error: llm.teacher: model 'gpt-nope' is not served by {server.base_url} "
            "(it lists: judge-model, teacher-model, writer-model); fix llm.teacher.model"
        ]
    assert_nothing_ran(config, server)


def test_missing_key_variable_is_one_line_per_endpoint_and_no_request(server, tmp_path, monkeypatch):
    monkeypatch.delenv("GROUNDGEN_PREFLIGHT_ABSENT", raising=False)
    config = write_config(tmp_path / "c.toml", server.base_url, key_env="GROUNDGEN_PREFLIGHT_ABSENT")
    for command in ("check", "run"):
        result, seconds = invoke(command, "--config", str(config))
        assert result.exit_code == 2, result.output
        assert seconds < 10
        assert error_lines(result.output) == [
            f"Error: llm.{role}: environment variable GROUNDGEN_PREFLIGHT_ABSENT (the API key) is not set; export it"
            for role in ("writer", "teacher", "judge")
        ]
    assert server.requests == [] and not (tmp_path / "work").exists()


def test_unreachable_endpoint(tmp_path, monkeypatch):
    with ScriptedOpenAIServer() as gone:
        base_url = gone.base_url
    monkeypatch.setenv(KEY_ENV, KEY)
    config = write_config(tmp_path / "c.toml", base_url)
    result, seconds = invoke("check", "--config", str(config))
    assert result.exit_code == 2 and seconds < 15
    assert error_lines(result.output) == [
        f"Error: llm.writer: {base_url} does not answer (ConnectError); start it or fix the URL"
    ]


def test_offline_default_passes_at_once_without_network():
    started = time.monotonic()
    assert preflight(Config()) == []
    assert time.monotonic() - started < 2
    result, seconds = invoke("check")
    assert result.exit_code == 0 and "check passed" in result.output and seconds < 5


def test_painter_model_must_resolve(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hub-cache"))
    config = Config.model_validate({"painter": {"kind": "diffusers", "model": "some-org/not-downloaded"}})
    assert preflight(config) == [
        "painter: model 'some-org/not-downloaded' is not a local folder nor in the Hugging Face cache and "
        "HF_HUB_OFFLINE is set; download it first (huggingface-cli download some-org/not-downloaded) or "
        "unset HF_HUB_OFFLINE"
    ]
    folder = tmp_path / "pipeline"
    folder.mkdir()
    local = Config.model_validate({"painter": {"kind": "diffusers", "model": str(folder)}})
    assert preflight(local) == [
        f"painter: {folder} has no model_index.json; point painter.model at a diffusers pipeline folder"
    ]
    (folder / "model_index.json").write_text("{}")
    assert preflight(local) == []


def test_hub_token_is_checked_when_a_push_is_configured(monkeypatch):
    monkeypatch.delenv("GROUNDGEN_PREFLIGHT_HF", raising=False)
    config = Config.model_validate({"hub": {"repo": "org/data", "token_env": "GROUNDGEN_PREFLIGHT_HF"}})
    assert preflight(config) == [
        "hub: environment variable GROUNDGEN_PREFLIGHT_HF is not set; the push to org/data needs a write token"
    ]
    assert preflight(config, include_hub=False) == []


# --- config values that would only fail at run time --------------------------------------------


@pytest.mark.parametrize(
    ("toml", "message"),
    [
        ('[topics]\nsource = "url_list"\n', "topics.source = 'url_list' is not implemented in this version"),
        ('[topics]\nsource = "rss"\n', "topics.source = 'rss' needs topics.urls"),
        ('[writer]\nkind = "llm"\n', "writer.kind = 'llm' needs an [llm.writer] section"),
        ('[search]\nprovider = "searxng"\n', "search.provider = 'searxng' needs search.base_url"),
        ('[painter]\nkind = "http"\nmodel = "m"\n', "painter.kind = 'http' needs painter.base_url"),
        ('runner = "bogus"\n', "runner: unknown runner 'bogus'; use threads, ray or ray:ADDRESS"),
    ],
)
def test_config_values_that_fail_at_run_time_fail_at_load(tmp_path, toml, message):
    config = tmp_path / "c.toml"
    config.write_text(toml)
    result = runner.invoke(app, ["run", "--config", str(config)])
    assert result.exit_code == 2
    assert message in result.output
    assert (
        "Traceback" not in result.output
        and result.exception is None
        or isinstance(result.exception, SystemExit)
    )


def test_bogus_runner_option_is_a_clear_error_not_a_traceback(tmp_path):
    result = runner.invoke(app, ["run", "--runner", "bogus", "-w", str(tmp_path)])
    assert result.exit_code == 2
    assert error_lines(result.output) == [
        "Error: runner: unknown runner 'bogus'; use threads, ray or ray:ADDRESS (e.g. ray:10.0.0.5:6379)"
    ]
    assert not (tmp_path / "warehouse.duckdb").exists()


def test_only_the_selected_stages_backends_are_checked(tmp_path, monkeypatch):
    """`run --stage export` needs no model endpoint; `--stage prompts` only the writer's."""
    from schemas.config import load_config

    monkeypatch.delenv("GROUNDGEN_PREFLIGHT_ABSENT", raising=False)
    config = load_config(
        write_config(tmp_path / "c.toml", "http://127.0.0.1:9/v1", key_env="GROUNDGEN_PREFLIGHT_ABSENT")
    )
    assert preflight(config, stages=["samples", "export"]) == []
    assert preflight(config, stages=["prompts"]) == [
        "llm.writer: environment variable GROUNDGEN_PREFLIGHT_ABSENT (the API key) is not set; export it"
    ]
    assert len(preflight(config)) == 3


def test_export_with_nothing_kept_is_an_error_not_an_empty_version(tmp_path):
    from warehouse.store import Warehouse

    Warehouse(tmp_path / "warehouse.duckdb").close()
    result = runner.invoke(app, ["export", "-w", str(tmp_path)])
    assert result.exit_code == 2
    assert error_lines(result.output) == [
        'Error: no dataset version: no sample was kept (failed or dropped rows: groundgen status; drop reasons: groundgen sql "select * from funnel")'
    ]
    assert not (tmp_path / "exports").exists() or not any((tmp_path / "exports").iterdir())
