"""The curation stage in the flow process: pending trajectories -> samples, ordered and stateful.

Dedup compares against everything this curator kept before, so the state is rebuilt from the
warehouse's kept samples, then candidates are curated in sorted id order (batch boundaries do not
change the result).
"""

from __future__ import annotations

from functools import partial
from typing import Any

from filters.base import Candidate
from filters.curate import CurationState, KeptRow, curate
from flows.batches import chunk, write_result
from flows.progress import reporter
from flows.results import BatchResult, StageCounts
from flows.workspace import Workspace
from schemas.config import Config
from schemas.ids import content_id
from schemas.rows import Sample
from warehouse.blobs import BlobStore
from warehouse.pending import CurationInput, curation_inputs, pending_curation
from warehouse.store import Warehouse

ROWS_PER_READ = 8192  # candidates whose rows one `curation_inputs` call reads (memory vs table scans)

KEPT_ROWS_SQL = """
SELECT s.id, i.phash, i.sha256, p.prompt
FROM samples s JOIN images i ON i.id = s.image_id JOIN prompts p ON p.id = s.prompt_id
WHERE s.curator = ? AND s.status = 'kept'
"""


def load_state(warehouse: Warehouse, config: Config, curator: str) -> CurationState:
    kept = {
        sample.id: sample for sample in warehouse.rows(Sample, "curator = ? AND status = 'kept'", [curator])
    }
    rows = [
        KeptRow(kept[record["id"]], record["phash"], record["sha256"], record["prompt"])
        for record in warehouse.query(KEPT_ROWS_SQL, [curator]).to_pylist()
    ]
    return CurationState.from_kept(rows, config.curation)


def _missing_sample(item: CurationInput, curator: str) -> Sample:
    """Upstream work failed for good (every attempt recorded in `failures`): dropped, with that reason."""
    return Sample(
        id=content_id(item.trajectory.id, curator),
        trajectory_id=item.trajectory.id,
        prompt_id=item.prompt.id,
        image_id=item.image.id if item.image is not None else "",
        category=item.prompt.category,
        status="dropped",
        reason=item.missing,
        curator=curator,
    )


def curate_pending(warehouse: Warehouse, config: Config, run_id: str) -> StageCounts:
    curator = config.curation_fingerprint()
    tickets = pending_curation(
        warehouse,
        config.writer_fingerprint(),
        config.teacher_fingerprint(),
        config.painter_fingerprint(),
        config.judge_fingerprint(),
        curator,
        config.max_attempts,
    )
    tickets.sort(key=lambda ticket: ticket.trajectory_id)
    reporter().start("samples", len(tickets))
    blobs = BlobStore(Workspace(config.workdir).blobs)
    state = load_state(warehouse, config, curator)
    # the whole pass's perceptual neighbours in one vectorised computation (each batch's curate() then
    # finds its candidates answered instead of re-indexing every kept hash per batch)
    state.phash_index.prefetch(
        [ticket.image_phash for ticket in tickets if ticket.image_phash is not None and not ticket.missing]
    )
    total = StageCounts()
    batch_size = max(config.batch_size, 256)
    for load in chunk(tickets, ROWS_PER_READ):
        # rows are read for many batches at once: each read scans the tables once, so reading per
        # 256-row batch would scan them len(tickets) / 256 times
        for batch in chunk(curation_inputs(warehouse, load), batch_size):
            samples: list[Any] = [_missing_sample(item, curator) for item in batch if item.missing]
            candidates = [
                Candidate(
                    prompt=item.prompt,
                    trajectory=item.trajectory,
                    image=item.image,
                    judgement=item.judgement,
                    blob=partial(blobs.read, item.image.sha256) if item.image is not None else None,
                )
                for item in batch
                if not item.missing
            ]
            samples += curate(candidates, state, config.curation, config.sizes, curator)
            ids = [item.trajectory.id for item in batch]
            result = BatchResult(rows=samples, done_ids=[sample.trajectory_id for sample in samples])
            total.add(write_result(warehouse, "samples", run_id, ids, result))
            reporter().advance("samples", len(batch))
    reporter().finish("samples")
    return total
