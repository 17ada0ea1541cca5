"""Throughput of the offline pipeline on Ray (1 and 2 workers) versus the default thread runner.

Runs by hand (not in CI):

    python bench/scale.py --sft 6 --rl 4

Starts a dedicated Prefect server on 127.0.0.1 (Ray workers must report to one), then runs the whole
offline pipeline in a fresh work dir per runner and prints prompts processed per second and the ratio
to the thread runner. The Ray timings include `ray.init` (about 2.5 s): at small sizes that is most of
the difference.
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from flows.prefect_server import start_prefect_server, stop_prefect_server  # noqa: E402


def one_run(
    root: Path, name: str, runner: str, cpus: int, sft: int, rl: int, batch_size: int
) -> tuple[float, int]:
    from flows.runner import run_regenerate
    from schemas.config import Config, SizesConfig

    os.environ["GROUNDGEN_RAY_CPUS"] = str(cpus)
    config = Config(
        workdir=root / name, runner=runner, batch_size=batch_size, sizes=SizesConfig(sft=sft, rl=rl)
    )
    started = time.perf_counter()
    result = run_regenerate(config)
    elapsed = time.perf_counter() - started
    return elapsed, result["counts"]["trajectories"]["inputs"]  # prompts the teacher ran on


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sft", type=int, default=6)
    parser.add_argument("--rl", type=int, default=4)
    parser.add_argument("--batch-size", type=int, default=2, help="small batches: enough tasks to spread")
    args = parser.parse_args()
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
    os.environ.setdefault("PREFECT_LOGGING_LEVEL", "WARNING")
    root = Path(tempfile.mkdtemp(prefix="gg-scale-", dir="/tmp"))
    os.environ["GROUNDGEN_RAY_TMPDIR"] = str(root / "ray")
    os.environ["PREFECT_HOME"] = str(root / "prefect")
    (root / "prefect").mkdir()
    server, url = start_prefect_server(root / "prefect")
    os.environ["PREFECT_API_URL"] = url
    try:
        # warm the shared caches (tiny painter, corpus index) so no runner pays for them
        one_run(root, "warm", "threads", 2, 1, 1, args.batch_size)
        rows = []
        for label, runner, cpus in (("threads", "threads", 2), ("ray x1", "ray", 1), ("ray x2", "ray", 2)):
            elapsed, prompts = one_run(
                root, label.replace(" ", "-"), runner, cpus, args.sft, args.rl, args.batch_size
            )
            rows.append((label, elapsed, prompts / elapsed if elapsed else 0.0))
    finally:
        stop_prefect_server(server)
        shutil.rmtree(root, ignore_errors=True)
    base = rows[0][2] or 1.0
    print(f"offline pipeline, sft={args.sft} rl={args.rl}, {os.cpu_count()} cores")
    print(f"{'runner':<10}{'seconds':>10}{'prompts/s':>12}{'vs threads':>12}")
    for label, elapsed, rate in rows:
        print(f"{label:<10}{elapsed:>10.1f}{rate:>12.2f}{rate / base:>11.2f}x")


if __name__ == "__main__":
    main()
