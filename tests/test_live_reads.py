"""Reading while a run writes: the writer answers read-only queries over its Unix socket (fast tests,
one process: the writer's server runs in a thread, the reader talks to it over the socket)."""

from __future__ import annotations

import io
import json
import os
import re
import subprocess
import sys
import threading
import time
from pathlib import Path

import duckdb
import pytest
from typer.testing import CliRunner

from flows.cli import app
from flows.live_status import RateTracker, serve_readers, spend, take_snapshot, watch
from flows.progress import SilentProgress, reporter
from flows.worklock import work_lock
from schemas.rows import Topic
from warehouse.live import LiveQueryServer, live_progress, socket_path
from warehouse.query import QueryError, WarehouseReader, run_query
from warehouse.store import Warehouse


def topics(start: int, count: int) -> list[Topic]:
    return [
        Topic(id=f"t{n:05d}", source="test", title=f"title {n}", text=f"text {n}", category="history")
        for n in range(start, start + count)
    ]


@pytest.fixture
def writing(tmp_path):
    """A work directory whose warehouse is open for writing, with readers served, under the work lock."""
    workdir = tmp_path / "data"
    with work_lock(workdir, "run"), Warehouse(workdir / "warehouse.duckdb") as warehouse:
        warehouse.insert(topics(0, 10))
        with serve_readers(warehouse, workdir) as ledger:
            yield workdir, warehouse, ledger


def test_queries_during_a_run_see_every_committed_batch(writing):
    workdir, warehouse, _ = writing
    database = workdir / "warehouse.duckdb"
    assert socket_path(workdir) == workdir / "groundgen.sock"
    assert os.stat(socket_path(workdir)).st_mode & 0o777 == 0o600
    seen = []
    for batch in range(3):
        seen.append(run_query(database, "select count(*) as n from topics").to_pylist()[0]["n"])
        warehouse.insert(topics(10 + batch * 5, 5))
    seen.append(run_query(database, "select count(*) as n from topics").to_pylist()[0]["n"])
    assert seen == [10, 15, 20, 25]
    result = run_query(database, "select id, title from topics where id = 't00003'")
    assert result.to_pylist() == [{"id": "t00003", "title": "title 3"}]
    with WarehouseReader(database) as reader:
        reader.table("select 1")
        assert reader.live


@pytest.mark.parametrize(
    "sql",
    [
        "delete from topics",
        "select 1; delete from topics",
        "insert into topics select * from topics",
        "attach 'x.duckdb' as x",
        "copy topics to 'out.csv'",
        "set threads = 1",
    ],
)
def test_readers_cannot_write(writing, sql):
    workdir, warehouse, _ = writing
    with pytest.raises(QueryError, match="read-only: only SELECT queries are answered"):
        run_query(workdir / "warehouse.duckdb", sql)
    assert warehouse.count("topics") == 10


def test_sql_errors_come_back_as_query_errors(writing):
    workdir, _, _ = writing
    with pytest.raises(QueryError, match="query failed: .*no_such_table"):
        run_query(workdir / "warehouse.duckdb", "select * from no_such_table")


def test_a_slow_reader_is_stopped_at_its_bound_and_never_blocks_the_writer(tmp_path):
    workdir = tmp_path / "data"
    with Warehouse(workdir / "warehouse.duckdb") as warehouse:
        server = LiveQueryServer(warehouse.connection, socket_path(workdir), query_timeout=2.0).start()
        try:
            outcome: dict[str, object] = {}

            def slow_reader() -> None:
                try:
                    run_query(workdir / "warehouse.duckdb", "select count(*) from range(100000000000)")
                except QueryError as error:
                    outcome["error"] = str(error)
                outcome["ended"] = time.monotonic()

            thread = threading.Thread(target=slow_reader)
            thread.start()
            time.sleep(0.3)  # the slow query is running now
            for batch in range(5):
                warehouse.insert(topics(batch * 20, 20))
            writes_done = time.monotonic()
            assert "ended" not in outcome  # every write committed while the slow query still ran
            thread.join(timeout=30)
            assert outcome["ended"] > writes_done
            assert "the query ran past its 2 s time-out and was stopped" in str(outcome["error"])
            assert warehouse.count("topics") == 100
        finally:
            server.stop()
    assert not socket_path(workdir).exists()


def test_a_run_that_ends_during_a_query_interrupts_it_and_the_reader_goes_on_alone(tmp_path):
    workdir = tmp_path / "data"
    warehouse = Warehouse(workdir / "warehouse.duckdb")
    warehouse.insert(topics(0, 5))
    server = LiveQueryServer(warehouse.connection, socket_path(workdir), query_timeout=60).start()
    outcome: dict[str, str] = {}

    def slow_reader() -> None:
        try:  # asks the run, is cut off when it ends, then reads the file itself until its time-out
            run_query(workdir / "warehouse.duckdb", "select count(*) from range(100000000000)", timeout=4)
        except QueryError as error:
            outcome["error"] = str(error)

    thread = threading.Thread(target=slow_reader)
    thread.start()
    time.sleep(0.5)
    server.stop()  # interrupts the query in flight and waits for it
    warehouse.close()
    thread.join(timeout=30)
    assert outcome["error"] == "the query ran past its 4 s time-out and was stopped"
    assert run_query(workdir / "warehouse.duckdb", "select count(*) n from topics").to_pylist() == [{"n": 5}]


def test_a_reader_that_cannot_get_in_says_what_runs_and_how_long_it_waited(tmp_path):
    workdir = tmp_path / "data"
    with Warehouse(workdir / "warehouse.duckdb") as warehouse:
        warehouse.insert(topics(0, 3))
    with work_lock(workdir, "refresh"):  # a writer that has not opened its warehouse yet
        holder = json.loads((workdir / "groundgen.lock").read_text())
        with pytest.raises(QueryError) as raised:
            run_query(workdir / "warehouse.duckdb", "select 1", timeout=0.5)
    message = str(raised.value)
    assert message.startswith("waited 0.")
    assert f"groundgen refresh (pid {os.getpid()}, started {holder['since']}) is writing it" in message
    assert "Could not set lock" not in message


def test_sql_right_after_a_run_started_waits_for_its_warehouse(tmp_path):
    workdir = tmp_path / "data"
    with work_lock(workdir, "run"):  # the run holds the work directory, its warehouse is not there yet
        result = CliRunner().invoke(app, ["sql", "select 1", "-w", str(workdir), "--timeout", "1"])
    assert result.exit_code == 2
    assert "waited 1.0 s for" in result.output and f"groundgen run (pid {os.getpid()}" in result.output
    assert "run `groundgen run` first" not in result.output


def test_a_writer_waits_for_a_reader_that_holds_the_file(tmp_path):
    database = tmp_path / "data" / "warehouse.duckdb"
    with Warehouse(database) as warehouse:
        warehouse.insert(topics(0, 2))
    reader = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import duckdb, sys, time; c = duckdb.connect(sys.argv[1], read_only=True); print('open', flush=True); "
            "time.sleep(1.5); c.close(); print('closed', flush=True); time.sleep(30)",
            str(database),
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert reader.stdout is not None and reader.stdout.readline().strip() == "open"
        with Warehouse(database) as warehouse:  # waits for the reader instead of failing
            assert reader.stdout.readline().strip() == "closed"
            warehouse.insert(topics(2, 2))
            assert warehouse.count("topics") == 4
    finally:
        reader.kill()
        reader.wait()


def test_another_program_holding_the_file_is_named_without_a_raw_lock_error(tmp_path):
    database = tmp_path / "data" / "warehouse.duckdb"
    with Warehouse(database) as warehouse:
        warehouse.insert(topics(0, 3))
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import duckdb, sys, time; c = duckdb.connect(sys.argv[1]); print('open', flush=True); time.sleep(60)",
            str(database),
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "open"
        with pytest.raises(QueryError) as raised:
            run_query(database, "select 1", timeout=0.5)
    finally:
        holder.kill()
        holder.wait()
    assert "no groundgen command holds it, but another program does" in str(raised.value)
    assert str(raised.value).startswith("waited 0.")


def test_a_socket_left_by_a_killed_run_is_ignored(tmp_path):
    workdir = tmp_path / "data"
    with Warehouse(workdir / "warehouse.duckdb") as warehouse:
        warehouse.insert(topics(0, 4))
    import socket

    stale = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    stale.bind(str(socket_path(workdir)))  # bound, never listening, like one whose process died
    stale.close()
    (workdir / "groundgen.lock").write_text(json.dumps({"pid": 999999999, "since": "x", "command": "run"}))
    assert run_query(workdir / "warehouse.duckdb", "select count(*) n from topics").to_pylist() == [{"n": 4}]


def test_snapshot_during_a_run_opens_in_any_duckdb_client(writing, tmp_path):
    workdir, warehouse, _ = writing
    message = take_snapshot(workdir / "warehouse.duckdb", tmp_path / "copy.duckdb")
    assert message.startswith(f"snapshot of the running warehouse -> {tmp_path / 'copy.duckdb'}")
    warehouse.insert(topics(100, 5))  # after the snapshot: not in it
    copy = duckdb.connect(str(tmp_path / "copy.duckdb"), read_only=True)
    try:
        assert copy.execute("select count(*) from topics").fetchall() == [(10,)]
        assert copy.execute("select count(*) from funnel where stage = 'topics'").fetchall() == [(1,)]
    finally:
        copy.close()


def test_snapshot_cli_without_a_run(tmp_path):
    workdir = tmp_path / "data"
    with Warehouse(workdir / "warehouse.duckdb") as warehouse:
        warehouse.insert(topics(0, 7))
    result = CliRunner().invoke(app, ["snapshot", "-w", str(workdir), "-o", str(tmp_path / "s.duckdb")])
    assert result.exit_code == 0, result.output
    copy = duckdb.connect(str(tmp_path / "s.duckdb"), read_only=True)
    try:
        assert copy.execute("select count(*) from topics").fetchall() == [(7,)]
    finally:
        copy.close()


def test_progress_ledger_is_served_and_passes_calls_on(writing):
    workdir, _, ledger = writing
    assert reporter() is ledger and isinstance(ledger.inner, SilentProgress)
    ledger.start("prompts", 40)
    ledger.advance("prompts", 16)
    progress = live_progress(workdir)
    assert {k: progress["prompts"][k] for k in ("total", "done", "finished")} == {
        "total": 40,
        "done": 16,
        "finished": False,
    }


def test_rate_tracker_and_spend():
    rates = RateTracker(window=60)
    rates.observe("images", 0, 100.0)
    rates.observe("images", 30, 110.0)
    assert rates.rate("images") == 3.0
    assert rates.eta("images", 60) == 20.0
    rates.observe("images", 5, 111.0)  # a new pass: history restarts
    assert rates.rate("images") is None
    counts = {
        "prompts": {
            "usage": {"writer": {"calls": 4, "prompt_tokens": 100, "completion_tokens": 20, "cost_usd": 0.5}}
        },
        "trajectories": {"usage": {"teacher": {"calls": 2, "total_tokens": 50, "cost_usd": 0.25}}},
        "export": {"inputs": 3},
    }
    assert spend(json.dumps(counts)) == {"calls": 6.0, "tokens": 170.0, "cost_usd": 0.75}
    assert spend("not json") == {"calls": 0.0, "tokens": 0.0, "cost_usd": 0.0}


def test_watch_shows_stages_progress_and_eta_during_a_run(writing):
    from rich.console import Console

    workdir, warehouse, ledger = writing
    ledger.start("prompts", 10)
    console = Console(record=True, width=160, force_terminal=False, file=io.StringIO())
    ledger.advance("prompts", 2)

    def advance_later() -> None:
        time.sleep(0.3)
        ledger.advance("prompts", 4)

    thread = threading.Thread(target=advance_later)
    thread.start()
    watch(workdir / "warehouse.duckdb", max_attempts=3, interval=0.6, iterations=2, console=console)
    thread.join()
    text = console.export_text()
    assert f"groundgen run (pid {os.getpid()}" in text and "is writing" in text
    stage_lines = [line.split("│") for line in text.splitlines() if line.count("│") == 6]
    prompts = [cells for cells in stage_lines if cells[0].strip() == "prompts"][-1]
    assert prompts[4].strip() == "6/10" and float(prompts[5]) > 0
    assert re.fullmatch(r"\d+m\d\ds", prompts[6].strip())  # the ETA from the recent rate
    topics = [cells for cells in stage_lines if cells[0].strip() == "topics"][-1]
    assert topics[1].strip() == "10"


def test_cli_status_and_sql_during_a_run(writing):
    workdir, warehouse, _ = writing
    cli = CliRunner()
    status = cli.invoke(app, ["status", "-w", str(workdir)], env={"COLUMNS": "200"})
    assert status.exit_code == 0, status.output
    assert "topics" in status.output and "mined" in status.output
    sql = cli.invoke(app, ["sql", "select count(*) as n from topics", "-w", str(workdir), "-f", "json"])
    assert sql.exit_code == 0, sql.output
    assert json.loads(sql.output) == {"n": 10}


def test_long_work_directories_get_a_short_socket_name(tmp_path):
    deep = tmp_path / ("d" * 60) / ("e" * 60)
    path = socket_path(deep)
    assert path.parent == Path(os.environ.get("TMPDIR", "/tmp")) and len(str(path)) < 100
    assert socket_path(deep) == path and socket_path(tmp_path / "other") != path
