"""`groundgen report` at scale: generation time and size at N samples, first gallery page in Chromium.

Builds a synthetic warehouse (testkit/report_fixtures.py: every table the report reads, one ground-truth
PNG per sample, two versions), then runs the production path (`warehouse.report.write_report`) twice —
cold (every thumbnail made) and warm (thumbnails kept) — and loads the page in Debian's Chromium.
Prints each measurement as a ratio against its budget: <= 30 s, <= 300 MB, first page <= 2 s.

    .venv/bin/python -m bench.report --samples 16000
"""

from __future__ import annotations

import argparse
import os
import shutil
import tempfile
import time
from pathlib import Path

from testkit import report_fixtures
from warehouse import report_data as data
from warehouse.blobs import BlobStore
from warehouse.report import write_report
from warehouse.store import Warehouse

BUDGET_SECONDS = 30.0
BUDGET_BYTES = 300e6
BUDGET_FIRST_PAGE_S = 2.0
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]


def generate(work: report_fixtures.SyntheticWarehouse, output: Path) -> tuple[float, float, int, int]:
    """Wall and CPU seconds (this process, all threads) of one report, its bytes and samples."""
    with Warehouse(work.database, read_only=True) as warehouse:
        scope = data.resolve_scope(warehouse)
        started, cpu = time.perf_counter(), time.process_time()
        result = write_report(warehouse, BlobStore(work.blobs), scope, output)
        seconds, cpu = time.perf_counter() - started, time.process_time() - cpu
    return seconds, cpu, result.total_bytes(), result.samples


def first_page_seconds(page_path: Path, runs: int) -> list[float] | str:
    """Seconds from navigation to the first gallery page drawn with every image decoded."""
    chromium = shutil.which("chromium") or "/usr/bin/chromium"
    if not Path(chromium).exists():
        return "chromium not installed (apt-get install chromium)"
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        return "playwright not installed (pip install -e '.[test]')"
    times = []
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=chromium, args=CHROMIUM_ARGS)
        try:
            for _ in range(runs):
                page = browser.new_page(viewport={"width": 1400, "height": 1000})
                started = time.perf_counter()
                page.goto(page_path.resolve().as_uri())
                page.wait_for_selector("body[data-gallery-ready]", timeout=60_000)
                page.wait_for_function(
                    "() => [...document.querySelectorAll('#gallery-grid img')].every(i => i.complete && i.naturalWidth > 0)",
                    timeout=60_000,
                )
                times.append(time.perf_counter() - started)
                page.close()
        finally:
            browser.close()
    return times


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--samples", type=int, default=16000)
    parser.add_argument(
        "--image-side",
        type=int,
        default=64,
        help="ground-truth image side in pixels (the tiny painter's: 64)",
    )
    parser.add_argument("--browser-runs", type=int, default=3)
    parser.add_argument(
        "--workdir", type=Path, default=None, help="keep the warehouse and report here (reused when present)"
    )
    args = parser.parse_args()

    root = args.workdir or Path(tempfile.mkdtemp(prefix="groundgen-bench-report-"))
    try:
        started = time.perf_counter()
        database = root / "work" / "warehouse.duckdb"
        if args.workdir is not None and database.exists():  # a kept synthetic warehouse: reuse it
            work = report_fixtures.SyntheticWarehouse(
                root / "work", database, root / "work" / "blobs", args.samples
            )
            shutil.rmtree(root / "site", ignore_errors=True)  # the cold run makes every thumbnail
            print(f"synthetic warehouse: reusing {database}")
        else:
            work = report_fixtures.build(root / "work", args.samples, image_side=args.image_side)
            print(
                f"synthetic warehouse: {args.samples} samples, {args.image_side}px PNGs, built in "
                f"{time.perf_counter() - started:.1f} s (not part of the budget)"
            )
        output = root / "site" / "report.html"
        cold, cold_cpu, size, samples = generate(work, output)
        warm, warm_cpu, _size, _samples = generate(work, output)
        print(
            f"report of {samples} samples: cold {cold:.1f} s wall / {cold_cpu:.1f} s CPU (every thumbnail "
            f"made), warm {warm:.1f} s wall / {warm_cpu:.1f} s CPU (thumbnails kept); load average "
            f"{os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs"
        )
        print(
            f"generation time / budget ({BUDGET_SECONDS:.0f} s): {cold / BUDGET_SECONDS:.3f} wall, "
            f"{cold_cpu / BUDGET_SECONDS:.3f} CPU"
        )
        html = output.stat().st_size
        print(
            f"size: {size / 1e6:.1f} MB (page {html / 1e6:.1f} MB, thumbnails and trajectories {(size - html) / 1e6:.1f} MB)"
        )
        print(f"size / budget ({BUDGET_BYTES / 1e6:.0f} MB): {size / BUDGET_BYTES:.3f}")
        times = first_page_seconds(output, args.browser_runs)
        if isinstance(times, str):
            print(f"first gallery page in Chromium: skipped ({times})")
        else:
            best, worst = min(times), max(times)
            print(
                f"first gallery page in Chromium: best {best:.2f} s, worst {worst:.2f} s over {len(times)} loads"
            )
            print(f"first page / budget ({BUDGET_FIRST_PAGE_S:.0f} s): {worst / BUDGET_FIRST_PAGE_S:.3f}")
    finally:
        if args.workdir is None:
            shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
