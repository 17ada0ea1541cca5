"""A small Hugging Face Hub-compatible server for tests: enough of the API for `huggingface_hub.HfApi`
(create_repo, preupload, create_commit, tags, refs, tree, paths-info, repo info, validate-yaml) and for
`datasets.load_dataset("org/name", revision=...)` (file resolve with HEAD, ETag, Range).

Everything lives in memory; files are uploaded inline ("regular" upload mode, no LFS/xet). Tests inject
faults through `HubState` (`fail_commits`, `fail_tags`, `fail_status`) and read what was received.

    with run_hub_server(token="hf_test") as (endpoint, state):
        HfApi(endpoint=endpoint, token="hf_test").create_repo("org/name", repo_type="dataset")
"""

from __future__ import annotations

import base64
import hashlib
import json
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import uvicorn
import yaml
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response

KINDS = {"datasets": "dataset", "models": "model", "spaces": "space"}


def git_blob_oid(data: bytes) -> str:
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()


@dataclass
class Commit:
    oid: str
    parent: str
    message: str
    files: dict[str, bytes]


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
    commit_requests: int = 0
    authorization_headers: list[str] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def add_commit(self, repo: Repo, branch: str, message: str, files: dict[str, bytes]) -> Commit:
        parent = repo.branches.get(branch, "")
        digest = hashlib.sha1(
            json.dumps(
                [parent, message, len(repo.commits), sorted((p, git_blob_oid(d)) for p, d in files.items())]
            ).encode()
        ).hexdigest()
        commit = Commit(digest, parent, message, files)
        repo.commits[digest] = commit
        repo.branches[branch] = digest
        return commit


def _error(status: int, message: str, code: str = "") -> JSONResponse:
    headers = {"X-Error-Message": message}
    if code:
        headers["X-Error-Code"] = code
    return JSONResponse({"error": message}, status_code=status, headers=headers)


def _entries(files: dict[str, bytes], prefix: str, recursive: bool) -> list[dict[str, Any]]:
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
            data = files[path]
            entries[path] = {"type": "file", "oid": git_blob_oid(data), "size": len(data), "path": path}
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
        files = (await request.json())["files"]
        return {
            "files": [
                {
                    "path": f["path"],
                    "uploadMode": "regular",
                    "shouldIgnore": False,
                    "oid": git_blob_oid(existing[f["path"]]) if f["path"] in existing else None,
                }
                for f in files
            ],
            "commitOid": commit.oid if commit else None,
        }

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
        card = commit.files.get("README.md", b"").decode("utf-8", "replace")
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
            "siblings": [{"rfilename": p, "size": len(d)} for p, d in sorted(commit.files.items())],
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
        data = commit.files[path]
        headers = {"X-Repo-Commit": commit.oid, "ETag": f'"{git_blob_oid(data)}"', "Accept-Ranges": "bytes"}
        status = 200
        if request.headers.get("range", "").startswith("bytes="):
            start_text, _, end_text = request.headers["range"][6:].partition("-")
            start = int(start_text or 0)
            end = min(int(end_text) if end_text else len(data) - 1, len(data) - 1)
            headers["Content-Range"] = f"bytes {start}-{end}/{len(data)}"
            data, status = data[start : end + 1], 206
        headers["Content-Length"] = str(len(data))
        if request.method == "HEAD":
            return Response(status_code=status, headers=headers)
        return Response(
            content=data, status_code=status, headers=headers, media_type="application/octet-stream"
        )

    return app


@contextmanager
def run_hub_server(token: str = "") -> Iterator[tuple[str, HubState]]:
    """Serve a fresh Hub on 127.0.0.1 (ephemeral port) in a thread; yield (endpoint, state)."""
    state = HubState(token=token)
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
