"""A run is a ledger (flows/ledger.py): started, per-batch usage and cost, finished or killed; the
temporary Prefect server never outlives its command (flows/prefect_server.py); the Hub is offline
only when asked (flows/settings.py)."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from flows.batches import BatchResult, write_result
from flows.ledger import RunLedger, close_dead_runs, finish_status, process_alive
from schemas.errors import RowError
from schemas.rows import Run, Topic
from warehouse.store import Warehouse

REPO = Path(__file__).resolve().parent.parent
USAGE = {"teacher": {"calls": 2, "prompt_tokens": 100, "completion_tokens": 20, "cost_usd": 0.25}}


def start(warehouse: Warehouse, run_id: str = "run-1", workdir: Path | None = None) -> RunLedger:
    return RunLedger.start(
        warehouse, run_id=run_id, command="run", config_fingerprint="c", code_version="t", workdir=workdir
    )


def stored(warehouse: Warehouse, run_id: str) -> Run:
    (run,) = warehouse.rows(Run, "id = ?", [run_id])
    return run


def test_usage_and_cost_are_in_runs_after_every_batch(tmp_path):
    with Warehouse(tmp_path / "warehouse.duckdb") as warehouse:
        ledger = start(warehouse)
        first = stored(warehouse, "run-1")
        assert (first.status, first.pid, first.host) == ("running", os.getpid(), socket.gethostname())
        assert first.usage_json == "{}" and first.cost_usd == 0
        topic = Topic(id="t1", source="s", title="T", text="x", category="science")
        write_result(
            warehouse, "prompts", "run-1", ["t1"], BatchResult(rows=[topic], done_ids=["t1"], usage=USAGE)
        )
        after_one = stored(warehouse, "run-1")
        assert (
            json.loads(after_one.usage_json) == USAGE
            and after_one.cost_usd == 0.25
            and after_one.batches == 1
        )
        errors = [RowError("t2", "ModelOutputError", "bad")]
        write_result(warehouse, "prompts", "run-1", ["t2"], BatchResult(errors=errors, usage=USAGE))
        after_two = stored(warehouse, "run-1")
        assert after_two.status == "running" and after_two.cost_usd == 0.5 and after_two.batches == 2
        assert json.loads(after_two.usage_json)["teacher"]["prompt_tokens"] == 200
        ledger.finish("completed", {"prompts": {"rows_written": 1}})
        done = stored(warehouse, "run-1")
        assert done.status == "completed" and done.finished_at is not None and done.cost_usd == 0.5
        # a finished ledger is closed: a later batch under that id changes nothing
        write_result(warehouse, "prompts", "run-1", [], BatchResult(usage=USAGE))
        assert stored(warehouse, "run-1").cost_usd == 0.5


def dead_pid() -> int:
    process = subprocess.Popen([sys.executable, "-c", "pass"])
    process.wait()
    return process.pid


def test_runs_of_dead_processes_are_marked_killed(tmp_path):
    with Warehouse(tmp_path / "warehouse.duckdb") as warehouse:
        here = socket.gethostname()
        base = {"started_at": "2026-11-30T00:00:00Z", "status": "running", "command": "run"}
        base |= {"config_fingerprint": "c", "code_version": "t"}
        alive_elsewhere = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
        try:
            warehouse.replace(Run.model_validate({**base, "id": "dead", "pid": dead_pid(), "host": here}))
            warehouse.replace(
                Run.model_validate({**base, "id": "alive", "pid": alive_elsewhere.pid, "host": here})
            )
            warehouse.replace(Run.model_validate({**base, "id": "ours", "pid": os.getpid(), "host": here}))
            warehouse.replace(Run.model_validate({**base, "id": "other-host", "pid": 1, "host": "elsewhere"}))
            warehouse.replace(Run.model_validate({**base, "id": "legacy", "pid": 0, "host": ""}))
            reused = {**base, "id": "reused", "pid": alive_elsewhere.pid, "host": here, "process_started": 1}
            warehouse.replace(Run.model_validate(reused))  # that PID now names a younger process
            assert sorted(close_dead_runs(warehouse)) == ["dead", "reused"]
            statuses = dict(warehouse.connection.execute("SELECT id, status FROM runs").fetchall())
            assert statuses["dead"] == "killed" and statuses["alive"] == "running"
            # holding the work-dir lock, any other running run is dead (every writer holds the lock)
            assert sorted(close_dead_runs(warehouse, lock_held=True)) == ["alive", "legacy", "other-host"]
            assert stored(warehouse, "ours").status == "running"
            assert json.loads(stored(warehouse, "dead").counts_json)["killed"]["pid"] > 0
        finally:
            alive_elsewhere.kill()
            alive_elsewhere.wait()


def test_finish_status_names_interrupts_killed():
    assert finish_status(None) == "completed"
    assert finish_status(KeyboardInterrupt()) == "killed"
    assert finish_status(RuntimeError("x")) == "failed"


# --- Hub access -------------------------------------------------------------------------------------


def hub_env_after(tmp_path: Path, *, offline_key: bool, user_value: str | None) -> dict:
    env = {k: v for k, v in os.environ.items() if k != "HF_HUB_OFFLINE"}
    if user_value is not None:
        env["HF_HUB_OFFLINE"] = user_value
    code = (
        "import json, os, sys\n"
        "import huggingface_hub.constants as c\n"
        "from flows.settings import configure_prefect\n"
        f"configure_prefect(sys.argv[1], hub_offline={offline_key})\n"
        "print(json.dumps({'env': os.environ.get('HF_HUB_OFFLINE'), 'constant': c.HF_HUB_OFFLINE}))\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code, str(tmp_path)],
        env=env,
        cwd=REPO,
        capture_output=True,
        text=True,
        check=True,
    )
    return json.loads(out.stdout)


def test_the_hub_is_offline_only_when_asked(tmp_path):
    assert hub_env_after(tmp_path, offline_key=False, user_value=None) == {"env": None, "constant": False}
    assert hub_env_after(tmp_path, offline_key=True, user_value=None) == {"env": "1", "constant": True}
    assert hub_env_after(tmp_path, offline_key=False, user_value="1") == {"env": "1", "constant": True}


def test_hub_ids_and_local_folders_are_told_apart(tmp_path):
    from synthesis.hub_weights import is_hub_id

    assert is_hub_id("stabilityai/sdxl-turbo")
    assert not is_hub_id(str(tmp_path))
    assert not is_hub_id("")
    (tmp_path / "org" / "model").mkdir(parents=True)
    assert not is_hub_id(str(tmp_path / "org" / "model"))


def test_offline_hub_cache_miss_is_a_configuration_error(tmp_path, monkeypatch):
    import huggingface_hub.constants

    from schemas.errors import ConfigurationError
    from synthesis.hub_weights import download_pipeline

    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "cache"))
    with pytest.raises(
        ConfigurationError, match="painter model 'no-org/no-model' could not be loaded from the Hub cache"
    ):
        download_pipeline("no-org/no-model")


# --- the temporary Prefect server ------------------------------------------------------------------

HOLDER = """
import os, signal, sys, time
# Ctrl-C as in a terminal: a shell starts background jobs with SIGINT ignored, and Python then never
# raises KeyboardInterrupt (CI run as `.ci/run &` would otherwise ignore the test's SIGINT)
signal.signal(signal.SIGINT, signal.default_int_handler)
from flows.prefect_server import prefect_api_for_command
try:
    with prefect_api_for_command(sys.argv[1]) as url:
        import json
        server = json.loads(open(os.path.join(sys.argv[1], ".prefect", "temporary-server.json")).read())
        print(server["pid"], url, flush=True)
        time.sleep(120)
except KeyboardInterrupt as error:
    print("interrupted:", error, flush=True)
    sys.exit(3)
"""


def server_children(pid: int) -> list[int]:
    found = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rpartition(")")[2].split()
            cmdline = (stat.parent / "cmdline").read_bytes()
        except OSError:
            continue
        if int(fields[1]) == pid and b"prefect.server.api.server:create_app" in cmdline:
            found.append(int(stat.parent.name))
    return found


def wait_gone(pid: int, timeout_s: float = 20) -> bool:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if not process_alive(pid):
            return True
        time.sleep(0.1)
    return False


@pytest.mark.slow
@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc")
@pytest.mark.parametrize("stop", [signal.SIGTERM, signal.SIGINT])  # SIGKILL: tests/test_crash_hygiene.py
def test_the_temporary_server_does_not_outlive_its_command(tmp_path, stop):
    env = {k: v for k, v in os.environ.items() if k not in ("PREFECT_API_URL", "PREFECT_HOME")}
    env["PREFECT_HOME"] = str(tmp_path / ".prefect")
    holder = subprocess.Popen(
        [sys.executable, "-c", HOLDER, str(tmp_path)], env=env, cwd=REPO, stdout=subprocess.PIPE, text=True
    )
    try:
        line = holder.stdout.readline().split()
        assert line, "the holder did not start its server"
        server_pid, url = int(line[0]), line[1]
        assert url.startswith("http://127.0.0.1:") and server_children(holder.pid) == [server_pid]
        os.kill(holder.pid, stop)
        holder.wait(timeout=30)
        assert wait_gone(server_pid), f"temporary server {server_pid} outlived its command ({stop.name})"
        if stop != signal.SIGKILL:
            assert holder.returncode == 3  # SIGTERM too became an interrupt: finally blocks ran
            assert not (tmp_path / ".prefect" / "temporary-server.json").exists()
    finally:
        if holder.poll() is None:
            holder.kill()
            holder.wait()
