"""The one configuration model. `groundgen run` with no config file uses `Config()`: the offline default.

A TOML file (`groundgen run --config FILE`) is validated against this model; unknown keys are errors.
Secrets never live here: a section names the *environment variable* that holds its key.
"""

from __future__ import annotations

import os
import tomllib
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from schemas.ids import fingerprint


def secret_from_env(name: str) -> str | None:
    """The secret (an API key, a token) in the environment variable `name`; None when `name` is empty
    or the variable is unset or empty. Every key groundgen sends is read here. A caller names the
    variable, never the value, in errors and logs."""
    return (os.environ.get(name) or None) if name else None


class Section(BaseModel):
    model_config = ConfigDict(extra="forbid")


class SizesConfig(Section):
    sft: int = Field(10_000, ge=0, description="rows wanted in the SFT config")
    rl: int = Field(6_000, ge=0, description="rows wanted in the RL config")
    oversample: float = Field(
        1.25, ge=1.0, description="prompts written per wanted row, to cover what curation drops"
    )

    @property
    def prompts_wanted(self) -> int:
        return int(round((self.sft + self.rl) * self.oversample))


class TopicsConfig(Section):
    source: Literal["wiki_offline", "mediawiki", "rss", "url_list"] = "wiki_offline"
    categories: list[str] = Field(default_factory=list, description="limit to these categories; empty = all")
    source_categories: list[str] = Field(
        default_factory=list, description="limit to these source labels (e.g. Wikipedia topics); empty = all"
    )
    urls: list[str] = Field(default_factory=list, description="feed or API URLs for live sources")


class LLMEndpointConfig(Section):
    base_url: str
    model: str
    api_key_env: str = Field("", description="name of the environment variable holding the API key")
    max_concurrency: int = Field(16, ge=1)
    requests_per_minute: float = Field(0, ge=0, description="0 = unlimited")
    tokens_per_minute: float = Field(0, ge=0, description="0 = unlimited")
    timeout_s: float = Field(120, gt=0)
    max_retries: int = Field(5, ge=0)
    temperature: float = 0.7
    max_tokens: int = Field(4096, ge=1)
    max_response_bytes: int = Field(1_000_000, ge=1)
    price_per_million_input: float = 0.0
    price_per_million_output: float = 0.0
    # Added later; left out of dumps (and fingerprints) at its default.
    adaptive_concurrency: bool = Field(
        True,
        exclude_if=lambda value: value is True,
        description="AIMD: find the endpoint's capacity up to max_concurrency (false = always max_concurrency)",
    )

    def api_key(self) -> str | None:
        """The key in `api_key_env` (`secret_from_env`)."""
        return secret_from_env(self.api_key_env)


class LLMConfig(Section):
    writer: LLMEndpointConfig | None = None
    teacher: LLMEndpointConfig | None = None
    judge: LLMEndpointConfig | None = None
    summary: LLMEndpointConfig | None = None
    # Added later; left out of dumps (and fingerprints) while unset.
    claims: LLMEndpointConfig | None = Field(
        None,
        exclude_if=lambda value: value is None,
        description="a model that splits gen_prompts into claims for the evidence table (the judge stage); "
        "unset = the deterministic fact extractor",
    )


class SearchConfig(Section):
    provider: Literal["local", "serper", "searxng"] = "local"
    base_url: str = ""
    api_key_env: str = ""
    requests_per_minute: float = 0
    timeout_s: float = 20

    def api_key(self) -> str | None:
        """The key in `api_key_env` (`secret_from_env`)."""
        return secret_from_env(self.api_key_env)


class FetchConfig(Section):
    timeout_s: float = 20
    max_bytes: int = 5_000_000
    max_redirects: int = 5
    per_host_concurrency: int = 4
    allow_hosts: list[str] = Field(
        default_factory=list, description="hosts or CIDRs allowed even if private (e.g. a corpus server)"
    )


class WriterConfig(Section):
    kind: Literal["template", "llm"] = "template"
    multi_hop_share: float = Field(0.3, ge=0, le=1)
    seed: int = 0


class TeacherConfig(Section):
    kind: Literal["scripted", "llm"] = "scripted"
    max_model_calls: int = Field(9, ge=1)
    max_tool_calls: int = Field(8, ge=0)
    native_tool_calling: bool = False
    browse_summary: bool = False
    date: str = Field("2026-11-25", description="today's date as the system prompt states it (YYYY-MM-DD)")


class PainterConfig(Section):
    kind: Literal["tiny", "diffusers", "http"] = "tiny"
    model: str = Field("", description="diffusers model id or local path; empty = the tiny offline pipeline")
    revision: str = ""
    width: int = Field(64, ge=8)
    height: int = Field(64, ge=8)
    steps: int = Field(3, ge=1)
    guidance: float = 4.0
    seed: int = 0
    device: str = "cpu"
    dtype: Literal["float32", "float16", "bfloat16"] = "float32"
    batch_size: int = Field(4, ge=1)
    max_references: int = Field(3, ge=0)
    attention_slicing: bool = False
    cpu_offload: bool = False
    base_url: str = ""
    api_key_env: str = ""
    # Added later; each is left out of dumps (and so of every fingerprint) while at its default, so
    # configs that do not set them keep the fingerprints and ids they had before.
    pipeline: Literal["auto", "text2img", "img2img", "edit"] = Field(
        "auto",
        exclude_if=lambda value: value == "auto",
        description="how rows with references are painted: 'auto' (diffusers: image-to-image variant "
        "when the pipeline has one; http: generations only), 'text2img' (ignore references), 'img2img' "
        "(first reference as init image), 'edit' (every chosen reference, up to max_references: a "
        "multi-image edit pipeline's image=[...], or the http /images/edits endpoint)",
    )
    size: str = Field(
        "", exclude_if=lambda value: value == "", description="http: size sent to the API; '' = WIDTHxHEIGHT"
    )
    send_seed: bool = Field(
        True, exclude_if=lambda value: value is True, description="http: send the per-row seed"
    )
    response_format: str = Field(
        "b64_json",
        exclude_if=lambda value: value == "b64_json",
        description="http: response_format sent to the API ('' = do not send it)",
    )
    timeout_s: float = Field(300, gt=0, exclude_if=lambda value: value == 300)
    max_concurrency: int = Field(4, ge=1, exclude_if=lambda value: value == 4)
    max_retries: int = Field(4, ge=0, exclude_if=lambda value: value == 4)
    adaptive_concurrency: bool = Field(
        True,
        exclude_if=lambda value: value is True,
        description="http: AIMD up to max_concurrency (false = always max_concurrency)",
    )

    def api_key(self) -> str | None:
        """The HTTP painter's key in `api_key_env` (`secret_from_env`)."""
        return secret_from_env(self.api_key_env)


# Painter settings that change how fast images are made, not what they are.
PAINTER_RUNTIME_FIELDS = frozenset(
    {
        "batch_size",
        "device",
        "attention_slicing",
        "cpu_offload",
        "timeout_s",
        "max_concurrency",
        "max_retries",
        "adaptive_concurrency",
    }
)


class JudgeConfig(Section):
    kind: Literal["rules", "llm"] = "rules"
    keep_threshold: float = Field(0.5, ge=0, le=1)


class CurationConfig(Section):
    phash_max_distance: int = Field(4, ge=0, le=64)
    prompt_jaccard_threshold: float = Field(0.8, ge=0, le=1)
    decontamination_files: list[str] = Field(default_factory=list)
    decontamination_ngram: int = Field(8, ge=1)
    decontamination_threshold: float = Field(0.5, ge=0, le=1)
    min_image_std: float = Field(2.0, ge=0, description="images flatter than this are blank")
    # Added later; left out of dumps (and so of the curation fingerprint) while at their defaults.
    min_grounding: float = Field(
        0.5,
        ge=0,
        le=1,
        exclude_if=lambda value: value == 0.5,
        description="drop rows whose share of gen_prompt facts found in the tool responses is lower "
        "(reason rule_ungrounded_facts)",
    )
    allow_empty_thinking: bool = Field(
        False,
        exclude_if=lambda value: value is False,
        description="let trajectories with an empty <think> turn into SFT (otherwise RL only)",
    )


class ExportConfig(Section):
    max_shard_bytes: int = Field(256 * 1024 * 1024, ge=1024)
    version_scheme: Literal["counter", "semver"] = "counter"
    semver: str = ""


class HubConfig(Section):
    repo: str = ""
    private: bool = False
    endpoint_env: str = "HF_ENDPOINT"
    token_env: str = "HF_TOKEN"

    def token(self) -> str | None:
        """The Hub token in `token_env` (`secret_from_env`)."""
        return secret_from_env(self.token_env)

    # Added later; left out of dumps (and fingerprints) at its default.
    offline: bool = Field(
        False,
        exclude_if=lambda value: value is False,
        description="true: no Hugging Face Hub calls in this run (HF_HUB_OFFLINE=1); the user's own "
        "HF_HUB_OFFLINE is honoured either way",
    )


DEFAULT_WORKDIR = Path("groundgen-data")


class Config(Section):
    workdir: Path = DEFAULT_WORKDIR
    batch_size: int = Field(64, ge=1, description="rows per task")
    max_attempts: int = Field(
        3,
        ge=1,
        description="permanent failures per row before it is left failed (transient ones never count)",
    )
    runner: str = Field("threads", description="'threads', 'ray' or 'ray:ADDRESS'")
    sizes: SizesConfig = SizesConfig()
    topics: TopicsConfig = TopicsConfig()
    llm: LLMConfig = LLMConfig()
    search: SearchConfig = SearchConfig()
    fetch: FetchConfig = FetchConfig()
    writer: WriterConfig = WriterConfig()
    teacher: TeacherConfig = TeacherConfig()
    painter: PainterConfig = PainterConfig()
    judge: JudgeConfig = JudgeConfig()
    curation: CurationConfig = CurationConfig()
    export: ExportConfig = ExportConfig()
    hub: HubConfig = HubConfig()
    # Added later; left out of dumps (and fingerprints) at their defaults.
    breaker_threshold: int = Field(
        5,
        ge=0,
        exclude_if=lambda value: value == 5,
        description="consecutive transient failures of one endpoint that open its circuit breaker and "
        "stop the stage (0 = never)",
    )
    breaker_cooldown_s: float = Field(
        60.0,
        gt=0,
        exclude_if=lambda value: value == 60.0,
        description="seconds an open breaker refuses calls before one probe call may go through",
    )
    in_flight_batches: int = Field(
        2,
        ge=1,
        exclude_if=lambda value: value == 2,
        description="batches each stage may have running at once while stages overlap (back-pressure)",
    )

    @field_validator("runner")
    @classmethod
    def _known_runner(cls, value: str) -> str:
        if value in ("threads", "ray") or (value.startswith("ray:") and value[4:]):
            return value
        raise ValueError(
            f"unknown runner {value!r}; use threads, ray or ray:ADDRESS (e.g. ray:10.0.0.5:6379)"
        )

    @model_validator(mode="after")
    def _runnable(self) -> Config:
        """Settings that validate one by one but could only fail at run time fail here, at load."""
        problems = runtime_problems(self)
        if problems:
            raise ValueError("; ".join(problems))
        return self

    # fingerprints: what a stage's output depends on. Changing one re-runs that stage and what follows.
    def writer_fingerprint(self) -> str:
        return fingerprint({"writer": self.writer, "llm": self.llm.writer})

    def teacher_fingerprint(self) -> str:
        """Every setting and model endpoint that shapes a trajectory. The browse-summary endpoint
        (`[llm.summary]`) is included only when it is used (an LLM teacher with `browse_summary`), and
        then as an extra key, so configs without one keep the fingerprint (and ids) they had."""
        parts: dict[str, object] = {
            "teacher": self.teacher,
            "llm": self.llm.teacher,
            "search": self.search.provider,
        }
        if self.teacher.kind == "llm" and self.teacher.browse_summary and self.llm.summary is not None:
            parts["summary"] = self.llm.summary
        return fingerprint(parts)

    def painter_fingerprint(self) -> str:
        return fingerprint(self.painter.model_dump(exclude=set(PAINTER_RUNTIME_FIELDS)))

    def judge_fingerprint(self) -> str:
        parts: dict[str, object] = {"judge": self.judge, "llm": self.llm.judge}
        if self.llm.claims is not None:  # evidence from an LLM claim extractor: other scores, other rows
            parts["claims"] = self.llm.claims
        return fingerprint(parts)

    def curation_fingerprint(self) -> str:
        """The filters' settings. Sizes are quotas, not part of a decision's identity: raising them
        mines new topics whose samples fill the larger quotas, and `groundgen export` without the
        run's --sft/--rl still finds the run's samples."""
        return fingerprint({"curation": self.curation})

    def fingerprint(self) -> str:
        return fingerprint(
            self.model_dump(
                mode="json",
                exclude={
                    "workdir",
                    "runner",
                    "batch_size",
                    "breaker_threshold",
                    "breaker_cooldown_s",
                    "in_flight_batches",
                },
            )
        )


def resolve_workdir(flag: Path | str | None, config: Config, *, absolute: bool = False) -> Path:
    """The one rule for a command's work directory: the `--workdir` flag, else the config's `workdir`
    (`DEFAULT_WORKDIR`, groundgen-data, when the config sets none). Relative to the current
    directory unless `absolute`, which the flows use: their workers (Ray: other processes, maybe other
    machines) write blobs there."""
    workdir = Path(flag) if flag is not None else Path(config.workdir)
    return workdir.resolve() if absolute else workdir


def task_payload(config: Config) -> dict[str, Any]:
    """The config as flow and task parameters: plain JSON, the work directory absolute."""
    return config.model_copy(update={"workdir": resolve_workdir(None, config, absolute=True)}).model_dump(
        mode="json"
    )


def runtime_problems(config: Config) -> list[str]:
    """What a run with this config would fail on before doing any work (no network, no env vars)."""
    problems = []
    topics = config.topics
    if topics.source == "url_list":
        problems.append(
            "topics.source = 'url_list' is not implemented in this version; use wiki_offline, mediawiki or rss"
        )
    elif topics.source in ("mediawiki", "rss") and not topics.urls:
        problems.append(f"topics.source = {topics.source!r} needs topics.urls (feed or API URLs)")
    for role in ("writer", "teacher", "judge"):
        if getattr(config, role).kind == "llm" and getattr(config.llm, role) is None:
            problems.append(
                f"{role}.kind = 'llm' needs an [llm.{role}] section (base_url, model, api_key_env)"
            )
    if config.search.provider == "searxng" and not config.search.base_url:
        problems.append("search.provider = 'searxng' needs search.base_url (the instance's address)")
    if config.search.provider == "serper" and not config.search.api_key_env:
        problems.append("search.provider = 'serper' needs search.api_key_env (the variable holding the key)")
    if config.painter.kind == "http":
        if not config.painter.base_url:
            problems.append("painter.kind = 'http' needs painter.base_url (e.g. https://host/v1)")
        if not config.painter.model:
            problems.append("painter.kind = 'http' needs painter.model (the API's model name)")
    return problems


class ConfigError(ValueError):
    """The configuration file is missing, not TOML, or does not match the config model."""


def load_config(path: Path | None = None) -> Config:
    if path is None:
        return Config()
    try:
        data = tomllib.loads(Path(path).read_text(encoding="utf-8"))
    except FileNotFoundError as error:
        raise ConfigError(f"config file {path} does not exist") from error
    except tomllib.TOMLDecodeError as error:
        raise ConfigError(f"config file {path} is not valid TOML: {error}") from error
    try:
        return Config.model_validate(data)
    except ValidationError as error:
        raise ConfigError(f"config file {path} is invalid:\n{describe_validation_error(error)}") from error


def describe_validation_error(error: ValidationError) -> str:
    """One line per problem, `key.path: what is wrong` (no pydantic boilerplate)."""
    lines = []
    for problem in error.errors():
        where = ".".join(str(part) for part in problem["loc"])
        message = str(problem["msg"]).removeprefix("Value error, ")
        lines.append(f"{where}: {message}" if where else message)
    return "\n".join(lines)
