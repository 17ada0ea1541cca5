"""Trainer compatibility: the trainers' own loaders on a fresh groundgen export, pass/fail per row.

    .venv/bin/python -m bench.compat                       # fresh offline run, both trainers
    .venv/bin/python -m bench.compat --workdir groundgen-data --only verl --run-tools
    .venv/bin/python -m bench.compat --venvs ~/.cache/groundgen-compat   # reuse the trainer venvs

1. Makes a fresh export through the production CLI: `groundgen run` (offline default, `--sft/--rl`
   rows) unless `--workdir` names an existing work directory, then `groundgen export --format verl`
   and `--format llamafactory`. Each format folder is then copied to another place and the original
   deleted, so only what travels with the folder can resolve.
2. Installs each trainer into its own virtual environment (under `--venvs`, default a temp dir). The
   venvs see this project's venv through a `.pth` file (torch and friends are not downloaded again)
   and pin what the trainer needs on top: verl with its transformers range and tensordict,
   LLaMA-Factory with its transformers / datasets / peft / trl ranges. Needs PyPI and ~1 GB.
3. Runs `bench/compat_verl_check.py` (verl's `RLHFDataset`, `collate_fn` + `DataProto` as the reward
   managers index them, `initialize_tools_from_config`) and `bench/compat_llamafactory_check.py`
   (LLaMA-Factory's dataset_info parser, sharegpt converter with `media_dir`, qwen2_vl image checks)
   in those venvs and prints their per-row lines, then rows passed against the ideal (every row).
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import subprocess
import sys
import sysconfig
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
BENCH = Path(__file__).resolve().parent
GROUNDGEN = Path(sys.executable).parent / "groundgen"

TRAINERS: dict[str, dict] = {
    "verl": {
        "format": "verl",
        "check": BENCH / "compat_verl_check.py",
        "no_deps": ["verl"],
        "requirements": [
            "transformers>=5.5.3,<5.11,!=5.6.0",
            "tensordict>=0.8,<=0.10.0,!=0.9.0",
            "codetiming",
            "hydra-core",
            "dill",
            "pylatexenc",
            "torchdata",
        ],
    },
    "llamafactory": {
        "format": "llamafactory",
        "check": BENCH / "compat_llamafactory_check.py",
        "no_deps": ["llamafactory"],
        "requirements": [
            "transformers>=4.55,<=5.6.0,!=4.57.0,!=4.52.0",
            "datasets>=2.16,<=4.0.0",
            "peft>=0.18,<=0.18.1",
            "trl>=0.18,<=0.24.0",
            "accelerate>=1.3,<=1.11.0",
            "torchdata>=0.10,<=0.11.0",
            "omegaconf",
            "tyro<0.9",
            "fire",
        ],
    },
}


def run(command: list[str], **kwargs) -> subprocess.CompletedProcess:
    print("$", " ".join(str(part) for part in command), flush=True)
    return subprocess.run(command, check=True, text=True, **kwargs)


def fresh_export(workdir: Path | None, base: Path, sft: int, rl: int, formats: list[str]) -> dict[str, Path]:
    """The format folders of a fresh export, each moved away from where it was written."""
    env = {**os.environ, "PREFECT_HOME": str(base / "prefect"), "PREFECT_SERVER_ANALYTICS_ENABLED": "false"}
    if workdir is None:
        workdir = base / "groundgen-data"
        started = time.perf_counter()
        run([GROUNDGEN, "run", "--workdir", workdir, "--sft", str(sft), "--rl", str(rl), "--quiet"], env=env)
        print(f"pipeline: {time.perf_counter() - started:.1f} s")
    moved = {}
    for name in formats:
        written = base / "written" / name
        result = run(
            [GROUNDGEN, "export", "--workdir", workdir, "--format", name, "--output", written],
            env=env,
            capture_output=True,
        )
        print(result.stdout.strip())
        moved[name] = base / "elsewhere" / name
        shutil.copytree(written, moved[name])
        shutil.rmtree(written)
    return moved


def trainer_venv(root: Path, name: str) -> Path:
    """A venv for one trainer that sees this project's packages through a .pth file."""
    venv = root / f"{name}-venv"
    python = venv / "bin" / "python"
    if python.exists():
        print(f"{name}: reusing {venv}")
        return python
    started = time.perf_counter()
    run([sys.executable, "-m", "venv", venv])
    site = Path(
        subprocess.run(
            [python, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
            check=True,
            capture_output=True,
            text=True,
        ).stdout.strip()
    )
    (site / "zz_groundgen.pth").write_text(f"{sysconfig.get_paths()['purelib']}\n{REPO}\n", encoding="utf-8")
    spec = TRAINERS[name]
    run([python, "-m", "pip", "install", "-q", "--no-deps", *spec["no_deps"]])
    run([python, "-m", "pip", "install", "-q", *spec["requirements"]])
    print(f"{name}: venv installed in {time.perf_counter() - started:.1f} s")
    return python


def check(name: str, python: Path, folder: Path, run_tools: bool) -> tuple[int, int]:
    command = [python, TRAINERS[name]["check"], folder] + (["--run-tools"] if run_tools else [])
    with tempfile.TemporaryDirectory() as cwd:  # the tool backends write their work dir here
        result = subprocess.run(command, text=True, capture_output=True, cwd=cwd)
    lines = result.stdout.splitlines()
    for line in lines:
        if line.startswith(("PASS", "FAIL", "note:")) or " no rows" in line:
            print(line)
    summary = next((line for line in reversed(lines) if line.startswith("SUMMARY")), "")
    match = re.search(r"pass=(\d+) fail=(\d+)", summary)
    if not match:
        print(f"{name}: the check did not finish (exit {result.returncode})\n{result.stderr[-3000:]}")
        return 0, 1
    return int(match.group(1)), int(match.group(2))


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--workdir", type=Path, help="export this work directory instead of a fresh run")
    parser.add_argument("--sft", type=int, default=12)
    parser.add_argument("--rl", type=int, default=12)
    parser.add_argument("--only", choices=sorted(TRAINERS), action="append")
    parser.add_argument("--venvs", type=Path, help="keep (and reuse) the trainer venvs here")
    parser.add_argument("--run-tools", action="store_true", help="verl: also run a search through the tools")
    args = parser.parse_args()
    trainers = args.only or sorted(TRAINERS)
    with tempfile.TemporaryDirectory(prefix="groundgen-compat-") as temp:
        base = Path(temp)
        folders = fresh_export(
            args.workdir, base, args.sft, args.rl, [TRAINERS[t]["format"] for t in trainers]
        )
        venvs = args.venvs or base / "venvs"
        venvs.mkdir(parents=True, exist_ok=True)
        results = {}
        for name in trainers:
            python = trainer_venv(venvs, name)
            started = time.perf_counter()
            results[name] = (*check(name, python, folders[TRAINERS[name]["format"]], args.run_tools),)
            results[name] += (time.perf_counter() - started,)
    print(f"\n{'trainer':<14}{'rows passed':>12}{'failed':>8}{'vs ideal':>10}{'seconds':>9}")
    for name, (passed, failed, seconds) in results.items():
        total = passed + failed
        ratio = passed / total if total else 0.0
        print(f"{name:<14}{passed:>12}{failed:>8}{ratio:>10.2f}{seconds:>9.1f}")


if __name__ == "__main__":
    main()
