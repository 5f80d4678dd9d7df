"""Results for tests, made and answered through the calls the product uses (dispatch and the API's answer)."""

from __future__ import annotations

import sqlite3
from datetime import datetime

import psycopg
import psycopg.rows

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
    return created[0]


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
    backend = store.backend
    if backend.dialect.name == "sqlite":
        conn = sqlite3.connect(backend.path, isolation_level=None)
        try:
            conn.execute("PRAGMA foreign_keys=ON")
            return conn.execute(sql, params).fetchall()
        finally:
            conn.close()
    with psycopg.connect(backend.url, autocommit=True) as conn:
        cursor = conn.execute(sql.replace("?", "%s"), params)
        return cursor.fetchall() if cursor.description else []


def raw_rows(store: Database, sql: str, params: tuple = ()) -> list[dict]:
    """Rows as dicts from a connection of its own: for tests that inspect tables the product never lists."""
    backend = store.backend
    if backend.dialect.name == "sqlite":
        conn = sqlite3.connect(backend.path, isolation_level=None)
        try:
            cursor = conn.execute(sql, params)
            names = [column[0] for column in cursor.description]
            return [dict(zip(names, row)) for row in cursor.fetchall()]
        finally:
            conn.close()
    with psycopg.connect(backend.url, autocommit=True, row_factory=psycopg.rows.dict_row) as conn:
        return conn.execute(sql.replace("?", "%s"), params).fetchall()


def finished_result(store: Database, check: str = "has-owner", service: str | None = "payments-api",
                    result: str = "pass", *, now: datetime | None = None, **fields) -> dict:
    """A result created and answered (a pair has at most one open result, so history is made this way)."""
    row = new_result(store, check, service, now=now)
    return answer(store, row["id"], result, now=now, **fields)
