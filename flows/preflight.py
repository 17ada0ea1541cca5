"""Preflight: check a config's backends before any paid call (`groundgen check`; `run`/`refresh` first).

Each problem is one line saying what to fix. Checked, for what the config uses:
- the packages of the extras its backends need are installed (`schemas/dependencies.py`; nothing is
  imported);
- every OpenAI-compatible endpoint (writer, teacher, browse summary, judge): the key variable is set,
  `GET /models` answers and accepts the key, and the model id is among the listed models (servers
  without `/models` answer 404: then only reachability is known);
- the search provider (Serper, SearXNG) answers and does not refuse the key;
- the painter's model resolves: a local folder, the Hugging Face cache, or (Hub not switched off) a
  model the Hub knows; an HTTP painter's server answers;
- with `include_hub` and `hub.repo` set: the token variable is set and the Hub accepts it for writing.

The offline default needs none of these: it passes at once with no network. No check sends a
chat completion, a search query or an image request (nothing is billed).
"""

from __future__ import annotations

import os
from collections.abc import Collection, Iterator
from pathlib import Path
from typing import Any

import httpx

from schemas.config import Config, LLMEndpointConfig
from synthesis.llm_client import PLACEHOLDER_KEY, redact_url

CHECK_TIMEOUT_S = 10.0


def _timeout(limit: float) -> httpx.Timeout:
    seconds = min(limit, CHECK_TIMEOUT_S)
    return httpx.Timeout(seconds, connect=min(seconds, 5.0))


def _unreachable(where: str, url: str, error: httpx.HTTPError) -> str:
    return f"{where}: {redact_url(url)} does not answer ({type(error).__name__}); start it or fix the URL"


def llm_endpoints(
    config: Config, stages: Collection[str] | None = None
) -> Iterator[tuple[str, LLMEndpointConfig]]:
    """(config key, endpoint) for every LLM endpoint the config's backends will call (in `stages`)."""
    llm = config.llm
    if config.writer.kind == "llm" and llm.writer is not None and _runs("prompts", stages):
        yield "llm.writer", llm.writer
    if config.teacher.kind == "llm" and llm.teacher is not None and _runs("trajectories", stages):
        yield "llm.teacher", llm.teacher
        if config.teacher.browse_summary and llm.summary is not None:
            yield "llm.summary", llm.summary
    if config.judge.kind == "llm" and llm.judge is not None and _runs("judgements", stages):
        yield "llm.judge", llm.judge
    if llm.claims is not None and _runs("judgements", stages):  # the judge stage's claim extractor
        yield "llm.claims", llm.claims


def _runs(stage: str, stages: Collection[str] | None) -> bool:
    return stages is None or stage in stages


def _listed_models(
    where: str, base_url: str, key_env: str, key: str, timeout_s: float
) -> tuple[set[str] | None, str]:
    """(model ids the endpoint lists, or None when it has no /models; a problem line or '')."""
    url = base_url.rstrip("/") + "/models"
    try:
        response = httpx.get(
            url,
            headers={"Authorization": f"Bearer {key}"},
            timeout=_timeout(timeout_s),
            follow_redirects=False,
        )
    except httpx.HTTPError as error:
        return None, _unreachable(where, base_url, error)
    status = response.status_code
    if status in (401, 403):
        variable = f"the key in {key_env}" if key_env else "requests without a key (set api_key_env)"
        return None, f"{where}: {redact_url(base_url)} refused {variable} (HTTP {status}); set a valid key"
    if status in (404, 405):
        return None, ""
    if status >= 400:
        return None, f"{where}: {redact_url(url)} answered HTTP {status}; check the server and base_url"
    try:
        data = response.json().get("data")
        return {str(item["id"]) for item in data if isinstance(item, dict) and "id" in item}, ""
    except (ValueError, AttributeError, TypeError):
        return None, ""  # not a model list: reachability is all we know


def check_llm_endpoints(config: Config, stages: Collection[str] | None = None) -> list[str]:
    problems = []
    listed: dict[tuple[str, str], tuple[set[str] | None, str]] = {}
    for where, endpoint in llm_endpoints(config, stages):
        key = PLACEHOLDER_KEY
        if endpoint.api_key_env:
            key = endpoint.api_key() or ""
            if not key:
                problems.append(
                    f"{where}: environment variable {endpoint.api_key_env} (the API key) is not set; export it"
                )
                continue
        group = (endpoint.base_url, endpoint.api_key_env)
        if group not in listed:
            listed[group] = _listed_models(
                where, endpoint.base_url, endpoint.api_key_env, key, endpoint.timeout_s
            )
            if listed[group][1]:
                problems.append(listed[group][1])
        models, problem = listed[group]
        if not problem and models and endpoint.model not in models:
            shown = ", ".join(sorted(models)[:8]) + (" ..." if len(models) > 8 else "")
            problems.append(
                f"{where}: model {endpoint.model!r} is not served by {redact_url(endpoint.base_url)} "
                f"(it lists: {shown}); fix {where}.model"
            )
    return problems


def check_search(config: Config) -> list[str]:
    search = config.search
    if search.provider == "local":
        return []
    headers: dict[str, str] = {}
    if search.provider == "serper":
        from extractors.serper import DEFAULT_BASE_URL

        key = search.api_key()
        if not key:
            return [
                f"search: environment variable {search.api_key_env} (the Serper key) is not set; export it"
            ]
        headers["X-API-KEY"] = key
        base_url = search.base_url or DEFAULT_BASE_URL
    else:
        base_url = search.base_url
    try:
        response = httpx.get(base_url, headers=headers, timeout=_timeout(search.timeout_s))
    except httpx.HTTPError as error:
        return [_unreachable("search", base_url, error)]
    if search.provider == "serper" and response.status_code in (401, 403):
        return [
            f"search: {redact_url(base_url)} refused the key in {search.api_key_env} (HTTP {response.status_code})"
        ]
    if response.status_code >= 500:
        return [f"search: {redact_url(base_url)} answered HTTP {response.status_code}; check the server"]
    return []


def _truthy(name: str) -> bool:
    return os.environ.get(name, "").strip().lower() in ("1", "true", "yes", "on")


def check_painter(config: Config) -> list[str]:
    painter = config.painter
    if painter.kind == "http":
        if painter.api_key_env and not painter.api_key():
            return [
                f"painter: environment variable {painter.api_key_env} (the API key) is not set; export it"
            ]
        try:
            httpx.get(painter.base_url, timeout=_timeout(painter.timeout_s))
        except httpx.HTTPError as error:
            return [_unreachable("painter", painter.base_url, error)]
        return []
    if painter.kind == "tiny" or not painter.model:
        return []
    return _diffusers_model_problems(painter.model, painter.revision)


def _diffusers_model_problems(model: str, revision: str) -> list[str]:
    if Path(model).expanduser().exists():
        return (
            []
            if (Path(model).expanduser() / "model_index.json").exists() or Path(model).is_file()
            else [
                f"painter: {model} has no model_index.json; point painter.model at a diffusers pipeline folder"
            ]
        )
    try:
        from huggingface_hub import try_to_load_from_cache
    except ImportError:  # pragma: no cover - huggingface_hub is a dependency
        return []
    try:
        cached = try_to_load_from_cache(model, "model_index.json", revision=revision or None)
    except ValueError:  # not a valid repo id
        return [f"painter: painter.model {model!r} is neither a local folder nor a Hub model id"]
    if isinstance(cached, str):
        return []
    if _truthy("HF_HUB_OFFLINE"):
        return [
            f"painter: model {model!r} is not a local folder nor in the Hugging Face cache and HF_HUB_OFFLINE "
            f"is set; download it first (huggingface-cli download {model}) or unset HF_HUB_OFFLINE"
        ]
    return _hub_model_problems(model, revision)


def _hub_model_problems(model: str, revision: str) -> list[str]:
    from huggingface_hub import HfApi
    from huggingface_hub.errors import GatedRepoError, RepositoryNotFoundError, RevisionNotFoundError

    try:
        HfApi().model_info(model, revision=revision or None, timeout=CHECK_TIMEOUT_S)
    except GatedRepoError:
        return [f"painter: model {model!r} is gated; accept its licence on the Hub and set HF_TOKEN"]
    except RevisionNotFoundError:
        return [f"painter: model {model!r} has no revision {revision!r}; fix painter.revision"]
    except RepositoryNotFoundError:
        return [
            f"painter: model {model!r} is not on the Hub (or is private: set HF_TOKEN); fix painter.model"
        ]
    except Exception as error:  # noqa: BLE001 - network errors of every kind mean the same here
        return [
            f"painter: cannot reach the Hub to resolve {model!r} ({type(error).__name__}); check the network"
        ]
    return []


def check_hub(config: Config) -> list[str]:
    hub = config.hub
    if not hub.repo:
        return []
    token = hub.token() or ""
    if not token:
        return [
            f"hub: environment variable {hub.token_env} is not set; the push to {hub.repo} needs a write token"
        ]
    from huggingface_hub import HfApi

    endpoint = os.environ.get(hub.endpoint_env) or None
    try:
        info: dict[str, Any] = HfApi(endpoint=endpoint, token=token).whoami()
    except Exception as error:  # noqa: BLE001 - 401 and network errors: one line each
        status = getattr(getattr(error, "response", None), "status_code", None)
        if status in (401, 403):
            return [
                f"hub: the Hub refused the token in {hub.token_env} (HTTP {status}); set a valid write token"
            ]
        return [
            f"hub: cannot reach {endpoint or 'the Hub'} ({type(error).__name__}); check {hub.endpoint_env}"
        ]
    role = ((info.get("auth") or {}).get("accessToken") or {}).get("role")
    if role == "read":
        return [f"hub: the token in {hub.token_env} is read-only; the push to {hub.repo} needs a write token"]
    namespace = hub.repo.split("/")[0]
    orgs = {org.get("name") for org in info.get("orgs") or [] if isinstance(org, dict)}
    if info.get("name") and namespace != info.get("name") and orgs and namespace not in orgs:
        return [
            f"hub: the token's user {info.get('name')} is not a member of {namespace}; it cannot write {hub.repo}"
        ]
    return []


def check_dependencies(config: Config, stages: Collection[str] | None = None) -> list[str]:
    """One line per backend (of `stages`) whose extra is not installed, saying what to pip install."""
    from schemas.dependencies import DIFFUSERS_PAINTER, OFFLINE_CORPUS

    needed = []
    if config.topics.source == "wiki_offline" and (_runs("topics", stages) or _runs("prompts", stages)):
        needed.append(OFFLINE_CORPUS)
    if config.search.provider == "local" and _runs("trajectories", stages):
        needed.append(OFFLINE_CORPUS)
    if config.painter.kind != "http" and _runs("images", stages):
        needed.append(DIFFUSERS_PAINTER)
    problems = [requirement.problem() for requirement in dict.fromkeys(needed)]
    return [problem for problem in problems if problem]


def preflight(
    config: Config, *, include_hub: bool = True, stages: Collection[str] | None = None
) -> list[str]:
    """Every problem found, one line each; [] when the config can run (offline default: no network).
    `stages`: only the backends those stages call (`run --stage ...`); None = every stage."""
    problems = check_dependencies(config, stages) + check_llm_endpoints(config, stages)
    if _runs("trajectories", stages):
        problems += check_search(config)
    if _runs("images", stages):
        problems += check_painter(config)
    if include_hub:
        problems += check_hub(config)
    return problems
