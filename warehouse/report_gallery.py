"""The report's gallery rows and version diff: samples with their prompt, trajectory and images,
trajectories split into turns, ids added and removed against the parent version. Pure queries over
a Warehouse, like `warehouse.report_data`."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

from warehouse.manifest import CONFIG_NAMES, loads_manifest
from warehouse.report_data import ReportScope, records
from warehouse.store import Warehouse

# --- gallery --------------------------------------------------------------------------------------


@dataclass
class GallerySample:
    id: str
    status: str
    split: str
    reason: str
    category: str
    difficulty: str
    prompt: str
    gen_prompt: str
    ending: str
    gt_sha256: str
    gt_size: str
    duplicate_of: str
    references: list[dict[str, str]] = field(default_factory=list)  # chosen: img_id, title, sha256, note
    messages: list[dict[str, Any]] = field(default_factory=list)  # role, content, image_ids
    all_references: dict[str, str] = field(default_factory=dict)  # img_id -> title


def gallery_samples(warehouse: Warehouse, scope: ReportScope) -> list[GallerySample]:
    """The scope's samples with their prompt, trajectory and images, kept rows first, by id."""
    where, parameters = scope.samples_where()
    rows = records(
        warehouse,
        "SELECT s.id, s.status, s.split, s.reason, s.category, s.duplicate_of, p.difficulty, p.prompt, "
        "t.gen_prompt, t.ending, t.messages, t.references, t.chosen_references, i.sha256 AS gt_sha256, "
        "i.width, i.height, i.format FROM samples s LEFT JOIN prompts p ON p.id = s.prompt_id "
        "LEFT JOIN trajectories t ON t.id = s.trajectory_id LEFT JOIN images i ON i.id = s.image_id "
        f"WHERE {where} ORDER BY s.status DESC, s.split DESC, s.id",
        parameters,
    )
    samples = []
    for row in rows:
        references = {ref["img_id"]: ref for ref in row["references"] or []}
        chosen = [
            {
                "img_id": choice["img_id"],
                "title": references.get(choice["img_id"], {}).get("title", ""),
                "sha256": references.get(choice["img_id"], {}).get("sha256", ""),
                "note": choice.get("note", ""),
            }
            for choice in row["chosen_references"] or []
        ]
        size = f"{row['width']}×{row['height']} {row['format']}" if row["gt_sha256"] else ""
        samples.append(
            GallerySample(
                id=row["id"],
                status=row["status"],
                split=row["split"] or "",
                reason=row["reason"] or "",
                category=row["category"] or "",
                difficulty=row["difficulty"] or "",
                prompt=row["prompt"] or "",
                gen_prompt=row["gen_prompt"] or "",
                ending=row["ending"] or "",
                gt_sha256=row["gt_sha256"] or "",
                gt_size=size,
                duplicate_of=row["duplicate_of"] or "",
                references=chosen,
                messages=list(row["messages"] or []),
                all_references={key: value.get("title", "") for key, value in references.items()},
            )
        )
    return samples


_SEGMENT = re.compile(r"<(think|tool_call|answer|tool_response)>(.*?)</\1>", re.DOTALL)
_KIND = {"think": "think", "tool_call": "tool call", "answer": "answer", "tool_response": "tool response"}


def trajectory_turns(messages: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Split protocol messages into turns: role, parts [(kind, text)] and attached image ids.

    Kinds: system, task, think, tool call, tool response, answer, text (anything outside the tags)."""
    turns = []
    for index, message in enumerate(messages):
        role, content = message.get("role", ""), message.get("content", "") or ""
        if role == "system":  # it describes the tags; not a turn to split
            turns.append({"role": role, "parts": [("system", content)], "image_ids": []})
            continue
        parts: list[tuple[str, str]] = []
        position = 0
        for match in _SEGMENT.finditer(content):
            before = content[position : match.start()].strip()
            if before:
                parts.append(("text", before))
            parts.append((_KIND[match.group(1)], match.group(2).strip()))
            position = match.end()
        rest = content[position:].strip()
        if rest:
            default = "task" if role == "user" and index <= 1 else "text"
            parts.append((default, rest))
        turns.append({"role": role, "parts": parts, "image_ids": list(message.get("image_ids") or [])})
    return turns


# --- versions -------------------------------------------------------------------------------------


def version_diff(warehouse: Warehouse, scope: ReportScope) -> dict[str, Any] | None:
    """Rows added and removed against the parent version, per config (from the manifest)."""
    version = scope.version
    if version is None or not version.manifest_json:
        return None
    manifest = loads_manifest(version.manifest_json)
    changes = manifest.get("changes", {})
    diff: dict[str, Any] = {"version": version.id, "parent": version.parent, "configs": {}}
    for name in CONFIG_NAMES:
        change = changes.get(name, {})
        diff["configs"][name] = {
            "added": list(change.get("added", [])),
            "removed": list(change.get("removed", [])),
        }
    return diff


def sample_titles(warehouse: Warehouse, ids: list[str]) -> dict[str, dict[str, str]]:
    """{sample id: category, prompt} for the ids still in the warehouse."""
    if not ids:
        return {}
    rows = records(
        warehouse,
        "SELECT s.id, s.category, p.prompt FROM samples s LEFT JOIN prompts p ON p.id = s.prompt_id "
        "WHERE s.id IN (SELECT unnest(?::VARCHAR[]))",
        [ids],
    )
    return {row["id"]: {"category": row["category"], "prompt": row["prompt"] or ""} for row in rows}
