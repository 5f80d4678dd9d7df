"""GET /metrics and the results export on a large store: scrape time, export rows/s, export memory.

    python3 bench/bench_metrics_export.py [--services 10000] [--checks 50] [--rounds 8] [--keep DB]

Builds the catalog with bench/generate_catalog.py, syncs it, then records `--rounds` rounds of results
(one per targeted pair per round, made and answered through the store's own calls: 10,000 x 50
checks (the generated checks target about 130,000 pairs) x 8 rounds is about 1,000,000 results; a few
stay open). `--keep DB` reuses (or keeps) the
SQLite file, since building a million results takes minutes. Then:

- /metrics: the ASGI app in-process, median and worst of 30 scrapes. Target (issue 17): <= 20 ms.
- export: `catalog export results` in a new process writing CSV to /dev/null, rows/s and the
  process's peak RSS, for all rows and for the newest ~10% (--since): the same peak means memory
  does not grow with the rows. Target: >= 100,000 rows/s, RSS flat.
- GET /api/results.csv through a real uvicorn server on loopback, read as a stream: rows/s.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import timedelta
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))

import requests  # noqa: E402
from litestar.testing import TestClient  # noqa: E402

from api.app import create_app  # noqa: E402
from api_support import live_server  # noqa: E402
from bench.machine import describe, probe  # noqa: E402
from reconciler.clock import FakeClock, format_time  # noqa: E402
from reconciler.export import result_batches  # noqa: E402
from reconciler.gitsource import DirectorySource  # noqa: E402
from reconciler.reconcile import collector_paused, sync  # noqa: E402
from reconciler.schedule import NEVER  # noqa: E402
from reconciler.settings import Settings  # noqa: E402
from reconciler.store import Database, open_database  # noqa: E402

OUTCOMES = ["pass"] * 14 + ["warning", "fail", "fail", "error", "skipped"]


def build(store: Database, work: Path, services: int, checks: int, rounds: int, clock: FakeClock) -> int:
    subprocess.run([sys.executable, str(ROOT / "bench" / "generate_catalog.py"), str(work / "catalog"),
                    "--services", str(services), "--checks", str(checks)], check=True, capture_output=True)
    with collector_paused():
        sync(store, DirectorySource(work / "catalog"))
    check_ids = [row["id"] for row in store.reads.checks()]
    total = 0
    for round_ in range(rounds):
        at = clock.now() - timedelta(days=rounds - round_)
        created = store.dispatch.create_due([(check_id, NEVER) for check_id in check_ids], now=format_time(at),
                                            revision=None, claim_until=format_time(at), holder="bench")
        answers = [(row["id"], OUTCOMES[row["id"] % len(OUTCOMES)], "checked", None, at + timedelta(minutes=3))
                   for row in created if round_ < rounds - 1 or row["id"] % 50]  # a few of the last stay open
        for start in range(0, len(answers), 20_000):
            store.results.answer(answers[start:start + 20_000])
        total += len(created)
        print(f"  round {round_ + 1}: {len(created)} results", flush=True)
    return total


def time_metrics(store: Database, home: Path) -> list[float]:
    with TestClient(create_app(store, Settings(home=home, public_read=True), sync_trigger=lambda: None)) as client:
        client.get("/metrics")
        timings = []
        for _ in range(30):
            started = time.perf_counter()
            response = client.get("/metrics")
            timings.append((time.perf_counter() - started) * 1000)
            assert response.status_code == 200
    return timings


def export_cli(database: Path, *args: str) -> tuple[float, float]:
    """(seconds, peak RSS in MB) of `catalog export results ARGS -o /dev/null` in a new process: the
    seconds of the command itself, not of starting Python; the peak is the child's own VmHWM (its
    ru_maxrss would include this process's, inherited across exec)."""
    done = subprocess.run(
        [sys.executable, "-c", "import sys, time; from api.cli import main; started = time.perf_counter();"
         " code = main(sys.argv[1:]); took = time.perf_counter() - started;"
         " peak = [line.split()[1] for line in open('/proc/self/status') if line.startswith('VmHWM')][0];"
         " print(took, peak, file=sys.stderr); sys.exit(code)",
         "export", "results", "--database-url", f"sqlite://{database}", "--quiet", "-o", "/dev/null", *args],
        cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT)}, check=True, capture_output=True, text=True,
    )
    seconds, peak_kb = done.stderr.split()[-2:]
    return float(seconds), int(peak_kb) / 1024


def export_http(store: Database, home: Path, since: str | None = None) -> tuple[int, float]:
    app = create_app(store, Settings(home=home, public_read=True), sync_trigger=lambda: None)
    with live_server(app) as base:
        started = time.perf_counter()
        rows = 0
        with requests.get(f"{base}/api/results.csv", params={"since": since} if since else None, stream=True) as response:
            response.raise_for_status()
            for chunk in response.iter_content(chunk_size=1 << 16):
                rows += chunk.count(b"\n")
        return rows - 1, time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--services", type=int, default=10_000)
    parser.add_argument("--checks", type=int, default=50)
    parser.add_argument("--rounds", type=int, default=8)
    parser.add_argument("--keep", type=Path, help="SQLite file to reuse (built when missing)")
    args = parser.parse_args()
    print(describe(probe()), "(before)")
    clock = FakeClock()
    with tempfile.TemporaryDirectory(prefix="bench-metrics-") as temporary:
        work = Path(temporary)
        database = (args.keep or work / "catalog.db").resolve()
        fresh = not database.exists()
        store = open_database(f"sqlite://{database}")
        if fresh:
            started = time.perf_counter()
            total = build(store, work, args.services, args.checks, args.rounds, clock)
            print(f"built {total} results in {time.perf_counter() - started:.0f} s")
        counts = store.catalog.counts()
        print(f"store: {counts['services']} services, {counts['checks']} checks, {counts['results']} results")
        timings = time_metrics(store, work)
        print(f"/metrics:          median {statistics.median(timings):6.1f} ms, worst {max(timings):6.1f} ms"
              f" (30 scrapes; target <= 20 ms)")
        newest = format_time(clock.now() - timedelta(days=1, hours=1))
        for label, extra in (("all results", ()), ("newest round", ("--since", newest))):
            rows = sum(len(batch) for batch in result_batches(store, since=extra[1] if extra else None))
            seconds, peak = export_cli(database, *extra)
            print(f"export CLI, {label:12}: {rows:9,} rows in {seconds:6.2f} s = {rows / seconds:9,.0f} rows/s,"
                  f" peak RSS {peak:6.1f} MB (target >= 100,000 rows/s, RSS flat)")
        rows, seconds = export_http(store, work)
        print(f"GET /api/results.csv: {rows:9,} rows in {seconds:6.2f} s = {rows / seconds:9,.0f} rows/s")
        store.close()
    print(describe(probe()), "(after)")


if __name__ == "__main__":
    main()
