"""Stores made by landed builds open with this one: frozen stores (SQL fixtures, never regenerated from
today's code) are loaded on each backend, upgraded, and must read, answer and dispatch correctly."""

from __future__ import annotations

import sqlite3
import subprocess
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest

from reconciler.schedule import due_pairs
from reconciler.store import open_database
from store_support import answer, raw_rows
from store_support import derived_tables_differing

FIXTURES = Path(__file__).parent / "fixtures"
NOW = datetime(2026, 11, 25, 12, 0, tzinfo=timezone.utc)


@pytest.fixture
def first_build_store(tmp_path):
    """The SQLite store of the first landed commit (794723b): version 1 in its first shape, 4 results
    (1 written back, 2 finished and unwritten, 1 pending)."""
    path = tmp_path / "catalog.db"
    conn = sqlite3.connect(path)
    conn.executescript((FIXTURES / "store-794723b.sql").read_text())
    conn.close()
    return path


def test_the_first_builds_store_opens_and_is_upgraded(first_build_store):
    store = open_database(first_build_store)
    assert store.schema_version() == store.backend.migrations[-1][0]
    service = store.reads.service_json("payments-api")
    assert '"latest_results":[{"id":4,"check":"has-owner","status":"pending"' in service
    latest = store.pages.latest(service_ids=[1, 2, 0])
    assert {key: row["result_id"] for key, row in latest.items()} == {(1, 1): 1, (1, 2): 2, (2, 0): 3}
    assert [row["id"] for row in store.writeback.batch(10)] == [2, 3]  # finished, never written
    assert store.writeback.writes([1, 2, 3]) == {1: "a" * 40}
    assert {key: row["id"] for key, row in store.writeback.latest().items()} == {(1, 1): 1}
    assert store.results.get(3)["service"] is None and store.results.get(1)["check"] == "has-owner"


def test_after_the_upgrade_the_triggers_keep_the_derived_tables(first_build_store):
    store = open_database(first_build_store)
    answer(store, 4, "fail", now=NOW)
    assert store.pages.latest(service_ids=[1])[(1, 1)]["result_id"] == 4
    assert '"counts":{"fail":1}' in store.reads.service_json("payments-api")
    assert [row["id"] for row in store.writeback.batch(10)] == [2, 3, 4]
    created = store.dispatch.create_due([(1, "9999"), (2, "9999")], now="2026-12-01T00:00:00.000000Z", revision=None,
                                        claim_until="2026-12-01T00:00:00.000000Z", holder="tests")
    assert sorted(row["id"] for row in created) == [5, 6, 7]  # every pair again, next to its history
    assert derived_tables_differing(store) == []


def test_the_first_builds_answered_pairs_are_not_due_again(first_build_store):
    store = open_database(first_build_store)
    due = set(due_pairs(store, NOW))  # has-owner is daily; users-db was answered on the 24th
    assert (1, 2) in due and (1, 1) not in due  # payments-api has a result created on the 25th


def test_the_first_postgresql_store_opens_and_is_upgraded(postgres_server):
    url = postgres_server.new_database()
    subprocess.run(["psql", "-q", "-v", "ON_ERROR_STOP=1", "-d", url, "-f", str(FIXTURES / "postgres-v3.sql")],
                   check=True, capture_output=True, text=True)
    store = open_database(url)
    try:
        assert store.schema_version() == store.backend.migrations[-1][0]
        assert raw_rows(store, "SELECT count(*) AS n FROM schema_migrations")[0]["n"] == len(store.backend.migrations)
        assert '"latest_results":[{"id":2,"check":"has-owner","status":"pending"' in store.reads.service_json("users-db")
        answer(store, 2, "warning", now=NOW)
        assert store.pages.latest(service_ids=[2])[(1, 2)]["result"] == "warning"
        assert store.writeback.writes([1]) == {1: "a" * 40}
        assert [row["id"] for row in store.writeback.batch(10)] == [2]
        created = store.dispatch.create_due([(1, "9999")], now="2026-12-01T00:00:00.000000Z", revision=None,
                                            claim_until="2026-12-01T00:00:00.000000Z", holder="tests")
        assert [row["id"] for row in created] == [3, 4]  # identity columns continue after the frozen rows
        assert derived_tables_differing(store) == []
    finally:
        store.close()
