"""A yardstick for this shared machine, whose speed swings by up to 2x within minutes.

`probe()` times a fixed pure-Python loop (10 million additions). The benchmarks print it before and
after their runs, so a figure can be read against the speed the machine had while it was taken:
about 0.33 s is this machine at its fastest (2026-11-24); in its slow phases the same loop has
taken twice as long, and every figure was slower by about as much.
"""

from __future__ import annotations

import os
import resource
import time
from pathlib import Path


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


def peak_mb() -> tuple[float, float]:
    """(this process, its largest child): the resident-set high-water marks, in MB."""
    own = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux
    children = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
    return own, children


def reset_peak_rss() -> float:
    """Start a new resident-set high-water mark for this process (Linux: clear_refs 5); returns the
    resident set now, in MB. `peak_rss_since_reset` then gives the peak of what ran in between."""
    Path("/proc/self/clear_refs").write_text("5")
    return status_mb("VmRSS")


def peak_rss_since_reset() -> float:
    return status_mb("VmHWM")


def status_mb(field: str, pid: int | str = "self") -> float:
    """A memory figure of a process (VmRSS: resident now, VmHWM: its high-water mark), in MB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) / 1024  # kB
    raise KeyError(field)


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process so far: CPU per request is steadier than req/s on a busy machine."""
    fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
