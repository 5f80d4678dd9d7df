"""The SQLite store: migrations, WAL, and results that triggers keep immutable even against raw SQL."""

from __future__ import annotations

import sqlite3
from datetime import datetime, timezone

import pytest

from reconciler.errors import Conflict, NotFound
from reconciler.store import MIGRATIONS, Store

NOW = datetime(2026, 1, 5, 12, 0, tzinfo=timezone.utc)


def _ids(store: Store) -> tuple[int, int]:
    check = store.connection.execute("SELECT id FROM checks WHERE slug = 'has-owner'").fetchone()["id"]
    service = store.connection.execute("SELECT id FROM services WHERE slug = 'payments-api'").fetchone()["id"]
    return check, service


def _raw(store: Store) -> sqlite3.Connection:
    """A plain connection, as any other program could open the file."""
    conn = sqlite3.connect(store.path, isolation_level=None)
    conn.execute("PRAGMA foreign_keys=ON")
    return conn


def test_migrations_are_idempotent(tmp_path):
    path = tmp_path / "catalog.db"
    first = Store(path)
    first.close()
    again = Store(path)
    again.migrate()
    assert again.schema_version() == max(version for version, _ in MIGRATIONS)
    rows = again.connection.execute("SELECT count(*) AS n FROM schema_migrations").fetchone()["n"]
    assert rows == len(MIGRATIONS)


def test_a_store_made_by_the_first_release_is_upgraded_with_its_results(tmp_path, example_dir, monkeypatch):
    """Version 2 rebuilds latest_runs (derived data) from results: the service reads stay the same."""
    from conftest import sync_directory
    from reconciler.store import database

    path = tmp_path / "catalog.db"
    monkeypatch.setattr(database, "MIGRATIONS", MIGRATIONS[:1])  # the schema as the first release made it
    old = Store(path)
    sync_directory(old, example_dir)
    check, service = _ids(old)
    first = old.create_result(check, service, now=NOW)
    old.complete_result(first["id"], "fail", now=NOW)
    second = old.create_result(check, service, now=NOW)
    orgwide = old.create_result(old.check_index()["github-org-audit"]["id"], None, now=NOW)
    old.close()
    monkeypatch.undo()

    store = Store(path)
    assert store.schema_version() == MIGRATIONS[-1][0]
    latest = store.get_service("payments-api")["latest_results"]
    assert [(row["check"], row["id"], row["status"]) for row in latest] == [("has-owner", second["id"], "pending")]
    store.complete_result(second["id"], "pass", now=NOW)  # the new triggers keep it from here
    assert store.get_service("payments-api")["counts"] == {"pass": 1}
    runs = store.connection.execute("SELECT result_id FROM latest_runs WHERE service_key = 0").fetchall()
    assert [row["result_id"] for row in runs] == [orgwide["id"]]


def test_results_of_a_first_release_store_are_not_due_again_after_the_upgrade(tmp_path, example_dir, monkeypatch):
    """Migration 2 builds dispatch_pairs from the history: a pair answered an hour ago is not due."""
    from datetime import timedelta

    from conftest import sync_directory
    from reconciler.schedule import due_pairs
    from reconciler.store import database

    path = tmp_path / "catalog.db"
    monkeypatch.setattr(database, "MIGRATIONS", MIGRATIONS[:1])
    old = Store(path)
    sync_directory(old, example_dir)
    check, service = _ids(old)
    answered = old.create_result(check, service, now=NOW)
    old.complete_result(answered["id"], "pass", now=NOW)
    old.close()
    monkeypatch.undo()

    store = Store(path)
    due = due_pairs(store, NOW + timedelta(minutes=30))  # has-owner runs hourly
    assert (check, service) not in due
    assert (check, store.service_index()["users-api"]["id"]) in due


def test_store_uses_wal(store):
    assert store.connection.execute("PRAGMA journal_mode").fetchone()["journal_mode"] == "wal"


def test_state_round_trips_json(store):
    store.set_state("k", {"a": [1, 2]})
    assert store.get_state("k") == {"a": [1, 2]}
    assert store.get_state("missing", "default") == "default"


def test_finished_result_cannot_change_through_the_store(synced_store):
    check, service = _ids(synced_store)
    result = synced_store.create_result(check, service, now=NOW)
    synced_store.complete_result(result["id"], "pass", now=NOW)
    with pytest.raises(Conflict, match="already completed"):
        synced_store.complete_result(result["id"], "fail", now=NOW)
    with pytest.raises(NotFound):
        synced_store.complete_result(999_999, "fail", now=NOW)
    assert synced_store.get_result(result["id"])["result"] == "pass"


@pytest.mark.parametrize("sql", [
    "UPDATE results SET result = 'fail' WHERE id = ?",
    "UPDATE results SET message = 'edited' WHERE id = ?",
    "UPDATE results SET status = 'error', result = 'unknown' WHERE id = ?",
])
def test_finished_result_cannot_change_with_raw_sql(synced_store, sql):
    check, service = _ids(synced_store)
    result = synced_store.create_result(check, service, now=NOW)
    synced_store.complete_result(result["id"], "pass", now=NOW, message="ok")
    with pytest.raises(sqlite3.IntegrityError, match="finished result can never change|only moves forward"):
        _raw(synced_store).execute(sql, (result["id"],))
    assert synced_store.get_result(result["id"])["result"] == "pass"


def test_no_result_can_be_deleted_with_raw_sql(synced_store):
    check, service = _ids(synced_store)
    open_result = synced_store.create_result(check, service, now=NOW)
    finished = synced_store.create_result(check, service, now=NOW)
    synced_store.complete_result(finished["id"], "fail", now=NOW)
    conn = _raw(synced_store)
    for row in (open_result, finished):
        with pytest.raises(sqlite3.IntegrityError, match="can never be deleted"):
            conn.execute("DELETE FROM results WHERE id = ?", (row["id"],))
    with pytest.raises(sqlite3.IntegrityError, match="can never be deleted"):
        conn.execute("DELETE FROM results")
    assert synced_store.connection.execute("SELECT count(*) AS n FROM results").fetchone()["n"] == 2


def test_status_only_moves_forward_with_raw_sql(synced_store):
    check, service = _ids(synced_store)
    result = synced_store.create_result(check, service, now=NOW)
    conn = _raw(synced_store)
    conn.execute("UPDATE results SET status = 'sent', sent_at = 'x' WHERE id = ?", (result["id"],))
    with pytest.raises(sqlite3.IntegrityError, match="only moves forward"):
        conn.execute("UPDATE results SET status = 'pending' WHERE id = ?", (result["id"],))
    assert synced_store.get_result(result["id"])["status"] == "sent"


def test_result_identity_cannot_change_with_raw_sql(synced_store):
    check, service = _ids(synced_store)
    result = synced_store.create_result(check, service, now=NOW)
    with pytest.raises(sqlite3.IntegrityError, match="identity"):
        _raw(synced_store).execute("UPDATE results SET service_id = NULL WHERE id = ?", (result["id"],))


def test_completed_result_needs_a_value_and_a_finish_time(synced_store):
    check, service = _ids(synced_store)
    result = synced_store.create_result(check, service, now=NOW)
    with pytest.raises(sqlite3.IntegrityError):
        _raw(synced_store).execute("UPDATE results SET status = 'completed' WHERE id = ?", (result["id"],))


def test_catalog_counts_and_file_errors(synced_store):
    counts = synced_store.catalog_counts()
    assert (counts["services"], counts["checks"], counts["results"]) == (11, 6, 0)
    assert synced_store.catalog_file_errors() == []
