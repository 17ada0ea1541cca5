"""`groundgen push` on the path the real Hub takes: LFS batch, basic and multipart uploads, verify,
pointer commits — against the Hub-compatible server on 127.0.0.1 (testkit/servers/hub_server.py)."""

from __future__ import annotations

import hashlib
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from bench.push import write_synthetic_version
from schemas.config import Config
from testkit.servers.hub_server import LfsPointer, run_hub_server
from tests.test_export_helpers import CURATOR, curated  # noqa: F401  (fixture)
from warehouse.export import export_version, version_folder
from warehouse.hub import PushError, PushProgress, push_version

TOKEN = "hf_lfs_test_token_0123456789"
REPO = "groundgen/lfs-data"
ROOT = Path(__file__).resolve().parents[1]
MiB = 1024 * 1024

pytestmark = pytest.mark.slow


@pytest.fixture(autouse=True)
def online(monkeypatch):
    # the suite runs with HF_HUB_OFFLINE=1 (tests/conftest.py); these tests talk to 127.0.0.1 only
    monkeypatch.setattr("huggingface_hub.constants.HF_HUB_OFFLINE", False)
    monkeypatch.setattr("huggingface_hub.constants.HF_HUB_DISABLE_PROGRESS_BARS", True)


def push(folder: Path, endpoint: str, **kwargs):
    return push_version(folder, REPO, endpoint=endpoint, token=TOKEN, backoff_s=0, **kwargs)


def data_sizes(folder: Path) -> dict[str, int]:
    manifest = json.loads((folder / "manifest.json").read_text())
    return {f["path"]: f["size"] for f in manifest["files"] if f["path"].startswith("data/")}


def remote_sha256(endpoint: str, revision: str, path: str) -> str:
    digest = hashlib.sha256()
    url = f"{endpoint}/datasets/{REPO}/resolve/{revision}/{path}"
    with httpx.stream("GET", url, headers={"authorization": f"Bearer {TOKEN}"}, timeout=120) as response:
        response.raise_for_status()
        for block in response.iter_bytes(MiB):
            digest.update(block)
    return digest.hexdigest()


def test_parquet_shards_travel_over_lfs_and_the_commit_holds_pointers(curated, tmp_path):  # noqa: F811
    warehouse, blobs = curated
    version = export_version(
        warehouse, blobs, tmp_path / "exports", Config(), curator=CURATOR, code_version="t"
    )
    folder = version_folder(warehouse.path.parent, version)
    with run_hub_server(token=TOKEN) as (endpoint, state):
        report = push(folder, endpoint)
        head = state.repos[REPO].commits[report.commit]
        shards = data_sizes(folder)
        assert report.transfer == "lfs"
        assert all(isinstance(head.files[path], LfsPointer) for path in shards)  # .gitattributes: *.parquet
        assert isinstance(head.files["README.md"], bytes) and isinstance(head.files["manifest.json"], bytes)
        assert state.lfs_uploads_completed == len(shards)
        assert state.lfs_bytes_received == sum(shards.values())
        for path in shards:
            assert head.files[path].oid == hashlib.sha256((folder / path).read_bytes()).hexdigest()

        # pushed again as the next version with the same shards: the batch API says they are stored
        received = state.lfs_bytes_received
        manifest = json.loads((folder / "manifest.json").read_text())
        manifest["version"] = "v2"
        (folder / "manifest.json").write_text(json.dumps(manifest))
        again = push(folder, endpoint)
        assert again.version == "v2" and state.lfs_bytes_received == received


def test_300_mb_version_goes_multipart_with_progress_and_reads_back(tmp_path):
    folder = write_synthetic_version(tmp_path / "v1", [130 * MiB, 120 * MiB, 50 * MiB], seed=1)
    progress: list[PushProgress] = []
    settings = {"chunk_size": 16 * MiB, "multipart_threshold": 32 * MiB}
    with run_hub_server(token=TOKEN, **settings) as (endpoint, state):
        report = push(folder, endpoint, on_progress=progress.append)
        shards = data_sizes(folder)
        assert state.lfs_bytes_received == sum(shards.values())
        assert state.repos[REPO].tags == {"v1": report.commit}
        for path, size in shards.items():
            pointer = state.repos[REPO].commits[report.commit].files[path]
            assert isinstance(pointer, LfsPointer) and pointer.size == size
            assert (
                remote_sha256(endpoint, "v1", path)
                == hashlib.sha256((folder / path).read_bytes()).hexdigest()
            )
    done = [p.bytes_done for p in progress]
    assert done == sorted(done) and done[-1] == report.bytes == progress[-1].bytes_total
    assert [p.files_done for p in progress] == list(range(1, len(report.files) + 1))
    assert all(p.bytes_per_second > 0 for p in progress)


PUSH_IN_A_CHILD = """
import sys
sys.path.insert(0, {root!r})
import huggingface_hub.constants as c
c.HF_HUB_OFFLINE = False
c.HF_HUB_DISABLE_PROGRESS_BARS = True
from warehouse.hub import push_version
push_version({folder!r}, {repo!r}, endpoint={endpoint!r}, token={token!r}, backoff_s=0)
"""


def test_a_push_killed_during_an_lfs_upload_resumes_with_only_the_missing_objects(tmp_path):
    folder = write_synthetic_version(tmp_path / "v1", [6 * MiB] * 5, seed=2)
    shards = data_sizes(folder)
    with run_hub_server(token=TOKEN, receive_delay_s=0.002) as (endpoint, state):
        script = PUSH_IN_A_CHILD.format(
            root=str(ROOT), folder=str(folder), repo=REPO, endpoint=endpoint, token=TOKEN
        )
        child = subprocess.Popen(
            [sys.executable, "-c", script], cwd=ROOT, env={**os.environ, "HF_HUB_OFFLINE": "0"}
        )
        deadline = time.monotonic() + 120
        stored_bytes = 0
        while time.monotonic() < deadline and child.poll() is None:
            with state.lock:
                stored_bytes = sum(state.lfs_objects.values())
                midway = state.lfs_uploads_completed >= 2 and state.lfs_bytes_received > stored_bytes
            if midway:
                os.kill(child.pid, signal.SIGKILL)
                break
            time.sleep(0.005)
        child.wait(timeout=30)
        assert child.returncode == -signal.SIGKILL, "the push finished before it could be killed mid-upload"
        time.sleep(0.2)  # the server notices the dropped connection
        with state.lock:
            stored = dict(state.lfs_objects)
            received_before = state.lfs_bytes_received
        assert 2 <= len(stored) < len(shards) and state.commit_requests == 0
        assert REPO in state.repos and state.repos[REPO].tags == {}

        state.receive_delay_s = 0
        report = push(folder, endpoint)
        oids = {path: hashlib.sha256((folder / path).read_bytes()).hexdigest() for path in shards}
        missing = sum(size for path, size in shards.items() if oids[path] not in stored)
        assert state.lfs_bytes_received - received_before == missing
        assert state.commit_requests == 1 and len(state.repos[REPO].commits) == 2  # initial + this version
        assert state.repos[REPO].tags == {"v1": report.commit}


def test_a_429_storm_on_the_batch_endpoint_is_waited_out(tmp_path):
    folder = write_synthetic_version(tmp_path / "v1", [1 * MiB, 1 * MiB], seed=3)
    with run_hub_server(token=TOKEN) as (endpoint, state):
        state.fail_batches = 7  # more than huggingface_hub's own retries of one request
        report = push(folder, endpoint)
        assert state.fail_batches == 0 and state.batch_requests >= 7 + len(data_sizes(folder))
        assert state.repos[REPO].tags == {"v1": report.commit}


def test_a_5xx_on_an_upload_is_retried(tmp_path):
    folder = write_synthetic_version(tmp_path / "v1", [2 * MiB], seed=4)
    with run_hub_server(token=TOKEN) as (endpoint, state):
        state.fail_uploads, state.fail_status = 2, 503
        report = push(folder, endpoint)
        assert state.fail_uploads == 0 and state.repos[REPO].tags == {"v1": report.commit}


def test_a_moved_branch_is_read_again_and_the_other_commit_is_kept(tmp_path):
    folder = write_synthetic_version(tmp_path / "v1", [1 * MiB], seed=5)
    with run_hub_server(token=TOKEN) as (endpoint, state):
        state.move_branch_before_commits = 1
        report = push(folder, endpoint)
        repo = state.repos[REPO]
        assert report.retried_on_moved_branch and repo.tags == {"v1": report.commit}
        files = repo.commits[report.commit].files
        assert any(path.startswith("notes/other-") for path in files)  # someone else's file survives
        assert set(data_sizes(folder)) <= set(files)


def test_a_branch_that_keeps_moving_stops_the_push_without_a_tag(tmp_path):
    folder = write_synthetic_version(tmp_path / "v1", [1 * MiB], seed=6)
    with run_hub_server(token=TOKEN) as (endpoint, state):
        state.move_branch_before_commits = 2
        with pytest.raises(PushError, match="moved again"):
            push(folder, endpoint)
        assert state.repos[REPO].tags == {}


def test_the_push_progress_bar_shows_bytes_and_rate_on_a_terminal():
    from io import StringIO

    from rich.console import Console

    from flows.push_progress import push_progress_bar

    screen = StringIO()
    with push_progress_bar(Console(file=screen, force_terminal=True, width=120)) as update:
        assert update is not None
        update(PushProgress("data/sft-00000-of-00002.parquet", 1, 2, 3 * MiB, 6 * MiB, 1.5))
    text = screen.getvalue()
    assert "3.0/6.0 MiB" in text and "/s" in text and "1/2 data/sft-00000-of-00002.parquet" in text
    with push_progress_bar(Console(file=StringIO(), force_terminal=False)) as update:
        assert update is None  # logs get per-file lines from warehouse.hub instead
