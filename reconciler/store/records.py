"""Row shapes shared by the store's modules: statuses, column lists, decoders, small SQL helpers."""

from __future__ import annotations

import json
import sqlite3
from typing import Any

from ..clock import format_time
from ..errors import Conflict, NotFound

FINISHED_STATUSES = ("completed", "timed-out", "error")
OPEN_STATUSES = ("pending", "sent")
RESULT_VALUES = ("pass", "warning", "fail", "error", "skipped")


def _row_factory(cursor: sqlite3.Cursor, row: tuple) -> dict[str, Any]:
    return {column[0]: value for column, value in zip(cursor.description, row)}


_SERVICE_COLUMNS = (
    "slug, name, priority, type, description, owner, repository, active, tags, dependencies, meta, path, digest, error"
)
_CHECK_COLUMNS = (
    "slug, name, description, frequency, schedule, timeout_seconds, active, repository, targets, target_kind,"
    " target_type, target_owner, target_tags, target_max_priority, path, digest, error"
)


def _names(columns: str) -> list[str]:
    return [name.strip() for name in columns.split(",")]


def _placeholders(columns: str) -> str:
    return ", ".join(f":{name}" for name in _names(columns))


def _updates(columns: str) -> str:
    return ", ".join(f"{name} = excluded.{name}" for name in _names(columns) if name != "slug")


def _service_filter(owner: str | None, type: str | None, tag: str | None) -> tuple[str, list]:
    """The WHERE clause (and its parameters) for live services matching the dashboard's filters."""
    where, params = "services.removed_at IS NULL", []
    if owner:
        where, params = where + " AND services.owner = ?", params + [owner]
    if type:
        where, params = where + " AND services.type = ?", params + [type]
    if tag:
        where += " AND EXISTS (SELECT 1 FROM json_each(services.tags) WHERE value = ?)"
        params.append(tag)
    return where, params


def _decode_check(row: dict) -> dict:
    """A checks row with `targets` and `target_tags` decoded from JSON (dashboard reads)."""
    row["targets"] = json.loads(row["targets"])
    row["target_tags"] = json.loads(row["target_tags"]) if row["target_tags"] else None
    return row


# The API's view of a result: every column, plus the slugs of its check and service.
_RESULT_SELECT = (
    'SELECT r.*, c.slug AS "check", s.slug AS service FROM results r'
    " JOIN checks c ON c.id = r.check_id LEFT JOIN services s ON s.id = r.service_id"
)


def _decode_service(row: dict) -> dict:
    for key in ("tags", "dependencies", "meta"):
        row[key] = json.loads(row[key])
    row["active"] = bool(row["active"])
    return row


def _decode_check_row(row: dict) -> dict:
    row["targets"] = json.loads(row["targets"])
    row["target_tags"] = json.loads(row["target_tags"]) if row["target_tags"] else None
    row["active"] = bool(row["active"])
    return row


def result_filters(
    *, service: str | None = None, check: str | None = None, result: str | None = None,
    status: str | None = None, since: str | None = None, before_id: int | None = None,
) -> tuple[str, list]:
    """` AND ...` conditions on results `r` for the usual filters (slugs, values, since, keyset page)."""
    clauses = [
        (service, " AND r.service_id = (SELECT id FROM services WHERE slug = ?)"),
        (check, " AND r.check_id = (SELECT id FROM checks WHERE slug = ?)"),
        (result, " AND r.result = ?"),
        (status, " AND r.status = ?"),
        (since, " AND r.created_at >= ?"),
        (before_id, " AND r.id < ?"),
    ]
    given = [(value, sql) for value, sql in clauses if value is not None and value != ""]
    return "".join(sql for _, sql in given), [value for value, _ in given]


def _fetch_dicts(conn: sqlite3.Connection, sql: str, params: tuple = ()) -> list[dict]:
    """Like `execute(...).fetchall()`, reading the column names once instead of once per row (hot reads)."""
    cursor = conn.cursor()
    cursor.row_factory = None
    rows = cursor.execute(sql, params).fetchall()
    names = [column[0] for column in cursor.description] if cursor.description else []
    return [dict(zip(names, row)) for row in rows]


def _complete(conn: sqlite3.Connection, sql: str, result_id: int, params: tuple) -> dict:
    """Run a conditional completing UPDATE ... RETURNING; NotFound or Conflict when it changed nothing."""
    row = conn.execute(sql, params).fetchone()
    if row is not None:
        return row
    current = conn.execute("SELECT status FROM results WHERE id = ?", (result_id,)).fetchone()
    if current is None:
        raise NotFound(f"result {result_id} does not exist")
    raise Conflict(f"result {result_id} is already {current['status']} and can never change")


def _answer(conn: sqlite3.Connection, sql: str, answer: tuple) -> dict | NotFound | Conflict:
    """One answer of a batch: its row, or (returned, not raised) why it changed nothing."""
    result_id, result, message, url, now = answer
    try:
        return _complete(conn, sql, result_id, (result, message, url, format_time(now), result_id))
    except (NotFound, Conflict) as error:
        return error


def _count_results(rows: list[dict]) -> dict[str, int]:
    counts: dict[str, int] = {}
    for row in rows:
        counts[row["result"]] = counts.get(row["result"], 0) + 1
    return counts
