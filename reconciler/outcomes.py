"""What a result can be, defined once: its statuses and its outcomes (store, API, pages and CLI import these).

A result is created `pending`, becomes `sent` once dispatched, and finishes exactly once as
`completed` (with an outcome an Action answered), `timed-out` or `error`; a finished result never
changes. Its `result` is `unknown` until it completes.
"""

from __future__ import annotations

from .errors import InvalidInput

OPEN_STATUSES = ("pending", "sent")
FINISHED_STATUSES = ("completed", "timed-out", "error")
STATUSES = OPEN_STATUSES + FINISHED_STATUSES

RESULT_VALUES = ("pass", "warning", "fail", "error", "skipped")  # what an Action may answer
RESULTS = ("unknown", *RESULT_VALUES)  # what a result's `result` may be


def parse_result(value: object) -> str:
    """An answer's `result`: one of RESULT_VALUES in any case, surrounding spaces ignored; InvalidInput otherwise.
    The API and `catalog answer` both read a result with this."""
    if value is None:
        raise InvalidInput(f"'result' is required: one of {', '.join(RESULT_VALUES)}")
    if not isinstance(value, str) or value.strip().lower() not in RESULT_VALUES:
        raise InvalidInput(f"'result' must be one of {', '.join(RESULT_VALUES)}, not {value!r}")
    return value.strip().lower()


NO_LEVEL = "none"  # a service below a scorecard's first level, as pages, the API and the write-back name it


def sql_list(values: tuple[str, ...]) -> str:
    """`('a', 'b')`: one of these tuples as an SQL list, for statements and schema checks."""
    return "(" + ", ".join(f"'{value}'" for value in values) + ")"
