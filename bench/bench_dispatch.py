"""Dispatch speed: due computation over 500,000 pairs, creating 10,000 results, the pass's own overhead.

    python3 bench/bench_dispatch.py [--services 10000] [--checks 50]

Builds a catalog of N services and M checks (all targeting every service: N x M pairs), syncs it
through the reconciler into a fresh store, then prints figures. Targets (issue 3): due computation
<= 0.5 s and <= 200 MB peak for 500,000 pairs; creating 10,000 result rows <= 0.5 s.
"""

from __future__ import annotations

import argparse
import random
import statistics
import sys
import tempfile
import time
import tracemalloc
from datetime import timedelta
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.machine import peak_mb  # noqa: E402
from conftest import sync_directory, write_catalog  # noqa: E402
from reconciler.clock import FakeClock, format_time  # noqa: E402
from reconciler.dispatch import DEFAULT_PACING_SECONDS  # noqa: E402
from reconciler.schedule import CLAIM_SECONDS, due_cutoffs, run_pass  # noqa: E402
from reconciler.settings import Settings  # noqa: E402
from reconciler.store import Database, open_database  # noqa: E402


class NullDispatcher:
    name = "null"

    def send(self, payload) -> None:
        pass


def build(root: Path, services: int, checks: int) -> Database:
    rnd = random.Random(3)
    service_docs = [
        {"name": f"Service {i}", "slug": f"svc-{i:05d}", "priority": rnd.randint(1, 10),
         "type": rnd.choice(["web", "worker", "database"]), "owner": f"team-{i % 40}",
         "tags": rnd.sample(["pci", "tier-1", "internal", "customer-facing"], 2)}
        for i in range(services)
    ]
    check_docs = []
    for j in range(checks):
        doc = {"name": f"Check {j}", "slug": f"check-{j:02d}", "services": "all"}
        if j % 10 == 9:
            doc["schedule"] = "0 9 * * 1-5"
        else:
            doc["frequency"] = ("hourly", "daily", "weekly")[j % 3]
        check_docs.append(doc)
    write_catalog(root / "catalog", service_docs, check_docs, catalog={"defaults": {"repository": "acme/checks"}})
    store = open_database(root / "catalog.db")
    report = sync_directory(store, root / "catalog")
    assert report.outcome == "applied" and not report.errors, report.errors
    return store


def timed(label: str, function, repeat: int = 5):
    """Median of `repeat` runs (the machine is shared), then one more under tracemalloc for the
    peak of Python's heap (tracing slows allocation-heavy code, so it is kept out of the times)."""
    times = []
    for _ in range(repeat):
        started = time.perf_counter()
        function()
        times.append(time.perf_counter() - started)
    tracemalloc.start()
    value = function()
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    print(f"{label:<58} {statistics.median(times):7.3f} s   peak {peak / 1e6:6.1f} MB (Python heap)"
          f"   [median of {len(times)}, min {min(times):.3f}]")
    return value


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--services", type=int, default=10_000)
    parser.add_argument("--checks", type=int, default=50)
    args = parser.parse_args()
    clock = FakeClock()
    with tempfile.TemporaryDirectory() as folder:
        started = time.perf_counter()
        store = build(Path(folder), args.services, args.checks)
        pairs = args.services * args.checks
        print(f"built and synced {args.services} services x {args.checks} checks = {pairs} pairs"
              f" in {time.perf_counter() - started:.1f} s")
        checks = store.reads.checks()
        now = clock.now()
        cutoffs = due_cutoffs(checks, now)

        due = timed(f"due computation, no history ({pairs} pairs due)", lambda: store.dispatch.due(cutoffs))
        assert sum(len(ids) for _, ids in due) == pairs
        due = timed("  the same as (check, service) tuples (due_pairs)", lambda: [(c, s) for c, ids in store.dispatch.due(cutoffs) for s in ids], repeat=3)
        assert len(due) == pairs

        def create(limit: int):
            rows = store.dispatch.create_due(
                cutoffs, now=format_time(now), revision="bench",
                claim_until=format_time(now + timedelta(seconds=CLAIM_SECONDS)), holder="bench", limit=limit,
            )
            return rows

        started = time.perf_counter()
        created = create(10_000)  # not repeatable: each call creates the next 10,000
        print(f"{'create 10,000 due results (due query + insert + lease)':<58} {time.perf_counter() - started:7.3f} s")
        assert len(created) == 10_000
        started = time.perf_counter()
        everything = create(-1)
        print(f"{'create the other ' + str(len(everything)) + ' results':<58} {time.perf_counter() - started:7.3f} s")
        # finish them all (timed-out), so every pair has a run: the steady state
        store.dispatch.expire([(c["id"], "9999", "bench") for c in checks], now=format_time(now))
        clock.advance(timedelta(hours=1, seconds=1))
        cutoffs = due_cutoffs(checks, clock.now())
        due = timed(f"due computation, {pairs} runs in history (hourly due)", lambda: store.dispatch.due(cutoffs))
        print(f"{'':<58} -> {sum(len(ids) for _, ids in due)} of {pairs} pairs due")
        clock.advance(timedelta(days=8))
        cutoffs = due_cutoffs(checks, clock.now())
        due = timed(f"due computation, {pairs} runs in history (all due)", lambda: store.dispatch.due(cutoffs))
        assert sum(len(ids) for _, ids in due) == pairs

        settings = Settings.resolve({}, {})
        started = time.perf_counter()
        report = run_pass(store, NullDispatcher(), settings=settings, clock=clock, max_results=2_000)
        elapsed = time.perf_counter() - started
        print(f"{'one pass, 2,000 results, a dispatcher that does nothing':<58} {elapsed:7.3f} s"
              f"   = {len(report.sent) / elapsed:,.0f} results/s of our own overhead")
        # the API's PATCH write (results.answer), which the dispatch_pairs trigger also costs
        ids = [row["id"] for row in create(10_000)]
        started = time.perf_counter()
        for result_id in ids:
            store.results.answer([(result_id, "pass", "ok", None, clock.now())])
        elapsed = time.perf_counter() - started
        print(f"{'10,000 answers (the PATCH write), one by one':<58} {elapsed:7.3f} s"
              f"   = {elapsed / len(ids) * 1e6:.0f} µs each")
        rss = peak_mb()[0]
        print(f"peak RSS of this whole process (SQLite included): {rss:.0f} MB")
        per_hour = 3600 / DEFAULT_PACING_SECONDS
        print(f"GitHub pacing: one POST every {DEFAULT_PACING_SECONDS:.0f} s, one at a time = {per_hour:,.0f} dispatches/hour"
              " at most, under the 5,000 requests/hour of a token; rate-limit answers slow it further")


if __name__ == "__main__":
    main()
