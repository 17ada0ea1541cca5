"""The run summary's painter line: how many ground-truth images were painted from a gen_prompt the
text encoder cut (`images.prompt_tokens_truncated`, counted per image by `synthesis.painter`)."""

from __future__ import annotations

from pathlib import Path

from warehouse.query import QueryError, WarehouseReader


def truncation_note(database: Path, painter_fingerprint: str) -> str:
    """One line for the run summary, or '' when no image of this painter had its prompt cut (or the
    warehouse cannot say)."""
    if not painter_fingerprint.isalnum():  # fingerprints are hex; never splice anything else into SQL
        return ""
    query = (
        "SELECT count(*) FILTER (WHERE prompt_tokens_truncated > 0) AS cut, count(*) AS painted, "
        "coalesce(max(prompt_tokens_truncated), 0) AS most FROM images "
        f"WHERE kind = 'ground_truth' AND painter = '{painter_fingerprint}'"
    )
    try:
        with WarehouseReader(database) as reader:
            row = reader.table(query).to_pylist()[0]
    except (QueryError, OSError):
        return ""
    if not row["cut"]:
        return ""
    return (
        f"painter: {row['cut']} of {row['painted']} ground-truth images were painted from a gen_prompt cut "
        f"by the text encoder's length limit (up to {row['most']} tokens dropped; per image in "
        "images.prompt_tokens_truncated)"
    )
