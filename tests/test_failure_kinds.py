"""Failure kinds (transient / permanent / fatal): classification, the circuit breaker state machine,
the LLM client against a scripted server, the flow's stage guard, pending-work accounting and
`groundgen retry`."""

from __future__ import annotations

import asyncio
import pickle
from concurrent.futures import Future

import pytest
from typer.testing import CliRunner

from flows.batches import BatchResult, run_until_done
from flows.cli import app
from flows.stage_guard import StageGuard
from schemas.config import LLMEndpointConfig
from schemas.errors import (
    ConfigurationError,
    EndpointUnavailableError,
    FetchError,
    ModelCallError,
    ModelOutputError,
    RowError,
    error_kind,
)
from schemas.rows import Failure, Topic
from synthesis.circuit_breaker import CircuitBreaker, reset_breakers
from synthesis.llm_client import LLMClient
from testkit.servers.openai_server import ScriptedOpenAIServer, Status
from warehouse import pending
from warehouse.store import Warehouse

runner = CliRunner()


# --- classification ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("error", "kind"),
    [
        (ModelCallError("429 after retries"), "transient"),
        (ModelCallError("HTTP 400", retryable=False), "permanent"),
        (EndpointUnavailableError("open", endpoint="http://x/v1", since=1.0), "transient"),
        (ConfigurationError("key refused"), "fatal"),
        (ModelOutputError("not JSON"), "permanent"),
        (FetchError("503", status=503, retryable=True), "transient"),
        (FetchError("404", status=404), "permanent"),
        (ConnectionRefusedError(), "transient"),
        (TimeoutError(), "transient"),
        (ValueError("bug"), "permanent"),
    ],
)
def test_error_kind(error, kind):
    assert error_kind(error) == kind
    assert RowError.from_exception("r1", error).kind == kind


def test_typed_errors_keep_their_fields_through_pickling():
    """Ray workers pickle exceptions: kind and endpoint must survive."""
    for error in (
        ModelCallError("bad request", retryable=False, endpoint="http://h/v1"),
        ConfigurationError("refused", endpoint="http://h/v1"),
        EndpointUnavailableError("open", endpoint="http://h/v1", since=12.5),
    ):
        copy = pickle.loads(pickle.dumps(error))
        assert (type(copy), str(copy), copy.endpoint, error_kind(copy)) == (
            type(error),
            str(error),
            "http://h/v1",
            error_kind(error),
        )
    assert pickle.loads(pickle.dumps(EndpointUnavailableError("o", since=12.5))).since == 12.5


# --- the breaker state machine ----------------------------------------------------------------------


class Clock:
    def __init__(self) -> None:
        self.now = 1_000.0

    def __call__(self) -> float:
        return self.now


def test_breaker_opens_after_threshold_consecutive_failures_and_says_since_when():
    clock = Clock()
    breaker = CircuitBreaker("http://h/v1", threshold=3, cooldown_s=30, clock=clock)
    assert [breaker.record_failure() for _ in range(2)] == [False, False]
    breaker.record_success()  # a success ends the streak
    assert breaker.state == "closed" and breaker.consecutive_failures == 0
    breaker.record_failure()
    clock.now += 5
    breaker.record_failure()
    assert breaker.record_failure() is True
    assert breaker.state == "open" and breaker.since == 1_000.0
    with pytest.raises(EndpointUnavailableError) as raised:
        breaker.check()
    assert raised.value.since == 1_000.0 and raised.value.endpoint == "http://h/v1"
    assert "failed 3 times in a row" in str(raised.value)


def test_breaker_half_opens_after_the_cooldown_for_one_probe():
    clock = Clock()
    breaker = CircuitBreaker("e", threshold=1, cooldown_s=30, clock=clock)
    breaker.record_failure()
    clock.now += 29
    with pytest.raises(EndpointUnavailableError):
        breaker.check()
    clock.now += 1
    breaker.check()  # the probe goes through
    assert breaker.state == "half_open"
    with pytest.raises(EndpointUnavailableError):
        breaker.check()  # a second call while the probe is out is refused
    breaker.record_failure()  # the probe failed: open again, the streak's start is kept
    assert breaker.state == "open" and breaker.since == 1_000.0
    with pytest.raises(EndpointUnavailableError):
        breaker.check()
    clock.now += 30
    breaker.check()
    breaker.record_success()
    assert breaker.state == "closed" and breaker.since is None
    breaker.check()


def test_breaker_threshold_zero_never_opens_but_fatal_errors_latch():
    breaker = CircuitBreaker("e", threshold=0)
    for _ in range(50):
        breaker.record_failure()
    breaker.check()
    breaker.record_fatal(ConfigurationError("e refused the credentials (HTTP 401)"))
    with pytest.raises(ConfigurationError, match="HTTP 401"):
        breaker.check()


# --- the LLM client: classification and its breaker -------------------------------------------------


def endpoint(server: ScriptedOpenAIServer, **options) -> LLMEndpointConfig:
    return LLMEndpointConfig(base_url=server.base_url, model="m", max_retries=0, timeout_s=5, **options)


def ask(client: LLMClient):
    return asyncio.run(client.chat([{"role": "user", "content": "hi"}], use_cache=False))


@pytest.fixture(autouse=True)
def fresh_breakers():
    reset_breakers()
    yield
    reset_breakers()


def test_client_classifies_http_errors_by_kind():
    with ScriptedOpenAIServer() as server:
        client = LLMClient(endpoint(server))
        server.reply(Status(400, message="context too long"))
        with pytest.raises(ModelCallError) as bad_request:
            ask(client)
        assert error_kind(bad_request.value) == "permanent" and "context too long" in str(bad_request.value)
        server.reply(Status(503))
        with pytest.raises(ModelCallError) as unavailable:
            ask(client)
        assert error_kind(unavailable.value) == "transient"
        assert unavailable.value.endpoint == client.endpoint


def test_client_404_model_and_401_are_fatal_and_latch_without_more_requests():
    with ScriptedOpenAIServer(models=["other-model"]) as server:
        client = LLMClient(endpoint(server))
        with pytest.raises(ConfigurationError, match="does not serve model 'm'.*does not exist"):
            ask(client)
        with pytest.raises(ConfigurationError, match="does not serve model 'm'"):
            ask(client)
        assert len(server.chat_requests()) == 1, "the second call was refused by the latched breaker"
    reset_breakers()
    with ScriptedOpenAIServer(api_key="right") as server:
        client = LLMClient(endpoint(server))
        with pytest.raises(ConfigurationError, match=r"refused the credentials \(HTTP 401\)"):
            ask(client)
        assert error_kind(ConfigurationError("x")) == "fatal"


def test_client_breaker_opens_on_an_outage_and_a_probe_closes_it(monkeypatch):
    from synthesis import circuit_breaker

    monkeypatch.setattr(circuit_breaker, "_settings", {"threshold": 2, "cooldown_s": 0.2})
    reset_breakers()
    with ScriptedOpenAIServer(respond=lambda request: "fine") as server:
        client = LLMClient(endpoint(server))
        assert ask(client).content == "fine"
        server.go_down()
        for _ in range(2):
            with pytest.raises(ModelCallError, match="connection error"):
                ask(client)
        with pytest.raises(EndpointUnavailableError, match="failed 2 times in a row"):
            ask(client)  # no connection attempted
        server.come_back()
        import time

        time.sleep(0.25)
        assert ask(client).content == "fine", "the probe after the cooldown closes the breaker"
        assert ask(client).content == "fine"


# --- the flow's stage guard -------------------------------------------------------------------------


def transient(row_id: str, endpoint: str = "http://h/v1") -> RowError:
    return RowError(row_id, "ModelCallError", "connection error", kind="transient", endpoint=endpoint)


def test_guard_records_transient_drops_fatal_and_refused_calls():
    guard = StageGuard("trajectories", threshold=3)
    result = BatchResult(
        done_ids=["a"],
        errors=[
            transient("b"),
            RowError("c", "EndpointUnavailableError", "open", kind="transient", endpoint="http://h/v1"),
            RowError("d", "ModelOutputError", "not JSON", kind="permanent"),
        ],
    )
    ids, recorded = guard.screen(["a", "b", "c", "d"], result)
    assert ids == ["a", "b", "d"]
    assert [e.row_id for e in recorded.errors] == ["b", "d"]
    assert not guard.stopped, "2 transient failures < threshold 3"
    ids, recorded = guard.screen(["e", "f"], BatchResult(errors=[transient("e"), transient("f")]))
    assert guard.stop_reason == "breaker" and guard.open_endpoint == "http://h/v1"
    assert "endpoint http://h/v1 unreachable since " in guard.message(7)
    assert guard.message(7).endswith("; 7 rows waiting; rerun when it is back")
    # after the stop, errors are not recorded (the rows stay pending), finished rows still are
    ids, recorded = guard.screen(["g", "h"], BatchResult(done_ids=["g"], errors=[transient("h")]))
    assert ids == ["g"] and recorded.errors == []


def test_guard_stops_on_a_fatal_error_without_recording_it():
    guard = StageGuard("prompts", threshold=5)
    fatal = RowError("a", "ConfigurationError", "h refused the credentials (HTTP 401)", kind="fatal")
    ids, recorded = guard.screen(["a", "b"], BatchResult(errors=[fatal, transient("b")]))
    assert ids == [] and recorded.errors == [] and guard.stop_reason == "fatal"
    assert guard.message(3) == "h refused the credentials (HTTP 401)"


# --- pending work and the stage loop ----------------------------------------------------------------


def topic(i: int) -> Topic:
    return Topic(id=f"t{i}", source="test", title=f"T{i}", text="x", category="general")


@pytest.fixture()
def warehouse(tmp_path):
    with Warehouse(tmp_path / "warehouse.duckdb") as store:
        yield store


def failed(
    warehouse: Warehouse, row_id: str, kind: str, error_class: str = "ModelOutputError", stage="prompts"
):
    warehouse.record_failures(stage, [RowError(row_id, error_class, "x", kind=kind)], "run")


def test_only_permanent_failures_use_up_attempts(warehouse):
    warehouse.insert([topic(i) for i in range(3)])
    for _ in range(5):
        failed(warehouse, "t0", "transient", "ModelCallError")
    for _ in range(3):
        failed(warehouse, "t1", "permanent")
    ids = [t.id for t in pending.pending_topics(warehouse, "w", max_attempts=3)]
    assert ids == ["t0", "t2"], "five transient failures never exhaust a row; three permanent ones do"
    # failures recorded before kinds existed (kind ''): ModelCallError was transient, others count
    for row_id, error_class in (("t2", "ModelCallError"),) * 3:
        warehouse.insert(
            [
                Failure(
                    id=f"legacy{n}",
                    stage="prompts",
                    row_id=row_id,
                    error_class=error_class,
                    message="",
                    attempt=n,
                    run_id="old",
                )
                for n in range(1, 4)
            ]
        )
    assert [t.id for t in pending.pending_topics(warehouse, "w", max_attempts=3)] == ["t0", "t2"]
    assert pending.counted_failures(warehouse, "prompts", "t1") == 3


def fake_submit(outcome):
    def submit(batch):
        future: Future = Future()
        future.set_result(outcome(batch))
        return future

    return submit


def test_stage_stops_on_an_outage_with_one_message_and_waiting_rows_stay_pending(warehouse, monkeypatch):
    from synthesis import circuit_breaker

    monkeypatch.setattr(circuit_breaker, "_settings", {"threshold": 3, "cooldown_s": 60})
    warehouse.insert([topic(i) for i in range(10)])
    calls = []

    def outage(batch):
        calls.append(len(batch))
        return BatchResult(errors=[transient(t.id) for t in batch])

    counts = run_until_done(
        warehouse,
        "prompts",
        "run1",
        pending=lambda: pending.pending_topics(warehouse, "w", 3),
        item_id=lambda t: t.id,
        submit=fake_submit(outcome=outage),
        batch_size=2,
    )
    assert counts.stopped.startswith("endpoint http://h/v1 unreachable since ")
    assert counts.stopped.endswith("; 10 rows waiting; rerun when it is back")
    assert counts.done == 0 and counts.inputs == 10
    kinds = warehouse.query("select kind, count(*) n from failures group by 1").to_pylist()
    assert kinds == [{"kind": "transient", "n": 3}], "failures up to the breaker; none after it"
    assert len(pending.pending_topics(warehouse, "w", 3)) == 10


def test_transient_failures_retry_in_later_passes_then_wait_for_the_next_run(warehouse, monkeypatch):
    from synthesis import circuit_breaker

    monkeypatch.setattr(circuit_breaker, "_settings", {"threshold": 0, "cooldown_s": 60})  # never opens
    warehouse.insert([topic(i) for i in range(2)])
    passes = []

    def flaky(batch):
        passes.append([t.id for t in batch])
        return BatchResult(done_ids=["t0"], rows=[], errors=[transient("t1")])

    counts = run_until_done(
        warehouse,
        "prompts",
        "run1",
        pending=lambda: [t for t in pending.pending_topics(warehouse, "w", 3) if t.id != "t0" or not passes],
        item_id=lambda t: t.id,
        submit=fake_submit(outcome=flaky),
        batch_size=8,
    )
    assert passes == [["t0", "t1"], ["t1"], ["t1"]], "three tries in this run, then the row waits"
    assert not counts.stopped and counts.failures == 3
    assert "t1" in [t.id for t in pending.pending_topics(warehouse, "w", 3)], "the next run retries it"
    assert pending.counted_failures(warehouse, "prompts", "t1") == 0


# --- groundgen retry / status -----------------------------------------------------------------------


def test_retry_requeues_given_up_rows_and_status_shows_them(tmp_path):
    with Warehouse(tmp_path / "warehouse.duckdb") as store:
        store.insert([topic(i) for i in range(3)])
        for _ in range(3):
            failed(store, "t0", "permanent", "ModelOutputError")
        failed(store, "t1", "transient", "ModelCallError")
        for _ in range(3):
            failed(store, "t2", "permanent", "ToolError")
    status = runner.invoke(app, ["status", "-w", str(tmp_path)], terminal_width=200)
    assert status.exit_code == 0, status.output
    table = status.output[status.output.index("failed rows") :]
    assert "ModelOutputError" in table and "ModelCallError" in table and "ToolError" in table
    lines = {
        cells[1]: cells[2:4]
        for cells in (line.replace("│", " ").split() for line in table.splitlines())
        if cells and cells[0] == "prompts"
    }
    assert lines == {"ModelCallError": ["1", "0"], "ModelOutputError": ["0", "1"], "ToolError": ["0", "1"]}

    retried = runner.invoke(
        app, ["retry", "-w", str(tmp_path), "--stage", "prompts", "--error-class", "ModelOutputError"]
    )
    assert retried.exit_code == 0, retried.output
    assert "re-queued 1 rows (prompts 1; 3 failures kept as history)" in retried.output
    with Warehouse(tmp_path / "warehouse.duckdb") as store:
        assert [t.id for t in pending.pending_topics(store, "w", 3)] == ["t0", "t1"]
        assert store.count("failures") == 7, "history is kept"
        assert store.count("failures", "requeued_at IS NOT NULL") == 3
    again = runner.invoke(app, ["retry", "-w", str(tmp_path), "--error-class", "ModelOutputError"])
    assert "nothing to re-queue" in again.output


# --- the HTTP painter: the same kinds ----------------------------------------------------------------


def test_http_painter_errors_have_kinds(monkeypatch):
    from schemas.config import PainterConfig
    from schemas.protocols import PaintRequest
    from schemas.rows import Prompt, Trajectory
    from synthesis.http_painter import HTTPPainter
    from testkit.servers.images_server import ImagesServer
    from testkit.servers.images_server import Status as ImageStatus
    from testkit.synthesis_fakes import MemoryBlobs

    async def no_sleep(seconds: float) -> None:
        pass

    prompt = Prompt(id="p", topic_ids=["t"], category="art", difficulty="easy", prompt="a poster", writer="w")
    trajectory = Trajectory(
        id="tr", prompt_id="p", teacher="t", messages=[], ending="answer", gen_prompt="a museum poster"
    )
    request = PaintRequest(trajectory=trajectory, prompt=prompt, reference_sha256=[])
    monkeypatch.setenv("GROUNDGEN_KINDS_IMAGES_KEY", "sk-right")
    with ImagesServer(api_key="sk-right") as server:
        config = PainterConfig(
            kind="http",
            model="m",
            base_url=server.base_url,
            api_key_env="GROUNDGEN_KINDS_IMAGES_KEY",
            max_retries=1,
        )
        painter = HTTPPainter(config, MemoryBlobs(), fingerprint="f", sleep=no_sleep)
        server.reply(ImageStatus(503), ImageStatus(503))
        _, (busy,) = painter.paint([request])
        assert (busy.kind, busy.endpoint) == ("transient", server.base_url)
        server.reply(ImageStatus(400, message="content policy"))
        _, (refused,) = painter.paint([request])
        assert refused.kind == "permanent"
        monkeypatch.setenv("GROUNDGEN_KINDS_IMAGES_KEY", "sk-wrong")
        wrong_key = HTTPPainter(config, MemoryBlobs(), fingerprint="f", sleep=no_sleep)
        with pytest.raises(ConfigurationError, match=r"refused the key \(HTTP 401\)"):
            wrong_key.paint([request])


def test_an_older_warehouse_gets_its_stranded_rows_back(tmp_path):
    """A warehouse from before failure kinds: its ModelCallError rows (an outage) were transient and
    no longer strand their rows once migrated; other legacy failures still count."""
    import gzip
    import shutil
    from pathlib import Path

    import duckdb

    fixture = Path(__file__).parent / "fixtures" / "warehouse-v1" / "warehouse.duckdb.gz"
    database = tmp_path / "warehouse.duckdb"
    with gzip.open(fixture) as source, open(database, "wb") as target:
        shutil.copyfileobj(source, target)
    connection = duckdb.connect(str(database))
    (writer,), *_ = connection.execute("SELECT DISTINCT writer FROM prompts").fetchall()
    first, second = [
        row[0] for row in connection.execute("SELECT id FROM prompts ORDER BY id LIMIT 2").fetchall()
    ]
    for attempt in range(1, 4):
        for prompt_id, error_class in ((first, "ModelCallError"), (second, "ModelOutputError")):
            connection.execute(
                "INSERT INTO failures VALUES (?, 'trajectories', ?, ?, 'old', ?, 'run0', now())",
                [f"{prompt_id}-{attempt}", prompt_id, error_class, attempt],
            )
    connection.close()
    with Warehouse(database) as warehouse:
        waiting = {p.id for p in pending.pending_prompts(warehouse, writer, "teacher", max_attempts=3)}
        assert first in waiting, "an outage's legacy ModelCallError failures do not count"
        assert second not in waiting, "legacy permanent failures still use up attempts"
