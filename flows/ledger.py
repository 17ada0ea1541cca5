"""A run is a ledger (docs/ARCHITECTURE.md, "Processes and orchestration"): its `runs` row is written
when it starts (with the owning process), after every batch (usage and cost so far), and when it
ends — so a crash leaves an honest record.

- `RunLedger.start` first marks runs whose process is gone as `killed` (`close_dead_runs`), then
  writes the new run as `running` with this process's PID, host and start time.
- `record_batch` (called by `flows.batches.write_result` for every batch of a run with an open
  ledger) adds the batch's LLM usage and rewrites the row: a SIGKILL loses at most the batch in flight.
- `finish` writes the final status and counts: `completed`, `failed` (an exception), or `killed`
  (SIGTERM or Ctrl-C, which `flows.prefect_server.signals_interrupt` turns into an interrupt).

A `running` row is dead when its host is this host and its PID is gone or now names another process
(another start time); or, when the caller holds the work-directory lock, whatever its host or PID
(every writer holds that lock, so no other run can be alive).
"""

from __future__ import annotations

import json
import os
import socket
import threading
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from flows.results import add_usage
from flows.worklock import LOCK_NAME, check_unlocked
from schemas.rows import Run
from warehouse.store import Warehouse

_OPEN: dict[str, RunLedger] = {}  # run id -> its ledger, while the run is in this process
_OPEN_LOCK = threading.Lock()


def process_started(pid: int) -> int:
    """Start time of process `pid` in clock ticks since boot (field 22 of /proc/PID/stat); 0 if unknown."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return 0
    fields = stat.rpartition(")")[2].split()  # the command name may hold spaces and parentheses
    try:
        return int(fields[19])  # fields after "(comm)" start at field 3
    except (IndexError, ValueError):
        return 0


def process_alive(pid: int, started: int = 0) -> bool:
    """Whether `pid` runs (and, when `started` is known, is still the process that started then)."""
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass
    if _zombie(pid):
        return False
    now = process_started(pid)
    return not (started and now and now != started)


def _zombie(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()[0] == "Z"
    except (OSError, IndexError):
        return False


def holds_work_lock(workdir: Path) -> bool:
    """Whether this process holds `<workdir>/groundgen.lock` (see flows/worklock.py)."""
    try:
        holder = json.loads((Path(workdir) / LOCK_NAME).read_text() or "{}")
    except (OSError, ValueError):
        return False
    return int(holder.get("pid", 0) or 0) == os.getpid()


def _dead(run: Run, lock_held: bool) -> bool:
    if run.pid == os.getpid() and run.host == socket.gethostname():
        return False  # this process: an earlier flow of ours still in progress (or abandoned by a test)
    if lock_held:
        return True
    return run.host == socket.gethostname() and not process_alive(run.pid, run.process_started)


def close_dead_runs(warehouse: Warehouse, *, lock_held: bool = False) -> list[str]:
    """Mark `running` runs whose process is gone as `killed`; return their ids."""
    killed = []
    for run in warehouse.rows(Run, "status = 'running'"):
        if _dead(run, lock_held):
            note = json.loads(run.counts_json or "{}")
            note["killed"] = {"noticed_at": datetime.now(UTC).isoformat(timespec="seconds"), "pid": run.pid}
            warehouse.replace(run.model_copy(update={"status": "killed", "counts_json": json.dumps(note)}))
            killed.append(run.id)
    return killed


def close_dead_runs_in(database: Path) -> list[str]:
    """For commands that only read (status): mark dead runs when no live process holds the work dir
    (its writer would hold the database, and would itself mark them when it started)."""
    if not database.exists():
        return []
    try:
        check_unlocked(database.parent)
    except Exception:  # noqa: BLE001 - a live writer: nothing to do, and the file is busy anyway
        return []
    with Warehouse(database) as warehouse:
        return close_dead_runs(warehouse, lock_held=False)


class RunLedger:
    """The `runs` row of one run in this process."""

    def __init__(self, warehouse: Warehouse, run: Run):
        self.warehouse = warehouse
        self.run = run
        self.usage: dict[str, dict[str, float]] = json.loads(run.usage_json or "{}")

    @classmethod
    def start(
        cls,
        warehouse: Warehouse,
        *,
        run_id: str | None = None,
        command: str,
        config_fingerprint: str,
        code_version: str,
        workdir: Path | None = None,
    ) -> RunLedger:
        """Write the new run as `running`; its id is `new_run_id()` unless given."""
        close_dead_runs(warehouse, lock_held=workdir is not None and holds_work_lock(workdir))
        pid = os.getpid()
        run = Run(
            id=run_id or new_run_id(),
            started_at=datetime.now(UTC),
            status="running",
            command=command,
            config_fingerprint=config_fingerprint,
            code_version=code_version,
            pid=pid,
            host=socket.gethostname(),
            process_started=process_started(pid),
        )
        warehouse.replace(run)
        ledger = cls(warehouse, run)
        with _OPEN_LOCK:
            _OPEN[run.id] = ledger
        return ledger

    def record_batch(self, usage: dict[str, dict[str, float]]) -> None:
        add_usage(self.usage, usage)
        cost = sum(spent.get("cost_usd", 0.0) for spent in self.usage.values())
        self.run = self.run.model_copy(
            update={
                "usage_json": json.dumps(self.usage, sort_keys=True),
                "cost_usd": cost,
                "batches": self.run.batches + 1,
            }
        )
        self.warehouse.replace(self.run)

    def finish(self, status: str, counts: dict[str, Any]) -> Run:
        with _OPEN_LOCK:
            _OPEN.pop(self.run.id, None)
        self.run = self.run.model_copy(
            update={"status": status, "finished_at": datetime.now(UTC), "counts_json": json.dumps(counts)}
        )
        self.warehouse.replace(self.run)
        return self.run


def new_run_id() -> str:
    """The id of a new run (`runs.id`), for `groundgen run` and `groundgen refresh` alike: inside a
    Prefect flow run, that flow run's id (`run_id_of`), so Prefect and the warehouse name a run the same
    way; outside one (`flows.regenerate.regenerate_with` called directly), a random id."""
    from prefect.runtime import flow_run  # a run has imported Prefect by now; the CLI's readers have not

    return run_id_of(str(flow_run.id)) if flow_run.id else uuid.uuid4().hex[:24]


def run_id_of(flow_run_id: str) -> str:
    """The `runs.id` a Prefect flow run records: its id without dashes, 24 characters."""
    return flow_run_id.replace("-", "")[:24]


def finish_status(error: BaseException | None) -> str:
    """`completed` without an error; `killed` for SIGTERM/Ctrl-C (an interrupt); else `failed`."""
    if error is None:
        return "completed"
    return "killed" if isinstance(error, KeyboardInterrupt | SystemExit) else "failed"


def record_batch(run_id: str, usage: dict[str, dict[str, float]]) -> None:
    """Add one written batch to its run's ledger, when that run has one open in this process."""
    with _OPEN_LOCK:
        ledger = _OPEN.get(run_id)
    if ledger is not None:
        ledger.record_batch(usage)
