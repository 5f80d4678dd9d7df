"""Notifications end to end against a loopback receiver: Apprise's json:// and the signed webhook."""

from __future__ import annotations

import logging
from datetime import timedelta

import pytest
import yaml

from conftest import sync_directory
from notify_receiver import Receiver
from reconciler.clock import FakeClock
from reconciler.notify import RetryPolicy, notify_pass
from reconciler.schema import route_problems
from reconciler.schema import CatalogConfig
from store_support import finished_result

SECRET = "s3cret-hmac-key-never-shown"
TOKEN = "tok-never-shown-9f8e7d"


def add_routes(store, example_dir, routes: list[dict]):
    """Sync the example catalog with these routes in its catalog.yaml, as a team would merge them."""
    config = yaml.safe_load((example_dir / "catalog.yaml").read_text())
    config["notifications"] = routes
    (example_dir / "catalog.yaml").write_text(yaml.safe_dump(config, sort_keys=False))
    report = sync_directory(store, example_dir)
    assert report.outcome == "applied" and not report.errors, report.errors
    return store


@pytest.fixture
def receiver():
    with Receiver(secret=SECRET) as running:
        yield running


@pytest.fixture
def webhook_env(receiver):
    return {"AUDIT_HOOK_URL": receiver.url + f"?token={TOKEN}", "AUDIT_HOOK_SECRET": SECRET}


WEBHOOK = {"name": "audit-hook", "webhook_env": "AUDIT_HOOK_URL", "secret_env": "AUDIT_HOOK_SECRET", "events": ["all"]}


def test_each_event_is_delivered_once_signed_and_carrying_its_id(synced_store, example_dir, receiver, webhook_env):
    add_routes(synced_store, example_dir, [WEBHOOK])
    failed = finished_result(synced_store, "has-owner", "payments-api", "fail")
    report = notify_pass(synced_store, environ=webhook_env)
    assert (report.messages, report.delivered) == (1, 1)
    [message] = receiver.messages
    [event] = synced_store.events.list()
    assert message.signed is True
    assert message.headers["X-Catalog-Event-Id"] == str(event["id"]) and message.headers["X-Catalog-Event"] == "failing"
    assert message.json["id"] == event["id"] and message.json["result_id"] == failed["id"]
    assert message.json["team"] == "team-payments" and message.json["check"] == "has-owner"
    assert notify_pass(synced_store, environ=webhook_env).messages == 0  # delivered once: not again
    finished_result(synced_store, "has-owner", "payments-api", "pass")
    notify_pass(synced_store, environ=webhook_env)
    assert [m.json["type"] for m in receiver.messages] == ["failing", "recovered"]


def test_apprise_json_route_for_one_team(synced_store, example_dir, receiver):
    add_routes(synced_store, example_dir, [{"name": "payments-alerts", "url_env": "NOTIFY_PAYMENTS",
                                             "events": ["failing", "recovered"], "services": {"owner": "team-payments"}}])
    env = {"NOTIFY_PAYMENTS": f"json://127.0.0.1:{receiver.port}/notify"}
    finished_result(synced_store, "has-owner", "payments-api", "fail")
    finished_result(synced_store, "has-owner", "users-api", "fail")  # team-identity: not this route's
    notify_pass(synced_store, environ=env)
    [message] = receiver.messages
    [event] = synced_store.events.list(service="payments-api")
    assert message.path == "/notify" and message.json["title"] == "payments-api: check has-owner is failing (fail)"
    assert message.event_ids() == [event["id"]]


def test_a_failed_send_is_retried_with_backoff_after_500s_and_time_outs(synced_store, example_dir, receiver, webhook_env):
    add_routes(synced_store, example_dir, [WEBHOOK])
    clock = FakeClock()
    policy = RetryPolicy(attempts=5, first=10, cap=60)
    finished_result(synced_store, "has-owner", "payments-api", "fail", now=clock.now())
    receiver.script(500, ("hang", 1.0))
    first = notify_pass(synced_store, environ=webhook_env, clock=clock, policy=policy, timeout=0.3)
    assert (first.retried, first.delivered) == (1, 0)
    assert notify_pass(synced_store, environ=webhook_env, clock=clock, policy=policy, timeout=0.3).messages == 0  # backing off
    clock.advance(10)
    assert notify_pass(synced_store, environ=webhook_env, clock=clock, policy=policy, timeout=0.3).retried == 1  # timed out
    [event] = synced_store.events.list()
    assert "did not answer within 0.3 s" in synced_store.events.get(event["id"])["deliveries"][0]["last_error"]
    clock.advance(19)
    assert notify_pass(synced_store, environ=webhook_env, clock=clock, policy=policy, timeout=0.3).messages == 0
    clock.advance(1)
    assert notify_pass(synced_store, environ=webhook_env, clock=clock, policy=policy, timeout=0.3).delivered == 1
    assert [r.status for r in receiver.requests] == [500, 0, 200]
    assert {tuple(r.event_ids()) for r in receiver.requests} == {(event["id"],)}
    assert synced_store.events.get(event["id"])["deliveries"][0]["status"] == "delivered"


def test_a_pairs_later_events_wait_behind_one_that_waits_for_a_retry(synced_store, example_dir, receiver, webhook_env):
    """A `recovered` delivered before the `failing` it follows leaves a receiver on the wrong state."""
    add_routes(synced_store, example_dir, [WEBHOOK])
    clock = FakeClock()
    policy = RetryPolicy(attempts=5, first=10, cap=60)
    finished_result(synced_store, "has-owner", "payments-api", "fail", now=clock.now())
    receiver.script(500)
    assert notify_pass(synced_store, environ=webhook_env, clock=clock, policy=policy).retried == 1
    clock.advance(1)
    finished_result(synced_store, "has-owner", "payments-api", "pass", now=clock.now())
    finished_result(synced_store, "has-owner", "users-api", "fail", now=clock.now())  # another pair: not held
    held = notify_pass(synced_store, environ=webhook_env, clock=clock, policy=policy)
    assert (held.messages, held.retried) == (1, 0)
    clock.advance(10)
    notify_pass(synced_store, environ=webhook_env, clock=clock, policy=policy)
    sent = [(m.json["service"], m.json["type"]) for m in receiver.messages]
    assert sent == [("users-api", "failing"), ("payments-api", "failing"), ("payments-api", "recovered")]


def test_after_a_failed_send_a_pass_sends_nothing_more_of_that_pair(synced_store, example_dir, receiver, webhook_env):
    add_routes(synced_store, example_dir, [WEBHOOK])
    clock = FakeClock()
    policy = RetryPolicy(attempts=5, first=10, cap=60)
    finished_result(synced_store, "has-owner", "payments-api", "fail", now=clock.now())
    finished_result(synced_store, "has-owner", "payments-api", "pass", now=clock.now())
    receiver.script(500)
    first = notify_pass(synced_store, environ=webhook_env, clock=clock, policy=policy)
    assert (first.messages, first.retried) == (0, 1)
    clock.advance(10)
    notify_pass(synced_store, environ=webhook_env, clock=clock, policy=policy)
    assert [m.json["type"] for m in receiver.messages] == ["failing", "recovered"]


def test_after_the_last_retry_a_delivery_is_failed_and_counted(synced_store, example_dir, receiver, webhook_env):
    add_routes(synced_store, example_dir, [WEBHOOK])
    clock = FakeClock()
    finished_result(synced_store, "has-owner", "payments-api", "fail", now=clock.now())
    receiver.script(500, 502)
    policy = RetryPolicy(attempts=2, first=1)
    notify_pass(synced_store, environ=webhook_env, clock=clock, policy=policy)
    clock.advance(1)
    assert notify_pass(synced_store, environ=webhook_env, clock=clock, policy=policy).failed == 1
    clock.advance(3600)
    assert notify_pass(synced_store, environ=webhook_env, clock=clock, policy=policy).messages == 0
    summary = synced_store.events.delivery_summary()
    assert summary["failed"] == 1
    assert summary["failed_deliveries"][0]["last_error"] == "the webhook answered HTTP 502"


def test_a_digest_folds_a_teams_events_into_one_message(synced_store, example_dir, receiver):
    add_routes(synced_store, example_dir, [{"name": "hourly", "url_env": "NOTIFY_DIGEST", "digest": "hourly"}])
    env = {"NOTIFY_DIGEST": f"json://127.0.0.1:{receiver.port}/"}
    clock = FakeClock()  # 12:00
    for service in ("payments-api", "payments-db", "ledger-worker", "users-api", "users-db"):
        finished_result(synced_store, "has-owner", service, "fail", now=clock.now())
    assert notify_pass(synced_store, environ=env, clock=clock).messages == 0  # the window is open
    clock.advance(timedelta(minutes=59))
    assert notify_pass(synced_store, environ=env, clock=clock).messages == 0
    clock.advance(timedelta(minutes=1))
    report = notify_pass(synced_store, environ=env, clock=clock)
    assert (report.messages, report.delivered) == (2, 5)
    titles = sorted(m.json["title"] for m in receiver.messages)
    assert titles == ["2 catalog events for team-identity (hourly digest)", "3 catalog events for team-payments (hourly digest)"]
    assert sorted(i for m in receiver.messages for i in m.event_ids()) == sorted(e["id"] for e in synced_store.events.list())



def test_a_webhook_digest_is_one_signed_json_message_per_team(synced_store, example_dir, receiver, webhook_env):
    add_routes(synced_store, example_dir, [{**WEBHOOK, "digest": "daily", "services": {"owner": "team-payments"}}])
    clock = FakeClock()
    for service in ("payments-api", "payments-db", "users-api"):
        finished_result(synced_store, "has-owner", service, "fail", now=clock.now())
    notify_pass(synced_store, environ=webhook_env, clock=clock)
    clock.advance(timedelta(hours=12))
    assert notify_pass(synced_store, environ=webhook_env, clock=clock).delivered == 2
    [message] = receiver.messages
    assert message.signed and message.headers["X-Catalog-Event"] == "digest"
    assert message.json["team"] == "team-payments" and message.json["digest"] == "daily"
    assert [e["service"] for e in message.json["events"]] == ["payments-api", "payments-db"]


def test_an_unset_variable_is_a_warning_at_sync_and_its_events_wait(synced_store, example_dir, receiver, monkeypatch):
    monkeypatch.delenv("AUDIT_HOOK_URL", raising=False)
    monkeypatch.delenv("AUDIT_HOOK_SECRET", raising=False)
    config = yaml.safe_load((example_dir / "catalog.yaml").read_text())
    config["notifications"] = [WEBHOOK]
    (example_dir / "catalog.yaml").write_text(yaml.safe_dump(config, sort_keys=False))
    report = sync_directory(synced_store, example_dir)
    assert report.outcome == "applied" and not report.errors
    warnings = [str(w) for w in report.plan.warnings]
    assert any(w.startswith("catalog.yaml:") and "AUDIT_HOOK_URL is not set" in w for w in warnings), warnings
    finished_result(synced_store, "has-owner", "payments-api", "fail")
    pass_report = notify_pass(synced_store, environ={})
    assert (pass_report.retried, receiver.requests) == (1, [])
    [event] = synced_store.events.list()
    assert "AUDIT_HOOK_URL is not set" in synced_store.events.get(event["id"])["deliveries"][0]["last_error"]


def test_route_problems_name_each_unset_variable():
    config = CatalogConfig.model_validate({"notifications": [WEBHOOK]})
    assert [(i, field) for i, field, _ in route_problems(config, {"AUDIT_HOOK_URL": "http://x"})] == [(0, "secret_env")]


def test_a_routes_secret_is_in_no_log_error_or_read(synced_store, example_dir, caplog):
    add_routes(synced_store, example_dir, [WEBHOOK, {"name": "chat", "url_env": "NOTIFY_CHAT"}])
    with Receiver() as closed:
        port = closed.port  # nothing listens there once it stopped
    env = {"AUDIT_HOOK_URL": f"http://127.0.0.1:{port}/{TOKEN}", "AUDIT_HOOK_SECRET": SECRET,
           "NOTIFY_CHAT": f"json://user:{TOKEN}@127.0.0.1:{port}/{TOKEN}"}
    finished_result(synced_store, "has-owner", "payments-api", "fail")
    with caplog.at_level(logging.DEBUG):
        report = notify_pass(synced_store, environ=env, policy=RetryPolicy(attempts=1))
    assert report.failed == 2
    [event] = synced_store.events.list()
    shown = repr(synced_store.events.get(event["id"])) + repr(synced_store.events.delivery_summary()) + caplog.text
    assert "could not be reached" in shown and "Apprise could not deliver" in shown
    assert TOKEN not in shown and SECRET not in shown
    assert TOKEN not in repr(synced_store.state.get("catalog_config"))


def test_events_api_and_pages_list_filter_and_page_without_secrets(synced_store, example_dir, receiver):
    from pathlib import Path

    import httpx

    from api.app import create_app
    from api_support import auth, live_server, make_token
    from reconciler.settings import Settings

    add_routes(synced_store, example_dir, [WEBHOOK])
    env = {"AUDIT_HOOK_URL": receiver.url + f"?token={TOKEN}", "AUDIT_HOOK_SECRET": SECRET}
    for service in ("payments-api", "users-db", "search-index"):
        finished_result(synced_store, "has-owner", service, "fail")
    receiver.script(500)
    notify_pass(synced_store, environ=env, policy=RetryPolicy(attempts=1))  # one failed for good
    reader = make_token(synced_store, "read")
    app = create_app(synced_store, Settings(home=Path("unused"), public_read=False))
    with live_server(app) as base, httpx.Client(base_url=base, headers=auth(reader)) as client:
        first = client.get("/api/events", params={"limit": 2}).json()
        assert [e["service"] for e in first["events"]] == ["search-index", "users-db"]
        rest = client.get(first["next"]).json()
        assert [e["service"] for e in rest["events"]] == ["payments-api"] and rest["next"] is None
        assert [e["type"] for e in client.get("/api/events", params={"service": "users-db"}).json()["events"]] == ["failing"]
        assert client.get("/api/events", params={"check": "readme-present"}).json()["events"] == []
        # an empty filter is no filter, as in the CSV export and the pages (it listed nothing)
        blank = client.get("/api/events", params={"service": "", "check": "", "type": ""}).json()["events"]
        assert [e["service"] for e in blank] == ["search-index", "users-db", "payments-api"]
        bad = client.get("/api/events", params={"type": "nonsense"})
        assert bad.status_code in (400, 422) and bad.json()["error"]["status"] == bad.status_code
        event_id = first["events"][0]["id"]
        detail = client.get(f"/api/events/{event_id}").json()
        assert detail["deliveries"][0]["route"] == "audit-hook" and detail["waiting"] is False
        missing = client.get("/api/events/999999")
        assert missing.status_code == 404 and "event 999999 does not exist" in missing.json()["message"]
        assert httpx.get(f"{base}/api/events").status_code == 401
        texts = [client.get(path).text for path in ("/api/events", f"/api/events/{event_id}", "/events",
                                                     f"/events/{event_id}", "/sync")]
    assert "search-index: check has-owner is failing (fail)" in texts[2]
    assert "Notifications that failed" in texts[4] and "the webhook answered HTTP 500" in texts[4]
    assert all(TOKEN not in text and SECRET not in text for text in texts)


def test_kill_9_between_send_and_mark_delivers_again_with_the_same_event_id(synced_store, example_dir, receiver,
                                                                           database_url, webhook_env):
    import os
    import signal
    import subprocess
    import sys
    import time

    from conftest import PROJECT

    add_routes(synced_store, example_dir, [WEBHOOK])
    finished_result(synced_store, "has-owner", "payments-api", "fail")
    sender = subprocess.Popen(
        [sys.executable, "-c", "import sys; from reconciler.store import open_database;"
         " from reconciler.notify import notify_pass; notify_pass(open_database(sys.argv[1]))", database_url],
        env={**os.environ, **webhook_env, "PYTHONPATH": str(PROJECT)},
        stdout=subprocess.PIPE, stderr=subprocess.PIPE,
    )

    def kill_the_sender(received):  # the receiver has the message; the sender has not marked it
        sender.send_signal(signal.SIGKILL)
        sender.wait()

    receiver.on_message = kill_the_sender
    deadline = time.monotonic() + 60
    while sender.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)
    assert sender.returncode == -signal.SIGKILL and len(receiver.requests) == 1
    receiver.on_message = None
    assert notify_pass(synced_store, environ=webhook_env).delivered == 1
    [event] = synced_store.events.list()
    assert [r.event_ids() for r in receiver.requests] == [[event["id"]], [event["id"]]]  # the receiver drops the repeat
    assert notify_pass(synced_store, environ=webhook_env).messages == 0


@pytest.mark.parametrize("services, event, wanted", [
    ("all", {}, True),
    ("none", {}, False),
    (["payments-api"], {}, True),
    (["users-api"], {}, False),
    ({"tags": ["pci"], "max_priority": 2}, {}, True),
    ({"tags": ["pci", "gdpr"]}, {}, False),
    ({"type": "web", "owner": "team-payments"}, {}, True),
    ({"owner": "team-identity"}, {}, False),
    ({"owner": "team-payments"}, {"service": None, "service_priority": None}, True),     # a team's event, no service
    ({"type": "web"}, {"service": None, "service_priority": None}, False),
])
def test_a_route_targets_services_with_a_checks_forms(services, event, wanted):
    from reconciler.notify import targets
    from reconciler.schema import NotificationRoute

    route = NotificationRoute.model_validate({"name": "r", "url_env": "X", "events": ["failing"], "services": services})
    base = {"type": "failing", "service": "payments-api", "team": "team-payments", "service_type": "web",
            "service_owner": "team-payments", "service_priority": 1, "service_tags": ["pci", "tier-1"]}
    assert targets(route, {**base, **event}) is wanted
    assert targets(route, {**base, **event, "type": "recovered"}) is False
