"""Cold syncs of one catalog by this tree's code and by another tree's (main, say), interleaved.

    python3 bench/bench_sync_ab.py REFERENCE_TREE [--services 10000] [--runs 5]

One generated catalog (bench/generate_catalog.py), one clone; each run is `bench_sync.py --one-cold`
of each tree in turn, in a new process into a new store, so the machine's drift hits both alike.
It answers "does this change slow the existing path?" with a ratio measured in one run.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.generate_catalog import git  # noqa: E402
from bench.machine import describe, probe  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("reference", type=Path, help="another tree of this project (e.g. /work/main)")
    parser.add_argument("--services", type=int, default=10_000)
    parser.add_argument("--checks", type=int, default=50)
    parser.add_argument("--runs", type=int, default=5)
    args = parser.parse_args()
    trees = {"this tree": ROOT, "reference": args.reference.resolve()}
    print(describe(probe()), "(before)")
    with tempfile.TemporaryDirectory(prefix="bench-sync-ab-") as temporary:
        work = Path(temporary)
        origin = work / "origin"
        subprocess.run([sys.executable, str(ROOT / "bench" / "generate_catalog.py"), str(origin),
                        "--services", str(args.services), "--checks", str(args.checks)], check=True, capture_output=True)
        git(work, "clone", "--quiet", str(origin), str(work / "checkout"))
        times: dict[str, list[float]] = {name: [] for name in trees}
        for run in range(args.runs):
            for name, tree in trees.items():
                done = subprocess.run(
                    [sys.executable, str(tree / "bench" / "bench_sync.py"), "--one-cold", str(origin),
                     str(work / "checkout"), str(work / f"{name.replace(' ', '-')}-{run}.db")],
                    check=True, capture_output=True, text=True, env={**os.environ, "PYTHONPATH": str(tree)},
                )
                times[name].append(float(done.stdout))
    for name, runs in times.items():
        print(f"cold sync, {name:9}: {statistics.median(runs):7.3f} s  (median of {len(runs)})"
              f"  runs: {', '.join(f'{t:.3f}' for t in runs)}")
    ratio = statistics.median(times["this tree"]) / statistics.median(times["reference"])
    print(f"ratio this tree / reference: {ratio:.2f}x")
    print(describe(probe()), "(after)")


if __name__ == "__main__":
    main()
