"""Dispatch speed: due computation over 500,000 pairs, creating 10,000 results, the pass's own
overhead; batch dispatches, bulk answers and a simulated day (issue 12).

    python3 bench/bench_dispatch.py [--services 10000] [--checks 50] [--part all|due|batch|pass|bulk|day|done]
                                    [--batch 1000] [--duration 10]

Builds a catalog of N services and M checks (all targeting every service: N x M pairs), syncs it
through the reconciler into a fresh store, then prints figures. Targets (issue 3): due computation
<= 0.5 s and <= 200 MB peak for 500,000 pairs; creating 10,000 result rows <= 0.5 s.
Targets (issue 12): 500,000 due pairs turned into batch dispatches (result rows, leases, payloads)
<= 10 s and <= 300 MB, in ceil(pairs / batch) dispatch requests; a bulk PATCH of 1,000 answers
<= 150 ms server time, and answers/s through bulk PATCH >= 10x the single-PATCH figure of the same
run (`catalog serve` in its own process; single PATCHes by wrk -t2 -c32 as bench_api.py).
`--part pass`: the same 500,000 pairs through a whole scheduler pass (every dispatch sent), in a fresh
process, for the peak resident set of the process during the pass.
`--part done`: the issue's "done means": one check with `batch: 200` over 10,000 services is 50
dispatches GitHub's schema accepts, one bulk PATCH per batch, every result written back once.
`--part day`: a simulated day of the catalog with `batch:` against the GitHub stand-in enforcing
80/min and 500/h on a movable clock, answered by the stand-in's Action player through the API.
"""

from __future__ import annotations

import argparse
import json
import math
import random
import statistics
import subprocess
import sys
import tempfile
import time
import tracemalloc
from datetime import timedelta
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.machine import describe, peak_mb, peak_rss_since_reset, probe, reset_peak_rss, status_mb  # noqa: E402
from conftest import sync_directory, write_catalog  # noqa: E402
from reconciler.clock import FakeClock, format_time  # noqa: E402
from reconciler.dispatch import DEFAULT_PACING_SECONDS  # noqa: E402
from reconciler.payload import check_limits  # noqa: E402
from reconciler.schedule import CLAIM_SECONDS, due_cutoffs, run_pass  # noqa: E402
from reconciler.settings import Settings  # noqa: E402
from reconciler.store import Database, open_database  # noqa: E402


class NullDispatcher:
    name = "null"

    def send(self, payload) -> None:
        pass


def build(root: Path, services: int, checks: int, batch: int = 1, *, daily: bool = False) -> Database:
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
        if daily:
            doc["frequency"] = "daily"
        elif j % 10 == 9:
            doc["schedule"] = "0 9 * * 1-5"
        else:
            doc["frequency"] = ("hourly", "daily", "weekly")[j % 3]
        check_docs.append(doc)
    write_catalog(root / "catalog", service_docs, check_docs,
                  catalog={"defaults": {"repository": "acme/checks", "batch": batch}})
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
    parser.add_argument("--part", choices=("all", "due", "batch", "pass", "bulk", "day", "done"), default="all")
    parser.add_argument("--batch", type=int, default=1000, help="batch: of every check (parts batch and day)")
    parser.add_argument("--duration", type=int, default=10, help="seconds of single PATCHes (part bulk)")
    args = parser.parse_args()
    print(describe(probe()), "(before)")
    if args.part in ("all", "due"):
        bench_due(args)
    if args.part in ("all", "batch"):
        bench_batches(args)
    if args.part == "all":
        subprocess.run([sys.executable, __file__, "--part", "pass", "--services", str(args.services),
                        "--checks", str(args.checks), "--batch", str(args.batch)], check=True)
    if args.part == "pass":
        bench_batches(args)
    if args.part in ("all", "bulk"):
        bench_bulk(args)
    if args.part in ("all", "day"):
        bench_day(args)
    if args.part in ("all", "done"):
        bench_done(args)
    print(describe(probe()), "(after)")


def bench_due(args) -> None:
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


class CountingDispatcher:
    """Sends nothing; counts dispatches and the results they carry, and checks GitHub's limits on each."""

    def __init__(self):
        self.requests = 0
        self.results = 0
        self.inline = 0

    def send(self, payload) -> None:
        check_limits(payload)
        self.requests += 1
        batch = payload.data.get("batch")
        self.results += batch["size"] if batch else 1
        self.inline += bool(batch and "results" in batch)


def bench_batches(args) -> None:
    """500,000 due pairs -> result rows, leases, batch payloads, as a pass makes them: timed in a
    fresh store, then again in another under tracemalloc for the peak of Python's heap; then a whole
    scheduler pass (`run_pass`: also every dispatch's lease renewal and marking sent) in a third, for
    the peak resident set of the process while it runs (`--part pass`: in a process of its own, whose
    heap the runs before have not grown)."""
    for mode in (("pass",) if args.part == "pass" else ("timed", "traced")):
        with tempfile.TemporaryDirectory() as folder:
            started = time.perf_counter()
            store = build(Path(folder), args.services, args.checks, args.batch, daily=True)
            pairs = args.services * args.checks
            if mode == "timed":
                print(f"built and synced {args.services} services x {args.checks} daily checks, batch: {args.batch}"
                      f" ({pairs:,} pairs) in {time.perf_counter() - started:.1f} s")
            if mode == "pass":
                _whole_pass(store, args, pairs)
            else:
                _batches_once(store, args, pairs, mode == "traced")
            store.close()


def _whole_pass(store: Database, args, pairs: int) -> None:
    dispatcher = CountingDispatcher()
    rss_before = reset_peak_rss()  # the catalog's build and sync before this are not counted
    started = time.perf_counter()
    report = run_pass(store, dispatcher, settings=Settings.resolve({}, {}), clock=FakeClock())
    elapsed = time.perf_counter() - started
    peak = peak_rss_since_reset()
    assert dispatcher.results == len(report.sent) == pairs, (dispatcher.results, len(report.sent))
    print(f"{'a whole scheduler pass (run_pass), every dispatch sent':<58} {elapsed:7.3f} s   ({dispatcher.requests:,}"
          f" dispatches, {len(report.sent):,} results sent; the renewals and marks are paced by the budget in use)")
    print(f"{'  PEAK RESIDENT SET OF THE PROCESS during the pass':<58} {peak:7.1f} MB  [target <= 300 MB]"
          f"  ({rss_before:.1f} MB before it: the built and synced catalog)")


def _batches_once(store: Database, args, pairs: int, traced: bool) -> None:
    from reconciler.payload import build_batch_payload
    from reconciler.schedule import dispatch_units

    now = FakeClock().now()
    checks = {c["id"]: c for c in store.reads.checks()}
    settings = Settings.resolve({}, {})
    config = store.state.get("catalog_config")
    if traced:
        tracemalloc.start()
    else:
        rss_before = reset_peak_rss()  # the catalog's build and sync before this are not counted
    started = time.perf_counter()
    created = store.dispatch.create_due(
        due_cutoffs(list(checks.values()), now), now=format_time(now), revision="bench",
        claim_until=format_time(now + timedelta(seconds=CLAIM_SECONDS)), holder="bench")
    rows_done = time.perf_counter()
    services = store.reads.services_by_id([row["service_id"] for row in created])
    units = dispatch_units(created, checks)
    sizes = []
    for unit in units:
        check = checks[unit[0]["check_id"]]
        batch_id = store.dispatch.create_batch(check["id"], [row["id"] for row in unit], now=format_time(now))
        payload = build_batch_payload(batch_id, unit, check, services, server_url=settings.server_url,
                                      catalog_repository=None, catalog_config=config)
        check_limits(payload)
        sizes.append(len(json.dumps(payload.client_payload)))
    finished = time.perf_counter()
    if traced:
        heap = tracemalloc.get_traced_memory()[1] / 1e6
        tracemalloc.stop()
        print(f"{'  the same under tracemalloc: peak of the Python heap':<58} {heap:7.1f} MB"
              f"  (of the process's peak RSS; {peak_mb()[0]:.0f} MB in its whole life: two builds, tracing included)")
        return
    expected = args.checks * math.ceil(args.services / args.batch)
    print(f"{format(pairs, ',') + ' due pairs -> rows + leases (create_due)':<58} {rows_done - started:7.3f} s")
    print(f"{'  -> ' + format(len(units), ',') + ' batch rows + payloads':<58} {finished - rows_done:7.3f} s")
    print(f"{'  together':<58} {finished - started:7.3f} s  [target <= 10 s]")
    print(f"{'  PEAK RESIDENT SET OF THE PROCESS while at it':<58} {peak_rss_since_reset():7.1f} MB  [target <= 300 MB]"
          f"  ({rss_before:.1f} MB before it: the built and synced catalog)")
    print(f"  dispatch requests: {len(units):,} (ceil(pairs / batch) per check = {expected:,});"
          f" payloads {min(sizes):,}..{max(sizes):,} bytes (GitHub: < 65,536)")
    assert len(units) == expected and sum(len(unit) for unit in units) == pairs
    # After each 204: renew the leases, mark the batch sent (per dispatch, paced by the budget)
    sample = units[:20]
    started = time.perf_counter()
    for unit in sample:
        ids = [row["id"] for row in unit]
        store.dispatch.renew_claims(ids, holder="bench", claim_until=format_time(now + timedelta(seconds=CLAIM_SECONDS)))
        store.dispatch.mark_sent_many(ids, now=format_time(now))
    per_batch = (time.perf_counter() - started) / len(sample)
    print(f"{'  per dispatch after GitHub: renew leases + mark sent':<58} {per_batch:7.3f} s"
          f"   (x {len(units)} = {per_batch * len(units):.0f} s, spread over the budget's hour)")


def bench_bulk(args) -> None:
    """Single PATCHes (wrk) against bulk PATCHes of 1,000 answers, on one `catalog serve` process."""
    import requests

    from bench.bench_api import PATCH_LUA, build_catalog, fill_results, run_wrk, start_server, stop_server
    from bench.machine import cpu_seconds
    from reconciler.clock import Clock
    from reconciler.gitsource import DirectorySource
    from reconciler.reconcile import sync
    from reconciler.tokens import create_token

    services, checks = min(args.services, 2000), min(args.checks, 30)
    work = Path(tempfile.mkdtemp(prefix="bench-bulk-"))
    try:
        build_catalog(work / "catalog", services, checks)
        store = open_database(work / "home" / "catalog.db")
        assert sync(store, DirectorySource(work / "catalog")).outcome == "applied"
        pending = services * checks - 1
        ids = fill_results(store, pending=pending)
        writer = create_token(store, "bench-writer", ["results:write"], now=Clock().now())
        store.results.checkpoint()
        store.close()
        log = open(work / "server.log", "w")
        server, base = start_server(log, {"CATALOG_HOME": str(work / "home")})
        try:
            bulk_ids = list(ids)[-15_000:]  # 15 bulk requests; wrk's single PATCHes get the ids before
            single_ids = list(ids)[:-15_000]
            per_thread = len(single_ids) // 2
            script = PATCH_LUA.replace("FIRST", str(single_ids[0])).replace("PER_THREAD", str(per_thread)).replace("TOKEN", writer)
            single = run_wrk(script, base, duration=args.duration, connections=32, pid=server.pid)
            print(f"single PATCH /api/results/{{id}}/ (wrk -t2 -c32, {args.duration} s): {single['rps']:,.0f} answers/s,"
                  f" p99 {single['p99_us'] / 1000:.1f} ms, server CPU {single['cpu_us']:.0f} us/answer")
            session = requests.Session()
            headers = {"Authorization": f"Token {writer}"}
            times, cpu_per_request, answers = [], [], []
            # the bodies are made, and the answers read, outside the clock: as wrk's single PATCHes, the
            # figure is the server's (made and read inside, they were a fifth of the elapsed time)
            bodies = [json.dumps({"results": [{"id": rid, "result": "pass", "message": "bench"}
                                              for rid in bulk_ids[start:start + 1000]]})
                      for start in range(0, len(bulk_ids) - 999, 1000)]
            started = time.perf_counter()
            for body in bodies:
                cpu = cpu_seconds(server.pid)
                sent = time.perf_counter()
                response = session.patch(base + "/api/results", data=body,
                                          headers={**headers, "Content-Type": "application/json"})
                times.append(time.perf_counter() - sent)
                cpu_per_request.append(cpu_seconds(server.pid) - cpu)
                assert response.status_code == 200
                answers.append(response.content)
            elapsed = time.perf_counter() - started
            answered = sum(1 for content in answers for item in json.loads(content)["results"] if item["status"] == 200)
            rate = answered / elapsed
            print(f"bulk PATCH /api/results, 1,000 answers each, {len(times)} requests one after another:"
                  f" {rate:,.0f} answers/s; per request median {statistics.median(times) * 1000:.0f} ms,"
                  f" max {max(times) * 1000:.0f} ms (round trip); server CPU median"
                  f" {statistics.median(cpu_per_request) * 1000:.0f} ms  [target <= 150 ms]")
            print(f"  bulk / single = {rate / single['rps']:.1f}x  [target >= 10x]; {answered:,} answered 200;"
                  f" server RSS {status_mb('VmRSS', server.pid):.0f} MB")
        finally:
            stop_server(server)
            log.close()
    finally:
        import shutil

        shutil.rmtree(work, ignore_errors=True)


def bench_day(args) -> None:
    """A day of the catalog with `batch:` against the stand-in's limits, answered through the API."""
    from api.app import create_app
    from api_support import live_server, make_token
    from github_standin import ActionPlayer, GitHubStandIn
    from reconciler.dispatch import dispatcher_from_settings

    with tempfile.TemporaryDirectory() as folder:
        store = build(Path(folder), args.services, args.checks, args.batch, daily=True)
        pairs = args.services * args.checks
        clock = FakeClock()
        action = ActionPlayer(make_token(store, "results:write", name="action"))
        started = time.perf_counter()
        with live_server(create_app(store, Settings(home=Path(folder)), sync_trigger=lambda: None, clock=clock)) as server, \
                GitHubStandIn(token="bench", clock=clock, on_dispatch=action) as github:
            config = Settings.resolve({"github_api_url": github.url, "github_token": "bench", "server_url": server}, {})
            dispatcher = dispatcher_from_settings(config, clock=clock, store=store)
            start = clock.now()
            while len(action.answered) < pairs and clock.now() < start + timedelta(days=1):
                run_pass(store, dispatcher, settings=config, clock=clock)
                clock.advance(60)
            simulated = clock.now() - start
        print(f"simulated day, {pairs:,} pairs, batch: {args.batch}: {len(github.dispatches):,} dispatches"
              f" (ceil = {args.checks * math.ceil(args.services / args.batch):,}), {github.limited} answered 403,"
              f" {len(action.answered):,} answered once ({len(set(action.answered)):,} distinct),"
              f" {action.fetched} lists read from GET /api/batches; all answered after {simulated} of simulated"
              f" time, in {time.perf_counter() - started:.0f} s of real time")


def bench_done(args) -> None:
    """`batch: 200` over N services: N / 200 dispatches, one bulk PATCH each, written back once."""
    from api.app import create_app
    from api_support import live_server, make_token
    from e2e_support import history_ids
    from github_standin import ActionPlayer, GitHubStandIn
    from reconciler.dispatch import dispatcher_from_settings
    from reconciler.writeback import writeback_pass

    with tempfile.TemporaryDirectory() as folder:
        home = Path(folder)
        store = build(home, args.services, 1, 200, daily=True)
        clock = FakeClock()
        action = ActionPlayer(make_token(store, "results:write", name="action"))
        started = time.perf_counter()
        with live_server(create_app(store, Settings(home=home), sync_trigger=lambda: None, clock=clock)) as server, \
                GitHubStandIn(token="bench", clock=clock, on_dispatch=action) as github:
            config = Settings.resolve({"github_api_url": github.url, "github_token": "bench", "server_url": server,
                                       "home": str(home), "repo": str(home / "catalog")}, {})
            report = run_pass(store, dispatcher_from_settings(config, clock=clock, store=store), settings=config, clock=clock)
        dispatched = time.perf_counter() - started
        bulk = sum(1 for r in github.dispatches if "batch" in r.body["client_payload"])
        first = writeback_pass(store, config, clock=clock)
        again = writeback_pass(store, config, clock=clock)
        ids = history_ids(home / "results.git")
        print(f"batch: 200 over {args.services:,} services: {len(github.dispatches)} dispatches ({bulk} batches,"
              f" every body valid against GitHub's schema: {all(not r.problems for r in github.requests)}),"
              f" {len(report.dispatched):,} results dispatched, {len(action.answered):,} answered by one bulk PATCH per batch in"
              f" {dispatched:.1f} s; written back: {len(ids):,} history lines, {len(set(ids)):,} distinct,"
              f" in {len(first.commits)} commit(s); a second pass wrote {len(again.written)}")


if __name__ == "__main__":
    main()
