"""GET /metrics: parsed by prometheus_client's own parser; figures follow the store; the read rule."""

from __future__ import annotations

from datetime import timedelta

import pytest
import yaml
from litestar.testing import TestClient
from prometheus_client.parser import text_string_to_metric_families

from api.app import create_app
from api_support import auth, make_token
from conftest import sync_directory
from reconciler.clock import FakeClock, format_time
from reconciler.notify import RetryPolicy, notify_pass
from reconciler.schedule import LAST_PASS_KEY
from reconciler.settings import Settings
from store_support import answer, finished_result, new_result, raw_sql


def _samples(text: str) -> dict[tuple, float]:
    """{(sample name, sorted label items): value} from the exposition text."""
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(text) for sample in family.samples
    }


@pytest.fixture
def clock():
    return FakeClock()


@pytest.fixture
def client(synced_store, tmp_path, clock):
    app = create_app(synced_store, Settings(home=tmp_path), clock=clock, sync_trigger=lambda: None)
    with TestClient(app) as client:
        client.headers.update(auth(make_token(synced_store, "read", name="scraper")))
        yield client


def test_results_by_status_and_outcome_follow_every_change(client, synced_store, clock):
    now = clock.now()
    finished_result(synced_store, "has-owner", "payments-api", "pass", now=now)
    finished_result(synced_store, "has-owner", "users-api", "fail", now=now)
    finished_result(synced_store, "has-owner", "payments-api", "pass", now=now)
    open_one = new_result(synced_store, "readme-present", "users-api", now=now - timedelta(hours=2))
    new_result(synced_store, "readme-present", "payments-api", now=now - timedelta(minutes=1))
    response = client.get("/metrics")
    content_type = response.headers["content-type"]
    assert response.status_code == 200 and content_type.startswith("text/plain; version=")
    assert content_type.count("charset") == 1
    samples = _samples(response.text)
    assert samples[("catalog_results", (("result", "pass"), ("status", "completed")))] == 2
    assert samples[("catalog_results", (("result", "fail"), ("status", "completed")))] == 1
    assert samples[("catalog_results", (("result", "unknown"), ("status", "pending")))] == 2
    assert samples[("catalog_open_results", (("older_than", "all"),))] == 2
    assert samples[("catalog_open_results", (("older_than", "5m"),))] == 1
    assert samples[("catalog_open_results", (("older_than", "1h"),))] == 1
    assert samples[("catalog_open_results", (("older_than", "6h"),))] == 0
    answer(synced_store, open_one["id"], "warning", now=now)
    samples = _samples(client.get("/metrics").text)
    assert samples[("catalog_results", (("result", "unknown"), ("status", "pending")))] == 1
    assert samples[("catalog_results", (("result", "warning"), ("status", "completed")))] == 1
    # the maintained counts equal a full count of the table
    counted = dict(((s, r), n) for s, r, n in raw_sql(
        synced_store, "SELECT status, result, count(*) FROM results GROUP BY status, result"))
    shown = {(dict(labels)["status"], dict(labels)["result"]): value
             for (name, labels), value in samples.items() if name == "catalog_results" and value}
    assert shown == counted


def test_writeback_lag_is_the_age_of_the_oldest_unwritten_result(client, synced_store, clock):
    assert _samples(client.get("/metrics").text)[("catalog_writeback_lag_seconds", ())] == 0
    finished_result(synced_store, now=clock.now() - timedelta(minutes=10))
    finished_result(synced_store, "readme-present", now=clock.now() - timedelta(minutes=3))
    assert _samples(client.get("/metrics").text)[("catalog_writeback_lag_seconds", ())] == 600


def test_sync_figures_and_file_errors(client, synced_store, example_dir, clock):
    samples = _samples(client.get("/metrics").text)
    assert samples[("catalog_sync_last_outcome", (("outcome", "applied"),))] == 1
    assert samples[("catalog_sync_last_duration_seconds", ())] > 0
    assert samples[("catalog_sync_file_errors", ())] == 0
    assert samples[("catalog_sync_last_success_timestamp_seconds", ())] > 0
    (example_dir / "services" / "users-db.yaml").write_text("name: Users DB\npriority: 99\n")
    sync_directory(synced_store, example_dir)
    samples = _samples(client.get("/metrics").text)
    assert samples[("catalog_sync_file_errors", ())] == 1


def test_due_pairs_come_from_the_last_scheduler_pass(client, synced_store, clock):
    synced_store.state.set({LAST_PASS_KEY: {"at": format_time(clock.now()), "due": 42}})
    samples = _samples(client.get("/metrics").text)
    assert samples[("catalog_due_pairs", ())] == 42
    assert samples[("catalog_dispatch_last_pass_timestamp_seconds", ())] == clock.now().timestamp()


def test_http_requests_are_counted_by_route_template_and_status(client):
    client.get("/api/services/payments-api")
    client.get("/api/services/users-api")
    client.get("/api/services/no-such-service")
    client.get("/no/such/page/at/all")
    samples = _samples(client.get("/metrics").text)
    route = "/api/services/{slug}"
    assert samples[("catalog_http_requests_total", (("method", "GET"), ("route", route), ("status", "200")))] == 2
    assert samples[("catalog_http_requests_total", (("method", "GET"), ("route", route), ("status", "404")))] == 1
    assert samples[("catalog_http_requests_total", (("method", "GET"), ("route", "unmatched"), ("status", "404")))] == 1
    assert samples[("catalog_http_request_duration_seconds_count", (("method", "GET"), ("route", route)))] == 3
    assert not any("no/such/page" in str(key) for key in samples)  # no label per URL typed


def test_metrics_follow_the_read_rule(synced_store, tmp_path):
    with TestClient(create_app(synced_store, Settings(home=tmp_path), sync_trigger=lambda: None)) as client:
        refused = client.get("/metrics")
        assert refused.status_code == 401 and refused.json()["error"]["status"] == 401
        writer = client.get("/metrics", headers=auth(make_token(synced_store, "results:write")))
        assert writer.status_code == 403
    public = Settings(home=tmp_path, public_read=True)
    with TestClient(create_app(synced_store, public, sync_trigger=lambda: None)) as client:
        assert client.get("/metrics").status_code == 200


def test_notification_backlog_follows_events_and_deliveries(client, synced_store, example_dir, clock):
    def backlog() -> dict[str, float]:
        samples = _samples(client.get("/metrics").text)
        return {"waiting": samples[("catalog_notification_events_waiting", ())],
                "age": samples[("catalog_notification_events_waiting_age_seconds", ())],
                "lag": samples[("catalog_notification_delivery_lag_seconds", ())],
                **{state: samples[("catalog_notification_deliveries", (("state", state),))]
                   for state in ("pending", "due", "failed")}}

    assert backlog() == {"waiting": 0, "age": 0, "lag": 0, "pending": 0, "due": 0, "failed": 0}
    config = yaml.safe_load((example_dir / "catalog.yaml").read_text())
    config["notifications"] = [{"name": "nowhere", "url_env": "NOTIFY_NOWHERE", "events": ["failing"]}]
    (example_dir / "catalog.yaml").write_text(yaml.safe_dump(config, sort_keys=False))
    sync_directory(synced_store, example_dir)
    finished_result(synced_store, "has-owner", "payments-api", "fail", now=clock.now() - timedelta(minutes=1))
    assert backlog() == {"waiting": 1, "age": 60, "lag": 0, "pending": 0, "due": 0, "failed": 0}
    policy = RetryPolicy(attempts=2, first=10)
    notify_pass(synced_store, environ={}, clock=clock, policy=policy)  # the variable is unset: a failed send
    assert backlog() == {"waiting": 0, "age": 0, "lag": 0, "pending": 1, "due": 0, "failed": 0}
    clock.advance(15)
    assert backlog() == {"waiting": 0, "age": 0, "lag": 5, "pending": 1, "due": 1, "failed": 0}
    notify_pass(synced_store, environ={}, clock=clock, policy=policy)
    assert backlog() == {"waiting": 0, "age": 0, "lag": 0, "pending": 0, "due": 0, "failed": 1}


def test_dispatch_budget_left_pauses_and_waits_come_from_the_store(synced_store, tmp_path, clock):
    from github_standin import Answer, GitHubStandIn
    from reconciler.budget import Budget
    from reconciler.dispatch import GitHubDispatcher
    from reconciler.schedule import run_check

    settings = Settings(home=tmp_path, github_budget="3/min,10/h")
    app = create_app(synced_store, settings, clock=clock, sync_trigger=lambda: None)
    with TestClient(app) as client:
        client.headers.update(auth(make_token(synced_store, "read", name="scraper")))
        samples = _samples(client.get("/metrics").text)
        assert samples[("catalog_dispatch_budget_limit", (("window", "3/min"),))] == 3
        assert samples[("catalog_dispatch_budget_left", (("window", "3/min"),))] == 3
        assert samples[("catalog_dispatch_budget_left", (("window", "10/h"),))] == 10
        assert samples[("catalog_dispatch_paused_seconds", ())] == 0
        assert samples[("catalog_dispatch_rate_limit_pauses_total", ())] == 0
        assert samples[("catalog_dispatch_budget_waits_total", ())] == 0
        # a replica's dispatcher shares the budget through the store: two requests, then GitHub's limit
        budget = Budget.from_text(synced_store, settings.github_budget, clock)
        with GitHubStandIn(token="ghp_metrics") as github:
            github.script(Answer.ok(), Answer.ok(), Answer.rate_limited(retry_after=120))
            dispatcher = GitHubDispatcher(github.url, "ghp_metrics", clock=clock, budget=budget, pacing_seconds=0,
                                          max_wait_seconds=0)
            config = Settings.resolve({"github_api_url": github.url, "github_token": "ghp_metrics"}, {})
            run_check(synced_store, dispatcher, "has-owner", settings=config, clock=clock)
        assert len(github.dispatches) == 2
        samples = _samples(client.get("/metrics").text)
        assert samples[("catalog_dispatch_budget_left", (("window", "3/min"),))] == 0
        assert samples[("catalog_dispatch_budget_left", (("window", "10/h"),))] == 7
        assert samples[("catalog_dispatch_paused_seconds", ())] == 120
        assert samples[("catalog_dispatch_rate_limit_pauses_total", ())] == 1
        assert budget.take() > 0  # the next request waits for the pause
        clock.advance(90)
        samples = _samples(client.get("/metrics").text)
        assert samples[("catalog_dispatch_budget_waits_total", ())] == 1
        assert samples[("catalog_dispatch_budget_left", (("window", "3/min"),))] == 3
        assert samples[("catalog_dispatch_paused_seconds", ())] == 30


def test_a_budget_that_does_not_parse_leaves_its_metrics_out_and_the_rest_in(synced_store, tmp_path, clock):
    app = create_app(synced_store, Settings(home=tmp_path, github_budget="3/fortnight"), clock=clock, sync_trigger=lambda: None)
    with TestClient(app) as client:
        response = client.get("/metrics", headers=auth(make_token(synced_store, "read", name="scraper")))
    names = {name for name, _ in _samples(response.text)}
    assert response.status_code == 200 and "catalog_open_results" in names
    assert not any(name.startswith("catalog_dispatch_budget") for name in names)
