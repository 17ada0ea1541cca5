"""Honest exits: what a run's counts say went wrong, as the lines `run` prints before exiting non-zero."""

from __future__ import annotations

from typing import Any

from flows.stages import BATCH_STAGES  # they track which inputs got an output (`StageCounts.done`)


def stage_problems(counts: dict[str, dict[str, Any]]) -> list[str]:
    """One line per stage that stopped (fatal error, open breaker) or whose every input failed."""
    lines = []
    for stage, stage_counts in counts.items():
        if not isinstance(stage_counts, dict):
            continue
        if stage_counts.get("stopped"):
            lines.append(f"stage {stage} stopped: {stage_counts['stopped']}")
        elif (
            stage in BATCH_STAGES
            and stage_counts.get("inputs")
            and stage_counts.get("failures")
            and not stage_counts.get("done")
        ):
            lines.append(
                f"stage {stage}: every input failed ({stage_counts['failures']} failures; "
                "`groundgen status` shows them by error class)"
            )
    return lines


def no_version_reason(counts: dict[str, dict[str, Any]]) -> str:
    """Why a run exported no version, in one line."""
    for stage, stage_counts in counts.items():
        if isinstance(stage_counts, dict) and stage_counts.get("stopped"):
            return f"no dataset version: the run stopped at stage {stage}"
    note = (counts.get("export") or {}).get("note")
    if note:
        return str(note)
    if "export" not in counts:
        return "no dataset version (the export stage was not run)"
    return "no new dataset version (nothing changed since the last one)"
