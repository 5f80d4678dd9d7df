"""Load-test the API with wrk from a separate process: PATCH of distinct results, GET of a service.

    python3 bench/bench_api.py [--services 10000] [--checks 50] [--duration 10] [--connections 32] [--cache DIR]

Builds a catalog of N services x M checks (synced through the real reconciler), one result per pair
(most completed), starts `catalog serve` (one uvicorn process: uvloop + httptools), then runs
`wrk -t2 -cC` twice and prints requests/s, p50/p99 latency, errors and the server's RSS.
Targets (issue 4): PATCH >= 2,000 req/s with p99 <= 25 ms; GET service >= 3,000 req/s; RSS <= 150 MB.
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

from bench.machine import cpu_seconds, describe, probe  # noqa: E402
from conftest import write_catalog  # noqa: E402
from reconciler.clock import Clock  # noqa: E402
from reconciler.gitsource import DirectorySource  # noqa: E402
from reconciler.reconcile import sync  # noqa: E402
from reconciler.store import Database, open_database  # noqa: E402
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
    """One result per (check, service), 90% completed; then `pending` open results to PATCH."""
    now = Clock().now()
    services = [row["id"] for row in store.catalog.service_index().values()]
    checks = [row["id"] for row in store.catalog.check_index().values()]
    with store.transaction():  # the store's calls join this one transaction: one commit, fast
        for i, service_id in enumerate(services):
            for j, check_id in enumerate(checks):
                row = store.create_result(check_id, service_id, now=now)
                if (i + j) % 10:
                    store.results.complete(row["id"], ("pass", "fail", "warning")[(i * j) % 3], now=now)
        first = None
        for k in range(pending):
            row = store.create_result(checks[k % len(checks)], services[k % len(services)], now=now)
            first = row["id"] if first is None else first
    return range(first, first + pending)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


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


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--services", type=int, default=10_000)
    parser.add_argument("--checks", type=int, default=50)
    parser.add_argument("--duration", type=int, default=10)
    parser.add_argument("--connections", type=int, default=32)
    parser.add_argument("--cache", type=Path, default=None,
                        help="keep the built store in this folder and start later runs from a copy of it")
    args = parser.parse_args()
    if not shutil.which("wrk"):
        print("wrk is missing: apt-get install -y wrk", file=sys.stderr)
        return 1

    print(describe(probe()), "(before)")
    work = Path(tempfile.mkdtemp(prefix="bench-api-"))
    home = work / "home"
    try:
        started = time.perf_counter()
        pending = max(60_000, 5000 * args.duration)
        # The schema's fingerprint in the name: a store built under other migrations is never reused.
        schema = hashlib.sha1(repr(MIGRATIONS).encode()).hexdigest()[:8]
        cached = args.cache / f"api-{args.services}x{args.checks}-{pending}-{schema}" if args.cache else None
        if cached and (cached / "setup.json").exists():
            # A copy of a store built before: the setup (a sync of N files, N x M results) takes minutes.
            home.mkdir(parents=True)
            shutil.copyfile(cached / "catalog.db", home / "catalog.db")
            setup = json.loads((cached / "setup.json").read_text())
            ids, writer, reader = range(*setup["ids"]), setup["writer"], setup["reader"]
        else:
            build_catalog(work / "catalog", args.services, args.checks)
            store = open_database(home / "catalog.db")
            report = sync(store, DirectorySource(work / "catalog"))
            assert report.outcome == "applied" and not report.errors, report
            ids = fill_results(store, pending=pending)
            writer = create_token(store, "bench-writer", ["results:write"], now=Clock().now())
            reader = create_token(store, "bench-reader", ["read"], now=Clock().now())
            store.connection.execute("PRAGMA wal_checkpoint(TRUNCATE)")
            store.close()
            if cached:
                cached.mkdir(parents=True, exist_ok=True)
                shutil.copyfile(home / "catalog.db", cached / "catalog.db")
                (cached / "setup.json").write_text(json.dumps(
                    {"ids": [ids.start, ids.stop], "writer": writer, "reader": reader}))
        print(f"setup: {args.services} services x {args.checks} checks, "
              f"{ids.stop - 1} results, in {time.perf_counter() - started:.1f}s")

        port = free_port()
        log = open(work / "server.log", "w")
        server = subprocess.Popen([sys.executable, "-m", "api.cli", "serve", "--port", str(port)],
                                  env={**os.environ, "CATALOG_HOME": str(home)}, stdout=log, stderr=log, cwd=ROOT)
        base = f"http://127.0.0.1:{port}"
        for _ in range(200):
            if server.poll() is not None:
                raise SystemExit(f"the server exited: {(work / 'server.log').read_text()[-2000:]}")
            try:
                requests.get(base + "/healthz", timeout=1)
                break
            except requests.ConnectionError:
                time.sleep(0.1)
        print(f"server: pid {server.pid}, RSS at start {rss_mb(server.pid):.0f} MB")
        try:
            per_thread = len(ids) // 2
            open_before = open_database(home / "catalog.db").dashboard_version()[2]
            load = {"duration": args.duration, "connections": args.connections, "pid": server.pid}
            patch = run_wrk(PATCH_LUA.replace("FIRST", str(ids.start)).replace("PER_THREAD", str(per_thread))
                            .replace("TOKEN", writer), base, **load)
            done = open_before - open_database(home / "catalog.db").dashboard_version()[2]
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
            print(f"server RSS after the runs: {rss_mb(server.pid):.0f} MB  [target <= 150 MB]")
            print(describe(probe()), "(after)")
        finally:
            server.terminate()
            server.wait(timeout=20)
            log.close()
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
