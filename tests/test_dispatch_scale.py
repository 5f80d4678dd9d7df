"""Dispatch at organisation scale (DESIGN.md section 9): the budget in the store, batches, bulk
answers, a GitHub App, against the GitHub stand-in enforcing GitHub's limits on a movable clock."""

from __future__ import annotations

import base64
import json
import math
from datetime import timedelta

import pytest
import requests
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from api.app import create_app
from api_support import auth, live_server, make_token
from conftest import sync_directory, write_catalog
from github_standin import ActionPlayer, GitHubStandIn
from reconciler.budget import Budget, parse_budget
from reconciler.clock import FakeClock
from reconciler.dispatch import GitHubDispatcher, dispatcher_from_settings
from reconciler.errors import ConfigError
from reconciler.payload import batch_items, build_batch_payload
from reconciler.schedule import run_pass
from reconciler.settings import Settings
from reconciler.store import open_database

TOKEN = "ghp_scale"


def catalog(root, services: int, checks: int, batch: int, **check_fields):
    write_catalog(
        root,
        [{"name": f"Service {i}", "slug": f"svc-{i:05d}", "priority": 1 + i % 10, "repository": f"acme/svc-{i}",
          "description": "Takes money and gives it back. " * 3} for i in range(services)],
        [{"name": f"Check {j}", "slug": f"check-{j:02d}", "frequency": "daily", **check_fields} for j in range(checks)],
        catalog={"defaults": {"repository": "acme/health-checks", "batch": batch}},
    )
    return root


def settings(github_url: str, server_url: str = "http://catalog.test:8000", **extra) -> Settings:
    return Settings.resolve({"github_api_url": github_url, "github_token": TOKEN, "server_url": server_url, **extra}, {})


def decoded(request) -> dict:
    return json.loads(base64.b64decode(request.body["client_payload"]["data"]))


# -- the budget ------------------------------------------------------------------------------------


def test_budget_text_is_parsed_and_mistakes_name_the_setting():
    assert parse_budget("80/min,500/h") == [(80, 60.0), (500, 3600.0)]
    assert parse_budget(" 10 / s ") == [(10, 1.0)]
    with pytest.raises(ConfigError, match="CATALOG_GITHUB_BUDGET: '80/fortnight'"):
        parse_budget("80/fortnight")


def test_two_replicas_share_one_budget_in_the_store(store, database_url):
    clock = FakeClock()
    first, second = (Budget(store, parse_budget("3/min,5/h"), clock) for _ in range(2))
    taken = [budget.take() == 0 for budget in (first, second, first, second)]
    assert taken == [True, True, True, False]  # the minute's 3 are spent, whoever asks
    wait = second.take()
    assert 59 < wait <= 60.01
    clock.advance(wait)
    assert first.take() == 0 and second.take() == 0  # 5 in the hour
    clock.advance(61)
    assert first.take() > 3000  # the hour's 5 are spent: wait for the first to leave the hour
    assert first.capacity() == 0
    restarted = open_database(database_url)
    assert Budget(restarted, parse_budget("3/min,5/h"), clock).capacity() == 0  # a restart does not burst
    restarted.close()


def test_concurrent_takers_never_pass_the_budget(store, database_url):
    from concurrent.futures import ThreadPoolExecutor

    clock = FakeClock()  # frozen: every take falls in the same minute
    stores = [open_database(database_url) for _ in range(4)]  # four processes' connections
    try:
        budgets = [Budget(s, parse_budget("30/min"), clock) for s in stores]
        with ThreadPoolExecutor(4) as pool:
            taken = list(pool.map(lambda b: sum(b.take() == 0 for _ in range(20)), budgets))
    finally:
        for s in stores:
            s.close()
    assert sum(taken) == 30


def test_a_clock_stepped_back_holds_dispatching_for_a_window_not_for_the_step(store):
    """Requests recorded, and a pause set, before the clock stepped back two days (NTP correcting a
    clock that ran ahead): they held every window for the two days and the hour, nothing sent."""
    clock = FakeClock()
    budget = Budget(store, parse_budget("5/h"), clock)
    assert [budget.take() for _ in range(5)] == [0.0] * 5
    budget.pause(7200)  # and GitHub asked for two hours, measured on the clock that ran ahead
    clock.advance(-2 * 86400)
    assert budget.capacity() == 0  # spent: as if the five were made now, under an hour's pause at most
    assert 0 < budget.take() <= 3600.01
    clock.advance(3601)
    assert budget.capacity() == 5 and budget.take() == 0.0


def test_a_rate_limit_answer_pauses_every_process(store, tmp_path):
    clock = FakeClock()
    budget = Budget(store, parse_budget("80/min,500/h"), clock)
    budget.pause(120)
    other = Budget(store, parse_budget("80/min,500/h"), clock)
    assert other.capacity() == 0 and 119 < other.take() <= 120
    clock.advance(121)
    assert other.take() == 0


# -- batches and the simulated day ----------------------------------------------------------------


def test_a_simulated_day_keeps_to_githubs_limits_and_answers_every_pair_once(tmp_path):
    """The issue's day is 10,000 services x 50 daily checks with batch: 1000 (500 dispatches); this one
    keeps its shape at a test's size: 200 x 50 with batch: 20, also 500 dispatches (bench_dispatch.py
    runs the full size)."""
    services, checks, batch = 200, 50, 20
    store = open_database(f"sqlite://{tmp_path / 'catalog.db'}")
    sync_directory(store, catalog(tmp_path / "catalog", services, checks, batch))
    clock = FakeClock()  # the dispatcher's and the API's: the Action answers in the simulated day
    action = ActionPlayer(make_token(store, "results:write", name="action"))
    with live_server(create_app(store, Settings(home=tmp_path), sync_trigger=lambda: None, clock=clock)) as server, \
            GitHubStandIn(token=TOKEN, clock=clock, on_dispatch=action) as github:
        config = settings(github.url, server)
        # two replicas, each pacing itself, taking turns: only the budget in the store keeps them in bounds
        replicas = [dispatcher_from_settings(config, clock=clock, store=store) for _ in range(2)]
        start, answered_at = clock.now(), None
        while clock.now() < start + timedelta(days=1) - timedelta(minutes=10):
            for dispatcher in replicas:
                assert not run_pass(store, dispatcher, settings=config, clock=clock).failed
            if len(action.answered) == services * checks:
                answered_at = answered_at or clock.now() - start
                clock.advance(1800)  # the rest of the day: nothing is due again
            else:
                clock.advance(60)
    assert github.limited == 0
    assert len(github.dispatches) == checks * math.ceil(services / batch) == 500
    assert sorted(action.answered) == sorted(set(action.answered)) and len(action.answered) == services * checks
    assert action.refused == [] and action.fetched == 0  # batches of 20 fit in 64 KB
    assert answered_at < timedelta(hours=2)
    rows = store.results.list(limit=1000, status="completed")
    assert len(rows) == 1000 and all(row["result"] == "pass" for row in rows)


def test_a_batch_over_64kb_leaves_its_list_to_the_api(tmp_path, store):
    sync_directory(store, catalog(tmp_path / "catalog", 250, 1, 200))
    clock = FakeClock()
    with GitHubStandIn(token=TOKEN) as github:
        report = run_pass(store, GitHubDispatcher(github.url, TOKEN, clock=clock), settings=settings(github.url), clock=clock)
        assert len(report.sent) == 250
        first, second = github.dispatches
    assert first.body["client_payload"]["batch"]["size"] == 200 and first.body["client_payload"]["service"] is None
    assert "results" not in decoded(first)["batch"]
    inline = decoded(second)["batch"]["results"]
    assert len(inline) == 50 and inline[0]["endpoint"] == f"/api/results/{inline[0]['result']['id']}/"
    assert len(json.dumps(first.body["client_payload"], separators=(",", ":"))) <= 64 * 1024
    token = make_token(store, "results:write", name="action")
    reader = make_token(store, "read", name="reader")
    with live_server(create_app(store, Settings(home=tmp_path), sync_trigger=lambda: None)) as server:
        listing = requests.get(f"{server}/api/batches/{decoded(first)['batch']['id']}", headers=auth(token))
        assert listing.status_code == 200
        assert [item["service"]["slug"] for item in listing.json()["results"]] == [f"svc-{i:05d}" for i in range(200)]
        assert requests.get(f"{server}/api/batches/{decoded(first)['batch']['id']}", headers=auth(reader)).status_code == 403
        missing = requests.get(f"{server}/api/batches/999", headers=auth(token))
        assert missing.status_code == 404 and missing.json()["error"]["code"] == "not_found"


def test_a_batch_list_is_inline_exactly_when_the_payload_with_it_fits_64kb():
    """The list is left out without encoding it when it cannot fit whatever its values: that shortcut
    never leaves out a list that fits. Items with empty values put the boundary near the shortcut's."""
    check = {"id": 1, "slug": "c", "name": "C", "timeout_seconds": 60, "path": "checks/c.yaml", "targets": "none"}

    def payload(count: int):
        rows = [{"id": i, "check_id": 1, "service_id": None, "status": "", "result": "", "created_at": ""}
                for i in range(count)]
        return build_batch_payload(7, rows, check, {}, server_url="http://s", catalog_repository=None,
                                   catalog_config=None)

    def fits_with_list(count: int) -> bool:
        built = payload(count)
        data = {**built.data, "batch": {**built.data["batch"], "results": list(batch_items(
            [{"id": i, "service_id": None, "status": "", "result": "", "created_at": ""} for i in range(count)],
            check, {}))}}
        client = {**built.client_payload, "data": base64.b64encode(
            json.dumps(data, separators=(",", ":")).encode()).decode()}
        return len(json.dumps(client, separators=(",", ":"))) <= 64 * 1024

    largest = max(count for count in range(150, 400) if fits_with_list(count))
    assert 150 < largest < 399
    assert "results" in payload(largest).data["batch"] and "results" not in payload(largest + 1).data["batch"]


def test_a_failed_batch_send_fails_or_defers_every_result_in_it(tmp_path, store):
    from github_standin import Answer

    sync_directory(store, catalog(tmp_path / "catalog", 30, 1, 10))
    clock = FakeClock()
    with GitHubStandIn(token=TOKEN) as github:
        github.script(Answer.ok(), Answer.error(500), Answer.error(422))
        report = run_pass(store, GitHubDispatcher(github.url, TOKEN, clock=clock, max_wait_seconds=0),
                          settings=settings(github.url), clock=clock)
    assert len(report.sent) == 10 and len(report.deferred) == 20  # the 500 stops the pass: the rest wait
    clock.advance(3600)
    with GitHubStandIn(token=TOKEN) as github:
        github.script(Answer.error(422))
        report = run_pass(store, GitHubDispatcher(github.url, TOKEN, clock=clock), settings=settings(github.url), clock=clock)
    assert len(report.failed) == 10 and len(report.sent) == 10  # leftovers re-batched; a 422 fails its 10


def test_results_deferred_by_a_rate_limit_go_before_new_due_pairs_when_the_budget_is_short(tmp_path, store):
    """A catalog that does not fit its budget: new due pairs took all of every pass's room, and the
    results GitHub had deferred waited until they timed out."""
    from github_standin import Answer

    sync_directory(store, catalog(tmp_path / "catalog", 10, 2, 1))
    clock = FakeClock()
    with GitHubStandIn(token=TOKEN, clock=clock) as github:
        config = settings(github.url, github_budget="3/min,1000/h")
        github.script(Answer.ok(), Answer.rate_limited(retry_after=30))
        first = run_pass(store, dispatcher_from_settings(config, clock=clock, store=store), settings=config, clock=clock)
        assert len(first.created) == 3 and len(first.sent) == 1
        deferred = sorted({result_id for result_id, _ in first.deferred})
        assert len(deferred) == 2
        clock.advance(61)
        second = run_pass(store, dispatcher_from_settings(config, clock=clock, store=store), settings=config, clock=clock)
    assert second.retried == deferred and set(deferred) <= set(second.sent)
    assert len(second.created) == 1 and len(second.sent) == 3  # the budget's room: the two, then one new


# -- bulk answers ---------------------------------------------------------------------------------


def test_bulk_patch_gives_each_answer_its_own_outcome(tmp_path, store):
    sync_directory(store, catalog(tmp_path / "catalog", 5, 1, 1))
    clock = FakeClock()
    with GitHubStandIn(token=TOKEN) as github:
        sent = run_pass(store, GitHubDispatcher(github.url, TOKEN, clock=clock), settings=settings(github.url), clock=clock).sent
    token = make_token(store, "results:write", name="action")
    with live_server(create_app(store, Settings(home=tmp_path), sync_trigger=lambda: None, clock=clock)) as server:
        single = requests.patch(f"{server}/api/results/{sent[4]}", data={"result": "fail"}, headers=auth(token))
        assert single.status_code == 200  # the per-result PATCH stays as it is
        body = {"results": [
            {"id": sent[0], "result": "pass", "message": "fine"},
            {"id": sent[1], "result": "maybe"},
            {"id": 10**9, "result": "pass"},
            {"id": sent[4], "result": "pass"},
            {"id": sent[2], "result": "warning", "url": "https://github.com/acme/checks/actions/runs/1"},
            {"id": sent[0], "result": "fail"},
            {"id": "x", "result": "pass"},
        ]}
        response = requests.patch(f"{server}/api/results", json=body, headers=auth(token))
        assert response.status_code == 200, response.text
        outcomes = response.json()["results"]
        assert [o["status"] for o in outcomes] == [200, 422, 404, 409, 200, 409, 422]
        assert outcomes[0]["result"]["message"] == "fine" and outcomes[1]["error"]["code"] == "invalid_input"
        assert store.results.get(sent[1])["status"] == "sent"  # a bad item changes nothing, the good ones stand
        too_many = requests.patch(f"{server}/api/results", json={"results": [{"id": 1, "result": "pass"}] * 1001},
                                  headers=auth(token))
        assert too_many.status_code == 422 and "at most 1000" in too_many.json()["message"]
        assert requests.patch(f"{server}/api/results", json={"results": []}, headers=auth(make_token(store, "read"))).status_code == 403


# -- a GitHub App ---------------------------------------------------------------------------------


def test_a_github_app_works_in_place_of_a_token(tmp_path, store):
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()).decode()
    public = key.public_key().public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo).decode()
    (tmp_path / "app.pem").write_text(pem)
    sync_directory(store, catalog(tmp_path / "catalog", 3, 1, 1))
    clock = FakeClock()
    with GitHubStandIn(token="no-personal-token", clock=clock, app_id="4242", app_public_key=public) as github:
        config = Settings.resolve({"github_api_url": github.url, "server_url": "http://catalog.test"},
                                  {"CATALOG_GITHUB_APP_ID": "4242", "CATALOG_GITHUB_APP_PRIVATE_KEY": f"@{tmp_path / 'app.pem'}"})
        dispatcher = dispatcher_from_settings(config, clock=clock, store=store)
        report = run_pass(store, dispatcher, settings=config, clock=clock, max_results=2)
        assert len(report.sent) == 2 and len(github.issued) == 1  # one installation token, cached
        github.expired.update(github.issued)  # revoked early: a 401, a new token, the dispatch again
        report = run_pass(store, dispatcher, settings=config, clock=clock)
        assert len(report.sent) == 1 and len(github.issued) == 2
        assert [r.answer for r in github.requests if r.path.endswith("/dispatches")] == [204, 204, 401, 204]
        exchanges = [r for r in github.requests if r.path.endswith("/access_tokens")]
        assert all(r.method == "POST" for r in exchanges) and len(exchanges) == 2
    assert pem not in repr(config)
    with pytest.raises(ConfigError, match="not an unencrypted PEM private key"):
        dispatcher_from_settings(Settings.resolve({}, {"CATALOG_GITHUB_APP_ID": "1", "CATALOG_GITHUB_APP_PRIVATE_KEY": "nope"}))


def test_a_github_app_key_that_is_not_rsa_is_refused_at_start_not_at_every_dispatch():
    """An EC key parsed, then every dispatch failed with an internal error and the results stayed pending."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ec

    pem = ec.generate_private_key(ec.SECP256R1()).private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()).decode()
    with pytest.raises(ConfigError, match="CATALOG_GITHUB_APP_PRIVATE_KEY is not an RSA key") as refused:
        dispatcher_from_settings(Settings.resolve({}, {"CATALOG_GITHUB_APP_ID": "1", "CATALOG_GITHUB_APP_PRIVATE_KEY": pem}))
    assert "PRIVATE KEY" not in str(refused.value)


# -- for check authors: the local dispatcher and `catalog answer` ---------------------------------


def answer_cli(env: dict, *args: str, stdin: str | None = None):
    import os
    import subprocess
    import sys

    return subprocess.run([sys.executable, "-m", "reconciler.cli", "answer", *args], input=stdin, capture_output=True,
                          text=True, env={**{k: v for k, v in os.environ.items() if not k.startswith(("ACTIONS_", "GITHUB_", "SERVICE_CATALOG"))}, **env},
                          timeout=60)


def test_the_local_dispatcher_runs_a_batch_answered_with_catalog_answer(tmp_path, example_dir):
    from reconciler.dispatch import LocalDispatcher
    from reconciler.schedule import run_check

    check = example_dir / "checks" / "readme-present.yaml"
    check.write_text(check.read_text() + "batch: 3\n")
    store = open_database(f"sqlite://{tmp_path / 'catalog.db'}")
    sync_directory(store, example_dir)
    token = make_token(store, "results:write", name="local")
    clock = FakeClock()
    with live_server(create_app(store, Settings(home=tmp_path), sync_trigger=lambda: None, clock=clock)) as server:
        rows = run_check(store, LocalDispatcher(example_dir / "health-checks", token), "readme-present",
                         settings=Settings.resolve({"server_url": server}, {}), clock=clock)
    assert len(rows) == 5
    answered = {row["service"]: (row["status"], row["result"]) for row in store.results.list(check="readme-present")}
    assert answered["storefront-web"] == ("completed", "pass") and len(answered) == 5
    assert all(status == "completed" for status, _ in answered.values())
    assert [len(store.dispatch.batch(batch_id)[1]) for batch_id in (1, 2)] == [3, 2]


class Recorder:
    """A loopback server that records requests: an Actions OIDC token endpoint and a catalog API."""

    def __init__(self):
        from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
        import threading

        recorder = self
        self.requests: list[tuple[str, str, dict, dict | None]] = []
        self.batch: list[dict] = []  # what GET /api/batches/{id} lists

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def _answer(self, method):
                length = int(self.headers.get("content-length") or 0)
                body = json.loads(self.rfile.read(length)) if length else None
                recorder.requests.append((method, self.path, dict(self.headers), body))
                if self.path.startswith("/oidc"):
                    document = {"value": "header.oidc-jwt.signature"}
                elif method == "GET" and self.path.startswith("/api/batches/"):
                    document = {"results": recorder.batch}
                elif method == "PATCH" and self.path == "/api/results":
                    document = {"results": [{"id": item["id"], "status": 200 if item["id"] != 12 else 409,
                                             **({"result": item} if item["id"] != 12 else
                                                {"error": {"status": 409, "code": "conflict", "message": "result 12 is already completed"}})}
                                            for item in body["results"]]}
                else:
                    document = {"id": 7, "result": body["result"]}
                data = json.dumps(document).encode()
                self.send_response(200)
                self.send_header("content-type", "application/json")
                self.send_header("content-length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def do_GET(self):
                self._answer("GET")

            def do_PATCH(self):
                self._answer("PATCH")

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"


def encoded(data: dict) -> str:
    return base64.b64encode(json.dumps(data).encode()).decode()


def test_catalog_answer_sends_one_result_with_an_oidc_token_for_the_server_audience():
    recorder = Recorder()
    data = {"server": {"url": recorder.url, "endpoint": "/api/results/7/"}, "check": {"slug": "c"}, "result": {"id": 7}}
    done = answer_cli({"PAYLOAD": encoded(data), "ACTIONS_ID_TOKEN_REQUEST_URL": f"{recorder.url}/oidc?api-version=2.0",
                       "ACTIONS_ID_TOKEN_REQUEST_TOKEN": "runner-secret", "GITHUB_SERVER_URL": "https://github.com",
                       "GITHUB_REPOSITORY": "acme/checks", "GITHUB_RUN_ID": "99"}, "PASS", "--message", "fine")
    assert done.returncode == 0, done.stderr
    (method, path, headers, _), (patch, endpoint, patch_headers, body) = recorder.requests
    assert (method, path) == ("GET", f"/oidc?api-version=2.0&audience={requests.utils.quote(recorder.url, safe='')}")
    assert headers["Authorization"] == "bearer runner-secret"
    assert (patch, endpoint, patch_headers["Authorization"]) == ("PATCH", "/api/results/7/", "Bearer header.oidc-jwt.signature")
    assert body == {"result": "pass", "message": "fine", "url": "https://github.com/acme/checks/actions/runs/99"}
    assert "runner-secret" not in done.stdout + done.stderr


def test_catalog_answer_results_answers_a_batch_in_one_bulk_patch(tmp_path):
    recorder = Recorder()
    recorder.batch = items = [{"result": {"id": 10 + i}, "service": {"slug": f"svc-{i}"}, "endpoint": f"/api/results/{10 + i}/"} for i in range(4)]
    data = {"server": {"url": recorder.url, "endpoint": "/api/results"}, "check": {"slug": "c"},
            "batch": {"id": 3, "size": 4, "results": items}}
    env = {"PAYLOAD": encoded(data), "SERVICE_CATALOG_TOKEN": "catalog-secret"}
    lines = [{"service": "svc-0", "result": "pass"}, {"service": "svc-1", "result": "fail", "message": "no"},
             {"service": "svc-2", "result": "pass"}]
    (tmp_path / "results.jsonl").write_text("".join(json.dumps(line) + "\n" for line in lines))
    done = answer_cli(env, "--results", str(tmp_path / "results.jsonl"))
    assert done.returncode == 1  # one refused (409), one service left unanswered
    assert "result 12: 409" in done.stderr and "svc-3" in done.stderr and "catalog-secret" not in done.stderr
    (method, path, headers, body), listing = recorder.requests  # the list tells which unanswered results are still open
    assert (method, path, headers["Authorization"]) == ("PATCH", "/api/results", "Bearer catalog-secret")
    assert listing[:2] == ("GET", "/api/batches/3")
    assert [item["id"] for item in body["results"]] == [10, 11, 12] and body["results"][1]["message"] == "no"
    assert answer_cli(env, "--list").stdout.splitlines() == [json.dumps(item, separators=(",", ":")) for item in items]
    bad = answer_cli(env, "--results", "-", stdin='{"service": "nope", "result": "pass"}\n')
    assert bad.returncode == 1 and "line 1: service 'nope' is not in batch 3" in bad.stderr
    single = answer_cli(env, "pass")
    assert single.returncode == 1 and "answer them with --results FILE" in single.stderr
    missing = answer_cli({}, "pass")
    assert missing.returncode == 1 and "PAYLOAD is not set" in missing.stderr


# -- the plan, the status, the YAML -----------------------------------------------------------------


def test_dispatch_plan_says_which_batch_fits_and_status_shows_the_budget_left(tmp_path, capsys, monkeypatch):
    from reconciler.cli import main

    catalog(tmp_path / "catalog", 300, 2, 1)
    home = ["--home", str(tmp_path / "home")]
    assert main(["sync", *home, "--repo", str(tmp_path / "catalog")]) == 0
    monkeypatch.setenv("CATALOG_GITHUB_BUDGET", "10/h")
    capsys.readouterr()
    assert main(["dispatch", "--plan", *home]) == 2
    out, err = capsys.readouterr()
    assert "check-00" in out and "total: 600 dispatches/day; budget 240/day (10/h)" in out
    assert err.strip() == "catalog: warning: needs 600 runs/day, budget 240: set batch: 3+"
    assert main(["status", *home]) == 0
    assert "GitHub budget: 10/h (10 left)" in capsys.readouterr().out
    monkeypatch.setenv("CATALOG_GITHUB_BUDGET", "10/fortnight")
    assert main(["status", *home]) == 1  # the diagnosing command still shows everything else
    out, err = capsys.readouterr()
    assert "GitHub budget: CATALOG_GITHUB_BUDGET: '10/fortnight'" in err and "the scheduler dispatches nothing" in err
    assert "last sync: applied" in out and "results: 0 in all" in out


def test_a_batch_out_of_range_names_file_and_line(tmp_path, capsys):
    from reconciler.cli import main

    catalog(tmp_path / "catalog", 1, 1, 1)
    (tmp_path / "catalog" / "checks" / "check-00.yaml").write_text("name: Check 0\nfrequency: daily\nbatch: 1001\n")
    assert main(["validate", str(tmp_path / "catalog")]) == 1
    out = capsys.readouterr().out
    assert "checks/check-00.yaml:3:" in out and "batch" in out and "1000" in out, out
