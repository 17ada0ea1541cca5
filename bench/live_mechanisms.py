"""How should readers see the warehouse during a run? The three candidate mechanisms, measured.

The writer inserts batches into a warehouse that already holds `--rows` rows (topics with ~2 KB of
text each, like trajectories' messages); per batch it pays:
  (a) reopen   — open the file, insert, close (readers may open it read-only between batches),
  (b) socket   — insert on its open connection; readers ask it over the Unix socket (warehouse/live.py),
  (c) snapshot — insert, then publish a copy of the database for readers (COPY FROM DATABASE),
and a reader's query latency under each is measured (the count of rows per category, like `status`).
Prints per-batch writer cost as a ratio to (b)'s plain insert, and the median reader latency.

    python -m bench.live_mechanisms --rows 20000
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import tempfile
import threading
import time
from pathlib import Path

import duckdb

from schemas.rows import Topic
from warehouse.live import LiveQueryServer, live_query, socket_path
from warehouse.store import Warehouse

QUERY = "SELECT category, count(*) AS n FROM topics GROUP BY 1 ORDER BY 1"


def topics(start: int, count: int) -> list[Topic]:
    text = "lorem ipsum dolor sit amet " * 75
    return [
        Topic(id=f"t{n:09d}", source="bench", title=f"title {n}", text=f"{n} {text}", category=f"c{n % 12}")
        for n in range(start, start + count)
    ]


def seeded(root: Path, rows: int) -> Path:
    database = root / "warehouse.duckdb"
    with Warehouse(database) as warehouse:
        for start in range(0, rows, 2000):
            warehouse.insert(topics(start, min(2000, rows - start)))
    return database


def timed(function) -> float:
    started = time.perf_counter()
    function()
    return time.perf_counter() - started


def median_ms(values: list[float]) -> float:
    return statistics.median(values) * 1000 if values else float("nan")


def measure_socket(database: Path, start: int, batches: int, batch: int) -> tuple[list[float], list[float]]:
    writes, reads = [], []
    with Warehouse(database) as warehouse:
        server = LiveQueryServer(warehouse.connection, socket_path(database.parent)).start()
        try:
            for number in range(batches):
                rows = topics(start + number * batch, batch)
                writes.append(timed(lambda rows=rows: warehouse.insert(rows)))
                reads.append(timed(lambda: live_query(database.parent, QUERY)))
        finally:
            server.stop()
    return writes, reads


def measure_reopen(database: Path, start: int, batches: int, batch: int) -> tuple[list[float], list[float]]:
    writes, reads = [], []
    for number in range(batches):
        rows = topics(start + number * batch, batch)

        def write(rows=rows) -> None:
            with Warehouse(database) as warehouse:
                warehouse.insert(rows)

        writes.append(timed(write))

        def read() -> None:
            connection = duckdb.connect(str(database), read_only=True)
            connection.sql(QUERY).fetchall()
            connection.close()

        reads.append(timed(read))
    return writes, reads


def measure_snapshot(database: Path, start: int, batches: int, batch: int) -> tuple[list[float], list[float]]:
    writes, reads = [], []
    published = database.parent / "published.duckdb"
    with Warehouse(database) as warehouse:
        for number in range(batches):
            rows = topics(start + number * batch, batch)

            def write_and_publish(rows=rows) -> None:
                warehouse.insert(rows)
                partial = database.parent / "published.partial.duckdb"
                partial.unlink(missing_ok=True)
                warehouse.connection.execute(f"ATTACH '{partial}' AS published")
                warehouse.connection.execute("COPY FROM DATABASE warehouse TO published").fetchall()
                warehouse.connection.execute("DETACH published")
                partial.replace(published)

            writes.append(timed(write_and_publish))

            def read() -> None:
                connection = duckdb.connect(str(published), read_only=True)
                connection.sql(QUERY).fetchall()
                connection.close()

            reads.append(timed(read))
    return writes, reads


def measure_slow_reader(database: Path, start: int, batches: int, batch: int) -> tuple[list[float], bool]:
    """(b) while a reader holds a heavy query open: the writer's per-batch cost, and whether the heavy
    query was still running when the last batch was written (it is stopped at the 8 s time-out)."""
    writes = []
    ended: list[float] = []
    heavy = "SELECT count(DISTINCT a.text || b.id) FROM topics a, (SELECT id FROM topics LIMIT 5000) b"
    with Warehouse(database) as warehouse:
        server = LiveQueryServer(warehouse.connection, socket_path(database.parent), query_timeout=8).start()
        reader = threading.Thread(
            target=lambda: (
                _ignore(lambda: live_query(database.parent, heavy)),
                ended.append(time.perf_counter()),
            )
        )
        reader.start()
        time.sleep(0.5)
        try:
            for number in range(batches):
                rows = topics(start + number * batch, batch)
                writes.append(timed(lambda rows=rows: warehouse.insert(rows)))
            overlapped = not ended
            reader.join(timeout=30)
        finally:
            server.stop()
    return writes, overlapped


def server_cpu_per_query(database: Path, queries: int = 50) -> tuple[float, float]:
    """(b): the writer process's CPU seconds per query asked by another process, and that client's wall
    time per query (the writer's overhead for a reader polling once a second is this CPU per second)."""
    import resource
    import subprocess
    import sys

    def cpu() -> float:
        usage = resource.getrusage(resource.RUSAGE_SELF)
        return usage.ru_utime + usage.ru_stime

    client = (
        "import sys, time; from pathlib import Path; from warehouse.live import live_query; "
        f"started = time.perf_counter(); [live_query(Path({str(database.parent)!r}), {QUERY!r}) "
        f"for _ in range({queries})]; print((time.perf_counter() - started) / {queries})"
    )
    with Warehouse(database) as warehouse:
        server = LiveQueryServer(warehouse.connection, socket_path(database.parent)).start()
        try:
            before = cpu()
            done = subprocess.run(
                [sys.executable, "-c", client],
                capture_output=True,
                text=True,
                check=True,
                cwd=Path(__file__).resolve().parent.parent,
            )
            spent = cpu() - before
        finally:
            server.stop()
    return spent / queries, float(done.stdout.strip())


def _ignore(function) -> None:
    try:
        function()
    except Exception:  # noqa: BLE001 - the heavy query is cut off on purpose
        pass


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--rows", type=int, default=20000, help="rows already in the warehouse")
    parser.add_argument("--batches", type=int, default=20)
    parser.add_argument("--batch-size", type=int, default=64)
    args = parser.parse_args()

    root = Path(tempfile.mkdtemp(prefix="groundgen-live-"))
    try:
        seed = seeded(root / "seed", args.rows)
        size_mb = seed.stat().st_size / 1e6
        print(
            f"warehouse: {args.rows} rows, {size_mb:.1f} MB; {args.batches} batches of {args.batch_size} rows"
        )
        results = {}
        for name, measure in (
            ("(b) socket", measure_socket),
            ("(a) reopen", measure_reopen),
            ("(c) snapshot", measure_snapshot),
        ):
            folder = root / name.split()[0].strip("()")
            shutil.copytree(seed.parent, folder)
            results[name] = measure(folder / "warehouse.duckdb", args.rows, args.batches, args.batch_size)
        folder = root / "slow"
        shutil.copytree(seed.parent, folder)
        slow, overlapped = measure_slow_reader(
            folder / "warehouse.duckdb", args.rows, args.batches, args.batch_size
        )

        folder = root / "cpu"
        shutil.copytree(seed.parent, folder)
        cpu_per_query, client_wall = server_cpu_per_query(folder / "warehouse.duckdb")
        ideal = median_ms(results["(b) socket"][0])
        print(f"\n{'mechanism':<14}{'write ms/batch':>16}{'vs insert':>11}{'read ms':>10}")
        for name, (writes, reads) in results.items():
            print(
                f"{name:<14}{median_ms(writes):>16.1f}{median_ms(writes) / ideal:>11.2f}{median_ms(reads):>10.1f}"
            )
        print(f"{'(b) + heavy reader':<22}{median_ms(slow):>8.1f}{median_ms(slow) / ideal:>11.2f}")
        print(f"(the heavy query was {'still' if overlapped else 'no longer'} running after the last batch)")
        print(
            f"(b) the writer's CPU per query from another process: {cpu_per_query * 1000:.1f} ms "
            f"({cpu_per_query * 100:.2f} % of one core for a reader polling every second); "
            f"client wall {client_wall * 1000:.1f} ms per query"
        )
        print(
            "\nwrite ms/batch: the writer's cost per batch (median); vs insert: ratio to (b)'s plain insert"
        )
    finally:
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
