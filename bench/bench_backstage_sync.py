"""A cold sync of N Backstage descriptors against N of our own service files, in the same run.

    python3 bench/bench_backstage_sync.py [--services 10000] [--checks 50] [--cold 3]

Both catalogs come from bench/generate_catalog.py with the same seed (the same services, fields and
dependencies): ours in services/, Backstage's as components/<slug>/catalog-info.yaml, one folder
per service as Backstage repositories keep them. Each cold sync is `bench_sync.py --one-cold`: a
new process, a new SQLite store, the collector paused as `catalog sync` runs; the two formats
alternate so that the machine's drift hits both. Target (issue 17): Backstage within 1.3x of ours.
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.machine import describe, probe  # noqa: E402
from reconciler.gitsource import GitSource  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--services", type=int, default=10_000)
    parser.add_argument("--checks", type=int, default=50)
    parser.add_argument("--cold", type=int, default=3, help="cold syncs of each format (median shown)")
    args = parser.parse_args()
    print(describe(probe()), "(before)")
    with tempfile.TemporaryDirectory(prefix="bench-backstage-") as temporary:
        work = Path(temporary)
        formats = {"ours": [], "backstage": []}
        for name in formats:
            started = time.perf_counter()
            subprocess.run(
                [sys.executable, str(ROOT / "bench" / "generate_catalog.py"), str(work / name),
                 "--services", str(args.services), "--checks", str(args.checks),
                 *(["--backstage"] if name == "backstage" else [])],
                check=True, capture_output=True,
            )
            GitSource(str(work / name), work / f"{name}-checkout").fetch()  # the clone: excluded
            print(f"generated {args.services} services as {name} files in {time.perf_counter() - started:.1f} s")
        for run in range(args.cold):
            for name, times in formats.items():
                done = subprocess.run(
                    [sys.executable, str(ROOT / "bench" / "bench_sync.py"), "--one-cold", str(work / name),
                     str(work / f"{name}-checkout"), str(work / f"{name}-{run}.db")],
                    check=True, capture_output=True, text=True,
                )
                times.append(float(done.stdout))
    ours, backstage = (statistics.median(formats[name]) for name in ("ours", "backstage"))
    for name, times in formats.items():
        print(f"cold sync, {name:9}: {statistics.median(times):7.3f} s  (median of {len(times)})"
              f"  runs: {', '.join(f'{t:.3f}' for t in times)}")
    print(f"ratio backstage / ours: {backstage / ours:.2f}x  (target <= 1.3x)")
    print(describe(probe()), "(after)")


if __name__ == "__main__":
    main()
