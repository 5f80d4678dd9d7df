"""The store on both backends: results that the database itself keeps immutable, even against raw SQL."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import pytest

from reconciler.clock import Clock, format_time
from reconciler.errors import Conflict, NotFound
from reconciler.schedule import expire_results
from store_support import INTEGRITY_ERRORS, answer, derived_tables_differing, new_result, raw_rows, raw_sql


def test_migrations_are_idempotent(store, database_url):
    from reconciler.store import open_database

    again = open_database(database_url)
    try:
        assert again.migrate() == []
        assert again.schema_version() == store.schema_version() == store.backend.migrations[-1][0]
    finally:
        again.close()


def test_sqlite_store_uses_wal(tmp_path):
    from reconciler.store import open_database

    db = open_database(tmp_path / "catalog.db")
    with db.session() as session:
        assert session.value("PRAGMA journal_mode") == "wal"
    db.close()


def test_state_round_trips_json(store):
    store.state.set({"k": {"a": [1, 2]}})
    assert store.state.get("k") == {"a": [1, 2]}
    assert store.state.get("missing", "default") == "default"


def test_finished_result_cannot_change_through_the_store(synced_store):
    result = new_result(synced_store)
    answer(synced_store, result["id"], "pass")
    with pytest.raises(Conflict, match="already completed"):
        answer(synced_store, result["id"], "fail")
    with pytest.raises(NotFound):
        answer(synced_store, 999_999, "fail")
    assert synced_store.results.get(result["id"])["result"] == "pass"


def test_an_answer_after_the_checks_timeout_is_refused_and_the_next_pass_times_the_result_out(synced_store):
    # has-owner's timeout is 30m, counted from sent_at (from created_at while never sent), to the
    # microsecond as the scheduler's expiry counts it: an answer in its last microsecond is recorded,
    # one at the timeout is not (it used to be, until a pass expired the result first)
    store, timeout = synced_store, timedelta(minutes=30)
    start = Clock().now() - timedelta(hours=2)
    edge, late, resent = (new_result(store, service=slug, now=start)
                          for slug in ("payments-api", "users-api", "search-index"))
    store.dispatch.mark_sent_many([resent["id"]], now=format_time(start + timedelta(minutes=90)))
    answered = answer(store, edge["id"], "pass", now=start + timeout - timedelta(microseconds=1))
    assert answered["status"] == "completed"
    with pytest.raises(Conflict, match=rf"result {late['id']} was not answered within its check's timeout \(30m\)"):
        answer(store, late["id"], "pass", now=start + timeout)
    assert answer(store, resent["id"], "fail", now=start + timedelta(minutes=119))["result"] == "fail"  # sent 29m before
    assert store.results.get(late["id"])["status"] == "pending"
    assert expire_results(store, start + timeout) == [late["id"]]
    assert store.results.get(late["id"])["status"] == "timed-out"
    with pytest.raises(Conflict, match="already timed-out"):
        answer(store, late["id"], "pass", now=start + timeout)


@pytest.mark.parametrize("sql", [
    "UPDATE results SET result = 'fail' WHERE id = ?",
    "UPDATE results SET message = 'edited' WHERE id = ?",
    "UPDATE results SET status = 'error', result = 'unknown' WHERE id = ?",
])
def test_finished_result_cannot_change_with_raw_sql(synced_store, sql):
    result = new_result(synced_store)
    answer(synced_store, result["id"], "pass", message="ok")
    with pytest.raises(INTEGRITY_ERRORS, match="finished result can never change|only moves forward"):
        raw_sql(synced_store, sql, (result["id"],))
    assert synced_store.results.get(result["id"])["result"] == "pass"


def test_no_result_can_be_deleted_with_raw_sql(synced_store):
    finished = new_result(synced_store)
    answer(synced_store, finished["id"], "fail")
    open_result = new_result(synced_store)
    for row in (open_result, finished):
        with pytest.raises(INTEGRITY_ERRORS, match="can never be deleted"):
            raw_sql(synced_store, "DELETE FROM results WHERE id = ?", (row["id"],))
    with pytest.raises(INTEGRITY_ERRORS, match="can never be deleted"):
        raw_sql(synced_store, "DELETE FROM results")
    assert raw_sql(synced_store, "SELECT count(*) FROM results") == [(2,)]


def test_results_cannot_be_truncated_on_postgresql(postgres_server, example_dir):
    """SQLite has no TRUNCATE (DELETE is refused above); PostgreSQL's is refused by a statement trigger."""
    from conftest import sync_directory
    from reconciler.store import open_database

    store = open_database(postgres_server.new_database())
    try:
        sync_directory(store, example_dir)
        new_result(store)
        with pytest.raises(INTEGRITY_ERRORS, match="can never be deleted"):
            raw_sql(store, "TRUNCATE results CASCADE")
        assert raw_sql(store, "SELECT count(*) FROM results") == [(1,)]
    finally:
        store.close()


def test_status_only_moves_forward_with_raw_sql(synced_store):
    result = new_result(synced_store)
    raw_sql(synced_store, "UPDATE results SET status = 'sent', sent_at = 'x' WHERE id = ?", (result["id"],))
    with pytest.raises(INTEGRITY_ERRORS, match="only moves forward"):
        raw_sql(synced_store, "UPDATE results SET status = 'pending' WHERE id = ?", (result["id"],))
    assert synced_store.results.get(result["id"])["status"] == "sent"


def test_result_identity_cannot_change_with_raw_sql(synced_store):
    result = new_result(synced_store)
    with pytest.raises(INTEGRITY_ERRORS, match="identity"):
        raw_sql(synced_store, "UPDATE results SET service_id = NULL WHERE id = ?", (result["id"],))


def test_a_result_is_created_pending_even_with_raw_sql(synced_store):
    """create_due writes the derived rows of the results it creates (no insert trigger does): a result
    born finished would bypass the write-back queue and the latest results, so none can be."""
    check_id = synced_store.catalog.check_index()["has-owner"]["id"]
    for status, result, finished_at in (("completed", "pass", "2026-01-05T00:00:00Z"), ("sent", "unknown", None)):
        with pytest.raises(INTEGRITY_ERRORS, match="created pending"):
            raw_sql(synced_store, "INSERT INTO results (check_id, status, result, created_at, finished_at)"
                    " VALUES (?, ?, ?, '2026-01-05T00:00:00Z', ?)", (check_id, status, result, finished_at))
    assert raw_sql(synced_store, "SELECT count(*) FROM results") == [(0,)]


def test_creating_and_finishing_results_keeps_every_derived_table_exact(synced_store):
    """Results created by the hundred (create_due's statements) and finished every way (triggers)."""
    from reconciler.schedule import NEVER

    store = synced_store
    checks = [(check["id"], NEVER) for check in store.reads.checks()]

    def create(day: int) -> list[dict]:
        now = f"2026-01-0{day}T00:00:00.000000Z"
        return store.dispatch.create_due(checks, now=now, revision=f"r{day}", claim_until=now, holder="tests")

    first = create(5)
    assert len(first) > 20 and any(row["service_id"] is None for row in first)
    ids = [row["id"] for row in first]
    minutes = [datetime(2026, 1, 5, 0, n, tzinfo=timezone.utc) for n in range(60)]  # within every timeout
    answer(store, ids[0], "pass", now=minutes[1])
    answer(store, ids[1], "fail", url="https://ci/1", now=minutes[1])
    store.dispatch.mark_sent_many(ids[2:6], now="2026-01-05T00:01:00.000000Z")
    answer(store, ids[2], "warning", now=minutes[2])
    store.dispatch.mark_failed_many(ids[6:8], "refused", now="2026-01-05T00:02:00.000000Z")
    store.dispatch.expire([(row["check_id"], "9999", "too late") for row in first[8:9]], now="2026-01-05T00:03:00.000000Z")
    second = create(6)  # the pairs of the finished results come again, next to their last run
    assert 0 < len(second) < len(first)
    answer(store, second[0]["id"], "pass", now=minutes[5] + timedelta(days=1))
    assert derived_tables_differing(store) == []
    # the open runs of some services (read from latest_runs) are those the open results give
    if not any(key == 0 for _, key in store.pages.open_runs()):
        new_result(store, "github-org-audit", None)  # a run of no service, open
    store.dispatch.mark_sent_many([row["id"] for row in list(store.pages.open_runs().values())[::3]],
                                  now="2026-01-06T00:01:00.000000Z")
    everyone = store.pages.open_runs()  # read from the open results
    services = sorted({key for _, key in everyone})
    assert 0 in services and len(services) > 3
    some = services[::2] + [0]
    assert store.pages.open_runs(service_ids=some) == {pair: row for pair, row in everyone.items() if pair[1] in some}
    assert {row["status"] for row in everyone.values()} == {"pending", "sent"}


def test_a_checks_pass_rates_count_each_finished_result_once_on_the_day_it_finished(synced_store):
    """The check page's counts per UTC day (kept as results finish, not grouped from every result the
    check ever had): passed, failed (fail, error, timed out, refused), the rest only finished; a day
    before `since`, an open result and another check's results do not count."""
    from datetime import datetime, timezone

    store = synced_store
    check_id = store.catalog.check_index()["has-owner"]["id"]

    def at(day: int, hour: int = 12) -> datetime:
        return datetime(2026, 1, day, hour, 0, tzinfo=timezone.utc)

    services = ["payments-api", "users-api", "admin-console", "users-db"]
    for day, outcomes in ((3, ["fail"]), (4, ["pass", "fail", "warning", "error"]), (5, ["pass", "skipped"])):
        for service, outcome in zip(services, outcomes):
            answer(store, new_result(store, "has-owner", service, now=at(day, 1))["id"], outcome, now=at(day, 1) + timedelta(minutes=20))
    late = new_result(store, "has-owner", "payments-api", now=at(5, 23))  # finishes the next day, by timing out
    store.dispatch.expire([(check_id, "2026-01-06T00:00:00.000000Z", "too late")], now="2026-01-06T00:30:00.000000Z")
    refused = new_result(store, "has-owner", "users-api", now=at(6, 1))
    store.dispatch.mark_failed_many([refused["id"]], "refused", now="2026-01-06T02:00:00.000000Z")
    new_result(store, "has-owner", "admin-console", now=at(6, 3))  # still open: not finished, not counted
    answer(store, new_result(store, "readme-present", "payments-api", now=at(6, 1))["id"], "fail", now=at(6, 1) + timedelta(minutes=20))
    assert store.results.get(late["id"])["status"] == "timed-out"
    assert store.pages.pass_rates(check_id, "2026-01-04") == [
        {"day": "2026-01-04", "finished": 4, "passed": 1, "failed": 2},
        {"day": "2026-01-05", "finished": 2, "passed": 1, "failed": 0},
        {"day": "2026-01-06", "finished": 2, "passed": 0, "failed": 2},
    ]
    assert derived_tables_differing(store) == []


def test_a_services_timelines_are_the_last_finished_results_of_each_check(synced_store):
    """The service page's strips: per check, the newest `per_check` finished results, oldest first;
    an open result and other services' results are not in them."""
    store = synced_store
    owner = [answer(store, new_result(store, "has-owner", "payments-api")["id"], ("pass", "fail")[n % 2])["id"]
             for n in range(35)]
    readme = [answer(store, new_result(store, "readme-present", "payments-api")["id"], "warning")["id"] for _ in range(3)]
    new_result(store, "has-owner", "payments-api")  # open: not in the strip
    answer(store, new_result(store, "has-owner", "users-api")["id"], "pass")  # another service's
    checks = store.catalog.check_index()
    service_id = store.catalog.service_index()["payments-api"]["id"]
    timelines = store.pages.timelines(service_id)
    assert {check_id: [row["id"] for row in rows] for check_id, rows in timelines.items()} == {
        checks["has-owner"]["id"]: owner[-30:], checks["readme-present"]["id"]: readme}
    assert [row["result"] for row in timelines[checks["has-owner"]["id"]]][-2:] == ["fail", "pass"]
    assert [row["id"] for row in store.pages.timelines(service_id, per_check=2)[checks["readme-present"]["id"]]] == readme[-2:]


def test_completed_result_needs_a_value_and_a_finish_time(synced_store):
    result = new_result(synced_store)
    with pytest.raises(INTEGRITY_ERRORS):
        raw_sql(synced_store, "UPDATE results SET status = 'completed' WHERE id = ?", (result["id"],))


def test_a_recorded_write_back_can_never_change_or_go(synced_store):
    from reconciler.clock import Clock

    result = new_result(synced_store)
    answer(synced_store, result["id"], "pass")
    synced_store.writeback.record_writes({result["id"]: "a" * 40}, now=Clock().now())
    with pytest.raises(INTEGRITY_ERRORS, match="can never change"):
        raw_sql(synced_store, "UPDATE result_writes SET commit_sha = 'b' WHERE result_id = ?", (result["id"],))
    with pytest.raises(INTEGRITY_ERRORS, match="can never be deleted"):
        raw_sql(synced_store, "DELETE FROM result_writes")
    assert synced_store.writeback.writes([result["id"]]) == {result["id"]: "a" * 40}


def test_catalog_counts_and_file_errors(synced_store):
    counts = synced_store.catalog.counts()
    assert (counts["services"], counts["checks"], counts["results"]) == (11, 6, 0)
    assert synced_store.catalog.file_errors() == []


def test_a_database_url_with_an_unknown_scheme_is_a_clear_error():
    from reconciler.errors import ConfigError
    from reconciler.store import open_database

    with pytest.raises(ConfigError, match="unknown database URL scheme 'mysql'"):
        open_database("mysql://db/catalog")


def test_an_unreachable_postgresql_is_a_clear_error_without_the_password(tmp_path):
    from postgres_server import free_port
    from reconciler.errors import ConfigError
    from reconciler.store.postgres import PostgresBackend

    with pytest.raises(ConfigError) as raised:
        PostgresBackend(f"postgresql://catalog:s3cret-pw@127.0.0.1:{free_port()}/catalog?connect_timeout=2")
    assert "cannot connect" in str(raised.value) and "s3cret-pw" not in str(raised.value)


def test_a_batch_of_answers_gives_each_its_own_outcome_and_the_first_of_two_wins(synced_store):
    from datetime import datetime, timezone

    now = datetime(2026, 1, 5, 12, 0, tzinfo=timezone.utc)
    one, two = new_result(synced_store), new_result(synced_store, "has-owner", "users-api")
    done = new_result(synced_store, "readme-present", "payments-api")
    answer(synced_store, done["id"], "pass")
    outcomes = synced_store.results.answer([
        (one["id"], "fail", "first", None, now), (999_999, "pass", None, None, now),
        (one["id"], "pass", "second", None, now), (done["id"], "warning", None, None, now),
        (two["id"], "skipped", None, "https://ci/2", now),
    ])
    assert [type(o).__name__ if isinstance(o, Exception) else o["result"] for o in outcomes] == [
        "fail", "NotFound", "Conflict", "Conflict", "skipped"]
    assert (outcomes[0]["check"], outcomes[0]["service"], outcomes[4]["url"]) == ("has-owner", "payments-api", "https://ci/2")
    assert "already completed" in str(outcomes[2]) and synced_store.results.get(one["id"])["message"] == "first"


def test_a_batch_of_many_answers_keeps_every_derived_table_exact(store, tmp_path):
    """Answers in batches (SQLite: one UPDATE per 1,024 of them; PostgreSQL: one UPDATE) fire the same
    per-row triggers as single answers: every derived table equals what `results` alone gives, each
    answer has its own outcome, and each pair whose latest result turned failing (or back) has its event."""
    from datetime import datetime, timezone

    from conftest import sync_directory, write_catalog
    from reconciler.clock import format_time
    from reconciler.schedule import NEVER

    root = write_catalog(
        tmp_path / "catalog",
        [{"name": f"Service {n:02d}", "slug": f"service-{n:02d}", "priority": 3} for n in range(45)],
        [{"name": f"Check {n:02d}", "slug": f"check-{n:02d}", "frequency": "daily", "services": "all"} for n in range(25)],
    )
    assert sync_directory(store, root).outcome == "applied"
    checks = [(row["id"], NEVER) for row in store.catalog.check_index().values()]
    for round_, day in enumerate((5, 6)):
        now = datetime(2026, 1, day, 12, 0, tzinfo=timezone.utc)
        created = [row["id"] for row in store.dispatch.create_due(
            checks, now=format_time(now), revision=None, claim_until=format_time(now), holder="tests")]
        assert len(created) == 45 * 25  # 1,125: more than one SQLite statement's 1,024
        # round 1: every third fails; round 2: the failing ones recover, the others fail
        results = [("fail" if (i % 3 == 0) != (round_ == 1) else "pass") for i in range(len(created))]
        answers = [(rid, result, "é \"quoted\"\n'" if i == 7 else f"run {i}", f"https://ci/{i}" if i % 2 else None, now)
                   for i, (rid, result) in enumerate(zip(created, results))]
        answers[10:10] = [(created[3], "warning", None, None, now), (10**9, "pass", None, None, now)]
        outcomes = store.results.answer(answers)
        assert [o["result"] for o in outcomes[:10] + outcomes[12:]] == results
        assert [type(o).__name__ for o in outcomes[10:12]] == ["Conflict", "NotFound"]
        assert outcomes[7]["message"] == "é \"quoted\"\n'" and outcomes[1]["url"] == "https://ci/1"
        assert store.results.get(created[7])["message"] == "é \"quoted\"\n'"
        assert derived_tables_differing(store) == []
    events = raw_rows(store, "SELECT type, count(*) AS n FROM events GROUP BY type ORDER BY type")
    assert events == [{"type": "failing", "n": 375 + 750}, {"type": "recovered", "n": 375}]


def test_a_services_json_is_the_text_json_dumps_writes(synced_store):
    """GET /api/services/{slug} sends the text the store makes (no decode and encode per request): on
    either backend it is json.dumps' compact text (ensure_ascii off), its keys in the documented order,
    whatever a run's URL holds (quotes, a backslash, a control character, text outside ASCII)."""
    import json

    url = 'https://ci.example/run?q="x"&p=\\path\x1f\u00e9\u2713\U0001F600'
    answer(synced_store, new_result(synced_store, "has-owner", "payments-api")["id"], "fail", url=url)
    answer(synced_store, new_result(synced_store, "oncall-configured", "payments-api")["id"], "pass")
    text = synced_store.reads.service_json("payments-api")
    service = json.loads(text)
    assert text == json.dumps(service, separators=(",", ":"), ensure_ascii=False)
    assert list(service) == ["id", "slug", "name", "priority", "type", "description", "owner", "repository",
                             "active", "tags", "dependencies", "meta", "path", "digest", "error", "removed_at",
                             "created_at", "updated_at", "latest_results", "counts"]
    runs = {run["check"]: run for run in service["latest_results"]}
    assert list(runs) == sorted(runs) and runs["has-owner"]["url"] == url
    assert list(runs["has-owner"]) == ["id", "check", "status", "result", "url", "created_at", "sent_at", "finished_at"]
    assert service["counts"] == {"fail": 1, "pass": 1} and list(service["counts"]) == ["fail", "pass"]
    with pytest.raises(NotFound):
        synced_store.reads.service_json("no-such-service")


def test_status_counts_come_from_the_kept_counts_and_match_the_rows(synced_store):
    """`catalog status` counted every result row (seconds at a year of results); it reads result_counts,
    which the triggers keep: the same numbers, as integers (`catalog status --json` prints them)."""
    assert {k: synced_store.catalog.counts()[k] for k in ("pending_results", "sent_results", "results")} == {
        "pending_results": 0, "sent_results": 0, "results": 0}
    ids = [new_result(synced_store, check, service)["id"] for check, service in (
        ("has-owner", "payments-api"), ("has-owner", "users-db"), ("readme-present", "payments-api"))]
    synced_store.dispatch.mark_sent_many([ids[1]], now=format_time(Clock().now()))
    answer(synced_store, ids[0], "pass")
    counts = synced_store.catalog.counts()
    rows = {status: n for status, n in raw_sql(synced_store, "SELECT status, count(*) FROM results GROUP BY status")}
    assert counts["pending_results"] == rows.get("pending", 0) and counts["sent_results"] == rows.get("sent", 0)
    assert counts["results"] == sum(rows.values()) == 3
    assert all(type(counts[k]) is int for k in ("pending_results", "sent_results", "results"))
