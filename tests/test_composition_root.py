"""The composition root (`flows/resources.py`) and what it relies on: one API-key lookup, usage named
through the protocols, the search budget passed in, the per-context progress reporter, and a bounded
pool of `Resources` per process."""

from __future__ import annotations

import gc
import logging
import socket
import threading
from pathlib import Path

import pytest

from extractors.searxng import SearxngSearch
from extractors.serper import SerperSearch
from filters.rule_judge import RuleOnlyJudge
from flows import progress
from flows.preflight import check_llm_endpoints, check_painter, check_search
from flows.resources import POOL_SIZE, Resources, backend_key, close_resources, resources_for
from schemas.config import (
    DEFAULT_WORKDIR,
    Config,
    HubConfig,
    LLMEndpointConfig,
    PainterConfig,
    SearchConfig,
    TeacherConfig,
    resolve_workdir,
    secret_from_env,
    task_payload,
)
from schemas.errors import ConfigurationError
from synthesis.http_painter import HTTPPainter
from synthesis.llm_client import LLMClient, UsageMeter
from synthesis.llm_teacher import LLMTeacher
from synthesis.llm_writer import LLMWriter
from synthesis.scripted_teacher import ScriptedTeacher
from synthesis.template_writer import TemplateWriter

KEY_ENV = "GROUNDGEN_TEST_COMPOSITION_KEY"
SECRET = "sk-composition-root-secret-1234"


def closed_port() -> int:
    """A 127.0.0.1 port nothing listens on (bound, then released)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


# --- one API-key lookup ------------------------------------------------------------------------------


def test_secret_from_env_reads_the_named_variable_only(monkeypatch):
    monkeypatch.setenv(KEY_ENV, SECRET)
    assert secret_from_env(KEY_ENV) == SECRET
    assert secret_from_env("") is None  # no variable named: no key, not the empty variable's value
    monkeypatch.setenv(KEY_ENV, "")
    assert secret_from_env(KEY_ENV) is None
    monkeypatch.delenv(KEY_ENV)
    assert secret_from_env(KEY_ENV) is None


def test_every_config_section_reads_its_key_through_the_one_lookup(monkeypatch):
    monkeypatch.setenv(KEY_ENV, SECRET)
    endpoint = LLMEndpointConfig(base_url="http://127.0.0.1:1/v1", model="m", api_key_env=KEY_ENV)
    assert endpoint.api_key() == SECRET
    assert SearchConfig(provider="serper", api_key_env=KEY_ENV).api_key() == SECRET
    assert PainterConfig(kind="http", api_key_env=KEY_ENV).api_key() == SECRET
    assert HubConfig(token_env=KEY_ENV).token() == SECRET
    monkeypatch.delenv(KEY_ENV)
    assert endpoint.api_key() is None and HubConfig(token_env=KEY_ENV).token() is None


def test_a_missing_key_names_its_variable_in_every_backend(monkeypatch):
    monkeypatch.delenv(KEY_ENV, raising=False)
    endpoint = LLMEndpointConfig(base_url="http://127.0.0.1:1/v1", model="m", api_key_env=KEY_ENV)
    with pytest.raises(ConfigurationError, match=KEY_ENV):
        LLMClient(endpoint)
    with pytest.raises(ConfigurationError, match=KEY_ENV):
        SerperSearch("http://127.0.0.1:1", api_key_env=KEY_ENV)
    painter = PainterConfig(kind="http", base_url="http://127.0.0.1:1/v1", model="m", api_key_env=KEY_ENV)
    with pytest.raises(ConfigurationError, match=KEY_ENV):
        HTTPPainter(painter, blobs=None)
    search = SearchConfig(provider="serper", api_key_env=KEY_ENV)
    config = Config(search=search, painter=painter)
    assert [KEY_ENV in line for line in check_search(config) + check_painter(config)] == [True, True]


def test_a_key_never_reaches_errors_or_logs(monkeypatch, caplog):
    monkeypatch.setenv(KEY_ENV, SECRET)
    caplog.set_level(logging.DEBUG)
    base_url = f"http://127.0.0.1:{closed_port()}"
    endpoint = LLMEndpointConfig(base_url=base_url + "/v1", model="m", api_key_env=KEY_ENV)
    config = Config(
        llm={"writer": endpoint},
        writer={"kind": "llm"},
        search=SearchConfig(provider="serper", base_url=base_url, api_key_env=KEY_ENV),
        painter=PainterConfig(kind="http", base_url=base_url + "/v1", model="m", api_key_env=KEY_ENV),
    )
    problems = check_llm_endpoints(config) + check_search(config) + check_painter(config)
    assert len(problems) == 3 and all("does not answer" in line for line in problems)
    shown = [
        *problems,
        repr(SerperSearch(base_url, api_key_env=KEY_ENV)),
        repr(LLMClient(endpoint)),
        repr(HTTPPainter(config.painter, blobs=None)),
        repr(config),
        caplog.text,
    ]
    assert not [text for text in shown if SECRET in text]


# --- usage through the protocols, the search budget passed in ---------------------------------------


def test_backends_name_the_model_clients_they_bill(monkeypatch):
    assert TemplateWriter().model_clients() == {}
    assert ScriptedTeacher().model_clients() == {}
    assert RuleOnlyJudge().model_clients() == {}
    endpoint = LLMEndpointConfig(base_url="http://127.0.0.1:1/v1", model="m")
    writer = LLMWriter(endpoint)
    assert writer.model_clients() == {"writer": writer.client}
    # browse summaries without [llm.summary] use the teacher's own client: billed once, as the teacher
    teacher = LLMTeacher(endpoint, TeacherConfig(kind="llm", browse_summary=True))
    assert teacher.model_clients() == {"teacher": teacher.client, "summary": teacher.client}
    plain = LLMTeacher(endpoint)
    assert plain.model_clients() == {"teacher": plain.client}
    with UsageMeter() as meter:
        pass
    assert meter.by_role(teacher.model_clients()) == {}  # no calls, no rows


def test_search_clients_of_one_resources_share_the_budget_it_passes_in(tmp_path):
    config = Config(
        workdir=tmp_path / "data",
        search=SearchConfig(provider="searxng", base_url="http://127.0.0.1:1", requests_per_minute=30),
    )
    resources = Resources(config)
    try:
        first, second = resources.search_backend(), resources.search_backend()
        assert isinstance(first, SearxngSearch) and first is not second
        assert first.bucket is second.bucket is resources.search_bucket()
        assert first.bucket.rate == 0.5
        assert SearxngSearch("http://127.0.0.1:1").bucket is not first.bucket  # alone: its own budget
    finally:
        resources.close()


# --- the progress reporter belongs to a context, not the process -------------------------------------


class Recording(progress.SilentProgress):
    def __init__(self) -> None:
        self.started: list[str] = []

    def start(self, stage: str, total: int) -> None:
        self.started.append(stage)


def test_two_runs_in_one_process_each_see_their_own_reporter():
    both_installed = threading.Barrier(2, timeout=30)
    seen: dict[str, object] = {}

    def run(name: str) -> None:
        mine = Recording()
        with progress.reporting_to(mine):
            both_installed.wait()  # the other run has installed its reporter too
            progress.reporter().start(name, 1)
            seen[name] = progress.reporter() is mine
        seen[name + " after"] = isinstance(progress.reporter(), Recording)

    threads = [threading.Thread(target=run, args=(name,)) for name in ("a", "b")]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert seen == {"a": True, "b": True, "a after": False, "b after": False}
    assert not isinstance(progress.reporter(), Recording)  # this context never installed one


def test_reporting_to_nests_and_restores():
    outer, inner = Recording(), Recording()
    with progress.reporting_to(outer):
        with progress.reporting_to(inner):
            progress.reporter().start("prompts", 3)
        progress.reporter().start("images", 3)
    assert (outer.started, inner.started) == (["images"], ["prompts"])
    assert isinstance(progress.reporter(), progress.SilentProgress)


# --- a bounded pool of Resources ----------------------------------------------------------------------


@pytest.fixture
def pool():
    close_resources()
    yield
    close_resources()


def test_a_process_builds_backends_once_per_backend_configuration(tmp_path, pool):
    config = Config(workdir=tmp_path / "data")
    resources = resources_for(config)
    assert resources_for(Config.model_validate(config.model_dump(mode="json"))) is resources
    assert resources.writer() is resources_for(config).writer()
    # a refresh raises the sizes on every run: same backends, same Resources
    raised = config.model_copy(update={"sizes": config.sizes.model_copy(update={"sft": 99})})
    assert backend_key(raised) == backend_key(config)
    assert resources_for(raised) is resources
    other = config.model_copy(
        update={"search": SearchConfig(provider="searxng", base_url="http://127.0.0.1:1")}
    )
    assert resources_for(other) is not resources


def test_the_pool_keeps_a_few_configurations_and_closes_the_dropped_ones(tmp_path, pool):
    configs = [Config(workdir=tmp_path / f"data{index}") for index in range(POOL_SIZE + 2)]
    first = resources_for(configs[0])
    port = first.corpus_server().port
    held = resources_for(configs[1])  # a batch still running with it
    held_cache = held.page_cache()
    for config in configs[2:]:
        resources_for(config)
    assert resources_for(configs[-1]) is resources_for(configs[-1])
    # the oldest two left the pool: the unheld one closes once its last user lets go
    assert not first.closed
    del first
    gc.collect()
    with socket.socket() as probe:
        assert probe.connect_ex(("127.0.0.1", port)) != 0  # the corpus server thread is gone
    # the held one keeps working until its batch ends
    assert not held.closed and held_cache.get("http://example.org/") is None
    assert resources_for(configs[1]) is not held  # a new batch gets fresh backends
    held.close()
    assert held.closed
    with pytest.raises(RuntimeError, match="resources_for"):
        held.writer()


def test_close_resources_stops_every_corpus_server(tmp_path, pool):
    resources = resources_for(Config(workdir=tmp_path / "data"))
    port = resources.corpus_server().port
    close_resources()
    assert resources.closed
    with socket.socket() as probe:
        assert probe.connect_ex(("127.0.0.1", port)) != 0


# --- one rule for the work directory ----------------------------------------------------------------


def test_one_rule_decides_the_work_directory(tmp_path, monkeypatch):
    from flows.cli import resolve_config

    monkeypatch.chdir(tmp_path)
    configured = Config(workdir=Path("mine"))
    assert DEFAULT_WORKDIR == Path("groundgen-data") == Config().workdir
    assert resolve_workdir(None, Config()) == DEFAULT_WORKDIR
    assert resolve_workdir(None, configured) == Path("mine")
    assert resolve_workdir("flag", configured) == Path("flag")
    assert resolve_workdir(None, configured, absolute=True) == (tmp_path / "mine").resolve()
    # what flows hand their workers: plain JSON with the directory absolute
    assert task_payload(configured)["workdir"] == str((tmp_path / "mine").resolve())
    # the CLI's --workdir goes through the same rule
    assert resolve_config(None, Path("flag")).workdir == Path("flag")
    assert resolve_config(None, None).workdir == DEFAULT_WORKDIR
