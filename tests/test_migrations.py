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
from store_support import raw_sql

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


@pytest.fixture(params=["sqlite", "postgresql"])
def version_11_url(request, tmp_path) -> str:
    """The store of main's build at schema version 11 (latest_runs with its row JSON stored), on each
    backend: the example catalog and three days of results, some pending or sent."""
    if request.param == "sqlite":
        path = tmp_path / "catalog.db"
        conn = sqlite3.connect(path)
        conn.executescript((FIXTURES / "store-v11.sql").read_text())
        conn.close()
        return f"sqlite://{path}"
    url = request.getfixturevalue("postgres_server").new_database()
    subprocess.run(["psql", "-q", "-v", "ON_ERROR_STOP=1", "-d", url, "-f", str(FIXTURES / "postgres-v11.sql")],
                   check=True, capture_output=True, text=True)
    return url


LATEST_RUNS = ("SELECT service_key, check_slug, check_id, result_id, status, result, url, created_at, sent_at, finished_at"
               " FROM latest_runs ORDER BY service_key, check_slug")


def test_latest_runs_keeps_every_row_and_its_json_through_version_12(version_11_url):
    frozen = open_database(version_11_url, migrate=False)
    try:
        assert frozen.schema_version() == 11
        before = raw_rows(frozen, LATEST_RUNS)
        services = raw_rows(frozen, "SELECT id, slug FROM services ORDER BY id")
        pages = {row["slug"]: frozen.reads.service_json(row["slug"]) for row in services}
        open_ids = [row["id"] for row in raw_rows(frozen, "SELECT id FROM results WHERE status IN ('pending', 'sent') ORDER BY id")]
    finally:
        frozen.close()
    assert len(before) == 31 and len(open_ids) == 15
    store = open_database(version_11_url)
    try:
        assert store.schema_version() == store.backend.migrations[-1][0] >= 12
        assert raw_rows(store, LATEST_RUNS) == before
        assert derived_tables_differing(store) == []
        # GET /api/services/{slug}: the same text, its rows' JSON now computed when read
        assert {row["slug"]: store.reads.service_json(row["slug"]) for row in services} == pages
        # the answer's trigger keeps the rebuilt table (open results are their pair's newest)
        # (the fixture's results were sent days before NOW: timeouts of 30 days keep them answerable)
        raw_sql(store, "UPDATE checks SET timeout_seconds = 2592000")
        for n, result_id in enumerate(open_ids):
            answer(store, result_id, ("pass", "fail")[n % 2], now=NOW, url=f"https://ci.example/runs/{n}")
        assert derived_tables_differing(store) == []
        changed = raw_rows(store, LATEST_RUNS)
        assert sorted(row["result_id"] for row in changed if row["finished_at"] == "2026-11-25T12:00:00.000000Z") == open_ids
        created = store.dispatch.create_due([(check_id, "9999") for check_id in range(1, 7)], now="2026-12-01T00:00:00.000000Z",
                                            revision=None, claim_until="2026-12-01T00:00:00.000000Z", holder="tests")
        assert len(created) == 31  # every pair again: its new result replaces its row
        assert derived_tables_differing(store) == []
        assert {row["result_id"] for row in raw_rows(store, LATEST_RUNS)} == {row["id"] for row in created}
    finally:
        store.close()


def test_version_13_counts_the_results_finished_before_it_per_check_and_day(version_11_url):
    """check_days starts with every result finished before the upgrade, per check and UTC day, and an
    answer afterwards adds to its day: the check page's pass rates read it (both backends)."""
    frozen = open_database(version_11_url, migrate=False)
    try:
        finished = raw_rows(frozen, "SELECT check_id, substr(finished_at, 1, 10) AS day, result, status FROM results"
                                    " WHERE finished_at IS NOT NULL")
        open_ids = [row["id"] for row in raw_rows(
            frozen, "SELECT id FROM results WHERE status IN ('pending', 'sent') ORDER BY id")]
    finally:
        frozen.close()
    assert len({row["day"] for row in finished}) >= 2 and open_ids
    store = open_database(version_11_url)
    try:
        check_id = finished[0]["check_id"]
        mine = [row for row in finished if row["check_id"] == check_id]
        expected = [
            {"day": day, "finished": sum(1 for r in mine if r["day"] == day),
             "passed": sum(1 for r in mine if r["day"] == day and r["result"] == "pass"),
             "failed": sum(1 for r in mine
                           if r["day"] == day and (r["result"] in ("fail", "error") or r["status"] != "completed"))}
            for day in sorted({r["day"] for r in mine})
        ]
        assert store.pages.pass_rates(check_id, "2000-01-01") == expected
        before = raw_rows(store, "SELECT count(*) AS n FROM check_days")[0]["n"]
        raw_sql(store, "UPDATE checks SET timeout_seconds = 2592000")  # sent days before: still answerable
        answer(store, open_ids[0], "pass", now=datetime(2026, 12, 1, 8, 0, tzinfo=timezone.utc))
        assert raw_rows(store, "SELECT finished, passed FROM check_days WHERE day = '2026-12-01'") == [
            {"finished": 1, "passed": 1}]
        assert raw_rows(store, "SELECT count(*) AS n FROM check_days")[0]["n"] == before + 1
        assert derived_tables_differing(store) == []
    finally:
        store.close()
