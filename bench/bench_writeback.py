"""Write-back speed: a 10,000-result batch, and a 100-result pass before and after 1,000,000 written.

    python3 bench/bench_writeback.py            # both scenarios, each in a fresh process
    python3 bench/bench_writeback.py batch      # one scenario
    python3 bench/bench_writeback.py growth

Targets (issue 5): the 10,000-result pass (files + commit + push to a local bare repository)
<= 5 s and <= 300 MB peak; a 100-result pass after 1,000,000 written near the first one.
Setup SQL (bulk results) lives here, not in the store: it only fabricates history fast.
"""

from __future__ import annotations

import subprocess
import sys
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))

from bench.machine import peak_mb  # noqa: E402
from conftest import write_catalog  # noqa: E402
from reconciler.clock import FakeClock  # noqa: E402
from reconciler.gitsource import DirectorySource  # noqa: E402
from reconciler.reconcile import sync  # noqa: E402
from reconciler.settings import Settings  # noqa: E402
from reconciler.store import Database, open_database  # noqa: E402
from reconciler.writeback import writeback_pass  # noqa: E402

SERVICES = 1000
CHECKS = 5


def make_catalog(root: Path) -> None:
    write_catalog(
        root,
        [{"name": f"service-{number:04d}", "priority": 1 + number % 10} for number in range(SERVICES)],
        [{"name": f"check-{number}", "frequency": "daily"} for number in range(CHECKS)],
    )


def setup(work: Path) -> tuple[Database, Settings]:
    make_catalog(work / "catalog")
    store = open_database(work / "home" / "catalog.db")
    sync(store, DirectorySource(work / "catalog"))
    subprocess.run(["git", "init", "-q", "--bare", str(work / "remote.git")], check=True)
    return store, Settings(home=work / "home", repo=str(work / "remote.git"))


def add_finished(store: Database, count: int, *, first_day: str, seconds_apart: float) -> None:
    """`count` completed results over all (check, service) pairs, finished `seconds_apart` from each other.

    A bulk load in SQL (millions of rows in seconds): created pending (a trigger refuses any other), then
    finished by one UPDATE, whose triggers queue them for write-back as an answer's would. The rows skip
    the derived rows `create_due` writes for new results (dispatch_pairs, latest_runs, result_counts),
    which write-back does not read."""
    with store.transaction() as session:
        first = session.value("SELECT coalesce(max(id), 0) + 1 FROM results")
        session.run(
            "WITH RECURSIVE n(i) AS (SELECT 0 UNION ALL SELECT i + 1 FROM n WHERE i < ? - 1),"
            " c AS (SELECT id, row_number() OVER (ORDER BY id) - 1 AS k FROM checks),"
            " s AS (SELECT id, row_number() OVER (ORDER BY id) - 1 AS k FROM services)"
            " INSERT INTO results (check_id, service_id, revision, created_at)"
            " SELECT c.id, s.id, 'b' || printf('%039d', n.i % 97),"
            "  strftime('%Y-%m-%dT%H:%M:%f000Z', ?, '+' || (n.i * ?) || ' seconds')"
            " FROM n JOIN c ON c.k = n.i % ? JOIN s ON s.k = (n.i / ?) % ? ORDER BY n.i",
            (count, first_day, seconds_apart, CHECKS, CHECKS, SERVICES),
        )
        session.run(  # row `first + i` is n.i = i above
            "UPDATE results SET status = 'completed', result = CASE WHEN (id - ?) % 7 = 0 THEN 'fail' ELSE 'pass' END,"
            " message = 'checked by the benchmark',"
            " finished_at = strftime('%Y-%m-%dT%H:%M:%f000Z', ?, '+' || ((id - ?) * ? + 30) || ' seconds')"
            " WHERE id >= ?",
            (first, first_day, first, seconds_apart, first),
        )


def timed_pass(store: Database, settings: Settings, clock: FakeClock, **options):
    started = time.perf_counter()
    report = writeback_pass(store, settings, clock=clock, **options)
    return time.perf_counter() - started, report


def bench_batch() -> None:
    with tempfile.TemporaryDirectory() as folder:
        store, settings = setup(Path(folder))
        add_finished(store, 10_000, first_day="2026-01-05T00:00:00", seconds_apart=0.5)
        clock = FakeClock(datetime(2026, 1, 5, 12, tzinfo=timezone.utc))
        seconds, report = timed_pass(store, settings, clock)
        own, children = peak_mb()
        assert len(report.written) == 10_000 and report.pushed
        print(f"batch: {len(report.written):,} results across {SERVICES:,} services: write-back {seconds:.2f} s"
              f" (target <= 5 s); peak RSS python {own:.0f} MB, largest git child {children:.0f} MB (target <= 300 MB)")


def bench_growth() -> None:
    with tempfile.TemporaryDirectory() as folder:
        store, settings = setup(Path(folder))
        clock = FakeClock(datetime(2026, 1, 5, 12, tzinfo=timezone.utc))
        add_finished(store, 100, first_day="2026-01-05T00:00:00", seconds_apart=60)
        first, _ = timed_pass(store, settings, clock)

        # Every (check, service) pair written once (5,000 results over 5 days): from here on every summary
        # file has its full size, so what follows isolates the cost of history from the cost of the catalog.
        add_finished(store, CHECKS * SERVICES, first_day="2022-01-01T00:00:00", seconds_apart=86.4)
        timed_pass(store, settings, clock)
        add_finished(store, 100, first_day="2026-01-05T03:00:00", seconds_apart=60)
        full_catalog, _ = timed_pass(store, settings, clock)

        # 1,000,000 more over 1,000 days (1,000 lines a day), written by the real pass in batches
        started = time.perf_counter()
        add_finished(store, 1_000_000, first_day="2023-04-11T00:00:00", seconds_apart=86.4)
        filled = time.perf_counter() - started
        started = time.perf_counter()
        _, filling = timed_pass(store, settings, clock)
        history = time.perf_counter() - started
        assert len(filling.written) == 1_000_000, len(filling.written)

        add_finished(store, 100, first_day="2026-01-05T06:00:00", seconds_apart=60)
        later, report = timed_pass(store, settings, clock)
        assert len(report.written) == 100
        print(f"growth: first 100-result pass {first * 1000:.0f} ms (100 services have results);"
              f" with every pair written once ({CHECKS * SERVICES:,}) {full_catalog * 1000:.0f} ms;"
              f" after 1,000,000 more (inserted in {filled:.1f} s, written back in {history:.1f} s as"
              f" {len(filling.commits)} commits) {later * 1000:.0f} ms"
              f" = {later / full_catalog:.2f}x the full-catalog pass ({later / first:.2f}x the first)")

def main(argv: list[str]) -> None:
    scenarios = {"batch": bench_batch, "growth": bench_growth}
    if argv:
        scenarios[argv[0]]()
        return
    for name in scenarios:  # each in its own process, so peak memory is its own
        subprocess.run([sys.executable, __file__, name], check=True)


if __name__ == "__main__":
    main(sys.argv[1:])
