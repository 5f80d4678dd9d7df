"""Running a command with its stderr on a pseudo-terminal, as a person at a terminal sees it."""

from __future__ import annotations

import os
import pty
import subprocess
from typing import Callable


def run_on_terminal(run: Callable[[int], subprocess.CompletedProcess]) -> tuple[subprocess.CompletedProcess, bytes]:
    """`run(terminal)` must pass `stderr=terminal` to the process it runs; returns its result and all
    the bytes the terminal received."""
    controller, terminal = pty.openpty()
    try:
        done = run(terminal)
        os.close(terminal)
        seen = b""
        while True:
            try:
                chunk = os.read(controller, 65536)
            except OSError:  # the terminal's other end is closed: all read
                break
            if not chunk:
                break
            seen += chunk
    finally:
        os.close(controller)
    return done, seen
