"""One writer per work directory: `groundgen run`, `refresh` and `export` hold this lock.

DuckDB would refuse a second writer anyway, but with a message about file locks; this lock names the
command and PID that holds the directory and says what to do. A holder that died (SIGKILL, power
loss) leaves a lock whose PID is gone: the next command takes it over.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from schemas.errors import GroundgenError

LOCK_NAME = "groundgen.lock"


class WorkdirLockedError(GroundgenError):
    """Another groundgen process is writing this work directory."""


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _holder(path: Path) -> dict[str, Any]:
    try:
        holder = json.loads(path.read_text() or "{}")
    except (OSError, ValueError):
        holder = {}
    if not holder:  # being written by the process that just created it, or junk left behind
        try:
            fresh = time.time() - path.stat().st_mtime < 5
        except OSError:
            return {}
        return {"pid": "?", "since": "just now"} if fresh else {}
    pid = int(holder.get("pid", 0) or 0)
    return holder if pid and _alive(pid) else {}


def _locked_error(workdir: Path, path: Path, holder: dict[str, Any]) -> WorkdirLockedError:
    return WorkdirLockedError(
        f"another groundgen {holder.get('command', 'command')} is running in {workdir} "
        f"(pid {holder['pid']}, since {holder.get('since', '?')}); wait for it, or remove {path} if that "
        "process is gone"
    )


def check_unlocked(workdir: Path) -> None:
    """Fail fast (before starting a flow) when a live process holds the lock."""
    path = Path(workdir) / LOCK_NAME
    holder = _holder(path) if path.exists() else {}
    if holder:
        raise _locked_error(Path(workdir), path, holder)


@contextmanager
def work_lock(workdir: Path, command: str) -> Iterator[Path]:
    """Exclusive lock file `<workdir>/groundgen.lock` naming the command and PID."""
    path = Path(workdir) / LOCK_NAME
    path.parent.mkdir(parents=True, exist_ok=True)
    for _ in range(2):
        try:
            descriptor = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
        except FileExistsError:
            holder = _holder(path)
            if holder:
                raise _locked_error(Path(workdir), path, holder) from None
            path.unlink(missing_ok=True)  # stale: its holder died
            continue
        since = datetime.now(UTC).isoformat(timespec="seconds")
        with os.fdopen(descriptor, "w") as handle:
            json.dump({"pid": os.getpid(), "since": since, "command": command}, handle)
        try:
            yield path
        finally:
            path.unlink(missing_ok=True)
        return
    raise WorkdirLockedError(f"could not take the work directory lock {path}")
