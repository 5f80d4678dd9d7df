"""A yardstick for this shared machine, whose speed swings by up to 2x within minutes.

`probe()` times a fixed pure-Python loop (10 million additions). The benchmarks print it before and
after their runs, so a figure can be read against the speed the machine had while it was taken:
about 0.33 s is this machine at its fastest (2026-11-24); in its slow phases the same loop has
taken twice as long, and every figure was slower by about as much.
"""

from __future__ import annotations

import time


def probe() -> float:
    """Seconds for the loop: the best of three, so one descheduling does not count."""
    best = float("inf")
    for _ in range(3):
        started = time.perf_counter()
        total = 0
        for number in range(10_000_000):
            total += number
        best = min(best, time.perf_counter() - started)
    return best


def describe(seconds: float) -> str:
    return f"machine speed probe: {seconds:.2f} s for 10M additions (fastest seen here 0.33 s)"
