"""Row types, one per warehouse table. Defined once; Arrow and DuckDB schemas derive from them.

Every row has an `id` that is a content hash of its inputs (see `schemas.ids`), so writing the same
row twice is a no-op.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field


def utc_now() -> datetime:
    return datetime.now(UTC)


class Row(BaseModel):
    model_config = ConfigDict(extra="forbid")

    id: str


# --- topics ---------------------------------------------------------------------------------------


class Topic(Row):
    """A piece of world knowledge a prompt can be built on (e.g. one Wikipedia article summary)."""

    source: str  # e.g. "wiki_offline", "mediawiki", "rss"
    title: str
    text: str
    description: str = ""
    category: str  # a Gen-Searcher category (see schemas.categories)
    source_category: str = ""  # the source's own label, e.g. Wikipedia's "Physical sciences"
    url: str = ""
    linked_titles: list[str] = Field(default_factory=list)
    license: str = ""
    updated_at: datetime | None = None  # the source's own timestamp (for refresh watermarks)


# --- prompts --------------------------------------------------------------------------------------


class Prompt(Row):
    """An image-generation task that cannot be drawn correctly without searching."""

    topic_ids: list[str]
    category: str
    difficulty: Literal["easy", "medium", "hard"]
    prompt: str
    required_facts: list[str] = Field(default_factory=list)
    writer: str  # fingerprint of the writer backend configuration
    hops: int = 1


# --- trajectories ---------------------------------------------------------------------------------


class Message(BaseModel):
    """One message of the Gen-Searcher protocol. Tool results come back as `user` turns."""

    model_config = ConfigDict(extra="forbid")

    role: Literal["system", "user", "assistant"]
    content: str
    image_ids: list[str] = Field(default_factory=list)  # IMG_### ids attached to this turn, in order


class ToolCall(BaseModel):
    model_config = ConfigDict(extra="forbid")

    round: int
    name: str
    arguments_json: str  # the arguments exactly as the model gave them (JSON text)
    ok: bool
    error: str = ""


class ReferenceImage(BaseModel):
    """An image returned by image_search, under its per-trajectory id IMG_###."""

    model_config = ConfigDict(extra="forbid")

    img_id: str
    sha256: str
    url: str
    title: str = ""
    page_url: str = ""
    width: int = 0
    height: int = 0


class ChosenReference(BaseModel):
    model_config = ConfigDict(extra="forbid")

    img_id: str
    note: str = ""


Ending = Literal[
    "answer",
    "answer_parse_failed",
    "no_answer",
    "repeated_response",
    "max_response_length_exceeded",
    "error",
]


class Trajectory(Row):
    """A teacher's multi-turn search episode for one prompt, ending in a grounded generation prompt."""

    prompt_id: str
    teacher: str  # fingerprint of the teacher backend configuration
    messages: list[Message]
    tool_calls: list[ToolCall] = Field(default_factory=list)
    references: list[ReferenceImage] = Field(default_factory=list)  # every IMG_### the episode saw
    ending: Ending
    gen_prompt: str = ""
    chosen_references: list[ChosenReference] = Field(default_factory=list)
    model_calls: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    protocol_repairs: int = 0  # correction messages the episode needed (unparseable turn, rule broken)
    empty_think_turns: int = 0  # assistant turns whose <think> block is empty (no reasoning at all)


# --- images ---------------------------------------------------------------------------------------


class Image(Row):
    """An image in the blob store: a reference image from search or a synthesized ground truth."""

    kind: Literal["reference", "ground_truth"]
    sha256: str
    width: int
    height: int
    format: str  # "PNG" or "JPEG"
    phash: str  # 16 hex characters (64-bit perceptual hash)
    trajectory_id: str = ""  # ground truth: the trajectory it was painted for
    painter: str = ""  # ground truth: fingerprint of the painter configuration
    source_url: str = ""  # reference: where it was downloaded from
    model: str = ""
    seed: int = 0
    steps: int = 0
    guidance: float = 0.0
    elapsed_s: float = 0.0
    # ground truth: gen_prompt tokens cut off by the text encoder's max length
    prompt_tokens_truncated: int = 0


# --- judgements -----------------------------------------------------------------------------------


class Judgement(Row):
    """A judge's verdict on one ground-truth image (KnowGen dimensions, each 0, 0.5 or 1)."""

    image_id: str
    trajectory_id: str
    judge: str  # fingerprint of the judge configuration
    faithfulness: float | None = None
    visual_correctness: float | None = None
    text_accuracy: float | None = None
    aesthetics: float | None = None
    overall: float | None = None
    keep: bool
    reason: str = ""  # machine-readable reason when keep is False, e.g. "judge_low_score"
    # Deterministic scores, filled whatever the judge (filters.quality_scores); None on rows judged
    # before they existed. grounding: share of the gen_prompt's claimed facts a tool response states
    # (rows in `evidence`); subject_match: the gen_prompt and its facts' sources are about the prompt's
    # subject; reference_relevance: share of chosen references whose metadata names the subject;
    # image_std: the ground-truth image's pixel standard deviation.
    grounding: float | None = None
    facts: int = 0  # claimed facts checked (evidence rows)
    supported_facts: int = 0
    subject_match: float | None = None
    reference_relevance: float | None = None
    image_std: float | None = None


# --- evidence -------------------------------------------------------------------------------------


class Evidence(Row):
    """One checkable fact of a trajectory's gen_prompt and the tool response that supports it.

    id = content_id(trajectory_id, extractor, kind, canonical key). `tool_call_index` indexes
    `Trajectory.tool_calls` (-1 when unsupported); `source_url` is the hit, page or image source page
    that states the fact; `about_subject` says whether that source is about the prompt's subject."""

    trajectory_id: str
    fact: str
    kind: str  # "date", "year", "quantity", "number", "name" (an LLM extractor may add "claim")
    supported: bool
    source_url: str = ""
    tool_call_index: int = -1
    extractor: str = ""  # "rules-v1", or the LLM claim extractor's fingerprint
    about_subject: bool = False


# --- samples --------------------------------------------------------------------------------------


class Sample(Row):
    """Curation's decision for one trajectory: kept (with a split) or dropped (with a reason)."""

    trajectory_id: str
    prompt_id: str
    image_id: str = ""
    category: str
    status: Literal["kept", "dropped"]
    reason: str = ""  # machine-readable drop reason: "phash_duplicate", "rule_no_search", ...
    duplicate_of: str = ""
    split: Literal["sft", "rl", ""] = ""
    curator: str = ""  # fingerprint of the curation configuration


# --- caches and sources ---------------------------------------------------------------------------


class PageRecord(Row):
    """A fetched page (or the error fetching it), cached so reruns and other trajectories reuse it.

    id = content_id(url) for a page; content_id("page-error", url, error_class, fetched_at) for a
    failed fetch, so an old 503 never hides the page fetched later. Workers keep their own page cache
    file and return these rows; the flow writes them here, so the pages a dataset was built from can
    be inspected with SQL."""

    url: str
    final_url: str = ""
    status: int = 0
    content_type: str = ""
    fetched_at: datetime
    title: str = ""
    text: str = ""
    error_class: str = ""
    error: str = ""


class SourceState(Row):
    """A topic source's refresh watermark (id = source name, plus a feed URL for per-feed sources)."""

    source: str
    watermark: str = ""  # source-specific: an ISO timestamp, a MediaWiki rcid, a set fingerprint
    etag: str = ""
    last_modified: str = ""
    updated_at: datetime


# --- bookkeeping ----------------------------------------------------------------------------------


class Failure(Row):
    """A row a stage could not process this attempt. Nothing is dropped silently."""

    stage: str
    row_id: str
    error_class: str
    message: str
    attempt: int
    run_id: str
    created_at: datetime = Field(default_factory=utc_now)
    # 'transient' (the service failed: never counts against max_attempts) or 'permanent' (counts);
    # '' = recorded before kinds existed, judged by error class (schemas.errors.LEGACY_TRANSIENT_CLASSES)
    kind: str = ""
    # set by `groundgen retry`: the failure stays as history but no longer counts against the row
    requeued_at: datetime | None = None


class Run(Row):
    """A run's ledger (flows/ledger.py): written when it starts, after every batch, and when it ends.
    `killed`: its process died (SIGKILL, power loss) or was stopped (SIGTERM, Ctrl-C) mid-run."""

    started_at: datetime
    finished_at: datetime | None = None
    status: Literal["running", "completed", "failed", "killed"]
    command: str
    config_fingerprint: str
    code_version: str
    counts_json: str = "{}"
    # the process that owns a running run, so the next command can tell whether it is still alive
    pid: int = 0
    host: str = ""
    process_started: int = 0  # the process's start time in clock ticks since boot (Linux), 0 = unknown
    # LLM role -> summed usage (calls, tokens, cost_usd, ...), updated after each batch
    usage_json: str = "{}"
    cost_usd: float = 0.0  # the sum of usage_json's cost_usd, updated after each batch
    batches: int = 0  # batches written so far


class Version(Row):
    """A dataset version exported from the warehouse (id is the version name, e.g. "v3")."""

    parent: str = ""
    created_at: datetime
    sft_rows: int
    rl_rows: int
    config_fingerprint: str
    code_version: str
    path: str  # the version folder relative to the work directory ("exports/v3"); absolute before schema 2
    manifest_json: str
