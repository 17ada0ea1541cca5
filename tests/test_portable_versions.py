"""Portable versions: a work directory copied or moved elsewhere (the original removed) exports every
format with the same bytes; versions store paths relative to the work directory; a format export with
nothing to write, or whose version files are gone, fails with a message; semver re-exports of
unchanged data say so."""

from __future__ import annotations

import shutil
from pathlib import Path

import duckdb
import pytest
from typer.testing import CliRunner

from flows.cli import app
from schemas.config import Config
from tests.test_export_helpers import add_samples
from warehouse.blobs import BlobStore
from warehouse.store import Warehouse

FORMATS = ("llamafactory", "rllm", "verl")


def make_workdir(root: Path, start: int = 0, stop: int = 8) -> Path:
    with Warehouse(root / "warehouse.duckdb") as warehouse:
        add_samples(
            warehouse, BlobStore(root / "blobs"), start, stop, curator=Config().curation_fingerprint()
        )
    return root


def cli(*args: str):
    return CliRunner().invoke(app, list(args))


def files_under(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def export_all(workdir: Path, out: Path) -> dict[str, dict[str, bytes]]:
    result = cli("export", "-w", str(workdir))
    assert result.exit_code == 0, result.output
    outputs = {"hf": files_under(workdir / "exports" / "v1")}
    for name in FORMATS:
        result = cli("export", "-w", str(workdir), "-f", name, "-o", str(out / name))
        assert result.exit_code == 0, result.output
        assert result.output.startswith(
            f"unchanged since v1: 4 SFT rows, 4 RL rows -> {workdir / 'exports' / 'v1'}"
        )
        outputs[name] = files_under(out / name)
    return outputs


def test_a_moved_work_directory_exports_every_format_with_the_same_bytes(tmp_path):
    original = make_workdir(tmp_path / "original")
    before = export_all(original, tmp_path / "out-original")
    with duckdb.connect(str(original / "warehouse.duckdb"), read_only=True) as connection:
        assert connection.execute("SELECT path FROM versions").fetchall() == [("exports/v1",)]
    moved = tmp_path / "elsewhere" / "moved"
    shutil.copytree(original, moved)
    shutil.rmtree(original)
    after = export_all(moved, tmp_path / "out-moved")
    assert all(before[name] for name in before)
    assert after == before
    status = cli("status", "-w", str(moved))
    assert status.exit_code == 0 and "v1" in status.output, status.output


def test_a_version_stored_with_an_absolute_path_is_migrated_to_a_relative_one(tmp_path):
    workdir = make_workdir(tmp_path / "work")
    assert cli("export", "-w", str(workdir)).exit_code == 0
    with duckdb.connect(str(workdir / "warehouse.duckdb")) as connection:  # as groundgen < schema 2 left it
        connection.execute("UPDATE versions SET path = '/gone/machine/groundgen-data/exports/v1'")
        connection.execute("DROP TABLE schema_meta")
    result = cli("export", "-w", str(workdir), "-f", "rllm", "-o", str(tmp_path / "rllm"))
    assert result.exit_code == 0, result.output
    assert (workdir / "warehouse.duckdb.bak-1").exists()
    with duckdb.connect(str(workdir / "warehouse.duckdb"), read_only=True) as connection:
        assert connection.execute("SELECT path FROM versions").fetchall() == [("exports/v1",)]


def test_missing_version_files_are_an_error_not_zero_rows(tmp_path):
    workdir = make_workdir(tmp_path / "work")
    assert cli("export", "-w", str(workdir)).exit_code == 0
    shutil.rmtree(workdir / "exports" / "v1")
    result = cli("export", "-w", str(workdir), "-f", "llamafactory", "-o", str(tmp_path / "lf"))
    assert result.exit_code != 0
    assert (
        f"the files of version v1 are missing: {workdir / 'exports' / 'v1'} has no manifest.json"
        in result.output
    )


def test_a_format_export_with_no_rows_fails_with_a_message(tmp_path):
    workdir = make_workdir(tmp_path / "work", 1, 2)  # one RL row, no SFT row
    result = cli("export", "-w", str(workdir), "-f", "llamafactory", "-o", str(tmp_path / "lf"))
    assert result.exit_code != 0
    assert "llamafactory: version v1 has no rows for this format (0 SFT, 1 RL rows)" in result.output
    rllm = cli("export", "-w", str(workdir), "-f", "rllm", "-o", str(tmp_path / "rllm"))
    assert rllm.exit_code == 0, rllm.output


@pytest.mark.parametrize("semver", ["1.0.0"])
def test_a_semver_re_export_of_unchanged_data_says_unchanged(tmp_path, semver):
    workdir = make_workdir(tmp_path / "work")
    config = tmp_path / "config.toml"
    config.write_text(f'workdir = "{workdir}"\n\n[export]\nversion_scheme = "semver"\nsemver = "{semver}"\n')
    first = cli("export", "-c", str(config))
    assert first.exit_code == 0 and first.output.startswith(f"exported {semver}: 4 SFT rows, 4 RL rows"), (
        first.output
    )
    again = cli("export", "-c", str(config))
    assert again.exit_code == 0 and again.output.startswith(f"unchanged since {semver}:"), again.output
    with Warehouse(workdir / "warehouse.duckdb") as warehouse:
        add_samples(warehouse, BlobStore(workdir / "blobs"), 8, 10, curator=Config().curation_fingerprint())
    changed = cli("export", "-c", str(config))
    assert changed.exit_code != 0
    assert (
        f"version {semver} already exists with other data; set export.semver to a new version"
        in changed.output
    )
