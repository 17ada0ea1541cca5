"""Grounding-score distribution of exported rows: per version (for `groundgen status`) and per split
of what a curator kept (for the dataset card).

A row's grounding is `judgements.grounding` of its ground-truth image (the share of the gen_prompt's
claimed facts that a tool response states; see filters/evidence.py); rows judged before scores existed
count as "unscored". Facts and supported facts come from the same judgement.
"""

from __future__ import annotations

from typing import Any

HEADERS = ("rows", "mean", "<.5", ".5-.8", ".8-1", "=1", "unscored", "facts", "found")

_PER_ROW = """
SELECT s.id AS sample_id, s.split, s.curator,
       (SELECT max(j.grounding) FROM judgements j WHERE j.image_id = s.image_id) AS grounding,
       (SELECT max(j.facts) FROM judgements j WHERE j.image_id = s.image_id) AS facts,
       (SELECT max(j.supported_facts) FROM judgements j WHERE j.image_id = s.image_id) AS supported
FROM samples s
"""

_SUMMARY = """
count(*) AS rows,
round(avg(grounding), 3) AS mean,
count(*) FILTER (WHERE grounding < 0.5) AS "<.5",
count(*) FILTER (WHERE grounding >= 0.5 AND grounding < 0.8) AS ".5-.8",
count(*) FILTER (WHERE grounding >= 0.8 AND grounding < 1) AS ".8-1",
count(*) FILTER (WHERE grounding >= 1) AS "=1",
count(*) FILTER (WHERE grounding IS NULL) AS unscored,
coalesce(sum(facts), 0) AS facts,
coalesce(sum(supported), 0) AS found
"""

# per version and split: the rows its manifest lists
GROUNDING_BY_VERSION_SQL = f"""
WITH listed AS (
    SELECT v.id AS version, v.created_at, c.split,
           unnest(from_json(json_extract(v.manifest_json, '$.ids.' || c.split), '["VARCHAR"]')) AS sample_id
    FROM versions v CROSS JOIN (VALUES ('sft'), ('rl')) AS c(split)
), scored AS ({_PER_ROW})
SELECT listed.version, listed.split, {_SUMMARY}
FROM listed JOIN scored ON scored.sample_id = listed.sample_id
GROUP BY listed.version, listed.created_at, listed.split
ORDER BY listed.created_at DESC, listed.split DESC
"""

# per split: the rows one curator kept (what an export of that curator holds)
GROUNDING_BY_SPLIT_SQL = f"""
WITH scored AS ({_PER_ROW})
SELECT split, {_SUMMARY}
FROM scored WHERE curator = ? AND split IN ('sft', 'rl')
GROUP BY split ORDER BY split DESC
"""


def grounding_by_split(warehouse: Any, curator: str) -> list[tuple[Any, ...]]:
    """Per split: (split, *HEADERS): rows, mean grounding, rows per grounding bin, rows without a
    score, facts checked and facts found in a tool response."""
    table = warehouse.query(GROUNDING_BY_SPLIT_SQL, [curator])
    columns = [table.column(i).to_pylist() for i in range(table.num_columns)]
    return list(zip(*columns, strict=True)) if columns else []
