"""Publish an exported version folder to the Hugging Face Hub (or any Hub-compatible endpoint).

One commit per version ("Add dataset version v2"), a tag per version, then the remote file list and
sizes are checked against the manifest. Files are uploaded first, one at a time, the way the Hub takes
them (LFS objects through the batch API — single PUT or multipart — or Xet storage when `hf_xet` is
installed and the endpoint offers it; small text files inline), then one commit of pointers. So memory
stays flat whatever the version's size, progress is reported in bytes, and a push interrupted anywhere
(during an upload, before the commit, between commit and tag) completes when run again: objects the
Hub already stores are skipped and the commit skips files it already has unchanged. The commit names
the branch head it was built on; when someone else moved the branch meanwhile (HTTP 412), the head is
read again and the commit retried once — never overwriting another commit silently. Only 429, 500,
502, 503 and 504 answers are retried, with exponential backoff and jitter (Retry-After honoured), by
the shared `schemas/retry.py` `RetryPolicy` (`hub_retry_policy`; docs/ARCHITECTURE.md, "Failures").
The token is never logged or returned.
"""

from __future__ import annotations

import logging
import math
import os
import time
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any, TypeVar

from schemas.config import HubConfig
from schemas.errors import GroundgenError
from schemas.retry import RetryPolicy, retry_after_seconds, run_with_retries
from warehouse.manifest import data_files, file_sha256, loads_manifest

logger = logging.getLogger("groundgen.hub")
T = TypeVar("T")

DEFAULT_ENDPOINT = "https://huggingface.co"
RETRY_STATUSES = frozenset({429, 500, 502, 503, 504})
REPO_TYPE = "dataset"


class PushError(GroundgenError):
    """The push could not be made or verified (bad export folder, remote differs from the manifest)."""


@dataclass(frozen=True)
class PushReport:
    repo_id: str
    version: str
    endpoint: str
    commit: str  # the commit the version tag points to ("" in a dry run)
    created_commit: bool  # False when the Hub already had every file (re-push, resumed push)
    already_tagged: bool  # the version tag existed before this push: nothing was changed
    files: tuple[str, ...]  # paths in the repo that make up the version
    bytes: int
    deleted: tuple[str, ...] = ()  # stale data files of an earlier version removed by the commit
    dry_run: bool = False
    transfer: str = ""  # "xet" or "lfs": how large files travelled
    retried_on_moved_branch: bool = False  # the branch moved under the push and the commit was rebuilt


@dataclass(frozen=True)
class PushProgress:
    """Upload progress, reported after each file: bytes done of the total and the rate so far."""

    file: str
    files_done: int
    files_total: int
    bytes_done: int
    bytes_total: int
    seconds: float

    @property
    def bytes_per_second(self) -> float:
        return self.bytes_done / self.seconds if self.seconds > 0 else 0.0


def hub_settings(hub: HubConfig | None = None) -> tuple[str, str | None]:
    """(endpoint, token) from the environment variables the Hub config names."""
    hub = hub or HubConfig()
    endpoint = os.environ.get(hub.endpoint_env) or DEFAULT_ENDPOINT
    return endpoint.rstrip("/"), hub.token()


def _differs(path: Path) -> PushError:
    return PushError(f"{path} is missing or differs from the manifest; re-export the version")


def local_files(export_dir: Path, *, check_content: bool = True) -> tuple[dict[str, Any], dict[str, int]]:
    """The manifest and {repo path: size} of the version folder, after checking files against it
    (sizes always; sha256 too unless `check_content` is False — a push hashes while it uploads)."""
    manifest_path = export_dir / "manifest.json"
    if not manifest_path.exists():
        raise PushError(f"{export_dir} has no manifest.json: is it an export folder?")
    manifest = loads_manifest(manifest_path.read_text(encoding="utf-8"))
    sizes: dict[str, int] = {}
    for shard in data_files(manifest):
        path = export_dir / shard.path
        if not path.exists() or path.stat().st_size != shard.size:
            raise _differs(path)
        if check_content and file_sha256(path) != shard.sha256:
            raise _differs(path)
        sizes[shard.path] = shard.size
    sizes["manifest.json"] = manifest_path.stat().st_size
    return manifest, sizes


def hub_retry_policy(attempts: int = 5, backoff_s: float = 1.0) -> RetryPolicy:
    """The Hub's policy: `backoff_s` doubling without a cap, times 1 to 1.5, and at least the Retry-After
    (up to 300 s; `backoff_s = 0` waits for nothing, Retry-After included)."""
    return RetryPolicy(
        attempts=attempts,
        base_s=backoff_s,
        cap_s=math.inf,
        jitter=(1.0, 1.5),
        retry_after_cap_s=300.0 if backoff_s > 0 else 0.0,
        retry_after_is_floor=True,
        statuses=RETRY_STATUSES,
    )


def _retry_after_s(error: BaseException) -> float | None:
    from huggingface_hub.errors import HfHubHTTPError

    http_error = _http_error(error, HfHubHTTPError)
    response = http_error.response if http_error is not None else None
    return retry_after_seconds(response.headers.get("retry-after")) if response is not None else None


def with_retries(
    call: Callable[[], T], what: str, *, attempts: int = 5, backoff_s: float = 1.0, sleep=time.sleep
) -> T:
    """Run `call`, retrying only 429/5xx answers, with exponential backoff and jitter (`hub_retry_policy`).

    Errors an upload raises from inside huggingface_hub's thread pool arrive wrapped (RuntimeError
    "Error while uploading ..."); the HTTP error is found on the exception chain."""
    policy = hub_retry_policy(attempts, backoff_s)

    def retryable(error: BaseException) -> bool:
        status = _status(error)
        return status is not None and policy.retries_status(status)

    def log(error: BaseException, attempt: int, delay: float) -> None:
        logger.warning(
            "%s: HTTP %s, retry %d/%d in %.1fs", what, _status(error), attempt, attempts - 1, delay
        )

    return run_with_retries(call, policy, retryable, retry_after=_retry_after_s, sleep=sleep, on_retry=log)


def _http_error(error: BaseException, kind: type[Exception]) -> Any:
    seen: BaseException | None = error
    while seen is not None:
        if isinstance(seen, kind):
            return seen
        seen = seen.__cause__ or seen.__context__
    return None


def _status(error: BaseException) -> int | None:
    from huggingface_hub.errors import HfHubHTTPError

    http_error = _http_error(error, HfHubHTTPError)
    return http_error.response.status_code if http_error is not None and http_error.response else None


def xet_available(endpoint: str, repo_id: str, token: str | None) -> bool:
    """Whether uploads can use Xet storage: `hf_xet` is installed and the endpoint hands out write tokens.

    The Hub does; a Hub-compatible server without Xet answers 404, and the push then uses LFS."""
    from huggingface_hub.utils import get_session

    try:
        from huggingface_hub.utils._runtime import is_xet_available
    except ImportError:  # a huggingface_hub from before Xet: LFS only
        return False
    if not is_xet_available():
        return False
    url = f"{endpoint}/api/{REPO_TYPE}s/{repo_id}/xet-write-token/main"
    headers = {"authorization": f"Bearer {token}"} if token else {}
    try:
        response = get_session().get(url, headers=headers, timeout=30)
    except Exception as error:  # a network error: let the LFS path report it with its own retries
        logger.info(
            "%s: Xet token request failed (%s); uploading through LFS", endpoint, type(error).__name__
        )
        return False
    return response.status_code == 200


@contextmanager
def _transfer(use_xet: bool) -> Iterator[None]:
    """Scope huggingface_hub's choice between Xet and LFS to this push (it reads a module constant)."""
    from huggingface_hub import constants

    previous = getattr(constants, "HF_HUB_DISABLE_XET", False)
    constants.HF_HUB_DISABLE_XET = previous or not use_xet
    try:
        yield
    finally:
        constants.HF_HUB_DISABLE_XET = previous


def verify_remote(api: Any, repo_id: str, revision: str, sizes: dict[str, int]) -> None:
    """Every version file is in the repo at `revision` with its size, and no stale data file is."""
    from huggingface_hub.hf_api import RepoFile

    remote = {
        entry.path: entry.size
        for entry in api.list_repo_tree(repo_id, revision=revision, recursive=True, repo_type=REPO_TYPE)
        if isinstance(entry, RepoFile)
    }
    missing = sorted(path for path, size in sizes.items() if remote.get(path) != size)
    stale = sorted(p for p in remote if p.startswith("data/") and p not in sizes)
    if missing or stale:
        raise PushError(
            f"remote {repo_id}@{revision} differs from the manifest: missing or wrong size {missing}, "
            f"unexpected {stale}"
        )


def push_version(
    export_dir: Path | str,
    repo_id: str,
    *,
    endpoint: str | None = None,
    token: str | None = None,
    private: bool = False,
    dry_run: bool = False,
    hub: HubConfig | None = None,
    attempts: int = 5,
    backoff_s: float = 1.0,
    on_progress: Callable[[PushProgress], None] | None = None,
) -> PushReport:
    """Push `export_dir` (an `exports/<version>/` folder) to dataset repo `repo_id`, tagged `<version>`.

    `endpoint` and `token` default to the environment variables named by `hub` (`HF_ENDPOINT`,
    `HF_TOKEN`). `dry_run` checks the folder and reports what would be pushed without any network call.
    `on_progress` is called after each uploaded file with the bytes done and the rate.
    """
    export_dir = Path(export_dir)
    manifest, sizes = local_files(export_dir, check_content=dry_run)
    version = manifest["version"]
    env_endpoint, env_token = hub_settings(hub)
    endpoint = (endpoint or env_endpoint).rstrip("/")
    token = token or env_token
    files = tuple(sorted(sizes))
    total = sum(sizes.values())
    if dry_run:
        return PushReport(repo_id, version, endpoint, "", False, False, files, total, dry_run=True)

    from huggingface_hub import HfApi

    api = HfApi(endpoint=endpoint, token=token)

    def retried(call: Callable[[], T], what: str) -> T:
        return with_retries(call, what, attempts=attempts, backoff_s=backoff_s)

    retried(
        lambda: api.create_repo(repo_id, repo_type=REPO_TYPE, private=private, exist_ok=True), "create_repo"
    )
    refs = retried(lambda: api.list_repo_refs(repo_id, repo_type=REPO_TYPE), "list_repo_refs")
    tags = {ref.name: ref.target_commit for ref in refs.tags}
    if version in tags:
        verify_remote(api, repo_id, version, sizes)
        logger.info(
            "%s: version %s is already tagged at %s; nothing to push", repo_id, version, tags[version]
        )
        return PushReport(repo_id, version, endpoint, tags[version], False, True, files, total)

    counts = manifest["counts"]
    description = (
        f"groundgen dataset version {version} (parent: {manifest['parent'] or 'none'}): "
        f"{counts['sft']} SFT rows, {counts['rl']} RL rows; config {manifest['config_fingerprint']}, "
        f"code {manifest['code_version']}."
    )
    use_xet = xet_available(endpoint, repo_id, token)
    transfer = "xet" if use_xet else "lfs"
    logger.info(
        "%s: pushing version %s (%d files, %d bytes) to %s through %s",
        repo_id,
        version,
        len(files),
        total,
        endpoint,
        transfer,
    )
    known_sha256 = {shard.path: shard.sha256 for shard in data_files(manifest)}
    hashing = ThreadPoolExecutor(1, thread_name_prefix="push-verify")
    try:
        with _transfer(use_xet):
            # each file's sha256 is checked against the manifest one file ahead of its upload (hashlib
            # releases the GIL), so verifying costs no extra wall time on top of the upload
            verified = {
                path: hashing.submit(_matches, export_dir / path, known_sha256[path])
                for path in files
                if path in known_sha256
            }
            operations = _upload(
                api, export_dir, files, sizes, verified, known_sha256, repo_id, retried, on_progress
            )
            info, stale, moved = _commit(api, repo_id, version, operations, sizes, description, retried)
    finally:  # a failed upload does not wait for the remaining files to be hashed
        hashing.shutdown(wait=True, cancel_futures=True)
    if info is None:  # someone else pushed this very version meanwhile: its tag stands
        refs = retried(lambda: api.list_repo_refs(repo_id, repo_type=REPO_TYPE), "list_repo_refs")
        commit = {ref.name: ref.target_commit for ref in refs.tags}[version]
        verify_remote(api, repo_id, version, sizes)
        return PushReport(repo_id, version, endpoint, commit, False, True, files, total, transfer=transfer)
    created = bool(info.oid) and info.created

    def tag():
        from huggingface_hub.errors import HfHubHTTPError

        try:
            api.create_tag(
                repo_id, tag=version, revision=info.oid, tag_message=description, repo_type=REPO_TYPE
            )
        except HfHubHTTPError as error:  # tagged by a concurrent push of the same version
            if error.response is None or error.response.status_code != 409:
                raise

    retried(tag, "create_tag")
    verify_remote(api, repo_id, version, sizes)
    logger.info("%s: version %s committed as %s and tagged", repo_id, version, info.oid)
    return PushReport(
        repo_id,
        version,
        endpoint,
        info.oid,
        created,
        False,
        files,
        total,
        deleted=stale,
        transfer=transfer,
        retried_on_moved_branch=moved,
    )


def _upload(
    api: Any,
    export_dir: Path,
    files: tuple[str, ...],
    sizes: dict[str, int],
    verified: dict[str, Future[bool]],
    known_sha256: dict[str, str],
    repo_id: str,
    retried: Callable[[Callable[[], Any], str], Any],
    on_progress: Callable[[PushProgress], None] | None,
) -> list[Any]:
    """Upload every file's content ahead of the commit, one file at a time (LFS or Xet; small text files
    travel inline in the commit). Objects the Hub already stores are skipped by the batch API."""
    from huggingface_hub import CommitOperationAdd

    operations = []
    started = time.monotonic()
    done = 0
    for index, path in enumerate(files, start=1):
        if path in verified and not verified[path].result():
            raise _differs(export_dir / path)  # nothing is committed: objects uploaded so far stay unused
        operation = CommitOperationAdd(path, str(export_dir / path))
        if path in known_sha256:  # just checked against the file: huggingface_hub need not hash it again
            operation.upload_info.sha256 = bytes.fromhex(known_sha256[path])
        retried(
            partial(
                api.preupload_lfs_files, repo_id, additions=[operation], repo_type=REPO_TYPE, revision="main"
            ),
            f"upload {path}",
        )
        operations.append(operation)
        done += sizes[path]
        seconds = time.monotonic() - started
        logger.info(
            "%s: uploaded %d/%d files, %.1f of %.1f MiB (%.1f MiB/s)",
            repo_id,
            index,
            len(files),
            done / 2**20,
            sum(sizes.values()) / 2**20,
            done / 2**20 / seconds if seconds > 0 else 0.0,
        )
        if on_progress is not None:
            on_progress(
                PushProgress(path, index, len(files), done, sum(sizes.values()), time.monotonic() - started)
            )
    return operations


def _tree(api: Any, repo_id: str, revision: str | None) -> list[Any]:
    return list(api.list_repo_tree(repo_id, revision=revision, recursive=True, repo_type=REPO_TYPE))


@dataclass(frozen=True)
class _CommitInfo:
    oid: str
    created: bool


def _commit(
    api: Any,
    repo_id: str,
    version: str,
    operations: list[Any],
    sizes: dict[str, int],
    description: str,
    retried: Callable[[Callable[[], Any], str], Any],
) -> tuple[_CommitInfo | None, tuple[str, ...], bool]:
    """One commit on top of the branch head read just before it; once more if the branch moved (412).

    Returns (commit, stale data files deleted, whether the branch moved); commit is None when the
    version's tag appeared meanwhile (a concurrent push of the same version won)."""
    from huggingface_hub import CommitOperationDelete
    from huggingface_hub.hf_api import RepoFile

    moved = False
    for round_ in (1, 2):
        refs = retried(lambda: api.list_repo_refs(repo_id, repo_type=REPO_TYPE), "list_repo_refs")
        if version in {ref.name for ref in refs.tags}:
            return None, (), moved
        head = {ref.name: ref.target_commit for ref in refs.branches}.get("main") or None
        remote_paths = [
            entry.path
            for entry in retried(
                partial(_tree, api, repo_id, head),
                "list_repo_tree",
            )
            if isinstance(entry, RepoFile)
        ]
        stale = tuple(sorted(p for p in remote_paths if p.startswith("data/") and p not in sizes))
        deletes = [CommitOperationDelete(path) for path in stale]
        try:
            info = retried(
                partial(
                    api.create_commit,
                    repo_id,
                    [*operations, *deletes],
                    commit_message=f"Add dataset version {version}",
                    commit_description=description,
                    repo_type=REPO_TYPE,
                    parent_commit=head,
                ),
                "create_commit",
            )
        except Exception as error:
            if _status(error) != 412:
                raise
            if round_ == 2:
                raise PushError(
                    f"{repo_id}: the main branch moved again while pushing {version} (HTTP 412 twice); "
                    "someone else is committing to it — push again when they are done"
                ) from error
            moved = True
            logger.warning(
                "%s: main moved since %s (someone else committed); reading the new head and retrying once",
                repo_id,
                (head or "")[:12],
            )
            continue
        return _CommitInfo(info.oid, bool(info.oid) and info.oid != head), stale, moved
    raise AssertionError("unreachable")


def _matches(path: Path, sha256: str) -> bool:
    return file_sha256(path) == sha256
