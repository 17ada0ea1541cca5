"""Shared fixtures. Every service a test needs is a real server on 127.0.0.1 started here or in
testkit/servers/; nothing reaches the internet."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

from flows.prefect_server import start_prefect_server, stop_prefect_server

REPO = Path(__file__).resolve().parent.parent

# Before anything imports Prefect: no telemetry, quiet logs, no hub downloads.
os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
os.environ.setdefault("PREFECT_LOGGING_LEVEL", "WARNING")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")


@pytest.fixture(scope="session")
def prefect_server(tmp_path_factory):
    """A dedicated Prefect server on 127.0.0.1 for this test session (per xdist worker).

    Sets PREFECT_API_URL so in-process flows and subprocesses report to it, instead of each starting
    a temporary server of its own."""
    home = tmp_path_factory.mktemp("prefect-home")
    log = open(home / "server.log", "wb")
    process, url = start_prefect_server(home, log)
    previous = {key: os.environ.get(key) for key in ("PREFECT_API_URL", "PREFECT_HOME")}
    os.environ["PREFECT_API_URL"] = url
    os.environ["PREFECT_HOME"] = str(home)
    yield url
    for key, value in previous.items():
        if value is None:
            os.environ.pop(key, None)
        else:
            os.environ[key] = value
    stop_prefect_server(process)
    log.close()


@pytest.fixture(autouse=True)
def prefect_console_on_real_stderr():
    """Prefect's console log handler keeps the stderr it was created with. When a flow first runs
    inside `CliRunner.invoke`, that is the runner's temporary stream, closed after the call; later
    flows in the same process would then fail writing log lines. Point the handlers back at the
    process's stderr before every test."""
    import logging

    from prefect.logging.handlers import PrefectConsoleHandler

    loggers = [
        logging.getLogger(),
        *(logging.getLogger(name) for name in list(logging.root.manager.loggerDict)),
    ]
    for logger in loggers:
        for handler in getattr(logger, "handlers", []):
            if isinstance(handler, PrefectConsoleHandler):
                handler.stream = sys.__stderr__  # not setStream(): it flushes the closed stream first
                handler.console.file = sys.__stderr__
    yield
