"""`catalog up` on embedded defaults: time to the first result, to the first write-back, and idle RSS.

    python3 bench/bench_up.py              # the untouched defaults (write-back every 30 s)
    python3 bench/bench_up.py --idle 60    # watch RSS for longer

Starts `catalog up` in the project directory with only CATALOG_HOME set (a temporary folder), so it
serves catalog-repo-example, runs its health-checks/ scripts locally and writes back to
$CATALOG_HOME/results.git, as a newcomer's first command does. Targets (issue 6): a completed
result and a write-back commit within a minute; idle RSS <= 150 MB.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))

from e2e_support import UpProcess, history_ids, wait_for  # noqa: E402


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--idle", type=float, default=20.0, help="seconds after the first write-back before reading RSS")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="bench-up-") as folder:
        up = UpProcess(Path(folder) / "home", {}, name="bench-up")
        try:
            up.start(wait=False)
            wait_for(lambda: up.healthy() and up.results(status="completed", limit=1), "a completed result",
                     timeout=120, interval=0.05)
            first_result = time.monotonic() - up.started_at
            results_git = up.home / "results.git"
            wait_for(lambda: results_git.is_dir() and history_ids(results_git), "a write-back commit",
                     timeout=120, interval=0.2)
            first_writeback = time.monotonic() - up.started_at
            rss_after_pass = up.rss_kib()
            time.sleep(args.idle)
            rss_idle = up.rss_kib()
            completed = len(up.results(status="completed"))
            written = len(history_ids(results_git))
        except AssertionError:
            print(up.log_tail(), file=sys.stderr)
            raise
        finally:
            up.stop()
    print(f"time to first completed result : {first_result:6.1f} s   (target: within 60 s)")
    print(f"time to first write-back commit: {first_writeback:6.1f} s   (target: within 60 s)")
    print(f"RSS right after the first write-back: {rss_after_pass / 1024:6.1f} MB")
    print(f"idle RSS {args.idle:.0f} s later          : {rss_idle / 1024:6.1f} MB   (target: <= 150 MB)")
    print(f"results completed: {completed}; written back by then: {written}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
