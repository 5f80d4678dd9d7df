"""Results for tests, made and answered through the calls the product uses (dispatch and the API's answer)."""

from __future__ import annotations

import sqlite3
from datetime import datetime

import psycopg

from reconciler.clock import Clock, format_time
from reconciler.schedule import NEVER
from reconciler.store import Database


def new_result(store: Database, check: str = "has-owner", service: str | None = "payments-api", *,
               now: datetime | None = None, revision: str | None = None, trigger: str = "ad-hoc") -> dict:
    """A pending result for (check, service), created as `catalog run-check` creates one; its lease is
    already over, so a scheduler pass may claim it. `service` None: a `services: none` check's run."""
    now = now or Clock().now()
    check_id = store.catalog.check_index()[check]["id"]
    service_id = store.catalog.service_index()[service]["id"] if service else None
    created = store.dispatch.create_due(
        [(check_id, NEVER)], now=format_time(now), revision=revision, claim_until=format_time(now),
        holder="tests", trigger=trigger, service_id=service_id,
    )
    assert len(created) == 1, f"({check}, {service}) is not due: it has an open result, or is not targeted"
    return dict(created[0])  # a plain row, as a check runner returns (a NewResult is a read-only mapping)


def answer(store: Database, result_id: int, result: str, *, now: datetime | None = None,
           message: str | None = None, url: str | None = None) -> dict:
    """Answer one result as the API does; raises the NotFound or Conflict the API maps to 404 / 409."""
    outcome = store.results.answer([(result_id, result, message, url, now or Clock().now())])[0]
    if isinstance(outcome, Exception):
        raise outcome
    return outcome


# What a database answers when a trigger or a constraint refuses a statement, on either backend.
INTEGRITY_ERRORS = (sqlite3.IntegrityError, psycopg.IntegrityError)


def raw_sql(store: Database, sql: str, params: tuple = ()) -> list[tuple]:
    """Run SQL on a connection of its own, as any other program with access to the database could."""
    names, rows = _run_outside(store, sql, params)
    return rows


def raw_rows(store: Database, sql: str, params: tuple = ()) -> list[dict]:
    """Rows as dicts from a connection of its own: for tests that inspect tables the product never lists."""
    names, rows = _run_outside(store, sql, params)
    return [dict(zip(names, row)) for row in rows]


def _run_outside(store: Database, sql: str, params: tuple) -> tuple[list[str], list[tuple]]:
    """(column names, rows) of SQL (`?` parameters) run on a new connection, not the store's."""
    backend = store.backend
    if backend.dialect.name == "sqlite":
        conn = sqlite3.connect(backend.path, isolation_level=None)
        try:
            conn.execute("PRAGMA foreign_keys=ON")
            cursor = conn.execute(sql, params)
            return [column[0] for column in cursor.description or ()], cursor.fetchall()
        finally:
            conn.close()
    with psycopg.connect(backend.url, autocommit=True) as conn:
        cursor = conn.execute(sql.replace("?", "%s"), params)
        if not cursor.description:
            return [], []
        return [column.name for column in cursor.description], cursor.fetchall()


def finished_result(store: Database, check: str = "has-owner", service: str | None = "payments-api",
                    result: str = "pass", *, now: datetime | None = None, **fields) -> dict:
    """A result created and answered (a pair has at most one open result, so history is made this way)."""
    row = new_result(store, check, service, now=now)
    return answer(store, row["id"], result, now=now, **fields)


# Each derived table as the history alone defines it, and as stored: the same rows, always.
_DERIVED = {
    "dispatch_pairs": (
        "SELECT check_id * 4294967296 + coalesce(service_id, 0) AS pair_key, max(created_at) AS last_created_at,"
        " sum(CASE WHEN status IN ('pending', 'sent') THEN 1 ELSE 0 END) AS open_results"
        " FROM results GROUP BY check_id, service_id ORDER BY 1",
        "SELECT pair_key, last_created_at, open_results FROM dispatch_pairs ORDER BY 1",
    ),
    "latest_runs": (
        "SELECT coalesce(r.service_id, 0) AS service_key, c.slug AS check_slug, r.check_id, r.id AS result_id, r.status,"
        " r.result, r.url, r.created_at, r.sent_at, r.finished_at FROM results AS r JOIN checks AS c ON c.id = r.check_id"
        " WHERE r.id IN (SELECT max(id) FROM results GROUP BY check_id, service_id) ORDER BY 1, 2",
        "SELECT service_key, check_slug, check_id, result_id, status, result, url, created_at, sent_at, finished_at"
        " FROM latest_runs ORDER BY 1, 2",
    ),
    "result_counts": (
        "SELECT status, result, count(*) AS count FROM results GROUP BY status, result ORDER BY 1, 2",
        "SELECT status, result, count FROM result_counts WHERE count <> 0 ORDER BY 1, 2",
    ),
    "latest_results": (
        "SELECT check_id, coalesce(service_id, 0) AS service_key, id AS result_id, status, result, created_at, finished_at"
        " FROM results WHERE id IN (SELECT max(id) FROM results WHERE finished_at IS NOT NULL"
        " GROUP BY check_id, service_id) ORDER BY 1, 2",
        "SELECT check_id, service_key, result_id, status, result, created_at, finished_at FROM latest_results ORDER BY 1, 2",
    ),
    "check_days": (
        "SELECT check_id, substr(finished_at, 1, 10) AS day, count(*) AS finished,"
        " sum(CASE WHEN result = 'pass' THEN 1 ELSE 0 END) AS passed,"
        " sum(CASE WHEN result IN ('fail', 'error') OR status <> 'completed' THEN 1 ELSE 0 END) AS failed"
        " FROM results WHERE finished_at IS NOT NULL GROUP BY 1, 2 ORDER BY 1, 2",
        "SELECT check_id, day, finished, passed, failed FROM check_days ORDER BY 1, 2",
    ),
    "writeback_queue": (
        "SELECT id AS result_id FROM results WHERE finished_at IS NOT NULL"
        " AND id NOT IN (SELECT result_id FROM result_writes) ORDER BY 1",
        "SELECT result_id FROM writeback_queue ORDER BY 1",
    ),
}


def derived_tables_differing(store: Database) -> list[str]:
    """The derived tables whose rows are not what the history defines (none, always)."""
    return [table for table, (expected, stored) in _DERIVED.items()
            if raw_rows(store, stored) != raw_rows(store, expected)]


def read_plans(store: Database, call) -> list[tuple[str, list[str]]]:
    """(SQL, the details of SQLite's query plan for it) of each read `call()` makes on this thread's
    connection of a SQLite store: for tests that a read finds its rows through an index."""
    connection = store.backend._connection()
    statements: list[str] = []
    connection.set_trace_callback(statements.append)
    try:
        call()
    finally:
        connection.set_trace_callback(None)
    return [(sql, [detail for *_, detail in connection.execute("EXPLAIN QUERY PLAN " + sql)])
            for sql in statements if sql.lstrip().upper().startswith(("SELECT", "WITH"))]
