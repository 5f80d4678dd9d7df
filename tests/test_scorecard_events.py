"""Scorecard events: level-changed with the answer, sync or time that moved a level; waiver-expiring,
waiver-expired and campaign-overdue once each when the clock passes their day. Both backends."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import pytest
import yaml

from api.up import Intervals, Loops
from conftest import CAMPAIGN_DEADLINE, WAIVER_EXPIRES, sync_directory, utc_at
from notify_receiver import Receiver
from reconciler import scorecard_events, scorecards
from reconciler.clock import FakeClock
from reconciler.notify import notify_pass
from reconciler.settings import Settings
from store_support import answer, finished_result, new_result

CARD = "scorecards/production-readiness.yaml"
NOW = datetime(2026, 11, 30, 12, 0, tzinfo=timezone.utc)


def events_of(store, type: str) -> list[dict]:
    return list(reversed(store.events.list(type=type)))


@pytest.fixture
def receiver():
    with Receiver() as running:
        yield running


def with_route(store, example_dir, route: dict):
    config = yaml.safe_load((example_dir / "catalog.yaml").read_text())
    config["notifications"] = [route]
    (example_dir / "catalog.yaml").write_text(yaml.safe_dump(config, sort_keys=False))
    report = sync_directory(store, example_dir)
    assert report.outcome == "applied" and not report.errors, report.errors


def test_an_answer_that_lifts_bronze_to_silver_records_one_event_delivered_to_the_team(synced_store, example_dir, receiver):
    store = synced_store
    assert events_of(store, "level-changed") == []  # the first evaluation (no level before) says nothing
    with_route(store, example_dir, {"name": "payments-levels", "url_env": "NOTIFY_PAYMENTS",
                                    "events": ["level-changed"], "services": {"owner": "team-payments"}})
    env = {"NOTIFY_PAYMENTS": f"json://127.0.0.1:{receiver.port}/levels"}
    for check in ("has-owner", "readme-present"):
        finished_result(store, check, "payments-api", "pass", now=NOW)
        finished_result(store, check, "users-api", "pass", now=NOW)  # team-identity: not this route's
    assert [(e["service"], e["data"]["level_after"]) for e in events_of(store, "level-changed")] == [
        ("payments-api", "Bronze"), ("users-api", "Bronze")]
    notify_pass(store, environ=env, clock=FakeClock(NOW))
    assert len(receiver.messages) == 1  # payments-api's Bronze; users-api's is another team's

    before = {e["id"] for e in events_of(store, "level-changed")}
    oncall = new_result(store, "oncall-configured", "payments-api", now=NOW)
    answer(store, oncall["id"], "pass", now=NOW)
    [event] = [e for e in events_of(store, "level-changed") if e["id"] not in before]
    assert event["service"] == "payments-api" and event["team"] == "team-payments"
    assert event["summary"] == "payments-api: Production readiness level rose from Bronze to Silver"
    assert event["data"] == {"scorecard": "production-readiness", "scorecard_name": "Production readiness",
                             "level_before": "Bronze", "level_after": "Silver", "levels_before": 1, "levels_after": 2}
    report = notify_pass(store, environ=env, clock=FakeClock(NOW))
    assert report.delivered == 1
    assert receiver.messages[-1].event_ids() == [event["id"]] and len(receiver.messages) == 2

    finished_result(store, "oncall-configured", "payments-api", "pass", now=NOW + timedelta(minutes=1))
    assert len(events_of(store, "level-changed")) == len(before) + 1  # the same level again: nothing
    assert notify_pass(store, environ=env, clock=FakeClock(NOW)).messages == 0


def test_a_sync_that_moves_levels_records_them_with_the_sync(synced_store, example_dir):
    store = synced_store
    for check in ("has-owner", "readme-present", "oncall-configured"):
        finished_result(store, check, "payments-api", "pass", now=NOW)
    count = len(events_of(store, "level-changed"))
    card = example_dir / CARD
    card.write_text(card.read_text().replace("checks: [oncall-configured]", "checks: [log4j-vulnerability]"))
    report = sync_directory(store, example_dir, clock=FakeClock(NOW))
    service_id = store.catalog.service_index()["payments-api"]["id"]
    assert scorecards.LevelChange("production-readiness", service_id, 2, 1) in report.level_changes
    [event] = events_of(store, "level-changed")[count:]
    assert (event["service"], event["data"]["level_before"], event["data"]["level_after"]) == ("payments-api", "Silver", "Bronze")
    assert "fell from Silver to Bronze" in event["summary"]
    sync_directory(store, example_dir, clock=FakeClock(NOW))  # the same revision: nothing new
    assert len(events_of(store, "level-changed")) == count + 1


def test_a_level_lost_with_time_is_reported_once(synced_store):
    store = synced_store
    for check in ("has-owner", "readme-present"):
        finished_result(store, check, "payments-api", "pass", now=NOW)
    count = len(events_of(store, "level-changed"))
    later = NOW + timedelta(hours=2, seconds=1)  # has-owner (hourly) went stale
    assert {(c.before, c.after) for c in scorecards.refresh_due(store, later)} == {(1, 0)}
    [event] = events_of(store, "level-changed")[count:]
    assert event["summary"] == "payments-api: Production readiness level fell from Bronze to no level"
    assert scorecards.refresh_due(store, later + timedelta(minutes=5)) == []
    assert len(events_of(store, "level-changed")) == count + 1


def test_waiver_expiring_and_expired_once_each_as_the_clock_moves(synced_store):
    store = synced_store  # waivers/search-index-log4j.yaml expires WAIVER_EXPIRES

    def waiver_events(now: datetime) -> list[str]:
        scorecard_events.record_due(store, now)  # (the example's campaign is overdue by then: its own test)
        return [e["type"] for e in store.events.list() if e["type"].startswith("waiver-")][::-1]

    clock = FakeClock(utc_at(WAIVER_EXPIRES - timedelta(days=15), 23, 59))
    assert waiver_events(clock.now()) == []  # 15 days before: not yet
    clock.advance(60)  # 00:00, 14 days before the expiry day
    assert waiver_events(clock.now()) == ["waiver-expiring"]
    assert waiver_events(clock.now() + timedelta(days=3)) == ["waiver-expiring"]
    [expiring] = events_of(store, "waiver-expiring")
    assert (expiring["service"], expiring["check"], expiring["team"]) == ("search-index", "log4j-vulnerability", "team-discovery")
    assert expiring["data"]["expires"] == str(WAIVER_EXPIRES) and expiring["data"]["waiver"] == "search-index-log4j"
    assert waiver_events(utc_at(WAIVER_EXPIRES, 23, 59)) == ["waiver-expiring"]  # still its day
    after = utc_at(WAIVER_EXPIRES + timedelta(days=1))
    assert waiver_events(after) == ["waiver-expiring", "waiver-expired"]
    assert waiver_events(after + timedelta(hours=1)) == ["waiver-expiring", "waiver-expired"]
    [expired] = events_of(store, "waiver-expired")
    assert expired["summary"].endswith(f"expired at the end of {WAIVER_EXPIRES}")
    assert scorecard_events.record_due(store, after + timedelta(days=2)) == 0


def test_campaign_overdue_once_after_its_deadline_unless_complete(synced_store, example_dir):
    store = synced_store  # campaigns/log4j-2026.yaml: pci services at Gold by CAMPAIGN_DEADLINE
    (example_dir / "campaigns" / "owners.yaml").write_text(
        f"name: Payments owned\nchecks: [has-owner]\nservices: [payments-api]\ndeadline: {CAMPAIGN_DEADLINE}\n")
    sync_directory(store, example_dir)
    finished_result(store, "has-owner", "payments-api", "pass")  # the second campaign is complete
    assert scorecard_events.record_due(store, utc_at(CAMPAIGN_DEADLINE, 23, 59)) == 0
    after = utc_at(CAMPAIGN_DEADLINE + timedelta(days=1), second=1)
    assert scorecard_events.record_due(store, after) == 1
    assert scorecard_events.record_due(store, after + timedelta(days=1)) == 0
    [event] = events_of(store, "campaign-overdue")
    assert event["team"] == "security-team" and event["data"]["campaign"] == "log4j-2026"
    assert event["data"]["met"] < event["data"]["targeted"] == len(event["data"]["missing"])
    assert event["summary"].startswith("campaign Remove log4j is overdue: 0 of ")


def test_the_leaders_scorecards_loop_records_them_on_its_own_clock(synced_store, example_dir, tmp_path):
    clock = FakeClock(utc_at(CAMPAIGN_DEADLINE + timedelta(days=1), second=1))  # the campaign's deadline is over
    loops = Loops(synced_store, Settings(home=tmp_path, repo=str(example_dir), dispatcher="log"), Intervals(), clock)
    loops.scorecards()
    loops.scorecards()
    assert [e["type"] for e in synced_store.events.list()] == ["campaign-overdue"]
    clock.advance(60 * 86400)  # the waiver's day (59 days after the deadline) is over
    loops.scorecards()
    loops.scorecards()
    assert sorted(e["type"] for e in synced_store.events.list()) == ["campaign-overdue", "waiver-expired"]


def test_catalog_dispatch_from_cron_applies_what_time_changes_as_catalog_up_does(synced_store, database_url, tmp_path):
    """operating.md's separate processes run `catalog dispatch` from cron and no `catalog up`: its pass
    must do the scorecards job too. A level whose results went stale stayed Bronze for ever, and no
    snapshot was taken."""
    import os
    import subprocess
    import sys

    store = synced_store
    long_ago = datetime.now(timezone.utc) - timedelta(days=3)
    for check in ("has-owner", "readme-present"):
        finished_result(store, check, "payments-api", "pass", now=long_ago)
    service_id = store.catalog.service_index()["payments-api"]["id"]
    with store.transaction() as session:
        assert store.scorecards.stored_levels(session, [service_id])[("production-readiness", service_id)][0] == 1
    count = len(events_of(store, "level-changed"))
    env = {**{k: v for k, v in os.environ.items() if not k.startswith("CATALOG_")},
           "CATALOG_HOME": str(tmp_path / "home"), "CATALOG_DATABASE_URL": database_url, "CATALOG_DISPATCHER": "log"}
    done = subprocess.run([sys.executable, "-m", "reconciler.cli", "dispatch"], env=env, capture_output=True,
                          text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert "scorecards: " in done.stderr and "levels changed with time" in done.stderr
    moved = [e for e in events_of(store, "level-changed")[count:] if e["service"] == "payments-api"]
    assert [e["summary"] for e in moved] == ["payments-api: Production readiness level fell from Bronze to no level"]
    assert store.state.get("scorecard_snapshot_day") == datetime.now(timezone.utc).strftime("%Y-%m-%d")
