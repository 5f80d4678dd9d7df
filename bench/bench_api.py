"""Load-test the API with wrk from a separate process: PATCH of distinct results, GET of a service.

    python3 bench/bench_api.py [--services 10000] [--checks 50] [--duration 10] [--connections 32] [--cache DIR]
                               [--database-url URL | --postgres] [--processes N]

Builds a catalog of N services x M checks (synced through the real reconciler), one result per pair
(most completed, made and answered through the product's own calls), starts `catalog serve` (uvicorn:
uvloop + httptools; `--processes 2` starts two on one database behind nothing: wrk's threads split
between them), then runs `wrk -t2 -cC` and prints requests/s, p50/p99 latency, errors and RSS.

The store is SQLite in a temporary home, or `--database-url postgresql://...` (an empty database), or
`--postgres`: a throwaway PostgreSQL 15 started here (synchronous_commit=off, as the reference).
Targets (issue 4): PATCH >= 2,000 req/s with p99 <= 25 ms; GET service >= 3,000 req/s; RSS <= 150 MB.
Targets (issue 11, PostgreSQL): PATCH >= 2,000 req/s at p99 <= 30 ms in one process; two >= 1.15x one.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import requests

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))

from bench.machine import cpu_seconds, describe, probe, status_mb  # noqa: E402
from conftest import write_catalog  # noqa: E402
from reconciler.clock import Clock, format_time  # noqa: E402
from reconciler.gitsource import DirectorySource  # noqa: E402
from reconciler.reconcile import sync  # noqa: E402
from reconciler.schedule import NEVER  # noqa: E402
from reconciler.store import Database, open_database  # noqa: E402
from reconciler.store.migrations import MIGRATIONS as SQLITE_MIGRATIONS  # noqa: E402
from reconciler.tokens import create_token  # noqa: E402

PATCH_LUA = """
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
  wrk.body = "result=pass&message=bench"
end
function request()
  local id = counter
  counter = counter + 1
  return wrk.format(nil, "/api/results/" .. id .. "/")
end
"""

GET_LUA = """
function init(args)
  wrk.headers["Authorization"] = "Token TOKEN"
  math.randomseed(os.time() + math.floor(os.clock() * 1e6))
end
function request()
  return wrk.format("GET", string.format("/api/services/service-%05d", math.random(1, SERVICES)))
end
"""

DONE_LUA = """
function done(summary, latency, requests)
  io.write(string.format("RESULT requests=%d duration_us=%d p50_us=%d p99_us=%d status_errors=%d socket_errors=%d\\n",
    summary.requests, summary.duration, latency:percentile(50), latency:percentile(99),
    summary.errors.status, summary.errors.connect + summary.errors.read + summary.errors.write + summary.errors.timeout))
end
"""


def build_catalog(root: Path, services: int, checks: int) -> None:
    types = ("web", "worker", "db", "batch")
    write_catalog(
        root,
        [{"name": f"Service {n:05d}", "slug": f"service-{n:05d}", "priority": n % 10 + 1, "type": types[n % 4],
          "owner": f"team-{n % 40}", "tags": [f"tier-{n % 3}", "bench"], "meta": {"slack_channel": f"#svc-{n}"}}
         for n in range(1, services + 1)],
        [{"name": f"Check {n:02d}", "slug": f"check-{n:02d}", "frequency": "daily", "services": "all"}
         for n in range(1, checks + 1)],
    )


def fill_results(store: Database, *, pending: int) -> range:
    """One result per (check, service), made as a scheduler pass makes them; all answered but the
    last `pending` (by id), which the PATCH run answers."""
    now = Clock().now()
    stamp = format_time(now)
    checks = [row["id"] for row in store.catalog.check_index().values()]
    created = store.dispatch.create_due([(check_id, NEVER) for check_id in checks], now=stamp, revision=None,
                                        claim_until=stamp, holder="bench")
    ids = [row["id"] for row in created]
    answered = ids[:-pending]
    for start in range(0, len(answered), 2000):
        batch = answered[start:start + 2000]
        store.results.answer([(rid, ("pass", "fail", "warning")[rid % 3], None, None, now) for rid in batch])
    return range(ids[-pending], ids[-1] + 1)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def start_server(log, env: dict[str, str], *options: str) -> tuple[subprocess.Popen, str]:
    """`catalog serve` in its own process on a free loopback port, once it answers /healthz: (the
    process, its base URL). `env` adds to this process's environment; `options` go to `serve`."""
    port = free_port()
    server = subprocess.Popen([sys.executable, "-m", "api.cli", "serve", "--port", str(port), *options],
                              env={**os.environ, **env}, stdout=log, stderr=log, cwd=ROOT)
    base = f"http://127.0.0.1:{port}"
    for _ in range(300):
        if server.poll() is not None:
            raise SystemExit(f"the server exited with {server.returncode}; see {log.name}")
        try:
            requests.get(base + "/healthz", timeout=1)
            return server, base
        except requests.ConnectionError:
            time.sleep(0.1)
    server.terminate()
    raise SystemExit(f"the server did not answer /healthz within 30 s; see {log.name}")


def stop_server(server: subprocess.Popen) -> None:
    server.terminate()
    server.wait(timeout=30)


def run_wrk(script: str, url: str, *, duration: int, connections: int, pid: int) -> dict:
    """wrk's figures, and the server's (`pid`) CPU per request over the run as `cpu_us`."""
    cpu = cpu_seconds(pid)
    with tempfile.NamedTemporaryFile("w", suffix=".lua", delete=False) as handle:
        handle.write(script + DONE_LUA)
    output = subprocess.run(["wrk", "-t2", f"-c{connections}", f"-d{duration}s", "--latency", "-s", handle.name, url],
                            capture_output=True, text=True, check=True).stdout
    os.unlink(handle.name)
    line = next(line for line in output.splitlines() if line.startswith("RESULT "))
    figures = dict(item.split("=") for item in line.split()[1:])
    figures = {key: int(value) for key, value in figures.items()}
    figures["rps"] = figures["requests"] / (figures["duration_us"] / 1e6)
    figures["cpu_us"] = (cpu_seconds(pid) - cpu) / max(figures["requests"], 1) * 1e6
    return figures


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--services", type=int, default=10_000)
    parser.add_argument("--checks", type=int, default=50)
    parser.add_argument("--duration", type=int, default=10)
    parser.add_argument("--connections", type=int, default=32)
    parser.add_argument("--cache", type=Path, default=None,
                        help="keep the built SQLite store in this folder and start later runs from a copy of it")
    parser.add_argument("--database-url", help="an empty PostgreSQL (or SQLite) database to build the store in")
    parser.add_argument("--postgres", action="store_true", help="start a throwaway PostgreSQL server for the run")
    parser.add_argument("--processes", type=int, default=1, help="`catalog serve` processes on the one database")
    args = parser.parse_args()
    if not shutil.which("wrk"):
        print("wrk is missing: apt-get install -y wrk", file=sys.stderr)
        return 1

    print(describe(probe()), "(before)")
    work = Path(tempfile.mkdtemp(prefix="bench-api-"))
    home = work / "home"
    server_pg = None
    if args.postgres:
        from postgres_server import PostgresServer

        server_pg = PostgresServer().start()
        args.database_url = server_pg.new_database()
    database_url = args.database_url or f"sqlite://{home / 'catalog.db'}"
    if args.database_url:
        args.cache = None  # only a SQLite file is cached
    print(f"database: {open_database(database_url, migrate=False).describe()}")
    try:
        started = time.perf_counter()
        pending = max(60_000, 5000 * args.duration)
        # The schema's fingerprint in the name: a store built under other migrations is never reused.
        schema = hashlib.sha1(repr(SQLITE_MIGRATIONS).encode()).hexdigest()[:8]
        cached = args.cache / f"api-{args.services}x{args.checks}-{pending}-{schema}" if args.cache else None
        if cached and (cached / "setup.json").exists():
            # A copy of a store built before: the setup (a sync of N files, N x M results) takes minutes.
            home.mkdir(parents=True, exist_ok=True)  # describe() above may have made it
            shutil.copyfile(cached / "catalog.db", home / "catalog.db")
            setup = json.loads((cached / "setup.json").read_text())
            ids, writer, reader = range(*setup["ids"]), setup["writer"], setup["reader"]
        else:
            build_catalog(work / "catalog", args.services, args.checks)
            store = open_database(database_url)
            report = sync(store, DirectorySource(work / "catalog"))
            assert report.outcome == "applied" and not report.errors, report
            ids = fill_results(store, pending=pending)
            writer = create_token(store, "bench-writer", ["results:write"], now=Clock().now())
            reader = create_token(store, "bench-reader", ["read"], now=Clock().now())
            store.results.checkpoint()
            store.close()
            if cached:
                cached.mkdir(parents=True, exist_ok=True)
                shutil.copyfile(home / "catalog.db", cached / "catalog.db")
                (cached / "setup.json").write_text(json.dumps(
                    {"ids": [ids.start, ids.stop], "writer": writer, "reader": reader}))
        print(f"setup: {args.services} services x {args.checks} checks, "
              f"{ids.stop - 1} results, in {time.perf_counter() - started:.1f}s")

        log = open(work / "server.log", "w")
        started_servers = [start_server(log, {"CATALOG_HOME": str(home), "CATALOG_DATABASE_URL": database_url})
                           for _ in range(args.processes)]
        servers, bases = [server for server, _ in started_servers], [base for _, base in started_servers]
        server, base = servers[0], bases[0]
        print(f"servers: {len(servers)}, pid {server.pid}, RSS at start {status_mb('VmRSS', server.pid):.0f} MB")
        try:
            per_thread = len(ids) // (2 * len(servers))  # wrk's two threads per server, each its own ids
            open_before = open_count(database_url)
            load = {"duration": args.duration, "connections": args.connections, "pid": server.pid}
            script = PATCH_LUA.replace("FIRST", str(ids.start)).replace("PER_THREAD", str(per_thread)).replace("TOKEN", writer)
            if len(servers) > 1:  # wrk's two threads, one on each server: a load balancer's split
                patch = run_wrk_split(script, bases, **load)
            else:
                patch = run_wrk(script, base, **load)
            done = open_before - open_count(database_url)
            print(f"PATCH /api/results/{{id}}/ (distinct pending, form body): {patch['rps']:,.0f} req/s, "
                  f"p50 {patch['p50_us'] / 1000:.1f} ms, p99 {patch['p99_us'] / 1000:.1f} ms, "
                  f"non-2xx {patch['status_errors']}, socket errors {patch['socket_errors']}, "
                  f"server CPU {patch['cpu_us']:.0f} us/request  "
                  f"[target >= 2,000 req/s, p99 <= 25 ms]")
            print(f"  results completed by the run (from the store): {done:,} of {patch['requests']:,} requests")
            get = run_wrk(GET_LUA.replace("SERVICES", str(args.services)).replace("TOKEN", reader), base, **load)
            print(f"GET /api/services/{{slug}} ({args.services} services x {args.checks} checks): {get['rps']:,.0f} req/s, "
                  f"p50 {get['p50_us'] / 1000:.1f} ms, p99 {get['p99_us'] / 1000:.1f} ms, "
                  f"non-2xx {get['status_errors']}, socket errors {get['socket_errors']}, "
                  f"server CPU {get['cpu_us']:.0f} us/request  [target >= 3,000 req/s]")
            health = run_wrk('', base + "/healthz", **load)
            print(f"GET /healthz (the reference: the framework alone under today's machine load): "
                  f"{health['rps']:,.0f} req/s, p99 {health['p99_us'] / 1000:.1f} ms, "
                  f"server CPU {health['cpu_us']:.0f} us/request")
            print(f"server RSS after the runs: {status_mb('VmRSS', server.pid):.0f} MB  [target <= 150 MB]")
            print(describe(probe()), "(after)")
        finally:
            for server in servers:
                stop_server(server)
            log.close()
    finally:
        shutil.rmtree(work, ignore_errors=True)
        if server_pg is not None:
            server_pg.stop()
    return 0


def open_count(database_url: str) -> int:
    """Open (pending or sent) results now, read through the store."""
    store = open_database(database_url, migrate=False)
    try:
        return store.pages.version()[2]
    finally:
        store.close()


def run_wrk_split(script: str, bases: list[str], *, duration: int, connections: int, pid: int) -> dict:
    """Two wrk processes at once, one per server, each with half the connections; figures summed
    (requests/s) and the worse of the two (p99)."""
    import concurrent.futures

    with concurrent.futures.ThreadPoolExecutor(len(bases)) as pool:
        # each wrk gets its own range of ids: the first half and the second half of the pending ones
        runs = list(pool.map(lambda i: run_wrk(_half(script, i, len(bases)), bases[i], duration=duration,
                                               connections=connections // len(bases), pid=pid), range(len(bases))))
    return {"rps": sum(r["rps"] for r in runs), "p50_us": max(r["p50_us"] for r in runs),
            "p99_us": max(r["p99_us"] for r in runs), "status_errors": sum(r["status_errors"] for r in runs),
            "socket_errors": sum(r["socket_errors"] for r in runs), "cpu_us": runs[0]["cpu_us"],
            "requests": sum(r["requests"] for r in runs)}


def _half(script: str, index: int, parts: int) -> str:
    """The PATCH script for wrk number `index`: its threads start in its own share of the ids."""
    return script.replace("thread_index = 0", f"thread_index = {index * 2}")


if __name__ == "__main__":
    sys.exit(main())
