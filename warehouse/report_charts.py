"""Charts of the report and the dataset card, drawn with matplotlib (SVG for the page, PNG for the card).

matplotlib renders offline and ships fonts; figures are made with `matplotlib.figure.Figure` (no
pyplot state, no GUI backend). Labels come from the warehouse, so `$` is escaped (no mathtext), and
output is deterministic: no dates in the metadata, a fixed SVG id salt.
"""

from __future__ import annotations

import io
from collections.abc import Sequence
from pathlib import Path
from typing import Any

STAGE_COLORS = {
    "topics": "#4e79a7",
    "prompts": "#59a14f",
    "trajectories": "#f28e2b",
    "images": "#b07aa1",
    "judgements": "#76b7b2",
    "samples": "#edc948",
    "failures": "#e15759",
}
DEFAULT_COLOR = "#9c755f"
KEPT_COLOR = "#59a14f"
DROP_COLOR = "#e15759"
WIDTH_IN = 7.5


def _matplotlib() -> Any:
    try:
        import matplotlib
    except ImportError as error:  # pragma: no cover - a dependency of groundgen
        raise ImportError(
            "the report needs matplotlib: pip install groundgen (or pip install matplotlib)"
        ) from error
    matplotlib.rcParams.update(
        {
            "svg.fonttype": "none",  # text stays text: small, selectable, searchable
            "svg.hashsalt": "groundgen",
            "font.family": "DejaVu Sans",
            "font.size": 9,
            "axes.spines.top": False,
            "axes.spines.right": False,
        }
    )
    return matplotlib


def label(text: object, limit: int = 48) -> str:
    """A warehouse string as a safe matplotlib label: no mathtext, bounded length."""
    value = str(text).replace("\n", " ").replace("$", r"\$")
    return value if len(value) <= limit else value[: limit - 1] + "…"


def _figure(rows: int, min_height: float = 1.6) -> Any:
    _matplotlib()
    from matplotlib.figure import Figure

    return Figure(figsize=(WIDTH_IN, max(min_height, 0.6 + 0.24 * rows)), layout="constrained")


def to_svg(figure: Any) -> str:
    buffer = io.StringIO()
    figure.savefig(buffer, format="svg", metadata={"Date": None, "Creator": None})
    return buffer.getvalue()


def to_png(figure: Any, path: Path, dpi: int = 110) -> None:
    figure.savefig(path, format="png", dpi=dpi, metadata={"Software": None})


def barh(
    labels: Sequence[str],
    values: Sequence[float],
    *,
    colors: Sequence[str] | None = None,
    title: str = "",
    xlabel: str = "",
    value_format: str = "{:,.0f}",
) -> Any:
    """A horizontal bar chart, first label on top, each bar labelled with its value."""
    figure = _figure(len(labels))
    axes = figure.add_subplot()
    positions = list(range(len(labels)))[::-1]
    bars = axes.barh(positions, list(values), color=list(colors or [DEFAULT_COLOR] * len(labels)))
    axes.set_yticks(positions, [label(text) for text in labels])
    axes.bar_label(bars, labels=[value_format.format(v) for v in values], padding=3, fontsize=8)
    axes.margins(x=0.12)
    if title:
        axes.set_title(label(title, 100), loc="left", fontsize=10)
    if xlabel:
        axes.set_xlabel(label(xlabel, 100))
    return figure


def funnel_figure(funnel: Sequence[dict[str, Any]]) -> Any:
    """Rows per stage and outcome (every drop reason a bar), coloured by stage."""
    names = [f"{row['stage']}: {row['outcome']}" for row in funnel]
    colors = [STAGE_COLORS.get(str(row["stage"]), DEFAULT_COLOR) for row in funnel]
    if not funnel:
        return empty_figure("the funnel is empty: no rows in the warehouse yet")
    return barh(names, [row["rows"] for row in funnel], colors=colors, title="rows per stage and outcome")


def histogram(values: Sequence[float], *, bins: int | Sequence[float], title: str, xlabel: str) -> Any:
    if not values:
        return empty_figure(f"{title}: no values")
    figure = _figure(0, min_height=2.4)
    axes = figure.add_subplot()
    axes.hist(list(values), bins=bins, color="#4e79a7", edgecolor="white")
    axes.set_title(label(title, 100), loc="left", fontsize=10)
    axes.set_xlabel(label(xlabel, 100))
    axes.set_ylabel("samples")
    return figure


def integer_bins(values: Sequence[int], most: int = 40) -> int | list[float]:
    """One bin per integer when the range is small (no empty gaps between integer values)."""
    if not values or max(values) - min(values) >= most:
        return 20
    return [value - 0.5 for value in range(min(values), max(values) + 2)]


def stacked_barh(
    labels: Sequence[str], series: dict[str, Sequence[float]], colors: dict[str, str], *, title: str
) -> Any:
    """Horizontal bars stacked by series (e.g. sft, rl, dropped per category)."""
    if not labels:
        return empty_figure(f"{title}: no rows")
    figure = _figure(len(labels))
    axes = figure.add_subplot()
    positions = list(range(len(labels)))[::-1]
    left = [0.0] * len(labels)
    for name, values in series.items():
        axes.barh(positions, list(values), left=left, color=colors.get(name, DEFAULT_COLOR), label=name)
        left = [a + b for a, b in zip(left, values, strict=True)]
    axes.set_yticks(positions, [label(text) for text in labels])
    axes.legend(loc="lower left", bbox_to_anchor=(1.0, 0.0), fontsize=8, frameon=False)
    axes.set_title(label(title, 100), loc="left", fontsize=10)
    return figure


def empty_figure(message: str) -> Any:
    figure = _figure(0, min_height=0.8)
    figure.text(0.02, 0.5, label(message, 120), va="center", fontsize=10, color="#666666")
    return figure


def write_funnel_png(funnel: Sequence[dict[str, Any]], path: Path) -> None:
    """The funnel figure as a PNG (the dataset card shows it on the Hub)."""
    to_png(funnel_figure(funnel), path)
