"""Events on both backends: recorded with their cause, once per change, never changed; the outbox."""

from __future__ import annotations

from datetime import timedelta

import pytest

from reconciler.clock import Clock, FakeClock, format_time
from reconciler.events import Event
from store_support import INTEGRITY_ERRORS, finished_result, new_result, raw_sql, read_plans


def _types(store, **filters) -> list[tuple[str, str, str]]:
    return [(e["type"], e["service"], e["check"]) for e in reversed(store.events.list(**filters))]


def test_a_pair_that_flaps_is_reported_once_per_change(synced_store):
    for outcome in ("pass", "fail", "fail", "error", "pass", "pass", "warning", "fail"):
        finished_result(synced_store, "has-owner", "payments-api", outcome)
    events = list(reversed(synced_store.events.list()))
    assert [(e["type"], e["outcome"]) for e in events] == [
        ("failing", "fail"), ("recovered", "pass"), ("failing", "fail")]
    assert events[0]["team"] == "team-payments" and events[0]["service"] == "payments-api"
    assert events[0]["summary"] == "payments-api: check has-owner is failing (fail)"


def test_a_first_pass_tells_nothing_and_a_first_failure_is_failing(synced_store):
    finished_result(synced_store, "has-owner", "payments-api", "pass")
    assert synced_store.events.list() == []
    finished_result(synced_store, "has-owner", "users-db", "error")
    assert _types(synced_store) == [("failing", "users-db", "has-owner")]


def test_a_time_out_is_failing_and_the_next_pass_recovers(synced_store):
    clock = FakeClock()
    row = new_result(synced_store, "has-owner", "payments-api", now=clock.now())
    check_id = row["check_id"]
    later = clock.now() + timedelta(days=1)
    expired = synced_store.dispatch.expire([(check_id, format_time(later), "timed out")], now=format_time(later))
    assert expired == [row["id"]]
    finished_result(synced_store, "has-owner", "payments-api", "pass", now=later)
    assert [(e["type"], e["outcome"]) for e in reversed(synced_store.events.list())] == [
        ("failing", "timed-out"), ("recovered", "pass")]


def test_a_late_answer_to_an_older_run_tells_nothing(synced_store):
    older = new_result(synced_store, "has-owner", "payments-api")
    synced_store.dispatch.expire([(older["check_id"], format_time(Clock().now() + timedelta(days=1)), "t")],
                                 now=format_time(Clock().now()))
    synced_store.events.list()  # failing (timed-out)
    finished_result(synced_store, "has-owner", "payments-api", "pass")
    assert [e["type"] for e in reversed(synced_store.events.list())] == ["failing", "recovered"]


def test_events_never_change_and_are_never_deleted(synced_store):
    finished_result(synced_store, "has-owner", "payments-api", "fail")
    with pytest.raises(INTEGRITY_ERRORS):
        raw_sql(synced_store, "UPDATE events SET summary = 'x'")
    with pytest.raises(INTEGRITY_ERRORS):
        raw_sql(synced_store, "DELETE FROM events")


def test_an_event_with_a_key_is_recorded_once(store):
    now = Clock().now()
    event = Event("waiver-expiring", "waiver legacy-reports expires in 14 days", team="team-data",
                  data={"expires": "2027-03-31"}, key="waiver-expiring:legacy-reports:2027-03-31")
    assert store.events.emit([event, event], now=now) == 1
    assert store.events.emit([event], now=now) == 0
    [row] = store.events.list(type="waiver-expiring")
    assert row["data"] == {"expires": "2027-03-31"} and row["team"] == "team-data"


def test_unknown_event_types_are_refused():
    with pytest.raises(ValueError, match="unknown event type"):
        Event("nonsense", "x")


def test_events_page_by_id_and_filter(synced_store):
    for service in ("payments-api", "users-db", "search-index"):
        finished_result(synced_store, "has-owner", service, "fail")
    first = synced_store.events.list(limit=2)
    rest = synced_store.events.list(limit=2, before_id=first[-1]["id"])
    assert [e["service"] for e in first + rest] == ["search-index", "users-db", "payments-api"]
    assert _types(synced_store, service="users-db") == [("failing", "users-db", "has-owner")]
    assert _types(synced_store, check="readme-present") == []
    assert len(synced_store.events.list(type="failing")) == 3


def test_filters_combine_and_each_filter_reads_its_index(synced_store):
    """GET /api/events?service=... of a service with few events among millions read every event newest
    first (its index unused: `(:service IS NULL OR e.service = :service)`), and ?type=... had no index
    (version 14 adds it); each filter given is now a plain condition that SQLite answers from its index."""
    for service, outcome in (("payments-api", "fail"), ("users-db", "fail"), ("payments-api", "pass")):
        finished_result(synced_store, "has-owner", service, outcome)
    finished_result(synced_store, "readme-present", "payments-api", "fail")
    assert _types(synced_store, service="payments-api", check="has-owner") == [
        ("failing", "payments-api", "has-owner"), ("recovered", "payments-api", "has-owner")]
    assert _types(synced_store, service="payments-api", type="failing") == [
        ("failing", "payments-api", "has-owner"), ("failing", "payments-api", "readme-present")]
    assert _types(synced_store, type="recovered", check="readme-present") == []
    newest = synced_store.events.list(service="payments-api", limit=1)
    assert [e["check"] for e in synced_store.events.list(service="payments-api", before_id=newest[0]["id"])] == [
        "has-owner", "has-owner"]
    if synced_store.dialect.name != "sqlite":
        return  # PostgreSQL plans by its statistics: a tiny table is read whole
    def three_filtered_reads():
        for filters in ({"service": "users-db"}, {"check": "readme-present"}, {"type": "sync-failed"}):
            synced_store.events.list(**filters)

    plans = [plan for _, plan in read_plans(synced_store, three_filtered_reads)]
    assert len(plans) == 3 and all(len(plan) == 1 for plan in plans), plans
    for plan, index in zip(plans, ("events_by_service", "events_by_check", "events_by_type")):
        assert index in plan[0], plans


def test_the_outbox_holds_each_event_until_routed(synced_store):
    finished_result(synced_store, "has-owner", "payments-api", "fail")
    [event] = synced_store.events.unrouted()
    assert event["service_owner"] == "team-payments" and event["service_priority"] == 1
    now = Clock().now()
    synced_store.events.route([event["id"]], [("r1", event["id"], "team-payments", format_time(now))])
    assert synced_store.events.unrouted() == []
    [due] = synced_store.events.due(now=now)
    assert due["route"] == "r1" and due["id"] == event["id"]
    synced_store.events.retry([due["delivery_id"]], error="HTTP 500", until=now, now=now, max_attempts=2)
    synced_store.events.retry([due["delivery_id"]], error="HTTP 500", until=now, now=now, max_attempts=2)
    summary = synced_store.events.delivery_summary()
    assert summary["failed"] == 1 and summary["pending"] == 0
    assert summary["failed_deliveries"][0]["last_error"] == "HTTP 500"


def test_every_event_enters_the_outbox_once_whoever_records_it(synced_store):
    """The outbox has no trigger of its own: the failing / recovered triggers and `emit` (keyless in
    one statement, keyed one by one, a repeated key skipped) each put their events in it."""
    finished_result(synced_store, "has-owner", "payments-api", "fail")  # failing, by trigger
    finished_result(synced_store, "has-owner", "payments-api", "pass")  # recovered, by trigger
    now = Clock().now()
    keyed = Event("waiver-expired", "waiver w expired", team="team-data", key="waiver-expired:w:2027-01-01")
    assert synced_store.events.emit([Event("level-changed", "a rose", service="payments-api", data={"n": 1}),
                                     keyed, Event("level-changed", "b fell", result_id=7), keyed], now=now) == 3
    assert synced_store.events.emit([keyed], now=now) == 0
    events = synced_store.events.list()
    assert sorted(e["type"] for e in events) == ["failing", "level-changed", "level-changed", "recovered",
                                                 "waiver-expired"]
    assert [e["id"] for e in synced_store.events.unrouted()] == sorted(e["id"] for e in events)
    by_summary = {e["summary"]: e for e in events}
    assert by_summary["a rose"]["data"] == {"n": 1} and by_summary["b fell"]["result_id"] == 7


def test_a_file_that_does_not_validate_is_told_once_per_version_of_it(synced_store, example_dir):
    from conftest import sync_directory

    bad = example_dir / "services" / "payments-api.yaml"
    good = bad.read_text()
    bad.write_text(good.replace("priority: 1", "priority: 11"))
    sync_directory(synced_store, example_dir)
    [event] = synced_store.events.list(type="sync-failed")
    assert event["service"] == "payments-api" and event["team"] == "team-payments"
    assert event["summary"].startswith("services/payments-api.yaml: priority") and event["data"]["revision"]
    (example_dir / "services" / "users-db.yaml").write_text((example_dir / "services" / "users-db.yaml").read_text() + "\n")
    sync_directory(synced_store, example_dir)  # a new revision; the broken file is read again, unchanged
    assert len(synced_store.events.list(type="sync-failed")) == 1
    bad.write_text(good.replace("priority: 1", "priority: 12"))
    sync_directory(synced_store, example_dir)
    assert len(synced_store.events.list(type="sync-failed")) == 2
    bad.write_text(good)
    sync_directory(synced_store, example_dir)
    assert len(synced_store.events.list(type="sync-failed")) == 2
