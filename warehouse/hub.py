"""Publish an exported version folder to the Hugging Face Hub (or any Hub-compatible endpoint).

One commit per version ("Add dataset version v2"), a tag per version, then the remote file list and
sizes are checked against the manifest. Pushing a version that is already tagged changes nothing; a
push interrupted anywhere (before the commit, between commit and tag) completes when run again,
because the commit skips files the Hub already has unchanged. Only 429 and 5xx answers are retried,
with exponential backoff and jitter. The token is never logged or returned.
"""

from __future__ import annotations

import logging
import os
import random
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

from schemas.config import HubConfig
from schemas.errors import GroundgenError
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


def hub_settings(hub: HubConfig | None = None) -> tuple[str, str | None]:
    """(endpoint, token) from the environment variables the Hub config names."""
    hub = hub or HubConfig()
    endpoint = os.environ.get(hub.endpoint_env) or DEFAULT_ENDPOINT
    return endpoint.rstrip("/"), os.environ.get(hub.token_env) or None


def local_files(export_dir: Path) -> tuple[dict[str, Any], dict[str, int]]:
    """The manifest and {repo path: size} of the version folder, after checking files against it."""
    manifest_path = export_dir / "manifest.json"
    if not manifest_path.exists():
        raise PushError(f"{export_dir} has no manifest.json: is it an export folder?")
    manifest = loads_manifest(manifest_path.read_text(encoding="utf-8"))
    sizes: dict[str, int] = {}
    for shard in data_files(manifest):
        path = export_dir / shard.path
        if not path.exists() or path.stat().st_size != shard.size or file_sha256(path) != shard.sha256:
            raise PushError(f"{path} is missing or differs from the manifest; re-export the version")
        sizes[shard.path] = shard.size
    sizes["manifest.json"] = manifest_path.stat().st_size
    return manifest, sizes


def with_retries(
    call: Callable[[], T], what: str, *, attempts: int = 5, backoff_s: float = 1.0, sleep=time.sleep
) -> T:
    """Run `call`, retrying only 429/5xx answers, with exponential backoff and jitter."""
    from huggingface_hub.errors import HfHubHTTPError

    for attempt in range(1, attempts + 1):
        try:
            return call()
        except HfHubHTTPError as error:
            status = error.response.status_code if error.response is not None else None
            if status not in RETRY_STATUSES or attempt == attempts:
                raise
            delay = backoff_s * 2 ** (attempt - 1) * (1 + random.random() / 2)
            logger.warning("%s: HTTP %s, retry %d/%d in %.1fs", what, status, attempt, attempts - 1, delay)
            sleep(delay)
    raise AssertionError("unreachable")


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
) -> PushReport:
    """Push `export_dir` (an `exports/<version>/` folder) to dataset repo `repo_id`, tagged `<version>`.

    `endpoint` and `token` default to the environment variables named by `hub` (`HF_ENDPOINT`,
    `HF_TOKEN`). `dry_run` checks the folder and reports what would be pushed without any network call.
    """
    export_dir = Path(export_dir)
    manifest, sizes = local_files(export_dir)
    version = manifest["version"]
    env_endpoint, env_token = hub_settings(hub)
    endpoint = (endpoint or env_endpoint).rstrip("/")
    token = token or env_token
    files = tuple(sorted(sizes))
    total = sum(sizes.values())
    if dry_run:
        return PushReport(repo_id, version, endpoint, "", False, False, files, total, dry_run=True)

    from huggingface_hub import CommitOperationAdd, CommitOperationDelete, HfApi
    from huggingface_hub.hf_api import RepoFile

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

    head = {ref.name: ref.target_commit for ref in refs.branches}.get("main", "")
    remote_paths = [
        entry.path
        for entry in retried(
            lambda: list(api.list_repo_tree(repo_id, recursive=True, repo_type=REPO_TYPE)), "list_repo_tree"
        )
        if isinstance(entry, RepoFile)
    ]
    stale = tuple(sorted(p for p in remote_paths if p.startswith("data/") and p not in sizes))
    counts = manifest["counts"]
    description = (
        f"groundgen dataset version {version} (parent: {manifest['parent'] or 'none'}): "
        f"{counts['sft']} SFT rows, {counts['rl']} RL rows; config {manifest['config_fingerprint']}, "
        f"code {manifest['code_version']}."
    )

    def commit():
        operations = [CommitOperationAdd(path, str(export_dir / path)) for path in files]
        operations += [CommitOperationDelete(path) for path in stale]
        return api.create_commit(
            repo_id,
            operations,
            commit_message=f"Add dataset version {version}",
            commit_description=description,
            repo_type=REPO_TYPE,
        )

    logger.info(
        "%s: pushing version %s (%d files, %d bytes) to %s", repo_id, version, len(files), total, endpoint
    )
    info = retried(commit, "create_commit")
    created = bool(info.oid) and info.oid != head

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
    return PushReport(repo_id, version, endpoint, info.oid, created, False, files, total, deleted=stale)
