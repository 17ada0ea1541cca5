"""Reading the warehouse while a run writes it: the writing process answers read-only queries.

DuckDB lets one process open a database file for writing, and no other process may open it at all
while it does (not even read-only). So the one writer — the `run`, `refresh` or `export` process —
serves readers itself: a Unix socket in the work directory (file mode 0600: the owner only; no TCP)
accepts one request per connection and runs it on a DuckDB cursor of the writer's own connection.
A cursor reads an MVCC snapshot of everything committed so far (every finished batch), never blocks
the writer's inserts, and is interrupted after its time-out. Only SELECT/EXPLAIN statements are
accepted, inside a transaction that is rolled back, so a reader can never write.

Protocol (one request per connection): the client sends one JSON line, the server answers one JSON
header line, then, for a query that succeeded, an Arrow IPC stream of the result.

    {"op": "query", "sql": "...", "timeout": 30}    -> {"ok": true} + Arrow stream
    {"op": "snapshot", "path": "/abs/copy.duckdb"}  -> {"ok": true, "path": ..., "seconds": ...}
    {"op": "progress"}                              -> {"ok": true, "progress": {...}}
    any failure                                     -> {"ok": false, "error": "...", "kind": "..."}
"""

from __future__ import annotations

import hashlib
import json
import os
import socket
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import duckdb
import pyarrow as pa

SOCKET_NAME = "groundgen.sock"
DEFAULT_QUERY_TIMEOUT = 30.0
MAX_CONCURRENT_QUERIES = 4
READ_STATEMENTS = {"SELECT", "EXPLAIN"}


class LiveQueryError(RuntimeError):
    """A request to the running process failed; `kind` is sql, refused, timeout or unavailable."""

    def __init__(self, message: str, kind: str = "sql"):
        super().__init__(message)
        self.kind = kind


def socket_path(workdir: Path) -> Path:
    """`<workdir>/groundgen.sock`; when that path is too long for a Unix socket address (about 107
    bytes), a per-user name in the temporary directory derived from the work directory."""
    root = Path(workdir).resolve()
    path = root / SOCKET_NAME
    if len(os.fsencode(path)) < 100:
        return path
    digest = hashlib.sha256(os.fsencode(root)).hexdigest()[:20]
    return Path(tempfile.gettempdir()) / f"groundgen-{os.getuid()}-{digest}.sock"


# --- the server, in the writing process ----------------------------------------------------------------


class LiveQueryServer:
    """Answers read-only requests on `path` from cursors of `connection` (see the module doc)."""

    def __init__(
        self,
        connection: duckdb.DuckDBPyConnection,
        path: Path,
        *,
        query_timeout: float = DEFAULT_QUERY_TIMEOUT,
        progress: Callable[[], dict[str, Any]] | None = None,
    ):
        self.connection = connection
        self.path = Path(path)
        self.query_timeout = query_timeout
        self.progress = progress or dict
        self._slots = threading.BoundedSemaphore(MAX_CONCURRENT_QUERIES)
        self._stopping = threading.Event()
        self._listener: socket.socket | None = None
        self._thread: threading.Thread | None = None
        self._guard = threading.Lock()
        self._cursors: set[duckdb.DuckDBPyConnection] = set()  # requests in flight
        self._handlers: set[threading.Thread] = set()
        self.served = 0

    def start(self) -> LiveQueryServer:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.path.unlink(missing_ok=True)  # a socket left by a killed run: the work lock is ours now
        listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        previous = os.umask(0o177)  # created 0600: only the owner may connect
        try:
            listener.bind(str(self.path))
        finally:
            os.umask(previous)
        listener.listen(16)
        listener.settimeout(0.2)
        self._listener = listener
        self._thread = threading.Thread(target=self._accept_loop, name="groundgen-live-reads", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop listening, interrupt requests in flight and wait for them: the writer may then close
        its connection (no cursor of it is left running)."""
        self._stopping.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
        if self._listener is not None:
            self._listener.close()
        self.path.unlink(missing_ok=True)
        with self._guard:
            cursors, handlers = list(self._cursors), list(self._handlers)
        for cursor in cursors:
            cursor.interrupt()
        for handler in handlers:
            handler.join(timeout=10)

    def _cursor(self) -> duckdb.DuckDBPyConnection:
        cursor = self.connection.cursor()
        with self._guard:
            self._cursors.add(cursor)
        return cursor

    def _release(self, cursor: duckdb.DuckDBPyConnection) -> None:
        with self._guard:
            self._cursors.discard(cursor)
        cursor.close()

    def _accept_loop(self) -> None:
        assert self._listener is not None
        while not self._stopping.is_set():
            try:
                client, _ = self._listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            handler = threading.Thread(target=self._serve, args=(client,), daemon=True)
            with self._guard:
                self._handlers = {thread for thread in self._handlers if thread.is_alive()} | {handler}
            handler.start()

    def _serve(self, client: socket.socket) -> None:
        with client:
            client.settimeout(self.query_timeout + 5)
            try:
                request = json.loads(_read_line(client))
                self.served += 1
                if request.get("op") == "query":
                    self._query(client, str(request.get("sql", "")), request.get("timeout"))
                elif request.get("op") == "snapshot":
                    self._snapshot(client, Path(request["path"]))
                elif request.get("op") == "progress":
                    _send_header(client, {"ok": True, "progress": self.progress()})
                else:
                    _send_header(client, _error(f"unknown request {request.get('op')!r}", "refused"))
            except (OSError, ValueError, KeyError):
                return  # the client went away or spoke nonsense: nothing to answer
            except Exception as error:  # noqa: BLE001 - a reader's problem must never reach the writer
                try:
                    _send_header(client, _error(f"{type(error).__name__}: {error}", "sql"))
                except OSError:
                    pass

    def _query(self, client: socket.socket, sql: str, timeout: Any) -> None:
        limit = min(float(timeout), self.query_timeout) if timeout else self.query_timeout
        if not self._slots.acquire(timeout=limit):
            _send_header(client, _error(f"{MAX_CONCURRENT_QUERIES} queries are already running", "timeout"))
            return
        cursor = self._cursor()
        timer = threading.Timer(limit, cursor.interrupt)
        try:
            statements = cursor.extract_statements(sql)
            refused = [s.type.name for s in statements if s.type.name not in READ_STATEMENTS]
            if not statements or refused:
                what = ", ".join(sorted(set(refused))) or "nothing"
                _send_header(
                    client, _error(f"read-only: only SELECT queries are answered (got {what})", "refused")
                )
                return
            timer.start()
            cursor.execute("BEGIN TRANSACTION")
            for statement in statements[:-1]:
                cursor.execute(statement).fetchall()
            reader = cursor.sql(statements[-1]).to_arrow_reader(8192)
            _send_header(client, {"ok": True})
            with client.makefile("wb") as stream, pa.ipc.new_stream(stream, reader.schema) as writer:
                for batch in reader:
                    writer.write_batch(batch)
        except duckdb.InterruptException:
            if self._stopping.is_set():  # the client asks again: the file is free in a moment
                _send_header(client, _error("the writer finished while the query ran", "unavailable"))
            else:
                _send_header(
                    client, _error(f"the query ran past its {limit:g} s time-out and was stopped", "timeout")
                )
        except duckdb.Error as error:
            _send_header(client, _error(f"query failed: {error}", "sql"))
        finally:
            timer.cancel()
            try:
                cursor.execute("ROLLBACK")
            except duckdb.Error:
                pass
            self._release(cursor)
            self._slots.release()

    def _snapshot(self, client: socket.socket, target: Path) -> None:
        """A consistent copy of the warehouse at `target` (written next to it, then renamed)."""
        started = time.perf_counter()
        partial = target.with_name(target.name + ".partial")
        partial.unlink(missing_ok=True)
        cursor = self._cursor()
        alias = f"snapshot_{os.getpid()}_{threading.get_ident()}"
        try:
            source = cursor.execute("SELECT current_database()").fetchall()[0][0]
            cursor.execute(f"ATTACH '{_sql_string(partial)}' AS {alias}")
            try:
                cursor.execute(f"COPY FROM DATABASE {source} TO {alias}").fetchall()
            finally:
                cursor.execute(f"DETACH {alias}")
            os.replace(partial, target)
        except duckdb.Error as error:
            partial.unlink(missing_ok=True)
            kind = "unavailable" if self._stopping.is_set() else "sql"
            _send_header(client, _error(f"snapshot failed: {error}", kind))
            return
        finally:
            self._release(cursor)
        seconds = round(time.perf_counter() - started, 3)
        _send_header(client, {"ok": True, "path": str(target), "seconds": seconds})


@contextmanager
def serving_readers(
    connection: duckdb.DuckDBPyConnection,
    workdir: Path,
    *,
    progress: Callable[[], dict[str, Any]] | None = None,
    query_timeout: float | None = None,
) -> Iterator[LiveQueryServer]:
    """Serve read-only requests for as long as the block runs (the caller holds the work lock)."""
    timeout = query_timeout or float(os.environ.get("GROUNDGEN_LIVE_QUERY_TIMEOUT", DEFAULT_QUERY_TIMEOUT))
    server = LiveQueryServer(connection, socket_path(workdir), query_timeout=timeout, progress=progress)
    server.start()
    try:
        yield server
    finally:
        server.stop()


# --- the client ----------------------------------------------------------------------------------------


def request(
    workdir: Path, payload: dict[str, Any], *, timeout: float
) -> tuple[dict[str, Any], socket.socket]:
    """Send one request; return the header and the still open socket (the caller closes it)."""
    path = socket_path(workdir)
    client = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    client.settimeout(timeout)
    try:
        client.connect(str(path))
        client.sendall(json.dumps(payload).encode() + b"\n")
        header = json.loads(_read_line(client))
    except (OSError, ValueError) as error:
        client.close()
        raise LiveQueryError(
            f"no answer from the running process at {path}: {error}", "unavailable"
        ) from error
    if not header.get("ok"):
        client.close()
        raise LiveQueryError(str(header.get("error", "request failed")), str(header.get("kind", "sql")))
    return header, client


def live_query(workdir: Path, sql: str, *, timeout: float = DEFAULT_QUERY_TIMEOUT) -> pa.Table:
    """Run a read-only query in the process that writes `workdir` (an Arrow table)."""
    header, client = request(workdir, {"op": "query", "sql": sql, "timeout": timeout}, timeout=timeout + 10)
    try:
        with client.makefile("rb") as stream:
            return pa.ipc.open_stream(stream).read_all()
    except (OSError, pa.ArrowInvalid) as error:
        raise LiveQueryError(f"the running process stopped sending the result: {error}", "timeout") from error
    finally:
        client.close()


def live_snapshot(workdir: Path, target: Path, *, timeout: float = 600.0) -> dict[str, Any]:
    header, client = request(
        workdir, {"op": "snapshot", "path": str(Path(target).resolve())}, timeout=timeout
    )
    client.close()
    return header


def live_progress(workdir: Path, *, timeout: float = 5.0) -> dict[str, Any]:
    header, client = request(workdir, {"op": "progress"}, timeout=timeout)
    client.close()
    return dict(header.get("progress") or {})


def _read_line(connection: socket.socket, limit: int = 1 << 20) -> bytes:
    data = bytearray()
    while not data.endswith(b"\n"):
        chunk = connection.recv(1)
        if not chunk:
            raise ValueError("connection closed before a full line")
        data += chunk
        if len(data) > limit:
            raise ValueError("line too long")
    return bytes(data)


def _send_header(connection: socket.socket, header: dict[str, Any]) -> None:
    connection.sendall(json.dumps(header, default=str).encode() + b"\n")


def _error(message: str, kind: str) -> dict[str, Any]:
    return {"ok": False, "error": message, "kind": kind}


def _sql_string(path: Path) -> str:
    return str(path).replace("'", "''")
