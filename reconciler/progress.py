"""Progress of long CLI work (a large sync, a write-back backlog, an export) on a terminal, with rich.

`terminal_progress` gives a callback `advance(count)`; it draws a bar on stderr only when stderr is
a terminal and the user did not pass --quiet, so scripts, pipes and CI logs get nothing extra. The
core takes the callback as an optional argument (`Progress`) and knows nothing of terminals.
"""

from __future__ import annotations

import sys
from contextlib import contextmanager
from typing import Callable, Iterator, TextIO

Progress = Callable[[int], None]  # called with how many more items are done


def _ignore(count: int) -> None:
    pass


@contextmanager
def terminal_progress(description: str, *, total: int | None = None, quiet: bool = False,
                      stream: TextIO | None = None) -> Iterator[Progress]:
    """A bar (with a known total) or a counter (without) on a terminal; else a callback that does nothing."""
    stream = stream or sys.stderr
    if quiet or not stream.isatty():
        yield _ignore
        return
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress as Bar, TextColumn, TimeElapsedColumn

    columns = [TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn()]
    with Bar(*columns, console=Console(file=stream), transient=True) as bar:
        task = bar.add_task(description, total=total)
        yield lambda count: bar.advance(task, count)
