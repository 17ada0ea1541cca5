"""A small Hugging Face Hub-compatible server for tests: enough of the API for `huggingface_hub.HfApi`
(create_repo, preupload, create_commit, tags, refs, tree, paths-info, repo info, validate-yaml) and for
`datasets.load_dataset("org/name", revision=...)` (file resolve with HEAD, ETag, Range).

Uploads go the way the real Hub takes them: preupload answers "lfs" for paths the repo's
`.gitattributes` tracks with LFS (`*.parquet`) and for anything at or above `lfs_threshold` bytes, and
"regular" (inline, base64 in the commit) otherwise. LFS objects travel through the batch API
(`POST {repo}.git/info/lfs/objects/batch`): basic transfer (one PUT) below `multipart_threshold`,
multipart above it (one PUT per `chunk_size` part, then a completion POST), then `verify`; objects
already stored come back without actions. Commits carry LFS pointers (sha256 oid, size) and are refused
when an object was never uploaded. LFS objects are written to `lfs_dir` on disk (the whole version is
never held in memory); regular files stay in memory. There is no Xet endpoint (`xet-write-token`
answers 404), like any Hub-compatible server without Xet storage.

Tests inject faults through `HubState` (`fail_commits`, `fail_tags`, `fail_batches`, `fail_uploads`,
`fail_status`, `move_branch_before_commits`) and read what was received (`lfs_bytes_received`,
`commit_requests`, `batch_requests`). `python -m testkit.servers.hub_server --port P --lfs-dir D` serves
one in its own process (for benchmarks).

    with run_hub_server(token="hf_test") as (endpoint, state):
        HfApi(endpoint=endpoint, token="hf_test").create_repo("org/name", repo_type="dataset")
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import fnmatch
import hashlib
import json
import tempfile
import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import uvicorn
import yaml
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response, StreamingResponse

KINDS = {"datasets": "dataset", "models": "model", "spaces": "space"}


def git_blob_oid(data: bytes) -> str:
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()


@dataclass(frozen=True)
class LfsPointer:
    """A file stored in LFS: the commit holds this pointer, the bytes live in the LFS object store."""

    oid: str  # sha256 of the content
    size: int

    def text(self) -> bytes:
        return (
            f"version https://git-lfs.github.com/spec/v1\noid sha256:{self.oid}\nsize {self.size}\n".encode()
        )


FileValue = bytes | LfsPointer


def file_size(value: FileValue) -> int:
    return value.size if isinstance(value, LfsPointer) else len(value)


@dataclass
class Commit:
    oid: str
    parent: str
    message: str
    files: dict[str, FileValue]


@dataclass
class Repo:
    repo_id: str
    kind: str
    private: bool
    commits: dict[str, Commit] = field(default_factory=dict)
    branches: dict[str, str] = field(default_factory=dict)
    tags: dict[str, str] = field(default_factory=dict)

    def resolve(self, revision: str) -> Commit | None:
        oid = self.branches.get(revision) or self.tags.get(revision) or revision
        return self.commits.get(oid)


@dataclass
class HubState:
    token: str = ""  # when set, writes and private reads need "Authorization: Bearer <token>"
    repos: dict[str, Repo] = field(default_factory=dict)
    fail_commits: int = 0  # answer the next N commit requests with `fail_status`
    fail_tags: int = 0  # answer the next N tag creations with `fail_status`
    fail_status: int = 500
    fail_batches: int = 0  # answer the next N LFS batch requests with `batch_status`
    batch_status: int = 429
    fail_uploads: int = 0  # answer the next N LFS PUTs (basic or part) with `fail_status`
    move_branch_before_commits: int = (
        0  # someone else commits to the branch before each of the next N commits
    )
    commit_requests: int = 0
    batch_requests: int = 0
    lfs_threshold: int = 10 * 1024 * 1024  # files at least this large go to LFS whatever .gitattributes says
    multipart_threshold: int = 20 * 1024 * 1024  # LFS objects above this size upload in parts
    chunk_size: int = 10 * 1024 * 1024
    lfs_dir: Path | None = None  # where LFS objects are stored (a temporary folder when None)
    lfs_objects: dict[str, int] = field(default_factory=dict)  # stored objects: sha256 -> size
    lfs_bytes_received: int = 0  # body bytes of every LFS PUT (basic and parts), complete or not
    lfs_uploads_completed: int = 0
    part_etags: dict[tuple[str, int], str] = field(default_factory=dict)  # (oid, part number) -> ETag
    running_sha256: dict[str, tuple[Any, int]] = field(default_factory=dict)  # oid -> (sha256, next part)
    receive_delay_s: float = 0.0  # pause per received body chunk: a slow link, so a test can kill mid-upload
    authorization_headers: list[str] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def __post_init__(self) -> None:
        if self.lfs_dir is None:
            self._lfs_tmp = tempfile.TemporaryDirectory(prefix="hub-lfs-")
            self.lfs_dir = Path(self._lfs_tmp.name)
        Path(self.lfs_dir).mkdir(parents=True, exist_ok=True)

    def object_path(self, oid: str) -> Path:
        assert self.lfs_dir is not None
        return Path(self.lfs_dir) / oid

    def read(self, value: FileValue) -> bytes:
        if isinstance(value, LfsPointer):
            return self.object_path(value.oid).read_bytes()
        return value

    def add_commit(self, repo: Repo, branch: str, message: str, files: dict[str, FileValue]) -> Commit:
        parent = repo.branches.get(branch, "")
        digest = hashlib.sha1(
            json.dumps(
                [parent, message, len(repo.commits), sorted((p, _value_oid(d)) for p, d in files.items())]
            ).encode()
        ).hexdigest()
        commit = Commit(digest, parent, message, files)
        repo.commits[digest] = commit
        repo.branches[branch] = digest
        return commit


class _Counter:
    """Counts a part's bytes (its ETag is an opaque token: the client only echoes it back)."""

    def __init__(self) -> None:
        self.size = 0

    def update(self, data: bytes) -> None:
        self.size += len(data)


class _Both:
    """A part's byte count and, when the parts arrive in order, the whole object's running sha256."""

    def __init__(self, part: Any) -> None:
        self.part = part
        self.whole: Any = None

    def update(self, data: bytes) -> None:
        self.part.update(data)
        if self.whole is not None:
            self.whole.update(data)


def _value_oid(value: FileValue) -> str:
    """The git oid of a file: of its bytes, or of the pointer text for an LFS file."""
    return git_blob_oid(value.text() if isinstance(value, LfsPointer) else value)


def lfs_patterns(files: dict[str, FileValue]) -> list[str]:
    """Patterns `.gitattributes` tracks with LFS (`*.parquet filter=lfs ...`)."""
    attributes = files.get(".gitattributes", b"")
    text = attributes.decode("utf-8", "replace") if isinstance(attributes, bytes) else ""
    return [line.split()[0] for line in text.splitlines() if "filter=lfs" in line.split()[1:]]


def _error(status: int, message: str, code: str = "") -> JSONResponse:
    headers = {"X-Error-Message": message}
    if status == 429:
        headers["Retry-After"] = "0"
    if code:
        headers["X-Error-Code"] = code
    return JSONResponse({"error": message}, status_code=status, headers=headers)


def _entries(files: dict[str, FileValue], prefix: str, recursive: bool) -> list[dict[str, Any]]:
    prefix = prefix.strip("/")
    base = f"{prefix}/" if prefix else ""
    entries: dict[str, dict[str, Any]] = {}
    for path in sorted(files):
        if not path.startswith(base):
            continue
        rest = path[len(base) :].split("/")
        for depth in range(1, len(rest)):
            directory = base + "/".join(rest[:depth])
            if recursive or depth == 1:
                entries.setdefault(
                    directory,
                    {
                        "type": "directory",
                        "oid": git_blob_oid(directory.encode()),
                        "size": 0,
                        "path": directory,
                    },
                )
            if not recursive:
                break
        if recursive or len(rest) == 1:
            value = files[path]
            entry: dict[str, Any] = {
                "type": "file",
                "oid": _value_oid(value),
                "size": file_size(value),
                "path": path,
            }
            if isinstance(value, LfsPointer):
                entry["lfs"] = {"oid": value.oid, "size": value.size, "pointerSize": len(value.text())}
            entries[path] = entry
    return [entries[key] for key in sorted(entries)]


def create_app(state: HubState) -> FastAPI:
    app = FastAPI()

    def authorized(request: Request) -> bool:
        header = request.headers.get("authorization", "")
        state.authorization_headers.append(header)
        return not state.token or header == f"Bearer {state.token}"

    def find(kind: str, org: str, name: str, request: Request, write: bool = False) -> Repo | JSONResponse:
        repo = state.repos.get(f"{org}/{name}")
        if kind not in KINDS or repo is None or repo.kind != KINDS[kind]:
            return _error(404, "Repository not found", "RepoNotFound")
        if (write or repo.private) and not authorized(request):
            return _error(401 if write else 404, "Invalid credentials", "" if write else "RepoNotFound")
        return repo

    def commit_at(repo: Repo, revision: str) -> Commit | JSONResponse:
        commit = repo.resolve(revision)
        if commit is None:
            return _error(404, f"Invalid rev id: {revision}", "RevisionNotFound")
        return commit

    @app.post("/api/repos/create")
    async def create_repo(request: Request):
        if not authorized(request):
            return _error(401, "Invalid credentials")
        body = await request.json()
        repo_id = f"{body.get('organization') or 'user'}/{body['name']}"
        kind = body.get("type") or "model"
        url = f"{str(request.base_url).rstrip('/')}/{kind}s/{repo_id}"
        with state.lock:
            if repo_id in state.repos:
                return JSONResponse({"error": "You already created this repo", "url": url}, status_code=409)
            private = body.get("private") is True or body.get("visibility") == "private"
            repo = Repo(repo_id, kind, private)
            state.repos[repo_id] = repo
            state.add_commit(
                repo,
                "main",
                "initial commit",
                {".gitattributes": b"*.parquet filter=lfs diff=lfs merge=lfs -text\n"},
            )
        return {"url": url, "name": repo_id}

    @app.post("/api/validate-yaml")
    async def validate_yaml(request: Request):
        content = (await request.json()).get("content", "")
        if content.startswith("---"):
            try:
                header = yaml.safe_load(content.split("---", 2)[1])
            except yaml.YAMLError as error:
                return JSONResponse({"errors": [{"message": str(error)}]}, status_code=400)
            if not isinstance(header, dict):
                return JSONResponse({"errors": [{"message": "metadata must be a mapping"}]}, status_code=400)
        return {"errors": [], "warnings": []}

    @app.post("/api/{kind}/{org}/{name}/preupload/{revision}")
    async def preupload(kind: str, org: str, name: str, revision: str, request: Request):
        repo = find(kind, org, name, request, write=True)
        if isinstance(repo, JSONResponse):
            return repo
        commit = repo.resolve(revision)
        existing = commit.files if commit else {}
        patterns = lfs_patterns(existing)
        files = (await request.json())["files"]

        def mode(entry: dict[str, Any]) -> str:
            tracked = any(fnmatch.fnmatch(entry["path"], pattern) for pattern in patterns)
            return "lfs" if tracked or entry["size"] >= state.lfs_threshold else "regular"

        def remote_oid(path: str) -> str | None:
            value = existing.get(path)
            if value is None:
                return None
            # as the Hub does: the sha256 for an LFS file, the git blob oid for a regular one
            return value.oid if isinstance(value, LfsPointer) else git_blob_oid(value)

        return {
            "files": [
                {
                    "path": f["path"],
                    "uploadMode": mode(f),
                    "shouldIgnore": False,
                    "oid": remote_oid(f["path"]),
                }
                for f in files
            ],
            "commitOid": commit.oid if commit else None,
        }

    @app.post("/{kind}/{org}/{name}.git/info/lfs/objects/batch")
    async def lfs_batch(kind: str, org: str, name: str, request: Request):
        repo = find(kind, org, name, request, write=True)
        if isinstance(repo, JSONResponse):
            return repo
        body = await request.json()
        with state.lock:
            state.batch_requests += 1
            if state.fail_batches > 0:
                state.fail_batches -= 1
                return _error(state.batch_status, "injected batch failure (slow down)")
        base = str(request.base_url).rstrip("/")
        objects = []
        multipart = False
        for item in body["objects"]:
            oid, size = item["oid"], int(item["size"])
            if state.lfs_objects.get(oid) == size:
                objects.append({"oid": oid, "size": size})  # already stored: no actions, the client skips it
                continue
            verify = {"href": f"{base}/lfs-verify/{oid}", "header": {}}
            if size > state.multipart_threshold:
                multipart = True
                parts = -(-size // state.chunk_size)
                header = {"chunk_size": str(state.chunk_size)}
                header |= {str(n): f"{base}/lfs-upload/{oid}/part/{n}" for n in range(1, parts + 1)}
                upload = {"href": f"{base}/lfs-upload/{oid}/complete?size={size}", "header": header}
            else:
                upload = {"href": f"{base}/lfs-upload/{oid}?size={size}", "header": {}}
            objects.append(
                {
                    "oid": oid,
                    "size": size,
                    "authenticated": True,
                    "actions": {"upload": upload, "verify": verify},
                }
            )
        return JSONResponse(
            {"transfer": "multipart" if multipart else "basic", "objects": objects, "hash_algo": "sha256"},
            media_type="application/vnd.git-lfs+json",
        )

    async def receive(request: Request, out: Any, digest: Any) -> JSONResponse | None:
        """Stream a PUT body into the open file `out`, hashing and counting bytes as they arrive."""
        with state.lock:
            if state.fail_uploads > 0:
                state.fail_uploads -= 1
                return _error(state.fail_status, "injected upload failure")
        async for chunk in request.stream():
            out.write(chunk)
            digest.update(chunk)
            with state.lock:
                state.lfs_bytes_received += len(chunk)
            if state.receive_delay_s:
                await asyncio.sleep(state.receive_delay_s)
        return None

    def store(oid: str, size: int, source: Path, sha256: str) -> JSONResponse | None:
        if sha256 != oid or source.stat().st_size != size:
            source.unlink()
            return _error(400, f"uploaded content does not match oid {oid} / size {size}")
        source.replace(state.object_path(oid))
        with state.lock:
            state.lfs_objects[oid] = size
            state.lfs_uploads_completed += 1
        return None

    @app.put("/lfs-upload/{oid}")
    async def lfs_put(oid: str, size: int, request: Request):
        target = state.object_path(oid).with_suffix(".upload")
        digest = hashlib.sha256()
        with target.open("wb") as out:
            failed = await receive(request, out, digest)
        if failed is None:
            failed = store(oid, size, target, digest.hexdigest())
        return failed or Response(status_code=200)

    @app.put("/lfs-upload/{oid}/part/{number}")
    async def lfs_put_part(oid: str, number: int, request: Request):
        # parts land at their offset in one file, so completing the upload needs no copy
        target = state.object_path(oid).with_suffix(".multipart")
        digest = _Both(_Counter())
        with state.lock:  # parts arriving in order also feed a running sha256 of the whole object
            running = state.running_sha256.get(oid)
            if number == 1:
                running = state.running_sha256[oid] = (hashlib.sha256(), 1)
            if running is not None and running[1] == number:
                digest.whole = running[0]
        with target.open("r+b" if target.exists() else "wb") as out:
            out.seek((number - 1) * state.chunk_size)
            failed = await receive(request, out, digest)
        if failed is not None:
            with state.lock:
                state.running_sha256.pop(oid, None)
            return failed
        etag = f'"{uuid.uuid4().hex}-{digest.part.size}"'  # opaque, as S3's is to the client
        with state.lock:
            state.part_etags[(oid, number)] = etag
            if digest.whole is not None and oid in state.running_sha256:
                state.running_sha256[oid] = (digest.whole, number + 1)
            else:
                state.running_sha256.pop(oid, None)
        return Response(status_code=200, headers={"ETag": etag})

    @app.post("/lfs-upload/{oid}/complete")
    async def lfs_complete(oid: str, size: int, request: Request):
        body = await request.json()
        if body.get("oid") != oid:
            return _error(400, "completion for another oid")
        parts = sorted(body["parts"], key=lambda part: part["partNumber"])
        for expected, part in enumerate(parts, start=1):
            if part["partNumber"] != expected or state.part_etags.get((oid, expected)) != part["etag"]:
                return _error(400, f"part {expected} of {oid} was never uploaded or its etag differs")
        assembled = state.object_path(oid).with_suffix(".multipart")
        with state.lock:
            running = state.running_sha256.pop(oid, None)
            for number in range(1, len(parts) + 1):
                state.part_etags.pop((oid, number), None)
        if running is not None and running[1] == len(parts) + 1:
            sha256 = running[0].hexdigest()  # every part arrived in order: hashed as it came in
        else:
            digest = hashlib.sha256()
            with assembled.open("rb") as data:
                for block in iter(lambda: data.read(1 << 20), b""):
                    digest.update(block)
            sha256 = digest.hexdigest()
        return store(oid, size, assembled, sha256) or Response(status_code=200)

    @app.post("/lfs-verify/{oid}")
    async def lfs_verify(oid: str, request: Request):
        body = await request.json()
        if state.lfs_objects.get(oid) != body.get("size"):
            return _error(404, f"object {oid} of size {body.get('size')} is not stored")
        return {}

    @app.get("/api/{kind}/{org}/{name}/xet-write-token/{revision}")
    @app.get("/api/{kind}/{org}/{name}/xet-read-token/{revision}")
    async def no_xet(kind: str, org: str, name: str, revision: str):
        return _error(404, "this Hub-compatible server has no Xet storage")

    @app.post("/api/{kind}/{org}/{name}/commit/{revision}")
    async def commit(kind: str, org: str, name: str, revision: str, request: Request):
        repo = find(kind, org, name, request, write=True)
        if isinstance(repo, JSONResponse):
            return repo
        body = await request.body()
        with state.lock:
            state.commit_requests += 1
            if state.fail_commits > 0:
                state.fail_commits -= 1
                return _error(state.fail_status, "injected commit failure")
            if state.move_branch_before_commits > 0:
                state.move_branch_before_commits -= 1
                current = repo.resolve(revision)
                moved = dict(current.files) if current else {}
                moved[f"notes/other-{len(repo.commits)}.md"] = b"someone else's commit\n"
                state.add_commit(repo, revision, "someone else's commit", moved)
            head = repo.resolve(revision)
            files = dict(head.files) if head else {}
            message = ""
            for line in body.splitlines():
                if not line.strip():
                    continue
                item = json.loads(line)
                value = item["value"]
                if item["key"] == "header":
                    message = value.get("summary", "")
                    parent = value.get("parentCommit")
                    if parent and head and parent != head.oid:
                        return _error(412, "A commit has happened since", "")
                elif item["key"] == "file":
                    files[value["path"]] = base64.b64decode(value["content"])
                elif item["key"] == "lfsFile":
                    pointer = LfsPointer(value["oid"], int(value["size"]))
                    if state.lfs_objects.get(pointer.oid) != pointer.size:
                        return _error(422, f"LFS object {pointer.oid} for {value['path']} was never uploaded")
                    files[value["path"]] = pointer
                elif item["key"] == "deletedFile":
                    files.pop(value["path"], None)
                elif item["key"] == "deletedFolder":
                    folder = value["path"].rstrip("/") + "/"
                    files = {p: d for p, d in files.items() if not p.startswith(folder)}
                else:
                    return _error(400, f"unsupported commit operation {item['key']}")
            new = state.add_commit(repo, revision, message, files)
        url = f"{str(request.base_url).rstrip('/')}/{kind}/{repo.repo_id}/commit/{new.oid}"
        return {"commitUrl": url, "commitOid": new.oid, "pullRequestUrl": None}

    @app.post("/api/{kind}/{org}/{name}/tag/{revision}")
    async def create_tag(kind: str, org: str, name: str, revision: str, request: Request):
        repo = find(kind, org, name, request, write=True)
        if isinstance(repo, JSONResponse):
            return repo
        commit = commit_at(repo, revision)
        if isinstance(commit, JSONResponse):
            return commit
        tag = (await request.json())["tag"]
        with state.lock:
            if state.fail_tags > 0:
                state.fail_tags -= 1
                return _error(state.fail_status, "injected tag failure")
            if tag in repo.tags:
                return _error(409, f"Tag {tag} already exists")
            repo.tags[tag] = commit.oid
        return {}

    @app.get("/api/{kind}/{org}/{name}/refs")
    async def refs(kind: str, org: str, name: str, request: Request):
        repo = find(kind, org, name, request)
        if isinstance(repo, JSONResponse):
            return repo

        def ref(prefix: str, names: dict[str, str]) -> list[dict[str, str]]:
            return [
                {"name": n, "ref": f"refs/{prefix}/{n}", "targetCommit": oid}
                for n, oid in sorted(names.items())
            ]

        return {
            "branches": ref("heads", repo.branches),
            "tags": ref("tags", repo.tags),
            "converts": [],
            "pullRequests": [],
        }

    @app.get("/api/{kind}/{org}/{name}/tree/{revision}")
    @app.get("/api/{kind}/{org}/{name}/tree/{revision}/{path:path}")
    async def tree(kind: str, org: str, name: str, revision: str, request: Request, path: str = ""):
        repo = find(kind, org, name, request)
        if isinstance(repo, JSONResponse):
            return repo
        commit = commit_at(repo, revision)
        if isinstance(commit, JSONResponse):
            return commit
        recursive = request.query_params.get("recursive", "false").lower() in ("1", "true")
        entries = _entries(commit.files, path, recursive)
        if path and not entries and path.strip("/") not in commit.files:
            return _error(404, f"{path} does not exist", "EntryNotFound")
        return entries

    @app.post("/api/{kind}/{org}/{name}/paths-info/{revision}")
    async def paths_info(kind: str, org: str, name: str, revision: str, request: Request):
        repo = find(kind, org, name, request)
        if isinstance(repo, JSONResponse):
            return repo
        commit = commit_at(repo, revision)
        if isinstance(commit, JSONResponse):
            return commit
        form = await request.form()
        wanted = [str(p).strip("/") for p in form.getlist("paths")]
        if not wanted and request.headers.get("content-type", "").startswith("application/json"):
            wanted = [p.strip("/") for p in (await request.json()).get("paths", [])]
        everything = {e["path"]: e for e in _entries(commit.files, "", recursive=True)}
        return [everything[p] for p in wanted if p in everything]

    @app.get("/api/{kind}/{org}/{name}")
    @app.get("/api/{kind}/{org}/{name}/revision/{revision}")
    async def info(kind: str, org: str, name: str, request: Request, revision: str = "main"):
        repo = find(kind, org, name, request)
        if isinstance(repo, JSONResponse):
            return repo
        commit = commit_at(repo, revision)
        if isinstance(commit, JSONResponse):
            return commit
        card = state.read(commit.files.get("README.md", b"")).decode("utf-8", "replace")
        card_data = yaml.safe_load(card.split("---", 2)[1]) if card.startswith("---") else None
        return {
            "id": repo.repo_id,
            "_id": repo.repo_id,
            "author": repo.repo_id.split("/")[0],
            "sha": commit.oid,
            "private": repo.private,
            "disabled": False,
            "gated": False,
            "downloads": 0,
            "likes": 0,
            "tags": [],
            "lastModified": time.strftime("%Y-%m-%dT%H:%M:%S.000Z", time.gmtime()),
            "createdAt": "2026-01-01T00:00:00.000Z",
            "cardData": card_data,
            "siblings": [{"rfilename": p, "size": file_size(d)} for p, d in sorted(commit.files.items())],
        }

    @app.api_route("/{kind}/{org}/{name}/resolve/{revision}/{path:path}", methods=["GET", "HEAD"])
    async def resolve(kind: str, org: str, name: str, revision: str, path: str, request: Request):
        repo = find(kind, org, name, request)
        if isinstance(repo, JSONResponse):
            return repo
        commit = commit_at(repo, revision)
        if isinstance(commit, JSONResponse):
            return commit
        if path not in commit.files:
            return _error(404, f"Entry {path} not found", "EntryNotFound")
        value = commit.files[path]
        size = file_size(value)
        etag = value.oid if isinstance(value, LfsPointer) else git_blob_oid(value)
        headers = {"X-Repo-Commit": commit.oid, "ETag": f'"{etag}"', "Accept-Ranges": "bytes"}
        if isinstance(value, LfsPointer):
            headers |= {"X-Linked-Etag": f'"{etag}"', "X-Linked-Size": str(size)}
        status, start, end = 200, 0, size - 1
        if request.headers.get("range", "").startswith("bytes="):
            start_text, _, end_text = request.headers["range"][6:].partition("-")
            start = int(start_text or 0)
            end = min(int(end_text) if end_text else size - 1, size - 1)
            headers["Content-Range"] = f"bytes {start}-{end}/{size}"
            status = 206
        headers["Content-Length"] = str(max(0, end - start + 1))
        if request.method == "HEAD":
            return Response(status_code=status, headers=headers)
        if isinstance(value, LfsPointer):  # streamed from disk: a large object never sits in memory

            def chunks(path: Path = state.object_path(value.oid)) -> Iterator[bytes]:
                with path.open("rb") as data:
                    data.seek(start)
                    left = end - start + 1
                    while left > 0:
                        block = data.read(min(1 << 20, left))
                        if not block:
                            return
                        left -= len(block)
                        yield block

            return StreamingResponse(
                chunks(), status_code=status, headers=headers, media_type="application/octet-stream"
            )
        return Response(
            content=value[start : end + 1],
            status_code=status,
            headers=headers,
            media_type="application/octet-stream",
        )

    return app


@contextmanager
def run_hub_server(token: str = "", **settings: Any) -> Iterator[tuple[str, HubState]]:
    """Serve a fresh Hub on 127.0.0.1 (ephemeral port) in a thread; yield (endpoint, state).

    `settings` are `HubState` fields (`lfs_threshold`, `chunk_size`, `lfs_dir`, ...)."""
    state = HubState(token=token, **settings)
    config = uvicorn.Config(create_app(state), host="127.0.0.1", port=0, log_level="warning", lifespan="off")
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not server.started:
        if time.monotonic() > deadline or not thread.is_alive():
            raise RuntimeError("hub server did not start")
        time.sleep(0.01)
    port = server.servers[0].sockets[0].getsockname()[1]
    try:
        yield f"http://127.0.0.1:{port}", state
    finally:
        server.should_exit = True
        thread.join(timeout=10)


def main() -> None:  # pragma: no cover - run by bench/push.py in its own process
    parser = argparse.ArgumentParser(description="Serve the test Hub on 127.0.0.1 until killed.")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--token", default="")
    parser.add_argument("--lfs-dir", type=Path, required=True)
    parser.add_argument("--chunk-size", type=int, default=HubState.chunk_size)
    parser.add_argument("--multipart-threshold", type=int, default=HubState.multipart_threshold)
    args = parser.parse_args()
    state = HubState(
        token=args.token,
        lfs_dir=args.lfs_dir,
        chunk_size=args.chunk_size,
        multipart_threshold=args.multipart_threshold,
    )
    uvicorn.run(create_app(state), host="127.0.0.1", port=args.port, log_level="warning", lifespan="off")


if __name__ == "__main__":  # pragma: no cover
    main()
