"""What a result can be, defined once: its statuses and its outcomes (store, API, pages and CLI import these).

A result is created `pending`, becomes `sent` once dispatched, and finishes exactly once as
`completed` (with an outcome an Action answered), `timed-out` or `error`; a finished result never
changes. Its `result` is `unknown` until it completes.
"""

from __future__ import annotations

OPEN_STATUSES = ("pending", "sent")
FINISHED_STATUSES = ("completed", "timed-out", "error")
STATUSES = OPEN_STATUSES + FINISHED_STATUSES

RESULT_VALUES = ("pass", "warning", "fail", "error", "skipped")  # what an Action may answer
RESULTS = ("unknown", *RESULT_VALUES)  # what a result's `result` may be

NO_LEVEL = "none"  # a service below a scorecard's first level, as pages, the API and the write-back name it


def sql_list(values: tuple[str, ...]) -> str:
    """`('a', 'b')`: one of these tuples as an SQL list, for statements and schema checks."""
    return "(" + ", ".join(f"'{value}'" for value in values) + ")"
