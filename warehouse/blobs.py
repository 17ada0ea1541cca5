"""Content-addressed blob store: images by sha256, written atomically (temp file + rename).

Workers (threads, processes, Ray tasks) write blobs themselves; only rows go back to the flow.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

from schemas.ids import sha256_bytes


class BlobNotFoundError(FileNotFoundError):
    pass


class BlobStore:
    def __init__(self, root: Path | str):
        self.root = Path(root)

    def path(self, sha256: str) -> Path:
        if len(sha256) != 64 or any(c not in "0123456789abcdef" for c in sha256):
            raise ValueError(f"not a sha256 hex digest: {sha256!r}")
        return self.root / sha256[:2] / sha256

    def put(self, data: bytes) -> str:
        """Store `data` and return its sha256. Writing the same bytes twice is a no-op."""
        digest = sha256_bytes(data)
        target = self.path(digest)
        if target.exists():
            return digest
        target.parent.mkdir(parents=True, exist_ok=True)
        descriptor, temp_name = tempfile.mkstemp(dir=target.parent, prefix=".tmp-")
        try:
            with os.fdopen(descriptor, "wb") as handle:
                handle.write(data)
                handle.flush()
                os.fsync(handle.fileno())
            os.replace(temp_name, target)
        except BaseException:
            Path(temp_name).unlink(missing_ok=True)
            raise
        return digest

    def read(self, sha256: str) -> bytes:
        try:
            return self.path(sha256).read_bytes()
        except FileNotFoundError as error:
            raise BlobNotFoundError(f"blob {sha256} is not in {self.root}") from error

    def exists(self, sha256: str) -> bool:
        return self.path(sha256).exists()
