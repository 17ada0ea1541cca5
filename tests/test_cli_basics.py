"""CLI behaviour that needs no pipeline run: help texts, errors, SQL formats (sqlite-utils style)."""

import json
import re
from pathlib import Path

import pytest
from typer.testing import CliRunner

from flows.cli import app
from schemas.rows import Topic
from warehouse.store import Warehouse

runner = CliRunner()
README = Path(__file__).resolve().parent.parent / "README.md"


def command_names() -> list[str]:
    import typer.main

    group = typer.main.get_command(app)
    return sorted(group.commands)


@pytest.mark.parametrize("name", command_names())
def test_every_command_has_help_with_an_example_and_is_in_the_readme(name):
    result = runner.invoke(app, [name, "--help"])
    assert result.exit_code == 0, result.output
    assert "Example" in result.output
    assert re.search(rf"groundgen {name}\b", README.read_text()), (
        f"`groundgen {name}` is missing from README.md"
    )


@pytest.fixture
def workdir(tmp_path):
    with Warehouse(tmp_path / "warehouse.duckdb") as warehouse:
        warehouse.insert(
            [
                Topic(id="t1", source="s", title="Ada Lovelace", text="x", category="history"),
                Topic(id="t2", source="s", title="Mars", text="y", category="astronomy"),
            ]
        )
    return tmp_path


def test_sql_json_lines(workdir):
    result = runner.invoke(
        app,
        ["sql", "select id, title from topics order by id", "--workdir", str(workdir), "--format", "json"],
    )
    assert result.exit_code == 0, result.output
    assert [json.loads(line) for line in result.output.splitlines()] == [
        {"id": "t1", "title": "Ada Lovelace"},
        {"id": "t2", "title": "Mars"},
    ]


def test_sql_csv_and_parquet(workdir, tmp_path):
    result = runner.invoke(
        app, ["sql", "select title from topics order by id", "-w", str(workdir), "-f", "csv"]
    )
    assert result.output.splitlines() == ["title", "Ada Lovelace", "Mars"]
    target = tmp_path / "out.parquet"
    result = runner.invoke(
        app, ["sql", "select * from topics", "-w", str(workdir), "-f", "parquet", "-o", str(target)]
    )
    assert result.exit_code == 0, result.output
    import pyarrow.parquet as pq

    assert pq.read_table(target).num_rows == 2


def test_sql_error_is_a_clear_cli_error(workdir):
    result = runner.invoke(app, ["sql", "select nope from topics", "-w", str(workdir)])
    assert result.exit_code == 2
    assert "Error: query failed" in result.output
    assert "nope" in result.output


def test_sql_without_warehouse_says_what_to_do(tmp_path):
    result = runner.invoke(app, ["sql", "select 1", "-w", str(tmp_path / "none")])
    assert result.exit_code == 2
    assert "run `groundgen run` first" in result.output


def test_sql_is_read_only(workdir):
    result = runner.invoke(app, ["sql", "delete from topics", "-w", str(workdir)])
    assert result.exit_code == 2
    assert "read-only" in result.output.lower()


def test_status_shows_funnel(workdir):
    result = runner.invoke(app, ["status", "-w", str(workdir)])
    assert result.exit_code == 0, result.output
    assert "funnel" in result.output and "mined" in result.output


def test_bad_config_is_reported(tmp_path):
    config = tmp_path / "bad.toml"
    config.write_text("[sizes]\nsft = 'many'\n")
    result = runner.invoke(app, ["run", "--config", str(config)])
    assert result.exit_code == 2
    assert "is invalid" in result.output and "sizes.sft" in result.output


def test_unknown_stage_is_reported(tmp_path):
    result = runner.invoke(app, ["run", "--stage", "paint", "-w", str(tmp_path)])
    assert result.exit_code == 2
    assert "unknown stage paint" in result.output


def test_run_counts_are_summarized_as_new_rows_per_stage():
    from warehouse.query import summarize_counts

    counts = {
        "topics": {"rows_written": 3, "failures": 0, "tables": {"topics": 3}},
        "trajectories": {"rows_written": 9, "failures": 2, "tables": {"trajectories": 3, "images": 6}},
        "export": {"rows_written": 1, "failures": 0},
    }
    assert summarize_counts(json.dumps(counts)) == "topics +3, trajectories +3, export +1; 2 failures"
    assert summarize_counts("not json") == "not json"
