"""Due results created, then all timed out in one pass, on a real PostgreSQL (started here).

A day GitHub does not answer ends with every open result timed out by one `expire` statement. Until
migration 11 a row-level trigger rewrote one `result_counts` row once per result in that transaction,
and PostgreSQL walks every earlier version of a row on each rewrite: 40,000 results took 34 s, 100,000
took minutes. Prints the seconds of `create_due` and of `expire`, and the microseconds per result.

    python3 bench/bench_pg_timeouts.py --services 2000 --checks 50
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from datetime import timedelta
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.machine import describe, probe  # noqa: E402
from conftest import sync_directory, write_catalog  # noqa: E402
from postgres_server import PostgresServer  # noqa: E402
from reconciler.clock import FakeClock, format_time  # noqa: E402
from reconciler.schedule import CLAIM_SECONDS, due_cutoffs  # noqa: E402
from reconciler.store import open_database  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--services", type=int, default=2000)
    parser.add_argument("--checks", type=int, default=50)
    args = parser.parse_args()
    print(describe(probe()), "(before)")
    server = PostgresServer().start()
    try:
        with tempfile.TemporaryDirectory() as folder:
            root = Path(folder) / "catalog"
            write_catalog(
                root, [{"name": f"S {i}", "slug": f"svc-{i:05d}", "priority": 1 + i % 10} for i in range(args.services)],
                [{"name": f"C {j}", "slug": f"check-{j:02d}", "services": "all", "frequency": "daily"}
                 for j in range(args.checks)],
                catalog={"defaults": {"repository": "acme/checks", "batch": 1000}})
            store = open_database(server.new_database())
            assert sync_directory(store, root).outcome == "applied"
            now = FakeClock().now()
            checks = store.reads.checks()
            started = time.perf_counter()
            created = store.dispatch.create_due(
                due_cutoffs(checks, now), now=format_time(now), revision="bench",
                claim_until=format_time(now + timedelta(seconds=CLAIM_SECONDS)), holder="bench")
            made = time.perf_counter() - started
            started = time.perf_counter()
            expired = store.dispatch.expire([(check["id"], "9999", "timed out") for check in checks], now=format_time(now))
            spent = time.perf_counter() - started
            assert len(expired) == len(created)
            counts = {(row["status"], row["result"]): row["count"] for row in store.metrics.result_counts()}
            store.close()
    finally:
        server.stop()
    print(f"create_due of {len(created):,} results: {made:6.2f} s ({made / len(created) * 1e6:.0f} us a result)")
    print(f"expire of {len(expired):,} results:     {spent:6.2f} s ({spent / len(expired) * 1e6:.0f} us a result)")
    print(f"result_counts after: {counts}")
    print(describe(probe()), "(after)")


if __name__ == "__main__":
    main()
