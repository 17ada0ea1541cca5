"""Views users query with plain SQL: `sft_rows`, `rl_rows`, `funnel`.

`sft_rows.images` lists the sha256 of the image behind each `<image>` placeholder of `messages`, in
order; blobs live at `blobs/<first two hex>/<sha256>` under the work directory.
"""

from __future__ import annotations

SFT_ROWS = """
CREATE OR REPLACE VIEW sft_rows AS
SELECT
    s.id,
    s.category,
    p.difficulty,
    p.prompt,
    t.gen_prompt,
    list_transform(t.messages, lambda m: {'role': m.role, 'content': m.content}) AS messages,
    list_transform(
        flatten(list_transform(t.messages, lambda m: m.image_ids)),
        lambda x: list_filter(t.references, lambda r: r.img_id = x)[1].sha256
    ) AS images,
    i.sha256 AS gt_image,
    s.trajectory_id,
    s.prompt_id,
    s.curator
FROM samples s
JOIN trajectories t ON t.id = s.trajectory_id
JOIN prompts p ON p.id = s.prompt_id
LEFT JOIN images i ON i.id = s.image_id
WHERE s.status = 'kept' AND s.split = 'sft'
"""

RL_ROWS = """
CREATE OR REPLACE VIEW rl_rows AS
SELECT
    s.id,
    s.category,
    p.difficulty,
    p.prompt,
    i.sha256 AS gt_image,
    t.gen_prompt,
    list_transform(
        t.chosen_references,
        lambda c: list_filter(t.references, lambda r: r.img_id = c.img_id)[1].sha256
    ) AS reference_images,
    s.trajectory_id,
    s.prompt_id,
    s.curator
FROM samples s
JOIN trajectories t ON t.id = s.trajectory_id
JOIN prompts p ON p.id = s.prompt_id
JOIN images i ON i.id = s.image_id
WHERE s.status = 'kept' AND s.split = 'rl'
"""

FUNNEL = """
CREATE OR REPLACE VIEW funnel AS
SELECT 1 AS step, 'topics' AS stage, 'mined' AS outcome, count(*) AS rows FROM topics
UNION ALL SELECT 2, 'prompts', 'written', count(*) FROM prompts
UNION ALL SELECT 3, 'trajectories', ending, count(*) FROM trajectories GROUP BY ending
UNION ALL SELECT 4, 'images', 'painted', count(*) FROM images WHERE kind = 'ground_truth'
UNION ALL SELECT 5, 'judgements', CASE WHEN keep THEN 'keep' ELSE reason END, count(*)
    FROM judgements GROUP BY 3
UNION ALL SELECT 6, 'samples', CASE WHEN status = 'kept' THEN 'kept_' || split ELSE reason END, count(*)
    FROM samples GROUP BY 3
UNION ALL SELECT 7, 'failures', stage || ':' || error_class, count(DISTINCT row_id)
    FROM failures GROUP BY 3
"""

VIEWS_SQL = (SFT_ROWS, RL_ROWS, FUNNEL)
