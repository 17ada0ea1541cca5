"""`groundgen report` from the command line: default path, errors, an old warehouse, a locked one."""

from __future__ import annotations

import gzip
import shutil
import subprocess
import sys
from pathlib import Path

from typer.testing import CliRunner

from flows.cli import app
from testkit import report_fixtures

runner = CliRunner()
OLD_WAREHOUSE = Path(__file__).parent / "fixtures" / "warehouse-v1" / "warehouse.duckdb.gz"


def test_report_command_writes_the_latest_version_and_names_the_page(tmp_path):
    synthetic = report_fixtures.build(tmp_path / "work", 8)
    result = runner.invoke(app, ["report", "-w", str(synthetic.workdir)])
    assert result.exit_code == 0, result.output
    page = synthetic.workdir / "reports" / "report-latest.html"
    assert result.output.startswith(f"report: {page} (7 samples, ")
    html = page.read_text()
    assert "version v2" in html and "kept SFT rows (target 10,000)" in html  # the default sizes
    assert (synthetic.workdir / "reports" / "report-latest_files" / "detail" / "00000.js").exists()

    other = tmp_path / "v1.html"
    result = runner.invoke(app, ["report", "-w", str(synthetic.workdir), "--version", "v1", "-o", str(other)])
    assert result.exit_code == 0, result.output
    assert "version v1" in other.read_text()

    result = runner.invoke(app, ["report", "-w", str(synthetic.workdir), "--version", "v7"])
    assert result.exit_code == 2
    assert "Error: no version 'v7' in the warehouse (versions: v1, v2)" in result.output
    result = runner.invoke(app, ["report", "-w", str(tmp_path / "nowhere")])
    assert result.exit_code == 2 and "no warehouse at" in result.output


def test_report_of_an_old_warehouse_read_only(tmp_path):
    """A warehouse from before schema versioning (no evidence table, no failure kinds, an older runs
    table), opened read-only and not migrated: the report still renders."""
    workdir = tmp_path / "old"
    workdir.mkdir()
    with gzip.open(OLD_WAREHOUSE) as source, open(workdir / "warehouse.duckdb", "wb") as target:
        shutil.copyfileobj(source, target)
    before = (workdir / "warehouse.duckdb").read_bytes()
    result = runner.invoke(app, ["report", "-w", str(workdir)])
    assert result.exit_code == 0, result.output
    html = (workdir / "reports" / "report-latest.html").read_text()
    assert "no dataset version exported yet" in html
    assert 'data-stage="prompts" data-outcome="written"' in html
    assert (workdir / "warehouse.duckdb").read_bytes() == before  # read-only: nothing migrated


def test_locked_warehouse_without_a_live_run_is_a_clear_error(tmp_path):
    synthetic = report_fixtures.build(tmp_path / "work", 4)
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import duckdb, sys, time; c = duckdb.connect(sys.argv[1]); print('ok', flush=True); "
            "time.sleep(60)",
            str(synthetic.database),
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "ok"
        from flows.report_command import ReportError, make_report
        from schemas.config import Config

        try:
            make_report(Config(workdir=synthetic.workdir), timeout=1.0)
        except ReportError as error:
            assert "the warehouse is being written and no snapshot could be taken" in str(error)
        else:
            raise AssertionError("a locked warehouse must be a ReportError")
    finally:
        holder.kill()
        holder.wait()


def test_open_hands_the_page_to_the_browser_and_run_scope(tmp_path, monkeypatch):
    synthetic = report_fixtures.build(tmp_path / "work", 4)
    opened: list[str] = []
    monkeypatch.setattr("webbrowser.open", lambda url: opened.append(url) or True)
    result = runner.invoke(app, ["report", "-w", str(synthetic.workdir), "--run", "run-2", "--open"])
    assert result.exit_code == 0, result.output
    page = synthetic.workdir / "reports" / "report-run-run-2.html"
    assert opened == [page.resolve().as_uri()]
    html = page.read_text()
    assert "run run-2" in html and "costs, seconds and failures are this run" in html


def test_status_points_to_the_report(tmp_path):
    synthetic = report_fixtures.build(tmp_path / "work", 2)
    result = runner.invoke(app, ["status", "-w", str(synthetic.workdir)], env={"COLUMNS": "400"})
    assert result.exit_code == 0, result.output
    assert f"report: groundgen report -w {synthetic.workdir} --open (funnel, costs" in result.output
