"""Notifications: what event creation costs PATCH, how fast the sender delivers, and digest folding.

    python3 bench/bench_notify.py [--services 2000] [--checks 30] [--duration 8] [--connections 32]
                                  [--events 10000] [--database-url URL | --postgres]

0. The answer path in process (no HTTP): CPU per answer of `db.results.answer`, with and without
   the event triggers, for the three workloads below. Target: <= 5%.
1. PATCH throughput with wrk (as bench_api.py), in one run, each on a fresh copy of one store, for three
   workloads: no answer changes its pair's state (no event), 1 answer in 20 fails (a `failing` event
   each), every answer fails (the worst case: an event per answer):
   - reference: `catalog serve` on a copy without the triggers that record failing / recovered;
   - events: the real server, no sender running;
   - events + routes (1 in 20 only): the real server while a sender process (a pass every
     CATALOG_NOTIFY_INTERVAL seconds, as `catalog up` runs it) delivers the routes' messages.
   Target (issue 14): event creation costs <= 5% of the reference's requests/s, with and without routes.
2. --events pending events delivered by `notify_pass` to a loopback receiver, through the signed
   webhook and through Apprise's json://. Target: >= 500 events/s.
3. A digest route with 1,000 events of one team: the messages sent when its window closes. Target: 1.

SQLite in a temporary home by default (each variant starts from a copy of the built file); with
PostgreSQL each variant builds its own database (a copy of a database costs as much as building it).
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from datetime import timedelta
from pathlib import Path

import requests
import yaml

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))

from bench.bench_api import build_catalog, fill_results, run_wrk, start_server, stop_server  # noqa: E402
from bench.machine import describe, probe  # noqa: E402
from reconciler.clock import Clock, FakeClock  # noqa: E402
from reconciler.events import Event  # noqa: E402
from reconciler.gitsource import DirectorySource  # noqa: E402
from reconciler.notify import DEFAULT_INTERVAL, notify_pass  # noqa: E402
from reconciler.reconcile import sync  # noqa: E402
from reconciler.store import open_database  # noqa: E402
from reconciler.tokens import create_token  # noqa: E402

SECRET = "bench-secret"
FAIL_LUA = """
thread_index = 0
function setup(thread)
  thread:set("first", FIRST + thread_index * PER_THREAD)
  thread_index = thread_index + 1
end
function init(args)
  counter = first
  wrk.method = "PATCH"
  wrk.headers["Authorization"] = "token TOKEN"
  wrk.headers["Content-Type"] = "application/x-www-form-urlencoded"
end
function request()
  local id = counter
  counter = counter + 1
  local body = "result=pass&message=bench"
  if FLIP > 0 and id % FLIP == 0 then body = "result=fail&message=bench" end
  return wrk.format(nil, "/api/results/" .. id .. "/", nil, body)
end
"""
# The reference: the same store and server with the two triggers that record failing / recovered
# dropped (migration 6), i.e. the answer path without event creation. Only this benchmark does this.
EVENT_TRIGGERS = ("events_on_first_result", "events_on_changed_result")


def drop_event_triggers(database_url: str) -> None:
    store = open_database(database_url, migrate=False)
    with store.transaction() as session:
        for trigger in EVENT_TRIGGERS:
            session.run(f"DROP TRIGGER {trigger}" + (" ON latest_results" if store.dialect.name == "postgresql" else ""))
    store.close()


# The sender as `catalog up` runs it: a pass every CATALOG_NOTIFY_INTERVAL (default) seconds.
SENDER = (
    "import sys, time; from reconciler.store import open_database; from reconciler.notify import notify_pass\n"
    "db = open_database(sys.argv[1])\n"
    "print('ready', flush=True)\n"
    "while True:\n    notify_pass(db)\n    time.sleep(float(sys.argv[2]))\n"
)


class ReceiverProcess:
    """tests/notify_receiver.py's receiver in a process of its own (a receiver is not the sender's
    guest: in one process they would share one interpreter lock); its figures come from GET /."""

    def __init__(self):
        self.process = subprocess.Popen(
            [sys.executable, "-c", "import sys, threading; from notify_receiver import Receiver;"
             f" r = Receiver(secret={SECRET!r}).start(); print(r.port, flush=True); threading.Event().wait()"],
            env={**os.environ, "PYTHONPATH": f"{ROOT / 'tests'}:{ROOT}"}, stdout=subprocess.PIPE, text=True)
        self.port = int(self.process.stdout.readline())
        self.url = f"http://127.0.0.1:{self.port}/hook"

    def stats(self) -> dict:
        return requests.get(f"http://127.0.0.1:{self.port}/", timeout=10).json()

    def __enter__(self) -> "ReceiverProcess":
        return self

    def __exit__(self, *exc) -> None:
        self.process.terminate()
        self.process.wait(10)


def routes_config(port: int) -> dict:
    return {"notifications": [
        {"name": "every-team", "webhook_env": "BENCH_HOOK_URL", "secret_env": "BENCH_HOOK_SECRET"},
        {"name": "team-1", "url_env": "BENCH_APPRISE_URL", "services": {"owner": "team-1"}},
    ]}


def build(database_url: str, work: Path, services: int, checks: int, pending: int, port: int):
    """A synced store with routes, one open result per pair, the last `pending` unanswered; (ids, token)."""
    catalog = work / "catalog"
    if not catalog.exists():
        build_catalog(catalog, services, checks)
        (catalog / "catalog.yaml").write_text(yaml.safe_dump(routes_config(port)))
    store = open_database(database_url)
    report = sync(store, DirectorySource(catalog))
    assert report.outcome == "applied" and not report.errors, report
    ids = fill_results(store, pending=pending)
    list(store.events.list(limit=1))
    writer = create_token(store, "bench-writer", ["results:write"], now=Clock().now())
    store.results.checkpoint()
    store.close()
    return ids, writer


def patch_run(name: str, database_url: str, home: Path, ids: range, writer: str, args, *, events: bool,
              sender_env: dict | None, log, flip: int) -> dict:
    if not events:
        drop_event_triggers(database_url)
    server, base = start_server(log, {"CATALOG_HOME": str(home), "CATALOG_DATABASE_URL": database_url})
    sender = None
    if sender_env is not None:
        sender = subprocess.Popen([sys.executable, "-c", SENDER, database_url, str(args.notify_interval)],
                                  env={**os.environ, **sender_env}, stdout=subprocess.PIPE, stderr=log, cwd=ROOT,
                                  text=True)
        sender.stdout.readline()  # started (its imports are not the server's load)
    try:
        per_thread = len(ids) // 2
        script = (FAIL_LUA.replace("FIRST", str(ids.start)).replace("PER_THREAD", str(per_thread))
                  .replace("TOKEN", writer).replace("FLIP", str(flip)))
        figures = run_wrk(script, base, duration=args.duration, connections=args.connections, pid=server.pid)
    finally:
        stop_server(server)
        if sender is not None:
            sender.terminate()
            sender.wait(timeout=30)
    store = open_database(database_url, migrate=False)
    figures["events"] = len(store.events.list(type="failing", limit=10**9))
    store.close()
    print(f"  {name:24s} {figures['rps']:7,.0f} req/s  p50 {figures['p50_us'] / 1000:5.1f} ms"
          f"  p99 {figures['p99_us'] / 1000:5.1f} ms  non-2xx {figures['status_errors']}"
          f"  server CPU {figures['cpu_us']:.0f} us/request  events recorded {figures['events']:,}", flush=True)
    return figures


def delivery_run(database_url: str, count: int, receiver: ReceiverProcess, *, channel: str) -> None:
    store = open_database(database_url)
    now = Clock().now()
    for start in range(0, count, 1000):
        store.events.emit([Event("failing", f"service-{n:05d}: check bench is failing (fail)", team="team-1",
                                 service=f"service-{n:05d}", check="bench", outcome="fail")
                           for n in range(start, min(count, start + 1000))], now=now)
    config = {"notifications": [
        {"name": "webhook", "webhook_env": "BENCH_HOOK_URL", "secret_env": "BENCH_HOOK_SECRET"} if channel == "webhook"
        else {"name": "apprise", "url_env": "BENCH_APPRISE_URL"}]}
    store.state.set({"catalog_config": config})
    env = {"BENCH_HOOK_URL": receiver.url, "BENCH_HOOK_SECRET": SECRET,
           "BENCH_APPRISE_URL": f"json://127.0.0.1:{receiver.port}/apprise"}
    before = receiver.stats()["event_ids"]
    started = time.perf_counter()
    report = notify_pass(store, environ=env)
    took = time.perf_counter() - started
    received = receiver.stats()["event_ids"] - before
    print(f"  {channel:8s} {count:,} pending events: {report.delivered:,} delivered, {received:,} event ids received,"
          f" in {took:.2f} s = {report.delivered / took:,.0f} events/s  [target >= 500/s]", flush=True)
    store.close()


def digest_run(database_url: str, receiver: ReceiverProcess) -> None:
    store = open_database(database_url)
    clock = FakeClock()
    store.state.set({"catalog_config": {"notifications": [
        {"name": "daily", "webhook_env": "BENCH_HOOK_URL", "secret_env": "BENCH_HOOK_SECRET", "digest": "daily"}]}})
    store.events.emit([Event("failing", f"service-{n:05d}: check digest is failing (fail)", team="team-digest",
                             service=f"service-{n:05d}", check="digest") for n in range(1000)], now=clock.now())
    env = {"BENCH_HOOK_URL": receiver.url, "BENCH_HOOK_SECRET": SECRET}
    before = receiver.stats()
    routed = notify_pass(store, environ=env, clock=clock)
    clock.advance(timedelta(days=1))
    started = time.perf_counter()
    notify_pass(store, environ=env, clock=clock)
    took = time.perf_counter() - started
    after = receiver.stats()
    carried = after["event_ids"] - before["event_ids"]
    print(f"  digest of 1,000 events of one team: {routed.messages} messages while the window is open, then"
          f" {after['messages'] - before['messages']} message(s) received carrying {carried:,} event ids"
          f" ({after['last_bytes'] / 1024:.0f} KiB; {after['signed'] - before['signed']} with a valid signature)"
          f" in {took * 1000:.0f} ms  [target: 1 message]", flush=True)
    store.close()


WORKLOADS = (("no answer changes a pair", 0), ("1 answer in 20 fails", 20), ("every answer fails", 1))


def answer_cost_section(args, work: Path, new_url, postgres: bool) -> None:
    """The answer path's own cost, without HTTP or wrk: CPU seconds of `db.results.answer` in batches of
    8 (as the API's batches under load), on two copies of one store, alternating chunks, the best chunk
    of each. Steadier than requests/s on a shared machine: it counts this process's CPU only."""
    chunk, rounds = 800, args.rounds
    pairs = chunk * rounds * len(WORKLOADS) + 100
    checks = 20
    services = -(-pairs // checks)
    print(f"Answer path, in process: db.results.answer in batches of 8, {rounds} chunks of {chunk} answers"
          f" per variant and workload, best chunk; reference -> with events (SQLite: this process's CPU is all"
          f" the work; PostgreSQL: the triggers run in the server, wall time counts):", flush=True)
    (work / "answers").mkdir()
    build_catalog(work / "answers" / "catalog", services, checks)
    reference_url = new_url("answers-reference")
    store = open_database(reference_url)
    sync(store, DirectorySource(work / "answers" / "catalog"))
    ids = list(fill_results(store, pending=services * checks - 100))
    store.close()
    if postgres:
        events_url = new_url("answers-events")
        store = open_database(events_url)
        sync(store, DirectorySource(work / "answers" / "catalog"))
        assert list(fill_results(store, pending=services * checks - 100)) == ids
        store.close()
    else:
        (work / "answers-events").mkdir()
        shutil.copyfile(work / "answers-reference" / "catalog.db", work / "answers-events" / "catalog.db")
        events_url = new_url("answers-events")
    drop_event_triggers(reference_url)
    stores = {"reference": open_database(reference_url), "events": open_database(events_url)}
    now = Clock().now()
    position = 0
    for label, flip in WORKLOADS:
        best: dict[tuple[str, str], float] = {}
        for _ in range(rounds):
            part = ids[position:position + chunk]
            position += chunk
            for name, store in stores.items():
                cpu, wall = time.process_time(), time.perf_counter()
                for start in range(0, len(part), 8):
                    store.results.answer([(rid, "fail" if flip and rid % flip == 0 else "pass", "bench", None, now)
                                          for rid in part[start:start + 8]])
                for kind, spent in (("cpu", time.process_time() - cpu), ("wall", time.perf_counter() - wall)):
                    spent = spent / len(part) * 1e6
                    best[name, kind] = min(best.get((name, kind), spent), spent)
        events = len(stores["events"].events.list(limit=10**9))
        figures = "; ".join(
            f"{kind} {best['reference', kind]:4.0f} -> {best['events', kind]:4.0f} us/answer"
            f" ({(best['events', kind] / best['reference', kind] - 1) * 100:+.1f}%)" for kind in ("cpu", "wall"))
        print(f"  {label:26s} {figures}  [target <= 5%]  ({events:,} events so far)", flush=True)
    for store in stores.values():
        store.close()


def patch_section(args, work: Path, receiver: "ReceiverProcess", new_url, postgres: bool) -> None:
    """Each workload on fresh copies of one store: the reference (no event triggers), then with events,
    then (for the middle workload) with the sender delivering the routes' messages meanwhile."""
    pending = args.services * args.checks - 100
    print(f"PATCH of distinct pending results (each pair's first answer: a `fail` records a `failing` event),"
          f" {args.services} services x {args.checks} checks, wrk -t2 -c{args.connections} -d{args.duration}s:", flush=True)
    log = open(work / "servers.log", "w")
    started = time.perf_counter()
    built = new_url("built")
    ids, _ = build(built, work, args.services, args.checks, pending, receiver.port)
    print(f"  setup {time.perf_counter() - started:.1f} s; {len(ids):,} pending results in each copy", flush=True)
    sender_env = {"BENCH_HOOK_URL": receiver.url, "BENCH_HOOK_SECRET": SECRET,
                  "BENCH_APPRISE_URL": f"json://127.0.0.1:{receiver.port}/apprise"}
    copies = 0

    def fresh() -> tuple[str, Path, str]:
        nonlocal copies
        copies += 1
        name = f"copy{copies}"
        if postgres:
            url = new_url(name)
            build(url, work, args.services, args.checks, pending, receiver.port)
        else:
            (work / name).mkdir()
            shutil.copyfile(work / "built" / "catalog.db", work / name / "catalog.db")
            url = new_url(name)
        store = open_database(url, migrate=False)
        token = create_token(store, f"bench-{name}", ["results:write"], now=Clock().now())
        store.close()
        return url, work / name, token

    for label, flip in WORKLOADS:
        print(f" {label}:")
        runs: dict[str, dict] = {}
        for _ in range(args.repeat):  # alternating, best of each: the machine is shared and noisy
            for name, events, sender in (("reference (no events)", False, False), ("events", True, False),
                                         ("events + routes (sending)", True, True)):
                if sender and flip != 20:
                    continue
                url, home, token = fresh()
                figures = patch_run(name, url, home, ids, token, args, events=events, log=log, flip=flip,
                                    sender_env=sender_env if sender else None)
                if name not in runs or figures["rps"] > runs[name]["rps"]:
                    runs[name] = figures
                shutil.rmtree(home, ignore_errors=True)
        reference = runs.pop("reference (no events)")
        for name, figures in runs.items():
            print(f"   {name}: {(figures['rps'] / reference['rps'] - 1) * 100:+.1f}% requests/s,"
                  f" {(figures['cpu_us'] / reference['cpu_us'] - 1) * 100:+.1f}% server CPU per request"
                  f" against the reference  [target: <= 5% fewer requests/s]", flush=True)
    log.close()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--services", type=int, default=2000)
    parser.add_argument("--checks", type=int, default=30)
    parser.add_argument("--duration", type=int, default=8)
    parser.add_argument("--connections", type=int, default=32)
    parser.add_argument("--events", type=int, default=10_000)
    parser.add_argument("--notify-interval", type=float, default=DEFAULT_INTERVAL,
                        help="seconds between the sender's passes during the PATCH run (catalog up: CATALOG_NOTIFY_INTERVAL)")
    parser.add_argument("--repeat", type=int, default=2, help="runs of each variant, alternating; the best one counts")
    parser.add_argument("--rounds", type=int, default=8, help="chunks per variant and workload in the in-process answer bench")
    parser.add_argument("--database-url", help="a PostgreSQL server URL: each step gets a database of its own there")
    parser.add_argument("--postgres", action="store_true", help="start a throwaway PostgreSQL server for the run")
    parser.add_argument("--skip-patch", action="store_true", help="only the sender and digest figures")
    parser.add_argument("--skip-wrk", action="store_true", help="no wrk runs (the in-process answer figures stay)")
    args = parser.parse_args()
    print(describe(probe()), "(before)")
    work = Path(tempfile.mkdtemp(prefix="bench-notify-"))
    server_pg = None
    if args.postgres:
        from postgres_server import PostgresServer

        server_pg = PostgresServer().start()

    def new_url(name: str) -> str:
        if server_pg is not None:
            return server_pg.new_database()
        return f"sqlite://{work / name / 'catalog.db'}"

    try:
        with ReceiverProcess() as receiver:
            if not args.skip_patch:
                answer_cost_section(args, work, new_url, server_pg is not None)
                if not args.skip_wrk:
                    patch_section(args, work, receiver, new_url, server_pg is not None)
            print("Sender (notify_pass), loopback receiver:", flush=True)
            delivery_run(new_url("deliver-webhook"), args.events, receiver, channel="webhook")
            delivery_run(new_url("deliver-apprise"), args.events, receiver, channel="apprise")
            digest_run(new_url("digest"), receiver)
        print(describe(probe()), "(after)")
    finally:
        shutil.rmtree(work, ignore_errors=True)
        if server_pg is not None:
            server_pg.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
