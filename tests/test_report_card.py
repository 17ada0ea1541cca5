"""The dataset card's summary table and funnel figure (a PNG beside README.md, listed in the manifest)."""

from __future__ import annotations

import hashlib
import json

from PIL import Image

from schemas.config import Config
from testkit import report_fixtures
from warehouse.blobs import BlobStore
from warehouse.export import export_version
from warehouse.store import Warehouse


def test_card_has_a_summary_table_and_the_funnel_figure(tmp_path):
    synthetic = report_fixtures.build(tmp_path / "work", 20)
    with Warehouse(synthetic.database) as warehouse:
        version = export_version(
            warehouse,
            BlobStore(synthetic.blobs),
            tmp_path / "exports",
            Config(),
            curator=report_fixtures.CURATOR,
            code_version="0.1.0",
            version="v3",
        )
        dropped = warehouse.connection.execute(
            "SELECT count(*) FROM samples WHERE curator = ? AND status = 'dropped'", [report_fixtures.CURATOR]
        ).fetchall()[0][0]
        failed = warehouse.connection.execute(
            "SELECT count(DISTINCT (stage, row_id)) FROM failures"
        ).fetchall()[0][0]
    folder = tmp_path / "exports" / "v3"
    card = (folder / "README.md").read_text()
    assert "## Summary" in card
    assert f"| rows (sft / rl) | {version.sft_rows} / {version.rl_rows} |" in card
    assert f"| dropped by curation | {dropped} (" in card
    assert f"| rows that failed a stage (distinct, all runs) | {failed} |" in card
    assert "| model cost (USD, all runs) | 0.3300 |" in card  # (1 + 0.5) x (0.001 + 0.01) x 20 samples
    assert "![Rows per stage and outcome](funnel.png)" in card
    assert "rule_&lt;i&gt;odd&lt;/i&gt;" in card and "<i>" not in card  # a drop reason is text, not markup
    figure = folder / "funnel.png"
    with Image.open(figure) as image:
        assert image.format == "PNG" and image.width > 400
    manifest = json.loads((folder / "manifest.json").read_text())
    entry = next(f for f in manifest["files"] if f["path"] == "funnel.png")
    assert entry["sha256"] == hashlib.sha256(figure.read_bytes()).hexdigest()
