"""Benchmark: `groundgen push` over the Hub's LFS path against a raw HTTP PUT of the same bytes.

Writes a synthetic version folder (random Parquet-named shards plus a manifest), starts the
Hub-compatible test server in its own process on 127.0.0.1 (objects stored on disk), then:

1. pushes the version with `warehouse.hub.push_version` in a fresh subprocess (so its peak RSS is the
   push's own), through preupload -> LFS batch -> PUT (multipart above the server's threshold) ->
   verify -> one commit -> tag;
2. PUTs the same files, one request each, with httpx streaming from disk to the same server's upload
   endpoint (the ideal: bytes over the same loopback socket with no protocol around them).

Each is measured `--reps` times in alternating order (a fresh server per rep), and the medians compared.

Prints MB/s of both, their ratio (target >= 0.8) and the push's peak RSS (target <= 512 MiB while
pushing 2 GB).

    python -m bench.push --gigabytes 0.3      # quick
    python -m bench.push                      # 2 GB in 256 MB shards (needs ~4.5 GB free disk)
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from warehouse.manifest import ShardFile, build_manifest, dumps_manifest, file_sha256  # noqa: E402

TOKEN = "hf_bench_token"
REPO = "bench/push"
MiB = 1024 * 1024


def write_synthetic_version(
    folder: Path, shard_bytes: list[int], *, seed: int = 0, version: str = "v1"
) -> Path:
    """A version folder with random shards of the given sizes and a manifest that lists them.

    The bytes are random (incompressible, like Parquet with embedded images); the files are what a
    push moves, not data `datasets` can read."""
    import numpy as np

    rng = np.random.default_rng(seed)
    (folder / "data").mkdir(parents=True, exist_ok=True)
    shards = []
    for index, size in enumerate(shard_bytes):
        config = "sft" if index % 2 == 0 else "rl"
        path = f"data/{config}-{index:05d}-of-{len(shard_bytes):05d}.parquet"
        digest = hashlib.sha256()
        with open(folder / path, "wb") as out:
            left = size
            while left > 0:
                block = rng.bytes(min(8 * MiB, left))
                digest.update(block)
                out.write(block)
                left -= len(block)
        shards.append(ShardFile(path, config, 1, size, digest.hexdigest()))
    card = folder / "README.md"
    card.write_text("---\nconfigs: []\n---\n# synthetic version for push tests\n", encoding="utf-8")
    shards.append(ShardFile("README.md", "", 0, card.stat().st_size, file_sha256(card)))
    manifest = build_manifest(
        version=version,
        parent="",
        curator="bench",
        config_fingerprint="bench",
        code_version="bench",
        ids={"sft": [], "rl": []},
        parent_ids={},
        files=shards,
    )
    (folder / "manifest.json").write_text(dumps_manifest(manifest), encoding="utf-8")
    return folder


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def start_server(lfs_dir: Path, chunk_size: int) -> tuple[subprocess.Popen, str]:
    port = _free_port()
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "testkit.servers.hub_server",
            "--port",
            str(port),
            "--token",
            TOKEN,
            "--lfs-dir",
            str(lfs_dir),
            "--chunk-size",
            str(chunk_size),
            "--multipart-threshold",
            str(chunk_size),
        ],
        cwd=ROOT,
    )
    endpoint = f"http://127.0.0.1:{port}"
    import httpx

    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            httpx.post(f"{endpoint}/api/validate-yaml", json={"content": ""}, timeout=1)
            return process, endpoint
        except httpx.HTTPError:
            time.sleep(0.1)
    process.kill()
    raise RuntimeError("the Hub server did not start")


PUSH_SCRIPT = """
import json, resource, sys, time
sys.path.insert(0, {root!r})
from warehouse.hub import push_version
started = time.perf_counter()
report = push_version({folder!r}, {repo!r}, endpoint={endpoint!r}, token={token!r}, backoff_s=0.5)
seconds = time.perf_counter() - started
print(json.dumps({{"seconds": seconds, "bytes": report.bytes, "transfer": report.transfer,
    "created": report.created_commit, "peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}}))
"""


def measure_push(folder: Path, endpoint: str) -> dict:
    env = {**os.environ, "HF_HUB_DISABLE_PROGRESS_BARS": "1", "HF_HUB_OFFLINE": "0"}
    script = PUSH_SCRIPT.format(root=str(ROOT), folder=str(folder), repo=REPO, endpoint=endpoint, token=TOKEN)
    result = subprocess.run(
        [sys.executable, "-c", script], cwd=ROOT, env=env, capture_output=True, text=True, check=False
    )
    if result.returncode != 0:
        raise RuntimeError(result.stderr[-3000:])
    return json.loads(result.stdout.strip().splitlines()[-1])


def measure_raw_put(folder: Path, endpoint: str) -> dict:
    """The same shard bytes, one streamed PUT each, to the server's basic upload endpoint."""
    import httpx

    manifest = json.loads((folder / "manifest.json").read_text())
    shards = [entry for entry in manifest["files"] if entry["path"].startswith("data/")]
    total = 0
    started = time.perf_counter()
    with httpx.Client(timeout=600) as client:
        for entry in shards:
            # a different oid than the push's objects, so the server stores a second copy, as for the push
            oid = hashlib.sha256(b"raw" + entry["sha256"].encode()).hexdigest()

            def body(path: Path = folder / entry["path"]):
                with open(path, "rb") as data:
                    while block := data.read(MiB):
                        yield block

            response = client.put(f"{endpoint}/lfs-upload/{oid}?size={entry['size']}", content=body())
            # the server refuses the content (its sha256 is not the made-up oid) only after storing every byte
            if response.status_code not in (200, 400):
                raise RuntimeError(f"raw PUT failed: {response.status_code} {response.text[:200]}")
            total += entry["size"]
    return {"seconds": time.perf_counter() - started, "bytes": total}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--gigabytes", type=float, default=2.0, help="size of the synthetic version")
    parser.add_argument("--shard-mib", type=int, default=256, help="shard size (the export's default)")
    parser.add_argument("--chunk-mib", type=int, default=64, help="multipart chunk size the server asks for")
    parser.add_argument("--reps", type=int, default=3, help="reps of each, in alternating order (median)")
    args = parser.parse_args()

    total = int(args.gigabytes * 1024 * MiB)
    shard = args.shard_mib * MiB
    sizes = [shard] * (total // shard) + ([total % shard] if total % shard else [])
    with tempfile.TemporaryDirectory(prefix="groundgen-push-bench-") as tmp:
        folder = write_synthetic_version(Path(tmp) / "v1", sizes)
        pushes, raws = [], []
        for rep in range(args.reps):  # alternating order, a fresh server (empty object store) per rep
            server, endpoint = start_server(Path(tmp) / f"lfs-{rep}", args.chunk_mib * MiB)
            try:
                if rep % 2 == 0:
                    pushes.append(measure_push(folder, endpoint))
                    raws.append(measure_raw_put(folder, endpoint))
                else:
                    raws.append(measure_raw_put(folder, endpoint))
                    pushes.append(measure_push(folder, endpoint))
            finally:
                server.terminate()
                server.wait(timeout=30)
                shutil.rmtree(Path(tmp) / f"lfs-{rep}", ignore_errors=True)
    push = {**pushes[0], "seconds": statistics.median(p["seconds"] for p in pushes)}
    push["peak_rss_mib"] = max(p["peak_rss_mib"] for p in pushes)
    raw = {**raws[0], "seconds": statistics.median(r["seconds"] for r in raws)}
    data_bytes = sum(sizes)
    push_rate = data_bytes / push["seconds"] / MiB
    raw_rate = raw["bytes"] / raw["seconds"] / MiB
    print(f"version: {len(sizes)} shards, {data_bytes / MiB:,.0f} MiB of data (+ card and manifest)")
    print(
        f"groundgen push ({push['transfer']}): median {push['seconds']:.1f} s of {args.reps}, {push_rate:,.1f} MiB/s"
    )
    print(
        f"raw HTTP PUT of the same bytes: median {raw['seconds']:.1f} s of {args.reps}, {raw_rate:,.1f} MiB/s"
    )
    print(f"throughput ratio (push / raw PUT): {push_rate / raw_rate:.3f}  (target >= 0.8)")
    print(
        f"push peak RSS: {push['peak_rss_mib']:.0f} MiB  (target <= 512 MiB; ratio {push['peak_rss_mib'] / 512:.3f})"
    )


if __name__ == "__main__":
    main()
