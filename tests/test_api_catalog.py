"""Reads: services, checks, results with keyset pages, the last sync; and who may read them."""

from __future__ import annotations

from datetime import timedelta

import pytest
from litestar.testing import TestClient

from api.app import create_app
from api_support import auth, make_token, new_result
from conftest import sync_directory
from reconciler.clock import FakeClock, format_time
from reconciler.settings import Settings
from store_support import answer, finished_result


def _client(store, tmp_path, **settings):
    return TestClient(create_app(store, Settings(home=tmp_path, **settings), sync_trigger=lambda: None))


@pytest.fixture
def client(synced_store, tmp_path):
    with _client(synced_store, tmp_path) as client:
        client.headers.update(auth(make_token(synced_store, "read", name="reader")))
        yield client


def test_services_are_listed_with_json_fields_decoded(client):
    services = client.get("/api/services").json()["services"]
    assert [s["slug"] for s in services] == sorted(s["slug"] for s in services)
    assert len(services) == 11
    payments = next(s for s in services if s["slug"] == "payments-api")
    assert payments["tags"] == ["pci", "tier-1"]
    assert payments["dependencies"] == ["payments-db", "ledger-worker", "users-api"]
    assert payments["meta"] == {"slack_channel": "#payments", "oncall": "payments-primary"}
    assert payments["active"] is True


@pytest.mark.parametrize(
    ("query", "expected"),
    [
        ("type=web", {"storefront-web", "payments-api", "admin-console"}),
        ("owner=team-payments", None),
        ("tag=pci", None),
        ("tag=no-such-tag", set()),
    ],
)
def test_services_filter_by_type_owner_and_tag(client, query, expected):
    services = client.get(f"/api/services?{query}").json()["services"]
    key, value = query.split("=")
    for service in services:
        assert value in service["tags"] if key == "tag" else service[key] == value
    if expected is not None:
        assert {s["slug"] for s in services} >= expected if expected else services == []
    else:
        assert services


def test_removed_services_are_listed_only_on_request(client, synced_store, example_dir):
    (example_dir / "services" / "search-index.yaml").unlink()
    sync_directory(synced_store, example_dir)
    assert "search-index" not in {s["slug"] for s in client.get("/api/services").json()["services"]}
    removed = client.get("/api/services?include_removed=true").json()["services"]
    assert next(s for s in removed if s["slug"] == "search-index")["removed_at"] is not None
    assert client.get("/api/services/search-index").json()["removed_at"] is not None


def test_service_shows_latest_result_per_check_and_counts(client, synced_store):
    clock = FakeClock()
    old = new_result(synced_store, "has-owner", "payments-api", now=clock.now())
    answer(synced_store, old["id"], "fail", now=clock.now())
    clock.advance(timedelta(hours=1))
    newer = new_result(synced_store, "has-owner", "payments-api", now=clock.now())
    answer(synced_store, newer["id"], "pass", now=clock.now())
    log4j = new_result(synced_store, "log4j-vulnerability", "payments-api", now=clock.now())
    answer(synced_store, log4j["id"], "pass", now=clock.now())
    pending = new_result(synced_store, "readme-present", "payments-api", now=clock.now())
    new_result(synced_store, "has-owner", "users-api", now=clock.now())  # another service's

    service = client.get("/api/services/payments-api").json()
    latest = {r["check"]: (r["id"], r["result"]) for r in service["latest_results"]}
    assert latest == {"has-owner": (newer["id"], "pass"), "log4j-vulnerability": (log4j["id"], "pass"),
                      "readme-present": (pending["id"], "unknown")}
    assert service["counts"] == {"pass": 2, "unknown": 1}
    assert all("message" not in r for r in service["latest_results"])  # a summary; messages may be 64 KiB


def test_service_lists_latest_results_by_check_slug_with_every_field(client, synced_store, example_dir):
    # A check added later gets a higher id but sorts first: the order is the slug's, not the id's.
    (example_dir / "checks" / "aaa-first.yaml").write_text(
        "name: First by name\nslug: aaa-first\nfrequency: daily\nservices: all\n")
    sync_directory(synced_store, example_dir)
    clock = FakeClock()
    made = {slug: new_result(synced_store, slug, "users-api", now=clock.now())
            for slug in ("readme-present", "aaa-first", "has-owner")}
    answer(synced_store, made["has-owner"]["id"], "warning", now=clock.now(), url="https://ci.example/1")
    assert synced_store.dispatch.mark_sent_many([made["aaa-first"]["id"]], now=format_time(clock.now()))

    service = client.get("/api/services/users-api").json()
    assert [r["check"] for r in service["latest_results"]] == sorted(made)
    for row in service["latest_results"]:
        stored = client.get(f"/api/results/{row['id']}").json()
        assert row == {key: stored[key] for key in
                       ("id", "check", "status", "result", "url", "created_at", "sent_at", "finished_at")}
    assert service["counts"] == {"unknown": 2, "warning": 1}


def test_service_without_results_and_without_removed_checks(client, synced_store, example_dir):
    assert client.get("/api/services/users-api").json()["latest_results"] == []
    assert client.get("/api/services/users-api").json()["counts"] == {}
    new_result(synced_store, "readme-present", "storefront-web")
    (example_dir / "checks" / "readme-present.yaml").unlink()
    sync_directory(synced_store, example_dir)
    service = client.get("/api/services/storefront-web").json()
    assert service["latest_results"] == [] and service["counts"] == {}  # a removed check's results drop out


def test_unknown_service_and_check_are_404(client):
    for path in ("/api/services/nope", "/api/checks/nope", "/api/results/424242"):
        response = client.get(path)
        assert response.status_code == 404
        assert response.json()["error"]["code"] == "not_found"


def test_checks_list_and_latest_result_per_service(client, synced_store):
    checks = {c["slug"]: c for c in client.get("/api/checks").json()["checks"]}
    assert len(checks) == 6
    assert checks["readme-present"]["targets"] == {"type": "web"}
    assert checks["oncall-configured"]["schedule"] == "0 9 * * 1-5"
    first = new_result(synced_store, "has-owner", "users-api")
    answer(synced_store, first["id"], "fail", now=FakeClock().now())
    second = new_result(synced_store, "has-owner", "users-api")
    answer(synced_store, second["id"], "warning", now=FakeClock().now())
    other = new_result(synced_store, "has-owner", "users-db")
    orgwide = new_result(synced_store, "github-org-audit", None)
    check = client.get("/api/checks/has-owner").json()
    assert {(r["service"], r["id"]) for r in check["latest_results"]} == {("users-api", second["id"]), ("users-db", other["id"])}
    assert first["id"] not in {r["id"] for r in check["latest_results"]}
    assert check["counts"] == {"warning": 1, "unknown": 1}
    audit = client.get("/api/checks/github-org-audit").json()
    assert [(r["service"], r["id"]) for r in audit["latest_results"]] == [(None, orgwide["id"])]


def test_results_are_paged_newest_first_with_a_next_link(client, synced_store):
    ids = [finished_result(synced_store, "has-owner", "users-api")["id"] for _ in range(5)]
    new_result(synced_store, "has-owner", "users-db")
    page = client.get("/api/results?service=users-api&limit=2").json()
    assert [r["id"] for r in page["results"]] == ids[::-1][:2]
    seen = [r["id"] for r in page["results"]]
    while page["next"]:
        assert "service=users-api" in page["next"]
        page = client.get(page["next"]).json()
        seen += [r["id"] for r in page["results"]]
    assert seen == ids[::-1]


def test_results_filter_by_check_result_status_and_since(client, synced_store):
    clock = FakeClock()
    early = new_result(synced_store, "has-owner", "users-api", now=clock.now())
    answer(synced_store, early["id"], "fail", now=clock.now())
    clock.advance(timedelta(days=1))
    late = new_result(synced_store, "log4j-vulnerability", "users-api", now=clock.now())

    def ids(query):
        response = client.get(f"/api/results?{query}")
        assert response.status_code == 200, response.text
        return [r["id"] for r in response.json()["results"]]

    assert ids("check=log4j-vulnerability") == [late["id"]]
    assert ids("result=fail") == [early["id"]]
    assert ids("status=pending") == [late["id"]]
    assert ids("since=" + clock.now().strftime("%Y-%m-%dT%H:%M:%SZ")) == [late["id"]]
    assert ids("service=no-such-service") == []
    assert ids("since=0999-01-01") == [late["id"], early["id"]]  # `999-...` sorted after 2026: it listed nothing
    # an empty filter is no filter, as in the CSV export and the pages (it listed nothing)
    assert ids("service=&check=&result=&status=&since=") == ids("") == [late["id"], early["id"]]


@pytest.mark.parametrize(
    ("query", "fragment"),
    [("result=passed", "'result' filter"), ("status=done", "'status' filter"), ("since=yesterday", "ISO 8601"),
     ("limit=0", ""), ("limit=100000", ""), ("cursor=abc", ""),
     ("since=0001-01-01T00:00:00%2B05:00", "out of range"), ("since=9999-12-31T23:00:00-05:00", "out of range")],
)
def test_bad_result_filters_are_clear_errors(client, query, fragment):
    response = client.get(f"/api/results?{query}")
    assert response.status_code in (400, 422), response.text
    assert fragment in response.json()["error"]["message"]


def test_one_result_reads_with_its_slugs(client, synced_store):
    result = new_result(synced_store, "readme-present", "storefront-web")
    body = client.get(f"/api/results/{result['id']}").json()
    assert (body["check"], body["service"], body["status"], body["result"]) == ("readme-present", "storefront-web", "pending", "unknown")


def test_sync_status_shows_the_last_run(client, synced_store, example_dir):
    (example_dir / "services" / "users-db.yaml").write_text("name: Users DB\npriority: 11\n")
    sync_directory(synced_store, example_dir)
    last = client.get("/api/sync").json()["last_run"]
    assert last["applied_revision"] and last["attempted_revision"]
    assert isinstance(last["errors"], list) and last["errors"][0]["file"] == "services/users-db.yaml"


def test_sync_status_before_any_sync_is_null(store, tmp_path):
    with _client(store, tmp_path, public_read=True) as client:
        assert client.get("/api/sync").json() == {"last_run": None}


def test_reads_need_a_read_token_unless_public_read(synced_store, tmp_path):
    writer = make_token(synced_store, "results:write", name="writer")
    with _client(synced_store, tmp_path) as closed:
        for path in ("/api/services", "/api/services/payments-api", "/api/checks", "/api/checks/has-owner",
                     "/api/results", "/api/sync"):
            assert closed.get(path).status_code == 401, path
            assert closed.get(path, headers=auth(writer)).status_code == 403, path
    with _client(synced_store, tmp_path, public_read=True) as open_:
        assert open_.get("/api/services").status_code == 200
        assert open_.patch("/api/results/1", data={"result": "pass"}).status_code == 401  # writes never public
