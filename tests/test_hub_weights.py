"""Painter weights from a Hub: a `painter.kind = "diffusers"` model id downloads into the Hugging Face
cache with progress bars (synthesis/hub_weights.py), then loads from the cache, also offline.

The Hub is a small model-repo server on 127.0.0.1 (model info + file resolve, the two calls a
download makes) serving the tiny pipeline's files."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
REPO_ID = "test-org/tiny-painter"
COMMIT = "0123456789abcdef0123456789abcdef01234567"


@pytest.fixture(scope="module")
def model_hub(tmp_path_factory) -> Iterator[tuple[str, list[str]]]:
    from synthesis.tiny_pipeline import build_tiny_pipeline

    folder = build_tiny_pipeline(tmp_path_factory.mktemp("tiny") / "tiny-sd")
    files = {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}
    served: list[str] = []

    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args: object) -> None:
            pass

        def do_HEAD(self) -> None:
            self.answer(head=True)

        def do_GET(self) -> None:
            self.answer(head=False)

        def answer(self, head: bool) -> None:
            path = self.path.split("?")[0]
            if path.startswith(f"/api/models/{REPO_ID}/tree/"):
                entries = [
                    {"type": "file", "path": name, "size": len(data), "oid": hashlib.sha1(data).hexdigest()}
                    for name, data in files.items()
                ]
                return self.send(
                    200, json.dumps(entries).encode(), {"Content-Type": "application/json"}, head
                )
            if path.startswith(f"/api/models/{REPO_ID}"):
                siblings = [{"rfilename": name, "size": len(data)} for name, data in files.items()]
                body = json.dumps({"id": REPO_ID, "sha": COMMIT, "siblings": siblings, "tags": []}).encode()
                return self.send(200, body, {"Content-Type": "application/json"}, head)
            prefix = f"/{REPO_ID}/resolve/"
            if path.startswith(prefix):
                name = path[len(prefix) :].partition("/")[2]
                if name not in files:
                    return self.send(404, b"{}", {"X-Error-Code": "EntryNotFound"}, head)
                data = files[name]
                served.append(name)
                etag = hashlib.sha256(data).hexdigest()
                return self.send(200, data, {"X-Repo-Commit": COMMIT, "ETag": f'"{etag}"'}, head)
            self.send(404, b"{}", {"X-Error-Code": "RepoNotFound"}, head)

        def send(self, status: int, body: bytes, headers: dict[str, str], head: bool) -> None:
            self.send_response(status)
            for key, value in headers.items():
                self.send_header(key, value)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            if not head:
                self.wfile.write(body)

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}", served
    finally:
        server.shutdown()
        server.server_close()


DOWNLOAD = f"""
from synthesis.hub_weights import download_pipeline
from synthesis.painter import DiffusersPainter
from schemas.config import PainterConfig
from warehouse.blobs import BlobStore
import sys
path = download_pipeline("{REPO_ID}")
DiffusersPainter(PainterConfig(kind="diffusers", model="{REPO_ID}"), path, blobs=BlobStore(sys.argv[1]))._load()
print("SNAPSHOT", path)
"""


def download(tmp_path: Path, endpoint: str, offline: bool) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k not in ("HF_HUB_OFFLINE", "HF_HUB_DISABLE_PROGRESS_BARS")}
    env |= {"HF_ENDPOINT": endpoint, "HF_HOME": str(tmp_path / "hf"), "HF_HUB_DISABLE_XET": "1"}
    if offline:
        env["HF_HUB_OFFLINE"] = "1"
    return subprocess.run(
        [sys.executable, "-c", DOWNLOAD, str(tmp_path / "blobs")],
        env=env,
        cwd=REPO,
        capture_output=True,
        text=True,
    )


@pytest.mark.slow
def test_hub_weights_download_with_progress_then_load_from_the_cache_offline(tmp_path, model_hub):
    endpoint, served = model_hub
    first = download(tmp_path, endpoint, offline=False)
    assert first.returncode == 0, first.stdout + first.stderr
    snapshot = Path(first.stdout.split("SNAPSHOT ")[1].strip())
    assert snapshot.is_relative_to(tmp_path / "hf") and (snapshot / "model_index.json").is_file()
    assert f"painter: fetching {REPO_ID} weights into the Hub cache (once)" in first.stderr
    assert "Fetching" in first.stderr and "100%|" in first.stderr, (
        "no download progress: " + first.stderr[-2000:]
    )
    assert "unet/diffusion_pytorch_model.safetensors" in served
    count = len(served)
    again = download(tmp_path, "http://127.0.0.1:9", offline=True)  # no Hub at all: the cache answers
    assert again.returncode == 0, again.stdout + again.stderr
    assert Path(again.stdout.split("SNAPSHOT ")[1].strip()) == snapshot
    assert "fetching" not in again.stderr and len(served) == count
