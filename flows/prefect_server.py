"""Prefect servers on 127.0.0.1: a dedicated one (what `prefect server start` does) for the test suite
and the benchmarks that need one shared by several processes, and the temporary one a command uses
when no PREFECT_API_URL is set, which never outlives that command (see below)."""

from __future__ import annotations

import ctypes
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO

import httpx


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_healthy(url: str, process: subprocess.Popen, timeout_s: float = 90) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"server exited with {process.returncode} before it was healthy")
        try:
            if httpx.get(url, timeout=2).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.3)
    raise RuntimeError(f"{url} was not healthy after {timeout_s} s")


def start_prefect_server(
    home: Path, log: IO[bytes] | int = subprocess.DEVNULL
) -> tuple[subprocess.Popen, str]:
    """Start `prefect server start` with its own PREFECT_HOME; return (process, API URL) once healthy."""
    port = free_port()
    env = {**os.environ, "PREFECT_HOME": str(home), "PREFECT_SERVER_ANALYTICS_ENABLED": "false"}
    env.pop("PREFECT_API_URL", None)
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "prefect",
            "server",
            "start",
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--analytics-off",
        ],
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    url = f"http://127.0.0.1:{port}/api"
    try:
        wait_healthy(url + "/health", process)
    except RuntimeError:
        process.kill()
        raise
    return process, url


def stop_prefect_server(process: subprocess.Popen) -> None:
    process.terminate()
    try:
        process.wait(timeout=20)
    except subprocess.TimeoutExpired:
        process.kill()


# --- a temporary server for one command ------------------------------------------------------------
#
# Without PREFECT_API_URL, Prefect starts its own temporary server in a subprocess and stops it at
# interpreter exit (atexit). A SIGKILL (or a SIGTERM, whose default action skips atexit) left it
# running as an orphan. groundgen starts that server itself instead, for exactly one command: the
# child asks the kernel to stop it when its parent dies (PR_SET_PDEATHSIG), it is stopped when the
# command ends (normally, on an exception, on SIGTERM/SIGINT), and its PID is written to
# `<PREFECT_HOME>/temporary-server.json` so the next command can stop one left by a platform without
# PR_SET_PDEATHSIG.

SERVER_FILE = "temporary-server.json"
EPHEMERAL_APP = "prefect.server.api.server:create_app"
_PR_SET_PDEATHSIG = 1


def _die_with_parent(parent: int) -> Callable[[], None]:
    def preexec() -> None:  # runs in the child between fork and exec
        try:
            libc = ctypes.CDLL(None, use_errno=True)
            libc.prctl(_PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0)
        except (OSError, AttributeError):
            return
        if os.getppid() != parent:  # the parent died before prctl took effect
            os._exit(1)

    return preexec


def start_temporary_server(home: Path) -> tuple[subprocess.Popen, str]:
    """Prefect's temporary ("ephemeral") API server, as Prefect itself starts it, bound to this process."""
    import prefect

    port = free_port()
    env = {
        **os.environ,
        "PREFECT_HOME": str(home),
        "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
        "PREFECT_UI_ENABLED": "0",
        "PREFECT__SERVER_EPHEMERAL": "1",
        "PREFECT__SERVER_FINAL": "1",
    }
    env.pop("PREFECT_API_URL", None)
    command = [
        sys.executable, "-m", "uvicorn", "--app-dir", str(Path(prefect.__file__).parent.parent),
        "--factory", EPHEMERAL_APP, "--host", "127.0.0.1", "--port", str(port),
        "--log-level", "error", "--lifespan", "on",
    ]  # fmt: skip
    process = subprocess.Popen(
        command,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,  # Ctrl-C reaches the command, which finishes its ledger, then stops this
        preexec_fn=_die_with_parent(os.getpid()) if sys.platform.startswith("linux") else None,
    )
    url = f"http://127.0.0.1:{port}/api"
    try:
        timeout = float(os.environ.get("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", 120))
        wait_healthy(url + "/health", process, timeout_s=timeout)
    except BaseException:
        process.kill()
        process.wait()
        raise
    return process, url


def _stop_leftover_server(record: Path) -> None:
    """Stop a temporary server whose command died without stopping it (platforms without pdeathsig)."""
    from flows.ledger import process_alive, process_started

    try:
        left = json.loads(record.read_text())
    except (OSError, ValueError):
        return
    pid, owner = int(left.get("pid", 0)), int(left.get("owner_pid", 0))
    if process_alive(owner, int(left.get("owner_started", 0))) and owner != os.getpid():
        return  # its command still runs
    if process_alive(pid, int(left.get("started", 0))) and process_started(pid):
        try:
            os.kill(pid, signal.SIGTERM)
        except OSError:
            pass
    record.unlink(missing_ok=True)


@contextmanager
def prefect_api_for_command(workdir: Path | str) -> Iterator[str | None]:
    """Give the flows of one command a Prefect API: PREFECT_API_URL when set (yields it), otherwise a
    temporary server that lives exactly as long as this block (yields its URL). SIGTERM and SIGINT
    become KeyboardInterrupt inside the block, so the run's ledger records `killed` and the server
    is stopped on the way out."""
    from prefect.settings import PREFECT_API_URL, temporary_settings

    configured = os.environ.get("PREFECT_API_URL") or PREFECT_API_URL.value()
    if configured:
        with signals_interrupt():
            yield configured
        return
    home = Path(os.environ.get("PREFECT_HOME") or Path(workdir).resolve() / ".prefect")
    home.mkdir(parents=True, exist_ok=True)
    record = home / SERVER_FILE
    _stop_leftover_server(record)
    from flows.ledger import process_started

    with signals_interrupt():
        process, url = start_temporary_server(home)
        record.write_text(
            json.dumps(
                {
                    "pid": process.pid,
                    "started": process_started(process.pid),
                    "owner_pid": os.getpid(),
                    "owner_started": process_started(os.getpid()),
                    "url": url,
                }
            )
        )
        previous = os.environ.get("PREFECT_API_URL")
        os.environ["PREFECT_API_URL"] = url  # subprocesses and Ray workers report to it too
        _refresh_global_settings()  # threads without our context (Prefect's event and log workers)
        try:
            with temporary_settings(updates={PREFECT_API_URL: url}):
                yield url
        finally:
            if previous is None:
                os.environ.pop("PREFECT_API_URL", None)
            else:
                os.environ["PREFECT_API_URL"] = previous
            _refresh_global_settings()
            stop_prefect_server(process)
            record.unlink(missing_ok=True)


def _refresh_global_settings() -> None:
    import prefect.context

    refresh = getattr(prefect.context, "refresh_global_settings_context", None)
    if refresh is not None:
        refresh()


@contextmanager
def signals_interrupt() -> Iterator[None]:
    """Inside this block (main thread only), SIGTERM raises KeyboardInterrupt like Ctrl-C does, so
    `finally` blocks and the run's ledger run before the process exits."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def interrupt(signum: int, frame: object) -> None:
        raise KeyboardInterrupt(f"stopped by signal {signal.Signals(signum).name}")

    previous = signal.signal(signal.SIGTERM, interrupt)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)
