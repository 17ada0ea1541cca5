"""`groundgen report`: one HTML page with the funnel, failures, balance, costs and a sample gallery.

```
report.html          the page: charts (matplotlib SVG as data URIs), tables, the gallery index (JSON)
report_files/
  thumbs/<sha256>.jpg|png  thumbnails of ground-truth and chosen reference images (small ones as they are)
  detail/00000.js ...      trajectories, 100 samples a file, loaded by a <script> tag when opened
```

Readable from disk with no server and no network: nothing is fetched (a Content-Security-Policy
forbids it), every warehouse string reaches the page as escaped text or JSON read with `textContent`
(model output is hostile input). Queries live in `warehouse.report_data`, charts in
`warehouse.report_charts`; this module renders and writes files.
"""

from __future__ import annotations

import base64
import json
import os
import shutil
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from warehouse import report_charts as charts
from warehouse import report_data as data
from warehouse.blobs import BlobStore
from warehouse.store import Warehouse

TEMPLATES = Path(__file__).parent / "templates"
DETAIL_CHUNK = 100
PAGE_SIZE = 24
THUMB_SIDE = 192
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


# --- thumbnails -----------------------------------------------------------------------------------


WEB_FORMATS = {"PNG": ".png", "JPEG": ".jpg", "GIF": ".gif", "WEBP": ".webp"}
LINK_MAX_BYTES = 24_000  # a small web image is used as it is (hard link or copy), not re-encoded


@dataclass
class Thumbnails:
    names: dict[str, str] = field(default_factory=dict)  # sha256 -> file name in the thumbs folder
    problems: dict[str, str] = field(default_factory=dict)  # sha256 -> "missing" or "unreadable (...)"


def _link_or_copy(source: Path, target: Path) -> None:
    temp = target.with_name(target.name + ".tmp")
    temp.unlink(missing_ok=True)
    try:
        os.link(source, temp)
    except OSError:  # another file system, or links not allowed
        shutil.copyfile(source, temp)
    os.replace(temp, target)


def make_thumbnail(source: Path, folder: Path, sha: str, side: int = THUMB_SIDE) -> tuple[str, str]:
    """Make the thumbnail of blob `sha` in `folder`: (file name, "") or ("", why it could not be).

    An image already small enough in a web format is decoded (to check it) and linked as it is;
    anything else becomes a JPEG at most `side` pixels wide and high."""
    if not source.exists():
        return "", "missing"
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(source) as image:
            extension = WEB_FORMATS.get(image.format or "")
            if extension and max(image.size) <= side and source.stat().st_size <= LINK_MAX_BYTES:
                if image.format == "PNG":
                    image.verify()  # chunk checksums: a truncated or corrupt PNG fails here, not in the page
                else:
                    image.load()
                _link_or_copy(source, folder / f"{sha}{extension}")
                return f"{sha}{extension}", ""
            if image.format == "JPEG":
                image.draft("RGB", (side, side))  # decode at a reduced scale: much less work
            image.thumbnail((side, side), reducing_gap=2.0)
            rgb = image.convert("RGB")
        temp = folder / f"{sha}.jpg.tmp"
        rgb.save(temp, format="JPEG", quality=82)
        os.replace(temp, folder / f"{sha}.jpg")
    except (
        UnidentifiedImageError,
        OSError,
        ValueError,
        SyntaxError,
    ) as error:  # Pillow: SyntaxError = broken PNG
        return "", f"unreadable ({error.__class__.__name__})"
    return f"{sha}.jpg", ""


def make_thumbnails(blobs: BlobStore, shas: set[str], folder: Path) -> Thumbnails:
    """Thumbnails for every sha256, reusing those an earlier report left in `folder` (blobs never
    change). New ones are made on a few threads, each over its own share of the images."""
    folder.mkdir(parents=True, exist_ok=True)
    result = Thumbnails()
    present = {name.split(".", 1)[0]: name for name in os.listdir(folder) if not name.endswith(".tmp")}
    todo = []
    for sha in sorted(sha for sha in shas if sha):
        if sha in present:
            result.names[sha] = present[sha]
            continue
        try:
            todo.append((sha, blobs.path(sha)))
        except ValueError:
            result.problems[sha] = "unreadable (not a sha256)"

    def work(share: list[tuple[str, Path]]) -> list[tuple[str, str, str]]:
        return [(sha, *make_thumbnail(source, folder, sha)) for sha, source in share]

    workers = max(1, min(4, os.cpu_count() or 1, len(todo)))
    with ThreadPoolExecutor(max_workers=workers) as pool:
        for done in pool.map(work, [todo[i::workers] for i in range(workers)]):
            for sha, name, problem in done:
                if name:
                    result.names[sha] = name
                else:
                    result.problems[sha] = problem
    return result


def _thumb(sha: str, thumbs: Thumbnails, base: str) -> tuple[str, str]:
    if not sha:
        return "", "no image"
    if sha in thumbs.names:
        return f"{base}/thumbs/{thumbs.names[sha]}", ""
    problem = thumbs.problems.get(sha, "missing")
    if problem == "missing":
        return "", f"image missing: blob {sha[:12]}… is not in the store"
    return "", f"image {problem}: blob {sha[:12]}…"


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


def gallery_index(samples: list[data.GallerySample], thumbs: Thumbnails, base: str) -> list[list[Any]]:
    rows = []
    for number, sample in enumerate(samples):
        gt, gt_note = _thumb(sample.gt_sha256, thumbs, base)
        if not sample.gt_sha256:
            gt_note = "no ground-truth image (the row was dropped before painting)"
        refs = [
            [ref["title"], _thumb(ref["sha256"], thumbs, base)[0], ref["img_id"], ref["note"]]
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


def write_detail_chunks(samples: list[data.GallerySample], folder: Path) -> int:
    """Trajectories as `detail/NNNNN.js`, each calling groundgenDetail(chunk, {systems, rows})."""
    folder.mkdir(parents=True, exist_ok=True)
    chunks = 0
    for start in range(0, len(samples), DETAIL_CHUNK):
        systems: list[str] = []
        rows: dict[str, Any] = {}
        for sample in samples[start : start + DETAIL_CHUNK]:
            turns = []
            for turn in data.trajectory_turns(sample.messages):
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
    diff = data.version_diff(warehouse, scope)
    if diff is None:
        return None
    shown = [
        row_id
        for config in diff["configs"].values()
        for key in ("added", "removed")
        for row_id in config[key][:DIFF_LIST_LIMIT]
    ]
    diff["titles"] = data.sample_titles(warehouse, shown)
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
    samples = data.gallery_samples(warehouse, scope)
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
