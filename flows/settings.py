"""Process settings the flows need before Prefect is imported: Prefect home, telemetry off, code version."""

from __future__ import annotations

import os
import subprocess
import sys
from functools import cache
from importlib import metadata
from pathlib import Path


def configure_prefect(workdir: Path, *, hub_offline: bool = False) -> None:
    """Keep Prefect's state inside the work directory and its telemetry off (no DNS look-ups); the
    Hugging Face Hub stays reachable unless the user asked otherwise (`configure_hub`)."""
    if "PREFECT_HOME" not in os.environ:
        home = Path(workdir).resolve() / ".prefect"
        home.mkdir(parents=True, exist_ok=True)
        os.environ["PREFECT_HOME"] = str(home)
    os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
    os.environ.setdefault("PREFECT_LOGGING_LEVEL", "WARNING")
    # the temporary server's first start sets up its database: slow on a busy 2-core machine
    os.environ.setdefault("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", "120")
    os.environ.setdefault("PREFECT_SERVER_LOGGING_LEVEL", "WARNING")
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    configure_hub(offline=hub_offline)


def configure_hub(*, offline: bool) -> None:
    """Offline only where the user wants it: HF_HUB_OFFLINE set in the environment (kept as it is),
    or `hub.offline = true` in the config (sets it for this process and its workers). The offline
    default needs no Hub: the tiny painter loads its local folder with local_files_only."""
    if not offline:
        return
    os.environ["HF_HUB_OFFLINE"] = "1"
    constants = sys.modules.get("huggingface_hub.constants")  # read once at import: update it too
    if constants is not None:
        constants.HF_HUB_OFFLINE = True  # type: ignore[attr-defined]


@cache
def code_version() -> str:
    """The package version, plus the git commit when running from a checkout."""
    try:
        version = metadata.version("groundgen")
    except metadata.PackageNotFoundError:
        version = "0+unknown"
    try:
        commit = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"],
            cwd=Path(__file__).resolve().parent,
            capture_output=True,
            text=True,
            timeout=5,
            check=True,
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        commit = ""
    return f"{version}+g{commit}" if commit else version
