"""Hub push with the real huggingface_hub client against the Hub-compatible server on 127.0.0.1."""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
from pathlib import Path

import pytest
from huggingface_hub import HfApi
from huggingface_hub.errors import HfHubHTTPError

from schemas.config import Config, ExportConfig
from testkit.servers.hub_server import run_hub_server
from tests.test_export_helpers import CURATOR, add_samples, curated  # noqa: F401  (fixture)
from warehouse.export import export_version, version_folder
from warehouse.hub import PushError, push_version

TOKEN = "hf_test_secret_token_0123456789"
REPO = "groundgen/gen-searcher-data"
ROOT = Path(__file__).resolve().parents[1]

pytestmark = pytest.mark.slow


@pytest.fixture
def hub(monkeypatch):
    # the suite runs with HF_HUB_OFFLINE=1 (tests/conftest.py); these tests talk to 127.0.0.1 only
    monkeypatch.setattr("huggingface_hub.constants.HF_HUB_OFFLINE", False)
    with run_hub_server(token=TOKEN) as (endpoint, state):
        yield endpoint, state


@pytest.fixture
def v1(curated, tmp_path) -> Path:  # noqa: F811
    warehouse, blobs = curated
    version = export_version(
        warehouse, blobs, tmp_path / "exports", Config(), curator=CURATOR, code_version="t"
    )
    return version_folder(warehouse.path.parent, version)


def push(folder: Path, endpoint: str, **kwargs):
    return push_version(folder, REPO, endpoint=endpoint, token=TOKEN, backoff_s=0, **kwargs)


def remote_files(endpoint: str, revision: str) -> dict[str, int]:
    api = HfApi(endpoint=endpoint, token=TOKEN)
    return {
        e.path: e.size
        for e in api.list_repo_tree(REPO, revision=revision, recursive=True, repo_type="dataset")
        if hasattr(e, "size") and e.__class__.__name__ == "RepoFile"
    }


def test_push_then_repush_changes_nothing(hub, v1, caplog):
    endpoint, state = hub
    caplog.set_level(logging.DEBUG)
    report = push(v1, endpoint, private=True)
    assert (report.version, report.created_commit, report.already_tagged) == ("v1", True, False)
    repo = state.repos[REPO]
    assert repo.private and repo.tags == {"v1": report.commit} and repo.branches["main"] == report.commit
    assert repo.commits[report.commit].message == "Add dataset version v1"
    manifest = json.loads((v1 / "manifest.json").read_text())
    expected = {f["path"]: f["size"] for f in manifest["files"]} | {
        "manifest.json": (v1 / "manifest.json").stat().st_size
    }
    assert {p: s for p, s in remote_files(endpoint, "v1").items() if p != ".gitattributes"} == expected
    assert set(report.files) == set(expected)

    commits, requests = len(repo.commits), state.commit_requests
    again = push(v1, endpoint)
    assert (again.commit, again.created_commit, again.already_tagged) == (report.commit, False, True)
    assert (len(repo.commits), state.commit_requests) == (commits, requests)
    assert TOKEN not in caplog.text and TOKEN not in repr(report)
    assert all(header in ("", f"Bearer {TOKEN}") for header in state.authorization_headers)


def test_transient_commit_failure_is_retried(hub, v1):
    endpoint, state = hub
    state.fail_commits = 2
    report = push(v1, endpoint, attempts=3)
    assert report.created_commit and state.commit_requests == 3
    assert state.repos[REPO].tags == {"v1": report.commit}


def test_interrupted_push_completes_when_run_again(hub, v1):
    endpoint, state = hub
    state.fail_commits = 10
    with pytest.raises(HfHubHTTPError):
        push(v1, endpoint, attempts=2)
    assert state.repos[REPO].tags == {}
    state.fail_commits = 0
    report = push(v1, endpoint)
    assert report.created_commit and state.repos[REPO].tags == {"v1": report.commit}


def test_push_interrupted_between_commit_and_tag_completes_without_a_new_commit(hub, v1):
    endpoint, state = hub
    state.fail_tags = 10
    with pytest.raises(HfHubHTTPError):
        push(v1, endpoint, attempts=2)
    repo = state.repos[REPO]
    head, commits = repo.branches["main"], len(repo.commits)
    state.fail_tags = 0
    report = push(v1, endpoint)
    assert (report.commit, report.created_commit, len(repo.commits)) == (head, False, commits)
    assert repo.tags == {"v1": head}


def test_client_errors_are_not_retried(hub, v1):
    endpoint, state = hub
    with pytest.raises(HfHubHTTPError) as error:
        push_version(v1, REPO, endpoint=endpoint, token="hf_wrong", backoff_s=0)
    assert error.value.response.status_code == 401
    assert state.commit_requests == 0 and REPO not in state.repos


def test_second_version_replaces_stale_shards_and_keeps_the_first_tag(hub, curated, tmp_path):  # noqa: F811
    endpoint, state = hub
    warehouse, blobs = curated
    small = Config(export=ExportConfig(max_shard_bytes=1024))
    first = export_version(warehouse, blobs, tmp_path / "exports", small, curator=CURATOR, code_version="t")
    push(version_folder(tmp_path, first), endpoint)
    add_samples(warehouse, blobs, 12, 14)
    second = export_version(
        warehouse, blobs, tmp_path / "exports", Config(), curator=CURATOR, code_version="t"
    )
    report = push(version_folder(tmp_path, second), endpoint)
    assert report.deleted and all(p.startswith("data/") for p in report.deleted)
    v1_files, v2_files = remote_files(endpoint, "v1"), remote_files(endpoint, "v2")
    assert len([p for p in v1_files if p.startswith("data/sft-")]) > 1
    assert sorted(p for p in v2_files if p.startswith("data/")) == [
        "data/rl-00000-of-00001.parquet",
        "data/sft-00000-of-00001.parquet",
    ]
    assert set(state.repos[REPO].tags) == {"v1", "v2"}


def test_endpoint_and_token_come_from_the_environment_and_dry_run_is_offline(hub, v1, monkeypatch):
    endpoint, state = hub
    monkeypatch.setenv("HF_ENDPOINT", "http://127.0.0.1:9")  # nothing listens there
    dry = push_version(v1, REPO, dry_run=True)
    assert dry.dry_run and dry.endpoint == "http://127.0.0.1:9" and "manifest.json" in dry.files
    assert state.repos == {}
    monkeypatch.setenv("HF_ENDPOINT", endpoint)
    monkeypatch.setenv("HF_TOKEN", TOKEN)
    assert push_version(v1, REPO).created_commit


def test_a_corrupted_export_is_refused(hub, v1):
    endpoint, _ = hub
    shard = next((v1 / "data").glob("sft-*.parquet"))
    shard.write_bytes(shard.read_bytes()[:-1] + b"X")
    with pytest.raises(PushError, match="differs from the manifest"):
        push(v1, endpoint)


def test_datasets_loads_the_pushed_version_from_the_server(hub, v1, tmp_path):
    pytest.importorskip("datasets")
    endpoint, _ = hub
    push(v1, endpoint)
    script = (
        "import datasets, json\n"
        "out = {}\n"
        "for name in ('sft', 'rl'):\n"
        f"    d = datasets.load_dataset({REPO!r}, name, revision='v1', split='train')\n"
        "    out[name] = [d.num_rows, type(d.features['images'].feature if name == 'sft' else d.features['gt_image']).__name__]\n"
        "print(json.dumps(out))\n"
    )
    env = {
        **os.environ,
        "HF_ENDPOINT": endpoint,
        "HF_TOKEN": TOKEN,
        "HF_HOME": str(tmp_path / "hf-home"),
        "HF_HUB_DISABLE_TELEMETRY": "1",
        "HF_HUB_OFFLINE": "0",
        "HF_DATASETS_OFFLINE": "0",
    }
    result = subprocess.run(
        [sys.executable, "-c", script], cwd=ROOT, env=env, capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert json.loads(result.stdout.strip().splitlines()[-1]) == {"sft": [6, "Image"], "rl": [6, "Image"]}
