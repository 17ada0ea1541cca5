"""Offline pipeline benchmark: wall time per stage, and what Prefect orchestration costs.

Runs the same `regenerate` flow twice in this process on fresh work directories:
  1. direct  — the same task functions called on a plain ThreadPoolExecutor (no Prefect),
  2. prefect — the real Prefect flow with its thread task runner and task-run records,
and prints per-stage wall times and the overhead ratio prefect / direct (target: ≤ 1.10).

    python -m bench.pipeline --prompts 1000        # about 20-30 minutes on 2 cores
    python -m bench.pipeline --prompts 100         # a quick look
    python -m bench.pipeline --prompts 100 --reader   # run time with a reader polling every second vs none
"""

from __future__ import annotations

import argparse
import os
import shutil
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from flows.batches import direct_executor
from flows.prefect_server import stop_prefect_server
from flows.runner import run_regenerate, task_runner_for
from flows.settings import configure_prefect
from flows.stage_names import STAGE_ORDER
from schemas.config import Config, SizesConfig
from warehouse.query import stage_rows


def config_for(workdir: Path, prompts: int, batch_size: int) -> Config:
    # sizes chosen so that `prompts_wanted` equals the requested prompt count
    sft = round(prompts * 0.625)
    rl = prompts - sft
    return Config(workdir=workdir, batch_size=batch_size, sizes=SizesConfig(sft=sft, rl=rl, oversample=1.0))


def run_direct(config: Config) -> tuple[float, dict]:
    from flows.regenerate import regenerate

    workers = task_runner_for(config)._max_workers if config.runner == "threads" else 4
    started = time.perf_counter()
    with ThreadPoolExecutor(max_workers=workers) as executor:
        token = direct_executor.set(executor)
        try:
            result = regenerate.fn(config.model_dump(mode="json"), None, "bench-direct")
        finally:
            direct_executor.reset(token)
    return time.perf_counter() - started, result


def run_prefect(config: Config) -> tuple[float, dict]:
    started = time.perf_counter()
    result = run_regenerate(config, command="bench-prefect")
    return time.perf_counter() - started, result


READER_QUERY = "SELECT stage, outcome, rows FROM funnel ORDER BY step, outcome"


def poll(workdir: str, out: str, stop: str, period: float = 1.0) -> None:
    """In a separate process: one `groundgen status`-like query per `period` seconds through the same
    reader the CLI uses, until the file `stop` exists; writes [latency seconds, answered live] to `out`."""
    import json

    from warehouse.query import WarehouseReader

    database = Path(workdir) / "warehouse.duckdb"
    samples = []
    while not Path(stop).exists():
        if database.exists():
            started = time.perf_counter()
            with WarehouseReader(database) as reader:
                reader.table(READER_QUERY)
                samples.append([time.perf_counter() - started, reader.live])
            time.sleep(max(0.0, period - (time.perf_counter() - started)))
        else:
            time.sleep(0.05)
    Path(out).write_text(json.dumps(samples))


def run_with_reader(config: Config, root: Path, name: str) -> tuple[float, dict, list]:
    import json
    import subprocess
    import sys

    out, stop = root / f"{name}-latencies.json", root / f"{name}-stop"
    code = f"from bench.pipeline import poll; poll({str(config.workdir)!r}, {str(out)!r}, {str(stop)!r})"
    reader = subprocess.Popen([sys.executable, "-c", code], cwd=Path(__file__).resolve().parent.parent)
    try:
        seconds, result = run_prefect(config)
    finally:
        stop.touch()
        reader.wait(timeout=120)
    return seconds, result, json.loads(out.read_text())


def cpu_seconds() -> float:
    """CPU time of this process (the run's flow and its task threads, and the socket server's thread)."""
    import resource

    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def reader_overhead(root: Path, prompts: int, batch_size: int, rounds: int) -> None:
    """The same run with a reader polling every second and with none, alternating which goes first.

    Wall time is what the issue asks about; on a shared machine other processes make it noisy, so the
    run process's CPU seconds (which include serving the reader) are printed beside it."""
    import statistics

    totals = {"plain": 0.0, "reader": 0.0, "plain_cpu": 0.0, "reader_cpu": 0.0}
    ratios: list[float] = []
    samples: list = []
    print(
        f"\n{'round':<7}{'no reader s':>13}{'reader s':>10}{'ratio':>8}{'cpu s':>8}{'cpu s':>8}{'queries':>9}"
    )
    for number in range(rounds):
        plain_config = config_for(root / f"plain{number}", prompts, batch_size)
        reader_config = config_for(root / f"reader{number}", prompts, batch_size)
        order = ("plain", "reader") if number % 2 == 0 else ("reader", "plain")
        measured: dict = {}
        for kind in order:
            cpu = cpu_seconds()
            if kind == "plain":
                seconds, result = run_prefect(plain_config)
                latencies: list = []
            else:
                seconds, result, latencies = run_with_reader(reader_config, root, f"reader{number}")
            measured[kind] = (seconds, cpu_seconds() - cpu, result, latencies)
        plain_seconds, plain_cpu, plain, _ = measured["plain"]
        reader_seconds, reader_cpu, read, latencies = measured["reader"]
        assert plain["version"] and read["version"], "a run exported no version"
        assert (plain["version"]["sft_rows"], plain["version"]["rl_rows"]) == (
            read["version"]["sft_rows"],
            read["version"]["rl_rows"],
        ), "the run with a reader wrote different rows"
        totals["plain"] += plain_seconds
        totals["reader"] += reader_seconds
        totals["plain_cpu"] += plain_cpu
        totals["reader_cpu"] += reader_cpu
        ratios.append(reader_seconds / plain_seconds)
        samples += latencies
        print(
            f"{number:<7}{plain_seconds:>13.2f}{reader_seconds:>10.2f}{ratios[-1]:>8.3f}"
            f"{plain_cpu:>8.1f}{reader_cpu:>8.1f}{len(latencies):>9}"
        )
    overhead = totals["reader"] / totals["plain"]
    cpu_overhead = totals["reader_cpu"] / totals["plain_cpu"]
    print(
        f"\nreader overhead (run with a reader polling every second / run without): wall {overhead:.3f} "
        f"({(overhead - 1) * 100:+.1f}%, target ≤ +5%; median of rounds {statistics.median(ratios):.3f}), "
        f"run-process CPU {cpu_overhead:.3f} ({(cpu_overhead - 1) * 100:+.1f}%)"
    )
    if samples:
        live = [seconds for seconds, answered_live in samples if answered_live]
        all_ms = sorted(seconds * 1000 for seconds, _ in samples)
        print(
            f"query latency during the run: median {statistics.median(all_ms):.1f} ms, "
            f"p90 {all_ms[int(0.9 * (len(all_ms) - 1))]:.1f} ms, max {all_ms[-1]:.1f} ms over {len(samples)} "
            f"queries ({len(live)} answered by the running process over its socket)"
        )


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--prompts", type=int, default=1000, help="prompts (and trajectories) per run")
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--keep", action="store_true", help="keep the work directories")
    parser.add_argument(
        "--reader", action="store_true", help="compare runs with a reader polling every second and without"
    )
    parser.add_argument("--rounds", type=int, default=2, help="--reader: pairs of runs (order alternates)")
    args = parser.parse_args()

    root = Path(tempfile.mkdtemp(prefix="groundgen-bench-"))
    os.environ.setdefault("PREFECT_HOME", str(root / "prefect"))
    server = None
    if args.reader and not os.environ.get("PREFECT_API_URL"):
        # many runs in one process: a dedicated server (a temporary one per run drops events and stalls)
        from flows.prefect_server import start_prefect_server

        (root / "prefect").mkdir(parents=True, exist_ok=True)
        server, os.environ["PREFECT_API_URL"] = start_prefect_server(root / "prefect")
    configure_prefect(root)
    print(f"offline pipeline, {args.prompts} prompts, batch size {args.batch_size}, {os.cpu_count()} cores")

    # warm-up: load the corpus, build the search index and the tiny pipeline once, start Prefect's server
    run_prefect(config_for(root / "warmup", 8, args.batch_size))
    if args.reader:
        try:
            reader_overhead(root, args.prompts, args.batch_size, args.rounds)
        finally:
            if server is not None:
                stop_prefect_server(server)
            if not args.keep:
                shutil.rmtree(root, ignore_errors=True)
        return

    direct_seconds, direct = run_direct(config_for(root / "direct", args.prompts, args.batch_size))
    prefect_seconds, prefect = run_prefect(config_for(root / "prefect", args.prompts, args.batch_size))

    print(f"\n{'stage':<14}{'rows':>8}{'direct s':>11}{'prefect s':>11}{'ratio':>8}")
    for stage in STAGE_ORDER:
        d, p = direct["counts"][stage], prefect["counts"][stage]
        ratio = p["seconds"] / d["seconds"] if d["seconds"] else float("nan")
        rows = stage_rows(stage, p)
        print(f"{stage:<14}{rows:>8}{d['seconds']:>11.2f}{p['seconds']:>11.2f}{ratio:>8.3f}")
    overhead = prefect_seconds / direct_seconds
    print(f"{'total':<14}{'':>8}{direct_seconds:>11.2f}{prefect_seconds:>11.2f}{overhead:>8.3f}")
    print(
        f"\norchestration overhead (prefect / direct wall time): {overhead:.3f}  "
        f"({(overhead - 1) * 100:+.1f}%, target ≤ +10%)"
    )
    same = (
        direct["version"]
        and prefect["version"]
        and (direct["version"]["sft_rows"], direct["version"]["rl_rows"])
        == (prefect["version"]["sft_rows"], prefect["version"]["rl_rows"])
    )
    print(f"same dataset sizes from both paths: {bool(same)}")
    if not args.keep:
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
