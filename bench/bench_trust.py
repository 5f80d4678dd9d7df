"""Speed of issue 15 (trust): `catalog verify` and `catalog as-of` over a long ledger, and an OIDC PATCH
against a token PATCH in the same run.

    python3 bench/bench_trust.py ledger [--lines 1000000] [--days 100]
    python3 bench/bench_trust.py oidc [--services 2000] [--checks 50] [--duration 5] [--connections 32]

`ledger` writes a results branch of N chained history lines (one commit per day, made with git
fast-import in a bare repository, lines as the write-back renders them), then times the real CLI
(`python3 -m api.cli verify` and `as-of`, run as processes) on it.
Targets: verify over 1,000,000 lines <= 10 s; as-of over the same <= 10 s.

`oidc` starts `catalog serve` with a local OIDC issuer (tests/oidc_issuer.py, its own keys) and runs
wrk PATCHes of distinct pending results: with an API token, with one OIDC token reused (a matrix job;
the verified token is cached), and with a distinct OIDC token per request (each one's RS256 signature
checked; the issuer's keys cached), then the token run again. Target: OIDC within 15% of token.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path


ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))

from bench.machine import describe, probe  # noqa: E402
from reconciler import writeback_files as files  # noqa: E402
from reconciler.clock import format_time  # noqa: E402


def build_branch(git_dir: Path, lines: int, days: int) -> None:
    """A bare repository whose branch catalog-results holds `lines` chained history lines over `days` days."""
    subprocess.run(["git", "init", "-q", "--bare", str(git_dir)], check=True)
    process = subprocess.Popen(["git", "--git-dir", str(git_dir), "fast-import", "--quiet", "--done"],
                               stdin=subprocess.PIPE)
    start = datetime(2025, 1, 1, tzinfo=timezone.utc)
    head, per_day, result_id = files.ZERO_HASH, lines // days, 0
    checks = [f"check-{n:02d}" for n in range(50)]
    for day in range(days):
        rows = []
        for n in range(per_day if day < days - 1 else lines - per_day * (days - 1)):
            result_id += 1
            moment = start + timedelta(days=day, seconds=n * 80_000 // max(per_day, 1))
            stamp = format_time(moment)
            row = {"id": result_id, "check_slug": checks[result_id % 50], "service_slug": f"service-{result_id % 2000:05d}",
                   "status": "completed", "result": ("pass", "fail", "warning")[result_id % 3], "message": "ok",
                   "url": f"https://github.com/acme/health-checks/actions/runs/{result_id}", "created_at": stamp,
                   "finished_at": stamp, "revision": "4f2a9c1e0b7d", "trigger": "schedule"}
            line = files.history_line(row, prev=head)
            head = files.line_hash(line)
            rows.append(line)
        content = ("\n".join(rows) + "\n").encode()
        path = files.history_path("results/", format_time(start + timedelta(days=day)))
        ledger = files.ledger_json(head, result_id, result_id).encode()
        message = f"Record {len(rows)} health check results\n\n{files.LEDGER_TRAILER}: {head}\n".encode()
        when = int((start + timedelta(days=day, hours=23)).timestamp())
        chunk = [b"commit refs/heads/catalog-results\n",
                 f"author bot <bot@x> {when} +0000\ncommitter bot <bot@x> {when} +0000\n".encode(),
                 b"data %d\n" % len(message), message,
                 f"M 100644 inline {path}\n".encode(), b"data %d\n" % len(content), content, b"\n",
                 b"M 100644 inline results/ledger.json\n", b"data %d\n" % len(ledger), ledger, b"\n"]
        process.stdin.write(b"".join(chunk))
    process.stdin.write(b"done\n")
    process.stdin.close()
    if process.wait() != 0:
        raise SystemExit("git fast-import failed")


def timed_cli(*args: str, home: Path) -> tuple[float, subprocess.CompletedProcess]:
    env = {key: value for key, value in os.environ.items() if not key.startswith("CATALOG_")}
    env.update(PYTHONPATH=str(ROOT), CATALOG_HOME=str(home))
    started = time.perf_counter()
    result = subprocess.run([sys.executable, "-m", "api.cli", *args], capture_output=True, text=True, env=env)
    return time.perf_counter() - started, result


def bench_ledger(args) -> int:
    work = Path(tempfile.mkdtemp(prefix="bench-trust-"))
    try:
        started = time.perf_counter()
        build_branch(work / "results.git", args.lines, args.days)
        print(f"setup: {args.lines:,} chained lines over {args.days} days/commits in {time.perf_counter() - started:.1f} s")
        repo = str(work / "results.git")
        for run in range(args.repeat):
            took, verified = timed_cli("verify", "--repo", repo, home=work / "home")
            print(f"catalog verify: {took:.2f} s, exit {verified.returncode}: {verified.stdout.splitlines()[0][:120]}"
                  f"  [target <= 10 s for 1,000,000 lines]")
            took, as_of = timed_cli("as-of", "2025-12-31T00:00:00Z", "--repo", repo, "--format", "json", home=work / "home")
            pairs = as_of.stdout.count('"id"')
            print(f"catalog as-of (a time after every line): {took:.2f} s, exit {as_of.returncode},"
                  f" {pairs} pairs  [target <= 10 s]")
            took, mid = timed_cli("as-of", "2025-01-15", "--repo", repo, home=work / "home")
            print(f"catalog as-of (an early date: only the days before it are read): {took:.2f} s, exit {mid.returncode}")
        print(describe(probe()), "(after)")
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return 0


OIDC_LUA = """
thread_index = 0
function setup(thread)
  thread:set("first", FIRST + thread_index * PER_THREAD)
  thread:set("offset", thread_index * TOKENS_EACH)
  thread_index = thread_index + 1
end
function init(args)
  counter = first
  tokens = {}
  for line in io.lines("TOKENS_FILE") do tokens[#tokens + 1] = line end
  n = 0
end
function request()
  local id = counter
  counter = counter + 1
  n = n + 1
  local token = tokens[(offset + n - 1) % #tokens + 1]
  return wrk.format("PATCH", "/api/results/" .. id .. "/",
    {["Authorization"] = "SCHEME " .. token, ["Content-Type"] = "application/x-www-form-urlencoded"},
    "result=pass&message=bench")
end
"""


def bench_oidc(args) -> int:
    from bench_api import build_catalog, fill_results, run_wrk, start_server, stop_server
    from conftest import write_catalog
    from oidc_issuer import OidcIssuer
    from reconciler.clock import Clock
    from reconciler.gitsource import DirectorySource
    from reconciler.reconcile import sync
    from reconciler.store import open_database
    from reconciler.tokens import create_token

    if not shutil.which("wrk"):
        print("wrk is missing: apt-get install -y wrk", file=sys.stderr)
        return 1
    print(describe(probe()), "(before)")
    work = Path(tempfile.mkdtemp(prefix="bench-oidc-"))
    home = work / "home"
    audience = "http://catalog.bench"
    with OidcIssuer() as issuer:
        try:
            build_catalog(work / "catalog", args.services, args.checks)
            write_catalog(work / "catalog", catalog={"defaults": {"repository": "acme-rockets/health-checks"}})
            store = open_database(f"sqlite://{home / 'catalog.db'}")
            assert sync(store, DirectorySource(work / "catalog")).outcome == "applied"
            total = args.services * args.checks
            ids = fill_results(store, pending=total)
            token = create_token(store, "bench-writer", ["results:write"], now=Clock().now())
            store.results.checkpoint()
            store.close()
            started = time.perf_counter()
            distinct = [issuer.mint(exp=int(time.time()) + 3600, aud=audience) for _ in range(args.tokens)]
            print(f"setup: {total:,} pending results; {args.tokens:,} distinct RS256 tokens minted in"
                  f" {time.perf_counter() - started:.1f} s")
            (work / "token.txt").write_text(token + "\n")
            (work / "one-jwt.txt").write_text(distinct[0] + "\n")
            (work / "jwts.txt").write_text("\n".join(distinct) + "\n")
            log = open(work / "server.log", "w")
            server, base = start_server(
                log, {"PYTHONPATH": str(ROOT), "CATALOG_HOME": str(home), "CATALOG_OIDC_ISSUER": issuer.url},
                "--server-url", audience)
            try:
                runs = [("token", "token.txt", "Token"), ("oidc, one token reused", "one-jwt.txt", "Bearer"),
                        ("oidc, a distinct token each", "jwts.txt", "Bearer"), ("token", "token.txt", "Token"),
                        ("oidc, one token reused", "one-jwt.txt", "Bearer"), ("oidc, a distinct token each", "jwts.txt", "Bearer")]
                per_run = len(ids) // len(runs)
                figures = {}
                for index, (name, tokens_file, scheme) in enumerate(runs):
                    first = ids.start + index * per_run
                    script = (OIDC_LUA.replace("FIRST", str(first)).replace("PER_THREAD", str(per_run // 2))
                              .replace("TOKENS_EACH", str(args.tokens // 2))
                              .replace("TOKENS_FILE", str(work / tokens_file)).replace("SCHEME", scheme))
                    result = run_wrk(script, base, duration=args.duration, connections=args.connections, pid=server.pid)
                    figures.setdefault(name, []).append(result)
                    print(f"PATCH with {name}: {result['rps']:,.0f} req/s, p50 {result['p50_us'] / 1000:.1f} ms,"
                          f" p99 {result['p99_us'] / 1000:.1f} ms, non-2xx {result['status_errors']},"
                          f" server CPU {result['cpu_us']:.0f} us/request")
                reference = sum(r["rps"] for r in figures["token"]) / len(figures["token"])
                for name in ("oidc, one token reused", "oidc, a distinct token each"):
                    rps = sum(r["rps"] for r in figures[name]) / len(figures[name])
                    print(f"{name}: {rps / reference:.2f} x the token PATCH's req/s (mean of two runs each)"
                          f"  [target >= 0.85]")
                print(f"JWKS fetches by the server: {issuer.fetches}")
            finally:
                stop_server(server)
                log.close()
            print(describe(probe()), "(after)")
        finally:
            shutil.rmtree(work, ignore_errors=True)
    return 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    commands = parser.add_subparsers(dest="what", required=True)
    ledger = commands.add_parser("ledger")
    ledger.add_argument("--lines", type=int, default=1_000_000)
    ledger.add_argument("--days", type=int, default=100)
    ledger.add_argument("--repeat", type=int, default=1)
    oidc = commands.add_parser("oidc")
    oidc.add_argument("--services", type=int, default=2000)
    oidc.add_argument("--checks", type=int, default=50)
    oidc.add_argument("--duration", type=int, default=5)
    oidc.add_argument("--connections", type=int, default=32)
    oidc.add_argument("--tokens", type=int, default=5000)
    args = parser.parse_args()
    return bench_ledger(args) if args.what == "ledger" else bench_oidc(args)


if __name__ == "__main__":
    sys.exit(main())
