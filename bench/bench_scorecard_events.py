"""The answer path's cost of `level-changed` events (the scorecards hook records them in the answer's transaction).

    python3 bench/bench_scorecard_events.py [--services 2000] [--checks 20] [--rounds 6] [--chunk 400]

Builds N services x M checks with bench_scorecards' 5 scorecards x 3 levels (SQLite), one result per
pair all passed but the last ones, which stay pending; then answers the pending results in batches of 8 (`results.answer`,
as the PATCH batcher does), in chunks that alternate between the product and a reference where
`scorecards.record_level_events` does nothing (the levels are still written: only the events differ).
Two workloads: `fail` answers (a missing check turns failing: no level moves, so no event) and `pass`
answers (a missing check turns met: some levels rise, an event each). Prints CPU per answer (best
chunk of each) and the events per answer recorded.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))

from bench.bench_api import build_catalog, fill_results  # noqa: E402
from bench.bench_scorecards import write_scorecards  # noqa: E402
from bench.machine import describe, probe  # noqa: E402
from reconciler import scorecards  # noqa: E402
from reconciler.clock import Clock  # noqa: E402
from reconciler.gitsource import DirectorySource  # noqa: E402
from reconciler.reconcile import sync  # noqa: E402
from reconciler.store import open_database  # noqa: E402

BATCH = 8


def level_events(store) -> int:
    return len(store.events.list(type="level-changed", limit=1_000_000))


def run_chunk(store, ids: list[int], outcome: str) -> tuple[float, int]:
    """(CPU microseconds per answer, level-changed events recorded) for answering `ids`."""
    before = level_events(store)
    now = Clock().now()
    started = time.process_time()
    for start in range(0, len(ids), BATCH):
        store.results.answer([(rid, outcome, None, None, now) for rid in ids[start:start + BATCH]])
    spent = time.process_time() - started
    return spent * 1e6 / len(ids), level_events(store) - before


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--services", type=int, default=2000)
    parser.add_argument("--checks", type=int, default=20)
    parser.add_argument("--rounds", type=int, default=6)
    parser.add_argument("--chunk", type=int, default=400)
    args = parser.parse_args()
    print(describe(probe()), "(before)")
    work = Path(tempfile.mkdtemp(prefix="bench-scorecard-events-"))
    catalog = work / "catalog"
    build_catalog(catalog, args.services, args.checks)
    write_scorecards(catalog, args.checks)
    store = open_database(f"sqlite://{work / 'catalog.db'}")
    report = sync(store, DirectorySource(catalog))
    assert report.outcome == "applied" and not report.errors, report.errors
    needed = 2 * 2 * args.rounds * args.chunk
    every = list(fill_results(store, pending=args.services * args.checks))  # every pair's result, all pending
    now = Clock().now()
    for start in range(0, len(every) - needed, 2000):  # all passed but the last ones (the counted checks' pairs)
        store.results.answer([(rid, "pass", None, None, now) for rid in every[start:min(start + 2000, len(every) - needed)]])
    pending = every[-needed:]
    print(f"setup: {args.services} services x {args.checks} checks, {len(pending)} pending answers")
    product = scorecards.record_level_events
    figures: dict[tuple[str, str], list[tuple[float, int]]] = {}
    chunks = iter(range(0, needed, args.chunk))
    for _ in range(args.rounds):
        for outcome in ("fail", "pass"):
            for variant in ("with events", "reference"):
                start = next(chunks)
                scorecards.record_level_events = product if variant == "with events" else (lambda *a, **k: 0)
                try:
                    figures.setdefault((outcome, variant), []).append(run_chunk(store, pending[start:start + args.chunk], outcome))
                finally:
                    scorecards.record_level_events = product
    for outcome in ("fail", "pass"):
        with_events = min(us for us, _ in figures[(outcome, "with events")])
        reference = min(us for us, _ in figures[(outcome, "reference")])
        events = sum(n for _, n in figures[(outcome, "with events")]) / (args.rounds * args.chunk)
        print(f"{outcome} answers: {with_events:.0f} us/answer with events, {reference:.0f} without"
              f" ({(with_events / reference - 1) * 100:+.1f}%), {events:.3f} level-changed events per answer"
              f" (best of {args.rounds} chunks of {args.chunk}, batches of {BATCH})")
    print(describe(probe()), "(after)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
