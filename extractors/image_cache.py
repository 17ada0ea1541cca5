"""Reference images fetched and normalised once per work directory.

Popular reference images recur across thousands of trajectories (offline: 416 image searches returned
20 distinct images), and validating + re-encoding one costs far more than a model turn's parsing. The
cache is a small SQLite file (`<workdir>/cache/images.sqlite`, WAL: safe for the threads of one
process and for several processes on one machine), beside the page cache, with two tables:

- `by_url`: a URL's outcome — the normalised image's blob sha256, size, format and pHash, or the
  error fetching/validating it. Errors follow the page cache's rules (`extractors.page_cache.error_ttl`):
  a URL-guard refusal is never cached, a retryable error briefly, a permanent one (404, broken image,
  decompression bomb) for a day;
- `by_content`: the sha256 of fetched bytes -> the normalised result, so the same image served under
  another URL is fetched but not decoded and re-encoded again.

A hit is served only while its blob is still in the blob store.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from extractors.page_cache import open_cache_database
from schemas.errors import GroundgenError

_SCHEMA = (
    """
    CREATE TABLE IF NOT EXISTS by_url (
        url TEXT PRIMARY KEY,
        fetched_at REAL NOT NULL,
        expires_at REAL,
        sha256 TEXT NOT NULL,
        width INTEGER NOT NULL,
        height INTEGER NOT NULL,
        format TEXT NOT NULL,
        phash TEXT NOT NULL,
        error_class TEXT NOT NULL,
        error TEXT NOT NULL,
        error_status INTEGER,
        retryable INTEGER NOT NULL
    )
    """,
    """
    CREATE TABLE IF NOT EXISTS by_content (
        raw_sha256 TEXT PRIMARY KEY,
        sha256 TEXT NOT NULL,
        width INTEGER NOT NULL,
        height INTEGER NOT NULL,
        format TEXT NOT NULL,
        phash TEXT NOT NULL
    )
    """,
)
_URL_COLUMNS = "url, fetched_at, expires_at, sha256, width, height, format, phash, error_class, error, error_status, retryable"


def image_cache_path(workdir: Path | str) -> Path:
    return Path(workdir) / "cache" / "images.sqlite"


@dataclass(frozen=True)
class StoredImage:
    """A normalised image in the blob store."""

    sha256: str
    width: int
    height: int
    format: str
    phash: str


@dataclass(frozen=True)
class CachedImage:
    """One URL's outcome: a stored image, or the error fetching or validating it."""

    url: str
    fetched_at: float
    expires_at: float | None = None
    image: StoredImage | None = None
    error_class: str = ""
    error: str = ""
    error_status: int | None = None
    retryable: bool = False

    @classmethod
    def from_error(cls, url: str, error: GroundgenError, fetched_at: float, expires_at: float) -> CachedImage:
        return cls(
            url=url,
            fetched_at=fetched_at,
            expires_at=expires_at,
            error_class=type(error).__name__,
            error=(str(error) or type(error).__name__)[:2000],
            error_status=getattr(error, "status", None),
            retryable=bool(getattr(error, "retryable", False)),
        )


class ImageCache:
    """URL -> `CachedImage` and fetched-bytes sha256 -> `StoredImage`, in one SQLite file."""

    def __init__(self, path: Path | str, *, clock: Callable[[], float] = time.time):
        self.path = Path(path)
        self.clock = clock
        self._lock = threading.Lock()
        self._connection = open_cache_database(self.path, _SCHEMA)

    def get_url(self, url: str) -> CachedImage | None:
        with self._lock:
            row = self._connection.execute(
                f"SELECT {_URL_COLUMNS} FROM by_url WHERE url = ?", (url,)
            ).fetchone()
        if row is None or (row[2] is not None and row[2] <= self.clock()):
            return None
        image = StoredImage(row[3], row[4], row[5], row[6], row[7]) if not row[8] else None
        return CachedImage(row[0], row[1], row[2], image, row[8], row[9], row[10], bool(row[11]))

    def put_url(self, entry: CachedImage) -> None:
        image = entry.image or StoredImage("", 0, 0, "", "")
        values = (
            entry.url,
            entry.fetched_at,
            entry.expires_at,
            image.sha256,
            image.width,
            image.height,
            image.format,
            image.phash,
            entry.error_class,
            entry.error,
            entry.error_status,
            int(entry.retryable),
        )
        with self._lock:
            self._connection.execute(
                f"INSERT OR REPLACE INTO by_url ({_URL_COLUMNS}) VALUES ({', '.join('?' * len(values))})",
                values,
            )

    def get_content(self, raw_sha256: str) -> StoredImage | None:
        with self._lock:
            row = self._connection.execute(
                "SELECT sha256, width, height, format, phash FROM by_content WHERE raw_sha256 = ?",
                (raw_sha256,),
            ).fetchone()
        return StoredImage(*row) if row is not None else None

    def put_content(self, raw_sha256: str, image: StoredImage) -> None:
        with self._lock:
            self._connection.execute(
                "INSERT OR REPLACE INTO by_content VALUES (?, ?, ?, ?, ?, ?)",
                (raw_sha256, image.sha256, image.width, image.height, image.format, image.phash),
            )

    def close(self) -> None:
        with self._lock:
            self._connection.close()
