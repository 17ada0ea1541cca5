"""Offline pipeline benchmark: wall time per stage, and what Prefect orchestration costs.

Runs the same `regenerate` flow twice in this process on fresh work directories:
  1. direct  — the same task functions called on a plain ThreadPoolExecutor (no Prefect:
     `flows.regenerate.regenerate_with` with `flows.submit.executor_submit`),
  2. prefect — the real Prefect flow with its thread task runner and task-run records,
and prints per-stage wall times and the overhead ratio prefect / direct (target: ≤ 1.10).

    python -m bench.pipeline --prompts 1000        # about 20-30 minutes on 2 cores
    python -m bench.pipeline --prompts 100         # a quick look
    python -m bench.pipeline --prompts 100 --reader   # run time with a reader polling every second vs none
    python -m bench.pipeline --prompts 200 --batch-size 16 --latency   # do the stages overlap?

The default mode also runs the offline default stage by stage and prints each stage's CPU per row
(the trajectories stage's CPU per prompt). `--latency` runs against a scripted OpenAI-compatible
teacher (testkit/servers/openai_server.py, a fixed delay per model turn, 16 concurrent) and an images
API painting one image at a time with a fixed delay (testkit/servers/images_server.py): one run with the
stages overlapping, one stage by stage, and prints wall time / max(stage busy time) (goal <= 1.15).
"""

from __future__ import annotations

import argparse
import os
import shutil
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from flows.prefect_server import stop_prefect_server
from flows.runner import run_regenerate, task_runner_for
from flows.settings import configure_prefect
from flows.stages import BATCH_STAGES, STAGE_NAMES
from flows.submit import executor_submit
from schemas.config import Config, SizesConfig
from warehouse.query import stage_rows


def config_for(workdir: Path, prompts: int, batch_size: int) -> Config:
    # sizes chosen so that `prompts_wanted` equals the requested prompt count
    sft = round(prompts * 0.625)
    rl = prompts - sft
    return Config(workdir=workdir, batch_size=batch_size, sizes=SizesConfig(sft=sft, rl=rl, oversample=1.0))


def run_direct(config: Config) -> tuple[float, dict]:
    from flows.regenerate import regenerate_with  # imports Prefect: after configure_prefect in main()

    workers = task_runner_for(config)._max_workers if config.runner == "threads" else 4
    started = time.perf_counter()
    with ThreadPoolExecutor(max_workers=workers) as executor:
        result = regenerate_with(config, None, "bench-direct", executor_submit(executor))
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


# --- latency-injected backends: do the stages overlap? ---------------------------------------------


def latency_config(
    workdir: Path, prompts: int, batch_size: int, teacher_url: str, painter_url: str
) -> Config:
    """The offline default, except the teacher (an OpenAI-compatible server answering each turn after a
    fixed delay) and the painter (an images API painting one image at a time, a fixed delay each)."""
    sizes = config_for(workdir, prompts, batch_size).sizes
    teacher = {"base_url": teacher_url, "model": "bench-teacher", "max_concurrency": 16}
    return Config.model_validate(
        {
            "workdir": str(workdir),
            "batch_size": batch_size,
            "sizes": sizes.model_dump(),
            "teacher": {"kind": "llm", "browse_summary": False},
            "llm": {"teacher": teacher | {"adaptive_concurrency": False}},
            "painter": {
                "kind": "http",
                "base_url": painter_url,
                "model": "bench-painter",
                "max_concurrency": 1,
                "adaptive_concurrency": False,
            },
        }
    )


def stage_by_stage(config: Config) -> dict[str, tuple[float, float, int]]:
    """Each stage alone, in order, on a fresh work directory: stage -> (seconds, CPU seconds of this
    process, rows). The seconds are the stage's own (inside the flow): its busy time when nothing else
    runs beside it; the CPU seconds include the flow's start (about 0.1-0.2 s)."""
    measured = {}
    for stage in STAGE_NAMES:
        cpu = cpu_seconds()
        result = run_regenerate(config, [stage], command="bench-stage")
        counts = result["counts"][stage]
        measured[stage] = (counts["seconds"], cpu_seconds() - cpu, stage_rows(stage, counts))
    return measured


def print_stage_cpu(title: str, measured: dict[str, tuple[float, float, int]]) -> None:
    print(f"\n{title}\n{'stage':<14}{'rows':>8}{'wall s':>9}{'cpu s':>8}{'cpu ms/row':>12}")
    for stage, (seconds, cpu, rows) in measured.items():
        per_row = f"{cpu / rows * 1000:>12.1f}" if rows else f"{'':>12}"
        print(f"{stage:<14}{rows:>8}{seconds:>9.2f}{cpu:>8.2f}{per_row}")


def latency_overlap(root: Path, prompts: int, batch_size: int, turn_s: float, image_s: float) -> None:
    """The same run with stages overlapping (one `regenerate`) and stage by stage, against a teacher
    server with `turn_s` per model turn and a painter with `image_s` per image (one at a time)."""
    import threading

    from testkit.servers.images_server import ImagesServer
    from testkit.servers.openai_policy import CompetentPolicy
    from testkit.servers.openai_server import ScriptedOpenAIServer

    class OneGPUImages(ImagesServer):
        def __init__(self) -> None:
            super().__init__()
            self.gpu = threading.Lock()

        def answer(self, request):  # type: ignore[no-untyped-def]
            with self.gpu:  # one image at a time, a fixed time each
                time.sleep(image_s)
            return super().answer(request)

    with (
        ScriptedOpenAIServer(respond=CompetentPolicy(), latency_s=turn_s) as teacher,
        OneGPUImages() as painter,
    ):

        def config(name: str) -> Config:
            return latency_config(root / name, prompts, batch_size, teacher.base_url, painter.base_url)

        sequential = stage_by_stage(config("stage-by-stage"))
        cpu, started = cpu_seconds(), time.perf_counter()
        result = run_regenerate(config("overlapped"), command="bench-overlap")
        wall, cpu = time.perf_counter() - started, cpu_seconds() - cpu
    counts = result["counts"]
    print_stage_cpu(
        f"stage by stage (teacher {turn_s:g} s per turn x 16 concurrent, painter {image_s:g} s per image x 1)",
        sequential,
    )
    overlapped = max(counts[stage]["seconds"] for stage in BATCH_STAGES)
    busiest = max(sequential[stage][0] for stage in BATCH_STAGES)
    in_order = sum(sequential[stage][0] for stage in BATCH_STAGES)
    print(f"\n{'overlapped':<14}{'rows':>8}{'done at s':>11}{'busy s':>9}")
    for stage in BATCH_STAGES:
        print(
            f"{stage:<14}{stage_rows(stage, counts[stage]):>8}{counts[stage]['seconds']:>11.2f}"
            f"{counts[stage]['busy_seconds']:>9.2f}"
        )
    print(
        f"\nbatch stages: overlapped {overlapped:.2f} s, stage by stage {in_order:.2f} s, busiest stage alone "
        f"{busiest:.2f} s\nwall time / max(stage busy time): {overlapped / busiest:.3f} (goal <= 1.15; "
        f"stage by stage: {in_order / busiest:.3f}); whole run {wall:.1f} s, {cpu:.1f} CPU s"
    )
    same = result["version"] and result["version"]["sft_rows"] + result["version"]["rl_rows"] > 0
    print(f"overlapped run exported a version: {bool(same)}")


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
    parser.add_argument(
        "--latency",
        action="store_true",
        help="overlapped vs stage-by-stage runs against a slow teacher server and a one-image-at-a-time painter",
    )
    parser.add_argument("--turn-s", type=float, default=0.3, help="--latency: teacher seconds per model turn")
    parser.add_argument("--image-s", type=float, default=0.25, help="--latency: painter seconds per image")
    args = parser.parse_args()

    root = Path(tempfile.mkdtemp(prefix="groundgen-bench-"))
    os.environ.setdefault("PREFECT_HOME", str(root / "prefect"))
    server = None
    if (args.reader or args.latency) and not os.environ.get("PREFECT_API_URL"):
        # many runs in one process: a dedicated server (a temporary one per run drops events and stalls)
        from flows.prefect_server import start_prefect_server

        (root / "prefect").mkdir(parents=True, exist_ok=True)
        server, os.environ["PREFECT_API_URL"] = start_prefect_server(root / "prefect")
    configure_prefect(root)
    print(f"offline pipeline, {args.prompts} prompts, batch size {args.batch_size}, {os.cpu_count()} cores")

    # warm-up: load the corpus, build the search index and the tiny pipeline once, start Prefect's server
    run_prefect(config_for(root / "warmup", 8, args.batch_size))
    if args.latency:
        try:
            latency_overlap(root, args.prompts, args.batch_size, args.turn_s, args.image_s)
        finally:
            if server is not None:
                stop_prefect_server(server)
            if not args.keep:
                shutil.rmtree(root, ignore_errors=True)
        return
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
    for stage in STAGE_NAMES:
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
    print_stage_cpu(
        "offline default, stage by stage (CPU of this process per row)",
        stage_by_stage(config_for(root / "stages", args.prompts, args.batch_size)),
    )
    if not args.keep:
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
