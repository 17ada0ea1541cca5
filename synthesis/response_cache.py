"""The LLM response cache: reruns replay a model's answer instead of paying for it again.

Keys are the sha256 of the canonical JSON of (model, messages, parameters); values are the
completion as the server returned it (a JSON object).

Where it lives: the warehouse DuckDB file has one writer, the flow process, while model calls run in
workers (threads, processes, Ray tasks). So the cache is a separate small store the LLM client owns:
one SQLite file per endpoint under the work directory (`<workdir>/llm-cache/<model>-<hash>.sqlite`,
see `endpoint_cache_path`). SQLite in WAL mode takes concurrent readers and serialised writers from
several processes on one machine; on a cluster give each node its own work directory (a miss only
costs a paid call). `MemoryResponseCache` is the in-process variant for tests and one-off runs.
"""

from __future__ import annotations

import hashlib
import json
import re
import sqlite3
import threading
import time
from pathlib import Path
from typing import Any, Protocol

from schemas.config import LLMEndpointConfig
from schemas.ids import canonical_json, content_id


def cache_key(model: str, messages: list[dict[str, Any]], parameters: dict[str, Any]) -> str:
    """sha256 hex of canonical JSON of the call: the same call always has the same key."""
    payload = canonical_json({"model": model, "messages": messages, "parameters": parameters})
    return hashlib.sha256(payload.encode("utf-8")).hexdigest()


class ResponseCache(Protocol):
    def get(self, key: str) -> dict[str, Any] | None: ...

    def put(self, key: str, value: dict[str, Any]) -> None: ...

    def delete(self, key: str) -> None:
        """Forget a response (callers evict answers they could not use, so a retry pays again)."""
        ...


class MemoryResponseCache:
    def __init__(self) -> None:
        self._values: dict[str, str] = {}

    def get(self, key: str) -> dict[str, Any] | None:
        text = self._values.get(key)
        return None if text is None else json.loads(text)

    def put(self, key: str, value: dict[str, Any]) -> None:
        self._values[key] = json.dumps(value)

    def delete(self, key: str) -> None:
        self._values.pop(key, None)

    def __len__(self) -> int:
        return len(self._values)


class SqliteResponseCache:
    """A key-value table in one SQLite file (WAL mode, safe across threads and local processes)."""

    def __init__(self, path: Path | str):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()
        self._connection = sqlite3.connect(
            self.path, timeout=30, check_same_thread=False, isolation_level=None
        )
        self._connection.execute("PRAGMA journal_mode=WAL")
        self._connection.execute("PRAGMA synchronous=NORMAL")
        self._connection.execute(
            "CREATE TABLE IF NOT EXISTS responses (key TEXT PRIMARY KEY, value TEXT NOT NULL, created_at REAL)"
        )

    def get(self, key: str) -> dict[str, Any] | None:
        with self._lock:
            row = self._connection.execute("SELECT value FROM responses WHERE key = ?", (key,)).fetchone()
        return None if row is None else json.loads(row[0])

    def put(self, key: str, value: dict[str, Any]) -> None:
        with self._lock:
            self._connection.execute(
                "INSERT OR REPLACE INTO responses (key, value, created_at) VALUES (?, ?, ?)",
                (key, json.dumps(value), time.time()),
            )

    def delete(self, key: str) -> None:
        with self._lock:
            self._connection.execute("DELETE FROM responses WHERE key = ?", (key,))

    def __len__(self) -> int:
        with self._lock:
            return self._connection.execute("SELECT count(*) FROM responses").fetchone()[0]

    def close(self) -> None:
        with self._lock:
            self._connection.close()


def endpoint_cache_path(workdir: Path | str, endpoint: LLMEndpointConfig) -> Path:
    """`<workdir>/llm-cache/<model>-<hash of base_url and model>.sqlite` (no key in the name)."""
    slug = re.sub(r"[^A-Za-z0-9._-]+", "_", endpoint.model)[:60] or "model"
    return Path(workdir) / "llm-cache" / f"{slug}-{content_id(endpoint.base_url, endpoint.model)[:12]}.sqlite"
