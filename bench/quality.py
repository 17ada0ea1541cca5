"""What the issue-10 curation rules catch, and how precisely.

Runs by hand (not in CI):

    .venv/bin/python -m bench.quality --prompts 200 [--previous-rev 8d9d984] [--skip-run]

1. Precision and recall of each rule on the hand-labelled sample tests/fixtures/quality_labels.jsonl
   (50 rows, labelled by reading them; its header says how). The ideal is 1.0.
2. The offline default at `--prompts` prompts on this checkout (the production path: `groundgen run`
   in a subprocess): kept share, grounding coverage (facts checked and found in a tool response), and
   how many rows each new rule dropped or limited to RL.
3. The same run on the code of `--previous-rev` (extracted with `git archive`, run with this venv):
   how many of the rows *its* export holds each new rule would have caught. This is the peer the
   current run is compared with.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from filters.base import Candidate  # noqa: E402
from filters.quality_rules import QUALITY_REASONS, rule_hits  # noqa: E402
from filters.quality_scores import score_judgement  # noqa: E402
from schemas.config import CurationConfig  # noqa: E402
from schemas.rows import Judgement, Prompt, Trajectory  # noqa: E402

LABELS = REPO / "tests" / "fixtures" / "quality_labels.jsonl"
LABEL_OF = {
    "rule_protocol_repair": "protocol_repair",
    "rule_empty_thinking": "empty_thinking",
    "rule_ungrounded_facts": "ungrounded",
    "rule_subject_mismatch": "subject_mismatch",
    "rule_reference_irrelevant": "reference_irrelevant",
}
PREVIOUS_REV = "8d9d984"  # main before any issue-10 change


def load_labels(path: Path = LABELS) -> tuple[list[str], list[dict[str, Any]]]:
    lines = path.read_text(encoding="utf-8").splitlines()
    header = json.loads(lines[0])["header"]
    return header, [json.loads(line) for line in lines[1:] if line.strip()]


def hits_for(
    trajectory: Trajectory, task_prompt: str, subjects: list[str], category: str, config: CurationConfig
) -> list[str]:
    """The rules a row trips, scored exactly as the judge stage scores it."""
    prompt = Prompt(
        id=trajectory.prompt_id,
        topic_ids=[],
        category=category,
        difficulty="easy",
        prompt=task_prompt,
        writer="",
    )
    plain = Judgement(id="", image_id="", trajectory_id=trajectory.id, judge="bench", keep=True)
    judgement, _ = score_judgement(plain, trajectory, task_prompt, subjects)
    return rule_hits(Candidate(prompt=prompt, trajectory=trajectory, judgement=judgement), config)


def labelled_precision(config: CurationConfig) -> list[tuple[str, int, int, int, int]]:
    """Per rule: (reason, flagged, true positives, false positives, missed)."""
    _, rows = load_labels()
    table = []
    verdicts = [
        (
            row["labels"],
            hits_for(
                Trajectory.model_validate(row["trajectory"]),
                row["task_prompt"],
                row["subjects"],
                row["category"],
                config,
            ),
        )
        for row in rows
    ]
    for reason in QUALITY_REASONS:
        label = LABEL_OF[reason]
        flagged = [labels[label] for labels, hits in verdicts if reason in hits]
        missed = sum(labels[label] and reason not in hits for labels, hits in verdicts)
        table.append((reason, len(flagged), sum(flagged), len(flagged) - sum(flagged), missed))
    return table


def ratio(numerator: float, denominator: float) -> str:
    return f"{numerator / denominator:.3f}" if denominator else "n/a"


def print_precision(config: CurationConfig) -> None:
    _, rows = load_labels()
    print(f"\n1. rules on the hand-labelled sample ({len(rows)} rows, {LABELS.relative_to(REPO)}); ideal 1.0")
    print(f"{'rule':28} {'flagged':>7} {'true':>5} {'false':>5} {'missed':>6} {'precision':>9} {'recall':>7}")
    for reason, flagged, true, false, missed in labelled_precision(config):
        print(
            f"{reason:28} {flagged:7d} {true:5d} {false:5d} {missed:6d} "
            f"{ratio(true, flagged):>9} {ratio(true, true + missed):>7}"
        )


# --- whole runs ------------------------------------------------------------------------------------


def run_pipeline(code: Path, workdir: Path, prompts: int) -> float:
    """`groundgen run` of the code in `code` at `prompts` prompts; returns the wall seconds."""
    total = round(prompts / 1.25)
    sft = round(total * 10 / 16)
    env = dict(
        os.environ,
        PYTHONPATH=str(code),
        PREFECT_HOME=str(workdir.parent / f"{workdir.name}-prefect"),
        PREFECT_SERVER_ANALYTICS_ENABLED="false",
        PREFECT_LOGGING_LEVEL="WARNING",
    )
    env.pop("PREFECT_API_URL", None)
    command = [
        sys.executable,
        "-c",
        "import sys; from flows.cli import app; app(sys.argv[1:])",
        "run",
        "--sft",
        str(sft),
        "--rl",
        str(total - sft),
        "--workdir",
        str(workdir),
    ]
    started = time.perf_counter()
    subprocess.run(command, cwd=code, env=env, check=True, stdout=subprocess.DEVNULL)
    return time.perf_counter() - started


def exported_rows(database: Path) -> list[dict[str, Any]]:
    """The rows of the warehouse's latest version, with what the rules need (any schema version)."""
    import duckdb

    connection = duckdb.connect(str(database), read_only=True)
    try:
        (manifest,) = connection.execute(
            "SELECT manifest_json FROM versions ORDER BY created_at DESC LIMIT 1"
        ).fetchall()[0]
        ids = json.loads(manifest)["ids"]
        wanted = [(sample_id, split) for split in ("sft", "rl") for sample_id in ids.get(split, [])]
        connection.execute("CREATE TEMP TABLE wanted (id VARCHAR, split VARCHAR)")
        connection.executemany("INSERT INTO wanted VALUES (?, ?)", wanted)
        return (
            connection.sql(
                """
                SELECT w.split, t.*, p.prompt AS task_prompt, p.category AS prompt_category,
                       (SELECT list(title) FROM topics WHERE list_contains(p.topic_ids, topics.id)) AS subjects
                FROM wanted w JOIN samples s ON s.id = w.id JOIN trajectories t ON t.id = s.trajectory_id
                JOIN prompts p ON p.id = s.prompt_id ORDER BY s.id
                """
            )
            .to_arrow_table()
            .to_pylist()
        )
    finally:
        connection.close()


def caught_in_export(
    database: Path, config: CurationConfig
) -> tuple[dict[str, dict[str, int]], dict[str, int]]:
    """Per rule and split: exported rows the rule drops (or, for SFT, limits to RL); rows per split."""
    fields = set(Trajectory.model_fields)
    caught: dict[str, dict[str, int]] = {reason: {"sft": 0, "rl": 0} for reason in QUALITY_REASONS}
    totals = {"sft": 0, "rl": 0}
    for row in exported_rows(database):
        trajectory = Trajectory.model_validate({key: value for key, value in row.items() if key in fields})
        totals[row["split"]] += 1
        hits = hits_for(trajectory, row["task_prompt"], row["subjects"] or [], row["prompt_category"], config)
        for reason in hits:
            limits_only = reason in ("rule_protocol_repair", "rule_empty_thinking")
            if row["split"] == "sft" or not limits_only:
                caught[reason][row["split"]] += 1
    return caught, totals


def run_metrics(database: Path) -> dict[str, Any]:
    """Kept share, drops and limits per rule, grounding coverage, of the current code's run."""
    from warehouse.store import Warehouse

    with Warehouse(database, read_only=True) as warehouse:

        def one(sql: str) -> Any:
            return warehouse.query(sql).to_pylist()[0]

        samples = one(
            "SELECT count(*) n, count(*) FILTER (WHERE status = 'kept') kept, "
            "count(*) FILTER (WHERE split = 'sft') sft, count(*) FILTER (WHERE split = 'rl') rl FROM samples"
        )
        reasons = {
            row["reason"]: row["n"]
            for row in warehouse.query("SELECT reason, count(*) n FROM samples GROUP BY 1").to_pylist()
        }
        answered = one("SELECT count(*) n FROM trajectories WHERE ending = 'answer'")["n"]
        evidence = one(
            "SELECT count(*) facts, count(*) FILTER (WHERE supported) found, "
            "count(DISTINCT trajectory_id) trajectories, count(*) FILTER (WHERE about_subject) about FROM evidence"
        )
        exported_grounding = one(
            "SELECT avg(j.grounding) mean, min(j.grounding) low FROM samples s JOIN judgements j "
            "ON j.image_id = s.image_id WHERE s.status = 'kept'"
        )
    return {
        "samples": samples,
        "reasons": reasons,
        "answered": answered,
        "evidence": evidence,
        "exported_grounding": exported_grounding,
    }


def print_run(metrics: dict[str, Any], seconds: float) -> None:
    samples, evidence = metrics["samples"], metrics["evidence"]
    print(f"\n2. offline default on this checkout ({samples['n']} trajectories curated, {seconds:.0f} s)")
    print(
        f"kept share: {ratio(samples['kept'], samples['n'])} "
        f"({samples['kept']} kept: {samples['sft']} sft, {samples['rl']} rl; the rest is mostly split_quota_full)"
    )
    print(
        f"grounding coverage: {evidence['found']}/{evidence['facts']} claimed facts found in a tool response "
        f"= {ratio(evidence['found'], evidence['facts'])}; {evidence['trajectories']}/{metrics['answered']} "
        f"answered trajectories claim at least one checkable fact; facts from a source naming the subject: "
        f"{ratio(evidence['about'], evidence['found'])}"
    )
    low = metrics["exported_grounding"]["low"]
    print(f"exported rows: mean grounding {metrics['exported_grounding']['mean'] or 0:.3f}, lowest {low}")
    for reason in QUALITY_REASONS:
        print(f"  {reason:28} dropped {metrics['reasons'].get(reason, 0)}")


def print_caught(title: str, caught: dict[str, dict[str, int]], totals: dict[str, int]) -> None:
    print(f"\n{title} (exported: {totals['sft']} sft, {totals['rl']} rl rows)")
    print(f"{'rule':28} {'sft rows':>8} {'rl rows':>8} {'share of export':>15}")
    everything = totals["sft"] + totals["rl"]
    for reason, per_split in caught.items():
        both = per_split["sft"] + per_split["rl"]
        print(f"{reason:28} {per_split['sft']:8d} {per_split['rl']:8d} {ratio(both, everything):>15}")


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--prompts", type=int, default=200)
    parser.add_argument(
        "--previous-rev", default=PREVIOUS_REV, help="git revision of the previous code ('' = skip)"
    )
    parser.add_argument("--workdir", type=Path, default=None, help="keep the runs here (default: a temp dir)")
    parser.add_argument("--skip-run", action="store_true", help="only the labelled sample")
    arguments = parser.parse_args()
    config = CurationConfig()
    print_precision(config)
    if arguments.skip_run:
        return
    root = arguments.workdir or Path(tempfile.mkdtemp(prefix="groundgen-quality-"))
    root.mkdir(parents=True, exist_ok=True)
    current = root / "current"
    seconds = run_pipeline(REPO, current, arguments.prompts)
    print_run(run_metrics(current / "warehouse.duckdb"), seconds)
    caught, totals = caught_in_export(current / "warehouse.duckdb", config)
    print_caught(
        "   each rule on this checkout's export (0 by construction: curation already applied them)",
        caught,
        totals,
    )
    if arguments.previous_rev:
        code = root / f"code-{arguments.previous_rev}"
        if not code.exists():
            code.mkdir()
            archive = subprocess.run(
                ["git", "archive", arguments.previous_rev], cwd=REPO, check=True, capture_output=True
            ).stdout
            subprocess.run(["tar", "-x", "-C", str(code)], input=archive, check=True)
        previous = root / f"previous-{arguments.previous_rev}"
        seconds = run_pipeline(code, previous, arguments.prompts)
        caught, totals = caught_in_export(previous / "warehouse.duckdb", config)
        print_caught(
            f"3. each new rule on the export of the previous code ({arguments.previous_rev}, {seconds:.0f} s)",
            caught,
            totals,
        )
    print(f"\nwork dirs kept under {root}")


if __name__ == "__main__":
    main()
