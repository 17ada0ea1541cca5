"""`groundgen report`: one HTML page with the funnel, failures, balance, costs and a sample gallery.

```
report.html          the page: charts (matplotlib SVG as data URIs), tables, the gallery index (JSON)
report_files/
  thumbs/<sha256>.jpg|png  thumbnails of ground-truth and chosen reference images (small ones as they are)
  detail/00000.js ...      trajectories, 100 samples a file, loaded by a <script> tag when opened
```

Readable from disk with no server and no network: nothing is fetched (a Content-Security-Policy
forbids it), every warehouse string reaches the page as escaped text or JSON read with `textContent`
(model output is hostile input). Queries live in `warehouse.report_data` and
`warehouse.report_gallery`, charts in `warehouse.report_charts`, thumbnails in
`warehouse.report_thumbs`; this module renders and writes files.
"""

from __future__ import annotations

import base64
import json
import os
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from warehouse import report_charts as charts
from warehouse import report_data as data
from warehouse import report_gallery as gallery
from warehouse.blobs import BlobStore
from warehouse.report_thumbs import Thumbnails, make_thumbnails, thumbnail_src
from warehouse.store import Warehouse

TEMPLATES = Path(__file__).parent / "templates"
DETAIL_CHUNK = 100
PAGE_SIZE = 24
DIFF_LIST_LIMIT = 500


@dataclass
class ReportResult:
    path: Path
    assets: Path
    samples: int
    thumbnails: int
    missing_blobs: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    seconds: float = 0.0

    def total_bytes(self) -> int:
        size = self.path.stat().st_size
        for root, _dirs, files in os.walk(self.assets):
            size += sum((Path(root) / name).stat().st_size for name in files)
        return size


def assets_folder(html_path: Path) -> Path:
    return html_path.with_name(html_path.stem + "_files")


def json_for_html(value: Any) -> str:
    """JSON safe inside <script type="application/json"> and in a .js file (no `</script>`, no
    U+2028/2029 line breaks that JS string literals cannot hold)."""
    text = json.dumps(value, ensure_ascii=False, separators=(",", ":"))
    for raw, escaped in (("<", "\\u003c"), (">", "\\u003e"), ("&", "\\u0026")):
        text = text.replace(raw, escaped)
    return text.replace("\u2028", "\\u2028").replace("\u2029", "\\u2029")


def svg_data_uri(figure: Any) -> str:
    """An SVG chart as an <img> data URI: an image cannot run script, whatever its labels say."""
    return "data:image/svg+xml;base64," + base64.b64encode(charts.to_svg(figure).encode()).decode()


# --- gallery --------------------------------------------------------------------------------------

INDEX_FIELDS = (
    "id",
    "status",
    "split",
    "reason",
    "category",
    "difficulty",
    "prompt",
    "gen_prompt",
    "ending",
    "gt",  # thumbnail path relative to the page, or "" when the image is missing
    "gt_note",  # what is missing ("no ground-truth image", "blob missing from the store", ...)
    "gt_size",
    "duplicate_of",
    "refs",  # [[title, thumbnail or "", img_id, note], ...]
    "chunk",  # detail file number
    "turns",
    "tool_calls",
)


def gallery_index(samples: list[gallery.GallerySample], thumbs: Thumbnails, base: str) -> list[list[Any]]:
    rows = []
    for number, sample in enumerate(samples):
        gt, gt_note = thumbnail_src(sample.gt_sha256, thumbs, base)
        if not sample.gt_sha256:
            gt_note = "no ground-truth image (the row was dropped before painting)"
        refs = [
            [ref["title"], thumbnail_src(ref["sha256"], thumbs, base)[0], ref["img_id"], ref["note"]]
            for ref in sample.references
        ]
        turns = sum(1 for message in sample.messages if message.get("role") != "system")
        calls = sum(1 for message in sample.messages if "<tool_call>" in (message.get("content") or ""))
        rows.append(
            [
                sample.id,
                sample.status,
                sample.split,
                sample.reason,
                sample.category,
                sample.difficulty,
                sample.prompt,
                sample.gen_prompt,
                sample.ending,
                gt,
                gt_note,
                sample.gt_size,
                sample.duplicate_of,
                refs,
                number // DETAIL_CHUNK,
                turns,
                calls,
            ]
        )
    return rows


def write_detail_chunks(samples: list[gallery.GallerySample], folder: Path) -> int:
    """Trajectories as `detail/NNNNN.js`, each calling groundgenDetail(chunk, {systems, rows})."""
    folder.mkdir(parents=True, exist_ok=True)
    chunks = 0
    for start in range(0, len(samples), DETAIL_CHUNK):
        systems: list[str] = []
        rows: dict[str, Any] = {}
        for sample in samples[start : start + DETAIL_CHUNK]:
            turns = []
            for turn in gallery.trajectory_turns(sample.messages):
                if turn["role"] == "system":
                    text = turn["parts"][0][1]
                    if text not in systems:
                        systems.append(text)
                    turns.append(["system", systems.index(text), []])
                    continue
                images = [[img_id, sample.all_references.get(img_id, "")] for img_id in turn["image_ids"]]
                turns.append([turn["role"], turn["parts"], images])
            rows[sample.id] = turns
        payload = json_for_html({"systems": systems, "rows": rows})
        (folder / f"{start // DETAIL_CHUNK:05d}.js").write_text(
            f"groundgenDetail({start // DETAIL_CHUNK}, {payload});\n", encoding="utf-8"
        )
        chunks += 1
    return chunks


# --- the page -------------------------------------------------------------------------------------


def _chart_sections(warehouse: Warehouse, scope: data.ReportScope, max_attempts: int) -> dict[str, Any]:
    funnel = data.funnel_rows(warehouse)
    outcomes = data.sample_outcomes(warehouse, scope)
    failures = data.failure_rows(warehouse, scope, max_attempts)
    balance = data.split_category_counts(warehouse, scope)
    lengths = data.prompt_lengths(warehouse, scope)
    scores, score_source = data.grounding_scores(warehouse, scope)
    usage = data.model_usage(warehouse, scope)
    timings = data.stage_timings(warehouse, scope)

    failure_totals: Counter[str] = Counter()
    for row in failures:
        failure_totals[f"{row['stage']}: {row['error_class']}"] += row["rows"]
    cost_by_role: Counter[str] = Counter()
    tokens_by_role: Counter[str] = Counter()
    for row in usage:
        cost_by_role[row["role"]] += row["cost_usd"]
        tokens_by_role[row["role"]] += row["prompt_tokens"] + row["completion_tokens"]
    seconds_by_stage: Counter[str] = Counter()
    for row in timings:
        seconds_by_stage[row["stage"]] += row["seconds"]

    figures = {
        "funnel": charts.funnel_figure(funnel),
        "outcomes": charts.barh(
            [row["outcome"] for row in outcomes],
            [row["rows"] for row in outcomes],
            colors=[
                charts.KEPT_COLOR if row["outcome"].startswith("kept_") else charts.DROP_COLOR
                for row in outcomes
            ],
            title=f"samples of {scope.label}: kept per split, dropped per reason",
        )
        if outcomes
        else charts.empty_figure("no samples in this scope"),
        "failures": charts.barh(
            list(failure_totals),
            list(failure_totals.values()),
            colors=[charts.DROP_COLOR] * len(failure_totals),
            title="failed rows per stage and error class",
        )
        if failure_totals
        else charts.empty_figure("no failures recorded"),
        "balance": charts.stacked_barh(
            [row["category"] for row in balance],
            {name: [row[name] for row in balance] for name in ("sft", "rl", "dropped")},
            {"sft": "#4e79a7", "rl": "#f28e2b", "dropped": "#bab0ac"},
            title="samples per category",
        ),
        "lengths": charts.histogram(
            lengths, bins=charts.integer_bins(lengths), title="prompt length", xlabel="words per prompt"
        ),
        "scores": charts.histogram(
            scores, bins=[i / 10 for i in range(11)], title="grounding score", xlabel=score_source or "score"
        )
        if scores
        else None,
        "cost": charts.barh(
            list(cost_by_role),
            list(cost_by_role.values()),
            title="cost per role (USD)",
            value_format="${:,.4f}",
        )
        if any(cost_by_role.values())
        else (
            charts.barh(list(tokens_by_role), list(tokens_by_role.values()), title="tokens per role")
            if tokens_by_role
            else None
        ),
        "seconds": charts.barh(
            list(seconds_by_stage),
            list(seconds_by_stage.values()),
            colors=[charts.STAGE_COLORS.get(stage, charts.DEFAULT_COLOR) for stage in seconds_by_stage],
            title="seconds per stage (all runs in scope)",
            value_format="{:,.1f}",
        )
        if seconds_by_stage
        else None,
    }
    return {
        "charts": {name: svg_data_uri(figure) for name, figure in figures.items() if figure is not None},
        "funnel": funnel,
        "outcomes": outcomes,
        "failures": failures,
        "balance": balance,
        "lengths": lengths,
        "scores": scores,
        "score_source": score_source,
        "usage": usage,
        "timings": timings,
        "images": data.image_mix(warehouse, scope),
        "runs": data.run_rows(warehouse, scope),
    }


def _diff(warehouse: Warehouse, scope: data.ReportScope) -> dict[str, Any] | None:
    diff = gallery.version_diff(warehouse, scope)
    if diff is None:
        return None
    shown = [
        row_id
        for config in diff["configs"].values()
        for key in ("added", "removed")
        for row_id in config[key][:DIFF_LIST_LIMIT]
    ]
    diff["titles"] = gallery.sample_titles(warehouse, shown)
    diff["limit"] = DIFF_LIST_LIMIT
    return diff


def render_page(context: dict[str, Any]) -> str:
    from jinja2 import Environment, FileSystemLoader, StrictUndefined

    environment = Environment(
        loader=FileSystemLoader(TEMPLATES),
        autoescape=True,
        undefined=StrictUndefined,
        keep_trailing_newline=True,
    )
    environment.filters["number"] = lambda value: f"{value:,}"
    return environment.get_template("report.html.j2").render(
        **context,
        css=(TEMPLATES / "report.css").read_text(encoding="utf-8"),
        script=(TEMPLATES / "report.js").read_text(encoding="utf-8"),
    )


def write_report(
    warehouse: Warehouse,
    blobs: BlobStore,
    scope: data.ReportScope,
    output: Path,
    *,
    max_attempts: int = 3,
    title: str = "groundgen report",
    targets: dict[str, int] | None = None,
) -> ReportResult:
    """Write the report page and its folder; return what was written and what is missing.

    `targets`: the rows per split the config asks for (`sizes.sft`, `sizes.rl`), shown beside the kept rows."""
    started = time.perf_counter()
    output = Path(output)
    output.parent.mkdir(parents=True, exist_ok=True)
    assets = assets_folder(output)
    samples = gallery.gallery_samples(warehouse, scope)
    shas = {sample.gt_sha256 for sample in samples} | {
        ref["sha256"] for sample in samples for ref in sample.references
    }
    with ThreadPoolExecutor(max_workers=1) as background:  # thumbnails while the queries and charts run
        pending_thumbs = background.submit(make_thumbnails, blobs, shas, assets / "thumbs")
        # a detail file left by an earlier report of other rows must not answer for these rows
        for stale in (assets / "detail").glob("*.js") if (assets / "detail").exists() else []:
            stale.unlink()
        write_detail_chunks(samples, assets / "detail")
        sections = _chart_sections(warehouse, scope, max_attempts)
        summary = data.summary(warehouse, scope)
        diff = _diff(warehouse, scope)
        thumbs = pending_thumbs.result()
    problems = thumbs.problems

    notes = list(scope.notes)
    missing = sorted(sha for sha, problem in problems.items() if problem == "missing")
    if missing:
        notes.append(
            f"{len(missing)} image blob(s) missing from the store {blobs.root}: their samples show a "
            "placeholder (e.g. " + ", ".join(sha[:12] + "…" for sha in missing[:3]) + ")"
        )
    unreadable = sorted(sha for sha, problem in problems.items() if problem and problem != "missing")
    if unreadable:
        notes.append(
            f"{len(unreadable)} image blob(s) could not be decoded: their samples show a placeholder"
        )
    if not samples:
        notes.append("no samples in this scope: the gallery is empty (run `groundgen run` to make some)")
    if not sections["score_source"]:
        notes.append(
            "no grounding scores: no judgement grounding, evidence rows or grounding_score column for these samples"
        )
    index = gallery_index(samples, thumbs, assets.name)
    categories = sorted({sample.category for sample in samples})
    reasons = sorted({sample.reason for sample in samples if sample.status == "dropped"})
    html = render_page(
        {
            "title": title,
            "targets": targets or {},
            "scope": scope,
            "summary": summary,
            "notes": notes,
            "diff": diff,
            "categories": categories,
            "reasons": reasons,
            "index_json": json_for_html({"fields": INDEX_FIELDS, "rows": index}),
            "config_json": json_for_html({"pageSize": PAGE_SIZE, "detail": f"{assets.name}/detail"}),
            "sample_count": len(samples),
            **sections,
        }
    )
    temp = output.with_name(output.name + ".tmp")
    temp.write_text(html, encoding="utf-8")
    os.replace(temp, output)
    return ReportResult(
        path=output,
        assets=assets,
        samples=len(samples),
        thumbnails=len(thumbs.names),
        missing_blobs=missing,
        notes=notes,
        seconds=time.perf_counter() - started,
    )
