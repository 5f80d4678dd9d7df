"""Server time of each dashboard page with 1,000 services x 20 checks and result history.

Builds a catalog as YAML, syncs it with the real reconciler, records results through the store's
own create/complete calls, then times each page through the ASGI app in-process (no network), and
prints the median and worst of several requests per page. Target: <= 50 ms per page.
`--cold` turns off the few-second cache of the dashboard's header totals and facets, so that
every request of `/` pays for the full aggregate (what the first visitor after a change sees).

    python3 bench/bench_pages.py [--services 1000] [--checks 20] [--history 5] [--cold]

`--history` is the days of results per (check, service) pair: a check page charts its last 30 days
of pass rates, and a long history must not slow it (`--services 10000 --checks 2 --history 30`:
/checks/check-00 was 328 ms when the chart grouped every result the check ever had).
"""

from __future__ import annotations

import argparse
import random
import statistics
import sys
import tempfile
import time
from datetime import timedelta
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))

from litestar.testing import TestClient  # noqa: E402

from api import dashboard  # noqa: E402
from conftest import write_catalog  # noqa: E402
from api.app import create_app  # noqa: E402
from reconciler.clock import FakeClock, format_time  # noqa: E402
from reconciler.gitsource import DirectorySource  # noqa: E402
from reconciler.reconcile import sync  # noqa: E402
from reconciler.schedule import NEVER  # noqa: E402
from reconciler.settings import Settings  # noqa: E402
from reconciler.store import Database, open_database  # noqa: E402

OUTCOMES = ["pass"] * 14 + ["warning", "fail", "fail", "error", "skipped"]


def build_catalog(root: Path, services: int, checks: int, rng: random.Random) -> None:
    owners = [f"team-{n}" for n in range(40)]
    types = ["web", "worker", "database", "batch"]
    service_docs = [
        {
            "name": f"Service {n:04d}", "priority": rng.randint(1, 10), "type": rng.choice(types),
            "owner": rng.choice(owners), "tags": rng.sample(["pci", "tier-1", "internal", "gdpr", "edge"], 2),
            "description": f"Service number **{n}**.",
        }
        for n in range(services)
    ]
    frequencies = ["hourly", "daily", "weekly"]
    check_docs = [
        {"name": f"Check {n:02d}", "frequency": frequencies[n % 3], "services": {"max_priority": 5} if n % 5 == 4 else "all"}
        for n in range(checks)
    ]
    write_catalog(root, service_docs, check_docs)


def record_history(store: Database, clock: FakeClock, history: int, rng: random.Random) -> int:
    checks = store.reads.checks(order="name")  # the checks' own targeting decides the pairs, as in a real pass
    start = clock.now()
    count = 0
    for round_ in range(history):  # a round of results, made and answered through the product's calls
        at = start - timedelta(days=history - round_)
        created = store.dispatch.create_due([(check["id"], NEVER) for check in checks], now=format_time(at),
                                            revision=None, claim_until=format_time(at), holder="bench")
        store.results.answer([
            (row["id"], rng.choice(OUTCOMES), "<b>checked</b> & fine", None, at + timedelta(minutes=3))
            for row in created if round_ < history - 1 or rng.random() > 0.05  # a few stay pending
        ])
        count += len(created)
    return count


def time_page(client: TestClient, path: str, repeat: int) -> tuple[float, float, float, int]:
    """Median and worst wall time, and median CPU time of this process (steadier on a busy machine)."""
    client.get(path)  # warm: template compilation, connection, caches
    timings, cpu = [], []
    for _ in range(repeat):
        started, started_cpu = time.perf_counter(), time.process_time()
        response = client.get(path)
        timings.append((time.perf_counter() - started) * 1000)
        cpu.append((time.process_time() - started_cpu) * 1000)
        assert response.status_code == 200, (path, response.status_code)
    return statistics.median(timings), max(timings), statistics.median(cpu), len(response.content)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--services", type=int, default=1000)
    parser.add_argument("--checks", type=int, default=20)
    parser.add_argument("--history", type=int, default=5, help="results per (check, service) pair")
    parser.add_argument("--repeat", type=int, default=15)
    parser.add_argument("--cold", action="store_true", help="no reuse of the dashboard's header totals")
    args = parser.parse_args()
    if args.cold:
        dashboard.SUMMARY_SECONDS = 0
    rng = random.Random(7)
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp) / "catalog"
        build_catalog(root, args.services, args.checks, rng)
        store = open_database(Path(tmp) / "catalog.db")
        clock = FakeClock()
        started = time.perf_counter()
        sync(store, DirectorySource(root), clock=clock)
        synced = time.perf_counter() - started
        results = record_history(store, clock, args.history, rng)
        print(f"catalog: {args.services} services x {args.checks} checks, {results} results "
              f"(sync {synced:.1f} s)")
        app = create_app(store, Settings(home=Path(tmp), public_read=True), clock=clock)
        pages = [
            "/", "/?page=5", "/?tag=pci", "/?owner=team-3",
            "/services/service-0001", "/checks/check-00", f"/checks/check-{min(4, args.checks - 1):02d}",
            "/checks/check-00?page=10", "/results", f"/results?check=check-{min(1, args.checks - 1):02d}&result=fail",
            f"/results/{results // 2}", "/sync",
            "/badges/services/service-0001.svg", "/badges/services/service-0001/check-00.svg",
        ]
        print(f"{'page':45} {'median ms':>10} {'max ms':>8} {'cpu ms':>7} {'KiB':>7}")
        with TestClient(app) as client:
            for path in pages:
                median, worst, cpu, size = time_page(client, path, args.repeat)
                flag = "" if median <= 50 else "  over 50 ms"
                print(f"{path:45} {median:10.1f} {worst:8.1f} {cpu:7.1f} {size / 1024:7.1f}{flag}")


if __name__ == "__main__":
    main()
