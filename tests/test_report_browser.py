"""The report in a real browser: Debian's Chromium, headless, the page loaded from disk (file://).

No console errors, every gallery image of the first page loaded, the funnel numbers in the DOM equal
the warehouse, filters change the visible rows, hostile model output stays text, and a trajectory
opens. A screenshot is kept in the test's tmp dir."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from testkit import report_fixtures
from warehouse import report_data as data
from warehouse import report_gallery as gallery
from warehouse.blobs import BlobStore
from warehouse.report import write_report
from warehouse.store import Warehouse

pytestmark = pytest.mark.slow

CHROMIUM = shutil.which("chromium") or ("/usr/bin/chromium" if Path("/usr/bin/chromium").exists() else None)
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]


@pytest.fixture(scope="module")
def browser():
    if CHROMIUM is None:
        pytest.skip("chromium is not installed (CI installs it: apt-get install chromium)")
    from playwright.sync_api import sync_playwright  # the test extra; only the browser may be absent

    with sync_playwright() as playwright:
        launched = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        yield launched
        launched.close()


@pytest.fixture(scope="module")
def report(tmp_path_factory):
    root = tmp_path_factory.mktemp("report-browser")
    synthetic = report_fixtures.build(root / "work", 60, image_side=64)
    with Warehouse(synthetic.database, read_only=True) as warehouse:
        scope = data.resolve_scope(warehouse)
        result = write_report(warehouse, BlobStore(synthetic.blobs), scope, root / "site" / "report.html")
        funnel = {(row["stage"], row["outcome"]): row["rows"] for row in data.funnel_rows(warehouse)}
        samples = gallery.gallery_samples(warehouse, scope)
    return result, funnel, samples


def open_page(browser, path: Path):
    page = browser.new_page(viewport={"width": 1400, "height": 1000})
    problems: list[str] = []
    page.on("console", lambda message: problems.append(message.text) if message.type == "error" else None)
    page.on("pageerror", lambda error: problems.append(f"page error: {error}"))
    page.on("dialog", lambda dialog: (problems.append(f"dialog: {dialog.message}"), dialog.dismiss()))
    requests: list[str] = []
    page.on("request", lambda request: requests.append(request.url))
    page.goto(path.resolve().as_uri())
    page.wait_for_selector("body[data-gallery-ready]")
    return page, problems, requests


def visible_ids(page) -> list[str]:
    return page.eval_on_selector_all("#gallery-grid article.sample", "nodes => nodes.map(n => n.dataset.id)")


def test_report_in_chromium(browser, report):
    result, funnel, samples = report
    page, problems, requests = open_page(browser, result.path)
    try:
        # every gallery image on the first page has loaded
        page.wait_for_function(
            "() => [...document.querySelectorAll('#gallery-grid img')].every(i => i.complete)", timeout=10_000
        )
        images = page.eval_on_selector_all(
            "#gallery-grid img", "nodes => nodes.map(n => [n.getAttribute('src'), n.naturalWidth])"
        )
        assert len(images) >= 24, images  # a ground-truth image and references per sample
        assert [src for src, width in images if width <= 0] == []

        # the funnel table equals the warehouse
        cells = page.eval_on_selector_all(
            "#funnel-table tbody tr",
            "rows => rows.map(r => [r.dataset.stage, r.dataset.outcome, r.querySelector('.rows').textContent])",
        )
        assert {(stage, outcome): int(rows) for stage, outcome, rows in cells} == funnel

        # first page: kept rows first, 24 of them; a filter click changes the visible rows
        first = visible_ids(page)
        assert first == [sample.id for sample in samples[:24]]
        page.select_option("#filter-split", "dropped")
        dropped = visible_ids(page)
        assert dropped and dropped != first
        assert set(dropped) <= {s.id for s in samples if s.status == "dropped"}
        assert page.eval_on_selector_all(
            "#gallery-grid .badge.dropped",
            "nodes => nodes.every(n => n.textContent.startsWith('dropped · '))",
        )
        page.select_option("#filter-reason", "rule_<i>odd</i>")
        assert visible_ids(page) == ["sample-00008"]
        assert (
            page.inner_text("#gallery-grid .badge.dropped") == "dropped · rule_<i>odd</i>"
        )  # text, not markup
        page.select_option("#filter-reason", "")
        page.select_option("#filter-split", "")
        page.select_option("#filter-category", report_fixtures.HOSTILE_CATEGORY)
        assert visible_ids(page) == ["sample-00003"]

        # hostile model output is shown as text and never runs
        assert report_fixtures.HOSTILE_PROMPT in page.inner_text("#gallery-grid .prompt")
        page.click("#gallery-grid details.trajectory > summary")
        page.wait_for_selector("#gallery-grid details.turn")
        turns = page.eval_on_selector_all(
            "#gallery-grid details.turn > summary", "n => n.map(x => x.textContent)"
        )
        assert turns[0] == "#0 system: system" and any("think + tool call" in t for t in turns)
        page.click("#gallery-grid button.expand-all")
        assert page.eval_on_selector_all("#gallery-grid details.turn", "n => n.every(d => d.open)")
        assert report_fixtures.HOSTILE_PROMPT in page.inner_text("#gallery-grid details.turn-user pre")
        assert page.evaluate("() => window.__xss") is None

        page.select_option("#filter-category", "")
        page.wait_for_timeout(100)
        artifact = result.path.parent / "report-screenshot.png"
        page.screenshot(path=str(artifact), full_page=True)
        assert artifact.stat().st_size > 10_000
        assert problems == []
        assert {url.split(":", 1)[0] for url in requests} <= {"file", "data"}, requests
    finally:
        page.close()


def test_pagination_walks_every_kept_row(browser, report):
    result, _funnel, samples = report
    page, problems, _requests = open_page(browser, result.path)
    try:
        page.select_option("#filter-split", "sft")
        seen: list[str] = []
        while True:
            seen += visible_ids(page)
            if page.is_disabled(".pager .next >> nth=0"):
                break
            page.click(".pager .next >> nth=0")
        assert seen == [s.id for s in samples if s.status == "kept" and s.split == "sft"]
        assert problems == []
    finally:
        page.close()
