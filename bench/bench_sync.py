"""Time the reconciler on a synthetic catalog: cold sync, no-op sync, one-file change, peak memory.

    python3 bench/bench_sync.py [--services 10000] [--checks 50] [--repeat 5] [--cold 3]

The catalog is generated as a git repository by bench/generate_catalog.py (in a child process, so
it does not count towards this process's memory) and cloned before timing: the clone is excluded,
every `git fetch` the sync runs is included. Each sync is the real `reconcile.sync` on a real
SQLite file. The cold sync runs --cold times, each in a new process into a new, empty store, so
that no cache of an earlier sync helps it (the median is the figure: this machine's speed drifts by
20% and more between runs); this process's own cold sync, before the no-op and one-file syncs, is
one of them; cold syncs run as `catalog sync` does (the collector paused), the no-op and one-file
syncs as `catalog up` does (the collector running). Peak memory is this process's ru_maxrss (resident set high-water mark, whole
process: interpreter, imports, every sync). Targets (issue 2, N=10,000, M=50): cold <= 1.5 s,
no-op <= 0.05 s, one-file change <= 0.2 s, peak <= 300 MB. Issue 16, at --services 100000: cold
<= 6 s, one-file change <= 0.1 s and within 1.5x of the 10,000 figure, peak <= 250 MB. The
one-file line shows how much of it was git's: with 100,000 files in one folder, `git fetch` of a
one-file commit moves and checks a 4 MB tree object (~0.2 s on this machine, ~0.12 s of it the
sending side's `git pack-objects`, which a real remote runs on its own machine). The cold sync's CPU
seconds (user + system, both reading processes) are printed beside its seconds: on a shared machine
they move far less than the seconds do.
"""

from __future__ import annotations

import argparse
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.generate_catalog import git, service_path  # noqa: E402
from bench.machine import describe, peak_mb, probe  # noqa: E402
from reconciler.gitsource import GitSource  # noqa: E402
from reconciler.reconcile import collector_paused, sync  # noqa: E402
from reconciler.store import Database, open_database  # noqa: E402


class GitTimedSource(GitSource):
    """The real git source, keeping the seconds its git commands took: a one-file sync of a catalog
    with 100,000 files in one folder spends most of its time in `git fetch`, whatever we do."""

    git_seconds = 0.0

    def fetch(self) -> str:
        started = time.perf_counter()
        try:
            return super().fetch()
        finally:
            self.git_seconds += time.perf_counter() - started

    def changed_paths(self, old: str, new: str) -> set[str] | None:
        started = time.perf_counter()
        try:
            return super().changed_paths(old, new)
        finally:
            self.git_seconds += time.perf_counter() - started


def cpu_now() -> float:
    """CPU seconds of this process and its finished children (the cold sync's second reader)."""
    own, children = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime


def timed(store: Database, source: GitSource, expect: str, *, as_cli: bool = False) -> float:
    """One sync's seconds: `as_cli` runs it as `catalog sync` does (collector paused), else as
    `catalog up` does (the collector running, for the API's threads)."""
    started = time.perf_counter()
    if as_cli:
        with collector_paused():
            report = sync(store, source)
    else:
        report = sync(store, source)
    elapsed = time.perf_counter() - started
    if report.outcome != expect or report.errors:
        raise SystemExit(f"unexpected sync: {report.outcome}, errors {report.errors[:3]}")
    return elapsed


# The targets the figures answer to: the first build's at 10,000 services, issue 16's at 100,000
# (the no-op has no target of its own there).
TARGETS = {
    10_000: {"cold": "<= 1.5 s", "noop": "<= 0.05 s", "one_file": "<= 0.2 s", "memory": "<= 300 MB"},
    100_000: {"cold": "<= 6 s", "noop": "none", "one_file": "<= 0.1 s, and within 1.5x of 10,000's", "memory": "<= 250 MB"},
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--services", type=int, default=10_000)
    parser.add_argument("--checks", type=int, default=50)
    parser.add_argument("--folders", type=int, default=0, help="services spread over this many sub-folders")
    parser.add_argument("--repeat", type=int, default=5, help="runs of the no-op and one-file syncs (median shown)")
    parser.add_argument("--cold", type=int, default=3, help="cold syncs, each into a new store (median shown)")
    parser.add_argument("--one-cold", nargs=3, metavar=("ORIGIN", "CHECKOUT", "DB"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.one_cold:  # a cold sync in this new process: print its seconds and CPU seconds
        origin, checkout, database = args.one_cold
        cpu = cpu_now()
        seconds = timed(open_database(Path(database)), GitSource(origin, Path(checkout)), "applied", as_cli=True)
        print(seconds, cpu_now() - cpu)
        return

    print(describe(probe()), "(before)")
    with tempfile.TemporaryDirectory(prefix="bench-sync-") as temporary:
        work = Path(temporary)
        origin = work / "origin"
        started = time.perf_counter()
        subprocess.run(
            [sys.executable, str(ROOT / "bench" / "generate_catalog.py"), str(origin),
             "--services", str(args.services), "--checks", str(args.checks), "--folders", str(args.folders)],
            check=True, capture_output=True,
        )
        layout = f" in {args.folders} folders" if args.folders else ""
        print(f"generated {args.services} services{layout}, {args.checks} checks in {time.perf_counter() - started:.1f} s")

        source = GitTimedSource(str(origin), work / "checkout")
        source.fetch()  # the clone and its checkout: excluded from the figures
        cold, cold_cpu = [], []
        for run in range(1, args.cold):
            done = subprocess.run(
                [sys.executable, __file__, "--one-cold", str(origin), str(work / "checkout"), str(work / f"cold-{run}.db")],
                check=True, capture_output=True, text=True,
            )
            seconds, cpu = done.stdout.split()
            cold.append(float(seconds))
            cold_cpu.append(float(cpu))
        store = open_database(work / "catalog.db")
        cpu = cpu_now()
        cold.insert(0, timed(store, source, "applied", as_cli=True))
        cold_cpu.insert(0, cpu_now() - cpu)
        noop = [timed(store, source, "unchanged") for _ in range(args.repeat)]
        one_file, one_file_git = [], []
        for run in range(args.repeat):
            path = origin / service_path((run * 37 + 11) % args.services, args.folders)
            path.write_text(path.read_text().replace("description: The", f"description: (edit {run}) The", 1))
            git(origin, "commit", "--quiet", "-am", f"Edit {path.name}")
            source.git_seconds = 0.0
            one_file.append(timed(store, source, "applied"))
            one_file_git.append(source.git_seconds)
        counts = store.catalog.counts()
        own_mb, child_mb = peak_mb()

    target = TARGETS[100_000 if args.services >= 100_000 else 10_000]
    print(f"store: {counts['services']} services, {counts['checks']} checks")
    print(f"cold sync:        {statistics.median(cold):7.3f} s   (median of {len(cold)}; target {target['cold']})"
          f"  runs: {', '.join(f'{t:.3f}' for t in cold)}")
    print(f"  its CPU:        {statistics.median(cold_cpu):7.3f} s   (user + system, the process and its second reader;"
          " steadier than seconds on a shared machine)"
          f"  runs: {', '.join(f'{t:.3f}' for t in cold_cpu)}")
    print(f"no-op sync:       {statistics.median(noop):7.3f} s   (median of {len(noop)}; target {target['noop']})"
          f"  runs: {', '.join(f'{t:.3f}' for t in noop)}")
    print(f"one-file change:  {statistics.median(one_file):7.3f} s   (median of {len(one_file)}; target {target['one_file']})"
          f"  runs: {', '.join(f'{t:.3f}' for t in one_file)}")
    print(f"  of which git:   {statistics.median(one_file_git):7.3f} s   (fetch, diff and blobs; the rest is the reconciler's)"
          f"  runs: {', '.join(f'{t:.3f}' for t in one_file_git)}")
    print(f"peak memory:      {own_mb:7.1f} MB  (ru_maxrss of this process; target {target['memory']})")
    print(f"largest child:    {child_mb:7.1f} MB  (the cold sync's second reader, git, or the generator;"
          " parent + child is an upper bound)")
    print(describe(probe()), "(after)")


if __name__ == "__main__":
    main()
