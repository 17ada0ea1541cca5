"""The report's data queries equal plain SQL on the warehouse; scopes, turns, diff, bad input."""

from __future__ import annotations

import json

import pytest

from schemas import rows as rows_module
from schemas.rows import Failure, Sample, Version
from testkit import report_fixtures
from warehouse import report_data as data
from warehouse import report_gallery as gallery
from warehouse.blobs import BlobStore
from warehouse.report import json_for_html, write_report
from warehouse.store import Warehouse


@pytest.fixture(scope="module")
def synthetic(tmp_path_factory):
    return report_fixtures.build(tmp_path_factory.mktemp("report") / "work", 40)


@pytest.fixture
def warehouse(synthetic):
    with Warehouse(synthetic.database, read_only=True) as opened:
        yield opened


def sql(warehouse: Warehouse, query: str, parameters=None) -> list[tuple]:
    return [tuple(row) for row in warehouse.connection.execute(query, parameters or []).fetchall()]


def test_default_scope_is_the_latest_version_with_its_curators_dropped_rows(warehouse):
    scope = data.resolve_scope(warehouse)
    assert scope.version is not None and scope.version.id == "v2"
    manifest = json.loads(scope.version.manifest_json)
    assert set(scope.kept_ids) == set(manifest["ids"]["sft"]) | set(manifest["ids"]["rl"])
    where, parameters = scope.samples_where()
    ids = {row[0] for row in sql(warehouse, f"SELECT id FROM samples s WHERE {where}", parameters)}
    expected = set(scope.kept_ids) | {
        row[0]
        for row in sql(
            warehouse,
            "SELECT id FROM samples WHERE status = 'dropped' AND curator = ?",
            [report_fixtures.CURATOR],
        )
    }
    assert ids == expected
    assert "sample-00000" not in ids  # removed in v2


def test_unknown_version_or_run_is_a_report_error(warehouse):
    with pytest.raises(data.ReportError, match="no version 'v9'.*v1, v2"):
        data.resolve_scope(warehouse, version="v9")
    with pytest.raises(data.ReportError, match="no run"):
        data.resolve_scope(warehouse, run="nope")
    with pytest.raises(data.ReportError, match="ambiguous"):
        data.resolve_scope(warehouse, run="run-")
    with pytest.raises(data.ReportError, match="not both"):
        data.resolve_scope(warehouse, version="v1", run="run-1")


def test_funnel_equals_the_funnel_view(warehouse):
    rows = data.funnel_rows(warehouse)
    assert [(r["step"], r["stage"], r["outcome"], r["rows"]) for r in rows] == sql(
        warehouse, "SELECT step, stage, outcome, rows FROM funnel ORDER BY step, rows DESC, outcome"
    )
    assert {r["outcome"] for r in rows if r["stage"] == "samples"} >= {
        "kept_sft",
        "kept_rl",
        "rule_no_search",
    }


def test_sample_outcomes_and_balance_equal_sql(warehouse):
    scope = data.resolve_scope(warehouse, version="v1")
    where, parameters = scope.samples_where()
    outcomes = {r["outcome"]: r["rows"] for r in data.sample_outcomes(warehouse, scope)}
    expected = dict(
        sql(
            warehouse,
            "SELECT CASE WHEN status = 'kept' THEN 'kept_' || split ELSE reason END, count(*) "
            f"FROM samples s WHERE {where} GROUP BY 1",
            parameters,
        )
    )
    assert outcomes == expected
    manifest = json.loads(scope.version.manifest_json)
    assert outcomes["kept_sft"] == len(manifest["ids"]["sft"]) and outcomes["kept_rl"] == len(
        manifest["ids"]["rl"]
    )
    balance = data.split_category_counts(warehouse, scope)
    assert [(r["category"], r["sft"], r["rl"], r["dropped"]) for r in balance] == sql(
        warehouse,
        "SELECT category, count(*) FILTER (WHERE status='kept' AND split='sft'), "
        "count(*) FILTER (WHERE status='kept' AND split='rl'), count(*) FILTER (WHERE status='dropped') "
        f"FROM samples s WHERE {where} GROUP BY 1 ORDER BY 1",
        parameters,
    )


def test_failures_per_stage_and_class_with_retry_states(warehouse):
    scope = data.resolve_scope(warehouse)
    rows = {(r["stage"], r["error_class"]): r for r in data.failure_rows(warehouse, scope, max_attempts=3)}
    assert set(rows) == set(sql(warehouse, "SELECT DISTINCT stage, error_class FROM failures"))
    teacher = rows[("trajectories", "ModelOutputError")]
    assert (teacher["failures"], teacher["rows"], teacher["retried"], teacher["gave_up"]) == (3, 1, 1, 1)
    assert rows[("images", "PainterError")]["recovered"] == 1  # traj-00001 has its image now
    assert rows[("judgements", "ModelOutputError")]["waiting"] == 1
    # with a higher max_attempts the teacher row is still waiting, not given up
    again = {(r["stage"], r["error_class"]): r for r in data.failure_rows(warehouse, scope, max_attempts=5)}
    assert again[("trajectories", "ModelOutputError")]["waiting"] == 1
    run_scope = data.resolve_scope(warehouse, run="run-2")
    assert {r["stage"] for r in data.failure_rows(warehouse, run_scope, 3)} == {"images", "judgements"}


def test_prompt_lengths_images_and_missing_grounding_scores(warehouse):
    scope = data.resolve_scope(warehouse)
    where, parameters = scope.samples_where()
    prompts = [
        row[0]
        for row in sql(
            warehouse,
            f"SELECT p.prompt FROM samples s JOIN prompts p ON p.id = s.prompt_id WHERE {where} ORDER BY s.id",
            parameters,
        )
    ]
    assert data.prompt_lengths(warehouse, scope) == [len(text.split()) for text in prompts]
    mix = data.image_mix(warehouse, scope)
    assert [(r["format"], r["width"], r["images"]) for r in mix] == sql(
        warehouse,
        f"SELECT i.format, i.width, count(*) FROM samples s JOIN images i ON i.id = s.image_id WHERE {where} GROUP BY ALL",
        parameters,
    )
    assert data.grounding_scores(warehouse, scope) == ([], "")


def test_grounding_scores_come_from_evidence_rows_when_present(tmp_path):
    synthetic = report_fixtures.build(tmp_path / "work", 12)
    facts = [("e1", "traj-00002", True), ("e2", "traj-00002", False), ("e3", "traj-00004", True)]
    with Warehouse(synthetic.database) as warehouse:
        evidence_model = getattr(rows_module, "Evidence", None)
        if evidence_model is not None:  # the evidence table of schemas.rows
            warehouse.insert(
                [
                    evidence_model(id=i, trajectory_id=t, fact="1905", kind="year", supported=ok)
                    for i, t, ok in facts
                ]
            )
        else:  # a warehouse whose evidence table came from elsewhere
            warehouse.connection.execute(
                "CREATE TABLE evidence (id VARCHAR, trajectory_id VARCHAR, supported BOOLEAN)"
            )
            warehouse.connection.executemany("INSERT INTO evidence VALUES (?, ?, ?)", facts)
        scope = data.resolve_scope(warehouse)
        scores, source = data.grounding_scores(warehouse, scope)
    assert (sorted(scores), source) == ([0.5, 1.0], "evidence: share of facts supported")


def test_usage_cost_and_seconds_per_run_come_from_counts_json(warehouse):
    scope = data.resolve_scope(warehouse, version="v1")  # created before run-2 started
    usage = data.model_usage(warehouse, scope)
    assert {(r["run"], r["role"]) for r in usage} == {("run-1", "writer"), ("run-1", "teacher")}
    counts = json.loads(sql(warehouse, "SELECT counts_json FROM runs WHERE id = 'run-1'")[0][0])
    teacher = next(r for r in usage if r["role"] == "teacher")
    assert teacher["cost_usd"] == pytest.approx(counts["trajectories"]["usage"]["teacher"]["cost_usd"])
    assert teacher["calls"] == counts["trajectories"]["usage"]["teacher"]["calls"]
    timings = {r["stage"]: r for r in data.stage_timings(warehouse, scope)}
    assert timings["trajectories"]["rows"] == counts["trajectories"]["tables"]["trajectories"]
    assert timings["trajectories"]["rows_per_s"] == pytest.approx(40 / 8.0)
    everything = data.summary(warehouse, data.resolve_scope(warehouse))
    assert everything["cost_usd"] == pytest.approx(1.5 * (0.001 + 0.01) * 40)
    assert (
        everything["failed_rows"]
        == sql(warehouse, "SELECT count(DISTINCT stage || row_id) FROM failures")[0][0]
    )


def test_gallery_rows_and_trajectory_turns(warehouse):
    scope = data.resolve_scope(warehouse)
    samples = gallery.gallery_samples(warehouse, scope)
    where, parameters = scope.samples_where()
    assert len(samples) == sql(warehouse, f"SELECT count(*) FROM samples s WHERE {where}", parameters)[0][0]
    assert [s.status for s in samples] == sorted((s.status for s in samples), reverse=True)  # kept first
    one = next(s for s in samples if s.id == "sample-00001")
    assert [ref["img_id"] for ref in one.references] == ["IMG_001", "IMG_002"]
    assert one.references[0]["title"] == report_fixtures.HOSTILE_TITLE and one.references[0]["sha256"]
    assert one.references[1]["title"] == "Reference photo 2"
    turns = gallery.trajectory_turns(one.messages)
    assert [turn["role"] for turn in turns] == [
        "system",
        "user",
        "assistant",
        "user",
        "assistant",
        "user",
        "assistant",
    ]
    assert turns[1]["parts"][0][0] == "task"
    assert [kind for kind, _ in turns[2]["parts"]] == ["think", "tool call"]
    assert turns[3]["parts"][0][0] == "tool response"
    assert turns[5]["image_ids"] == ["IMG_001", "IMG_002"]
    assert [kind for kind, _ in turns[6]["parts"]] == ["think", "answer"]
    assert gallery.trajectory_turns([{"role": "assistant", "content": "free text <think>x</think> tail"}])[0][
        "parts"
    ] == [("text", "free text"), ("think", "x"), ("text", "tail")]


def test_version_diff_from_the_manifest(warehouse):
    diff = gallery.version_diff(warehouse, data.resolve_scope(warehouse, version="v2"))
    assert diff["parent"] == "v1"
    added = diff["configs"]["sft"]["added"] + diff["configs"]["rl"]["added"]
    removed = diff["configs"]["sft"]["removed"] + diff["configs"]["rl"]["removed"]
    assert sorted(removed) == ["sample-00000"]
    assert len(added) == 3
    assert gallery.version_diff(warehouse, data.resolve_scope(warehouse, run="run-1")) is None


def test_json_for_html_cannot_close_the_script_element():
    text = json_for_html({"a": "</script><script>alert(1)</script>\u2028&"})
    assert "<" not in text and ">" not in text and "&" not in text and "\u2028" not in text
    assert json.loads(text) == {"a": "</script><script>alert(1)</script>\u2028&"}


# --- bad input: the report still renders and says what is missing -------------------------------


def test_empty_warehouse_renders_and_says_so(tmp_path):
    with Warehouse(tmp_path / "warehouse.duckdb") as warehouse:
        scope = data.resolve_scope(warehouse)
        result = write_report(
            warehouse, BlobStore(tmp_path / "blobs"), scope, tmp_path / "out" / "report.html"
        )
    html = result.path.read_text()
    assert result.samples == 0
    assert "no dataset version exported yet" in html
    assert "no samples in this scope" in html
    assert (
        '<tr data-stage="topics" data-outcome="mined"><td>1</td><td>topics</td><td>mined</td><td class="n rows">0</td>'
        in html
    )
    assert "no failures recorded" in html and "No version in this report" in html


def test_version_with_only_failures_renders(tmp_path):
    with Warehouse(tmp_path / "warehouse.duckdb") as warehouse:
        warehouse.insert(
            [
                Failure(
                    id=f"f{n}",
                    stage="trajectories",
                    row_id=f"p{n}",
                    error_class="ModelCallError",
                    message="429 <script>",
                    attempt=1,
                    run_id="r",
                )
                for n in range(3)
            ]
        )
        warehouse.insert(
            [
                Version(
                    id="v1",
                    created_at=report_fixtures.STARTED,
                    sft_rows=0,
                    rl_rows=0,
                    config_fingerprint="c",
                    code_version="0",
                    path="exports/v1",
                    manifest_json="",
                )
            ]
        )
        scope = data.resolve_scope(warehouse, version="v1")
        result = write_report(warehouse, BlobStore(tmp_path / "blobs"), scope, tmp_path / "report.html")
    html = result.path.read_text()
    assert "the version has no manifest" in html
    assert "ModelCallError" in html and "429 &lt;script&gt;" in html and "429 <script>" not in html
    assert 'data-summary="failed_rows">3<' in html


def test_missing_image_blob_is_reported_and_shown_as_a_placeholder(tmp_path):
    synthetic = report_fixtures.build(tmp_path / "work", 6, missing_blob=True)
    with Warehouse(synthetic.database, read_only=True) as warehouse:
        scope = data.resolve_scope(warehouse, version="v1")
        result = write_report(warehouse, BlobStore(synthetic.blobs), scope, tmp_path / "report.html")
    assert result.missing_blobs == [synthetic.missing_sha]
    html = result.path.read_text()
    assert "1 image blob(s) missing from the store" in html
    assert not (result.assets / "thumbs" / f"{synthetic.missing_sha}.jpg").exists()
    index = json.loads(
        html.split('<script type="application/json" id="gallery-data">')[1].split("</script>")[0]
    )
    row = next(r for r in index["rows"] if r[0] == "sample-00000")
    fields = index["fields"]
    assert row[fields.index("gt")] == "" and "is not in the store" in row[fields.index("gt_note")]


def test_hostile_strings_never_reach_the_page_as_markup(tmp_path, synthetic):
    with Warehouse(synthetic.database, read_only=True) as warehouse:
        result = write_report(
            warehouse, BlobStore(synthetic.blobs), data.resolve_scope(warehouse), tmp_path / "report.html"
        )
    html = result.path.read_text()
    for hostile in (
        report_fixtures.HOSTILE_PROMPT,
        report_fixtures.HOSTILE_CATEGORY,
        report_fixtures.HOSTILE_TITLE,
    ):
        assert hostile not in html
    assert html.count("<script") == 3  # the two JSON blocks and the page's own script
    assert "&lt;/script&gt;&lt;b&gt;art$x$&lt;/b&gt;" in html  # the category as escaped text in the filters
    details = "".join(path.read_text() for path in (result.assets / "detail").glob("*.js"))
    assert "<" not in details.replace("\\u003c", "")


def test_dropped_sample_keeps_its_reason_in_the_gallery(warehouse, tmp_path):
    dropped = warehouse.rows(Sample, "status = 'dropped'")
    scope = data.resolve_scope(warehouse)
    by_id = {s.id: s for s in gallery.gallery_samples(warehouse, scope)}
    for row in dropped:
        assert by_id[row.id].reason == row.reason


def test_corrupt_image_blob_is_reported_not_linked(tmp_path):
    synthetic = report_fixtures.build(tmp_path / "work", 4)
    blobs = BlobStore(synthetic.blobs)
    with Warehouse(synthetic.database, read_only=True) as warehouse:
        sha = warehouse.connection.execute("SELECT sha256 FROM images WHERE id = 'image-00001'").fetchall()[
            0
        ][0]
        blobs.path(sha).write_bytes(blobs.path(sha).read_bytes()[:60])  # a truncated PNG
        other = warehouse.connection.execute("SELECT sha256 FROM images WHERE id = 'image-00002'").fetchall()[
            0
        ][0]
        data_bytes = bytearray(blobs.path(other).read_bytes())
        data_bytes[len(data_bytes) // 2] ^= 0xFF  # a flipped byte inside the image data: a bad checksum
        blobs.path(other).write_bytes(bytes(data_bytes))
        result = write_report(warehouse, blobs, data.resolve_scope(warehouse), tmp_path / "r.html")
    assert not list((result.assets / "thumbs").glob(f"{sha}*"))
    assert not list((result.assets / "thumbs").glob(f"{other}*"))
    html = result.path.read_text()
    assert "2 image blob(s) could not be decoded" in html
    thumbs = sorted(path.suffix for path in (result.assets / "thumbs").iterdir())
    assert thumbs and set(thumbs) == {".png"}  # small PNGs are used as they are
