"""Deterministic ids: content hashes of a row's inputs and the producing backend's fingerprint.

The same inputs under the same backend configuration always give the same id, which is what makes
reruns idempotent (insert-if-absent) and resumable (finished rows are skipped).
"""

from __future__ import annotations

import hashlib
import json
from typing import Any

ID_LENGTH = 24  # hex characters: 96 bits, collision-free at any dataset size we will see


def canonical_json(value: Any) -> str:
    """JSON with sorted keys and no whitespace: the byte form that ids and fingerprints hash."""
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False, default=str)


def content_id(*parts: Any) -> str:
    """A short, stable id for the given parts (strings, numbers, lists, dicts)."""
    digest = hashlib.sha256(canonical_json(list(parts)).encode("utf-8")).hexdigest()
    return digest[:ID_LENGTH]


def fingerprint(config: Any) -> str:
    """Fingerprint of a backend configuration: pydantic models (also nested in dicts) or plain data."""
    from pydantic_core import to_jsonable_python

    return content_id(to_jsonable_python(config))


def sha256_bytes(data: bytes) -> str:
    """The full sha256 hex digest of a blob: the blob store's key."""
    return hashlib.sha256(data).hexdigest()
