"""Dispatchers against real local servers: the GitHub stand-in, and a loopback server the scripts PATCH."""

from __future__ import annotations

import base64
import io
import json
import logging
import os
import shutil
import stat
import threading
import time
from datetime import timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qs

import pytest
import yaml

from conftest import EXAMPLE, sync_directory
from github_standin import Answer, GitHubStandIn
from store_support import raw_rows
from reconciler.clock import FakeClock
from reconciler.dispatch import GitHubDispatcher, LocalDispatcher, LogDispatcher, dispatcher_from_settings, local_token
from reconciler.errors import ConfigError
from reconciler.schedule import run_check, run_pass
from reconciler.settings import Settings

TOKEN = "ghp-test-token"


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def github():
    with GitHubStandIn(token=TOKEN) as standin:
        yield standin


def settings_for(github_url: str = "http://127.0.0.1:9", **extra) -> Settings:
    values = {"github_api_url": github_url, "github_token": TOKEN, "server_url": "http://catalog.test:8000", "repo": "https://git.example/acme/catalog.git"}
    values.update(extra)
    return Settings.resolve(values, {})


def github_dispatcher(github: GitHubStandIn, clock: FakeClock, **options) -> GitHubDispatcher:
    return GitHubDispatcher(github.url, TOKEN, clock=clock, **options)


def results_by_status(store) -> dict[str, int]:
    counts: dict[str, int] = {}
    for row in store.results.list(limit=1000):
        counts[row["status"]] = counts.get(row["status"], 0) + 1
    return counts


# -- GitHub ------------------------------------------------------------------------------------


def test_github_gets_one_well_formed_dispatch_per_due_pair(synced_store, github, clock):
    report = run_pass(synced_store, github_dispatcher(github, clock), settings=settings_for(github.url), clock=clock)

    assert len(report.sent) == 28 and not report.failed and not report.deferred
    assert [r.problems for r in github.requests if r.problems] == []
    assert len(github.dispatches) == 28
    request = github.dispatches[0]
    assert request.owner_repo == "acme-rockets/health-checks"  # catalog.yaml defaults.repository
    assert request.headers["authorization"] == f"Bearer {TOKEN}"
    assert request.headers["accept"] == "application/vnd.github+json"
    assert request.headers["x-github-api-version"] == "2022-11-28"
    pairs = {(r.body["client_payload"]["check"], r.body["client_payload"]["service"]) for r in github.dispatches}
    assert len(pairs) == 28 and ("github-org-audit", None) in pairs
    assert results_by_status(synced_store) == {"sent": 28}


def test_dispatch_data_decodes_as_the_origin_docs_show_and_names_the_patch_url(synced_store, github, clock):
    run_pass(synced_store, github_dispatcher(github, clock), settings=settings_for(github.url), clock=clock)
    request = next(r for r in github.dispatches if r.body["client_payload"]["service"] == "payments-api"
                   and r.body["event_type"] == "has-owner")
    client_payload = request.body["client_payload"]

    decoded = base64.b64decode(client_payload["data"]).decode("utf-8")  # the origin's code, verbatim
    data = json.loads(decoded)

    assert set(client_payload) == {"data", "check", "service", "repository", "server"}
    assert client_payload["repository"] == "acme-rockets/payments-api"
    assert client_payload["server"] == "http://catalog.test:8000"
    result_id = data["result"]["id"]
    assert data["server"]["url"] + data["server"]["endpoint"] == f"http://catalog.test:8000/api/results/{result_id}/"
    assert set(data) == {"server", "check", "result", "service", "source"}
    assert data["check"]["slug"] == "has-owner" and data["check"]["timeout"] == 1800
    assert data["service"]["meta"]["oncall"] == "payments-primary" and data["service"]["tags"] == ["pci", "tier-1"]
    assert data["result"]["status"] == "pending" and data["result"]["result"] == "unknown"
    assert data["source"]["path"] == "services/payments-api.yaml"
    assert data["source"]["repository"] == "https://git.example/acme/catalog.git"
    assert data["source"]["revision"] == synced_store.state.get("applied_revision")
    assert synced_store.results.get(result_id)["revision"] == synced_store.state.get("applied_revision")


def test_credentials_in_the_catalog_url_never_reach_the_payload(synced_store, github, clock):
    settings = settings_for(github.url, repo="https://x-access-token:s3cret@git.example/acme/catalog.git")
    run_pass(synced_store, github_dispatcher(github, clock), settings=settings, clock=clock)
    request = github.dispatches[0]
    data = json.loads(base64.b64decode(request.body["client_payload"]["data"]).decode("utf-8"))
    assert "s3cret" not in json.dumps(request.body) and "s3cret" not in json.dumps(data)
    assert data["source"]["repository"] == "https://***@git.example/acme/catalog.git"


@pytest.mark.parametrize("status", [401, 404, 422])
def test_permanent_github_answers_turn_the_result_into_an_error_with_githubs_message(synced_store, github, clock, status):
    github.script(Answer.error(status, f"GitHub says no ({status})"))
    report = run_pass(synced_store, github_dispatcher(github, clock), settings=settings_for(github.url), clock=clock)

    (failed_id, message), = report.failed
    assert f"GitHub answered {status}: GitHub says no ({status})" in message
    row = synced_store.results.get(failed_id)
    assert row["status"] == "error" and row["finished_at"] and row["message"] == message
    assert len(report.sent) == 27  # the others went on


def test_a_wrong_token_is_a_clear_permanent_error(synced_store, github, clock):
    dispatcher = GitHubDispatcher(github.url, "wrong", clock=clock)
    report = run_pass(synced_store, dispatcher, settings=settings_for(github.url), clock=clock, max_results=1)
    assert "401: Bad credentials (check CATALOG_GITHUB_TOKEN)" in report.failed[0][1]


def test_rate_limit_with_reset_pauses_the_pass_and_loses_nothing(synced_store, github, clock):
    reset_at = clock.now().timestamp() + 600
    github.script(Answer.ok(), Answer.rate_limited(reset_at=reset_at))
    dispatcher = github_dispatcher(github, clock)
    first = run_pass(synced_store, dispatcher, settings=settings_for(github.url), clock=clock)

    assert len(first.sent) == 1 and len(first.deferred) == 27 and not first.failed
    assert len(github.requests) == 2  # nothing more was tried while limited
    assert results_by_status(synced_store) == {"sent": 1, "pending": 27}

    clock.advance(300)  # still limited: nothing is sent, nothing new is created
    early = run_pass(synced_store, dispatcher, settings=settings_for(github.url), clock=clock)
    assert early.created == [] and early.dispatched == [] and len(github.requests) == 2

    clock.advance(301)
    later = run_pass(synced_store, dispatcher, settings=settings_for(github.url), clock=clock)
    assert later.created == [] and len(later.sent) == 27
    assert results_by_status(synced_store) == {"sent": 28}
    assert len(github.dispatches) == 28
    ids = [r.body["client_payload"]["data"] for r in github.dispatches]
    assert len({json.loads(base64.b64decode(d))["result"]["id"] for d in ids}) == 28  # no result sent twice


@pytest.mark.parametrize("answer", [Answer.rate_limited(retry_after=120, code=429), Answer.rate_limited(retry_after=120)])
def test_retry_after_is_honoured(synced_store, github, clock, answer):
    github.script(answer)
    dispatcher = github_dispatcher(github, clock)
    first = run_pass(synced_store, dispatcher, settings=settings_for(github.url), clock=clock)
    assert first.sent == [] and len(first.deferred) == 28
    attempt = raw_rows(synced_store, "SELECT * FROM dispatch_attempts WHERE result_id = ?", (first.deferred[0][0],))[0]
    assert attempt["not_before"] == (clock.now() + timedelta(seconds=120)).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    assert "rate limit" in attempt["last_error"]

    clock.advance(121)
    second = run_pass(synced_store, dispatcher, settings=settings_for(github.url), clock=clock)
    assert len(second.sent) == 28 and results_by_status(synced_store) == {"sent": 28}


def test_a_deferred_result_of_a_check_or_service_retired_meanwhile_is_closed_not_sent(synced_store, example_dir, github, clock):
    """Results deferred by a rate limit, then their check removed or paused, or their service removed
    or made inactive by a sync: the next pass closes them as `error` saying why, and sends only the
    others (all were sent: pausing a broken check did not stop its dispatches)."""
    github.script(Answer.rate_limited(retry_after=120))
    dispatcher = github_dispatcher(github, clock)
    assert len(run_pass(synced_store, dispatcher, settings=settings_for(github.url), clock=clock).deferred) == 28
    (example_dir / "checks" / "github-org-audit.yaml").unlink()
    paused = example_dir / "checks" / "readme-present.yaml"
    paused.write_text(paused.read_text() + "active: false\n")
    (example_dir / "services" / "admin-console.yaml").unlink()
    quiet = example_dir / "services" / "notifications-worker.yaml"
    quiet.write_text(quiet.read_text() + "active: false\n")
    report = sync_directory(synced_store, example_dir)
    assert report.outcome == "applied" and not report.errors, report.errors

    clock.advance(121)
    second = run_pass(synced_store, dispatcher, settings=settings_for(github.url), clock=clock)
    rows = {row["id"]: row for row in synced_store.results.list(limit=1000)}
    closed = {(rows[i]["check"], rows[i]["service"]): why for i, why in second.failed}
    assert closed[("github-org-audit", None)] == "not sent: check github-org-audit was removed from the catalog before it was sent"
    assert {why for (check, _), why in closed.items() if check == "readme-present"} == {
        "not sent: check readme-present was paused (active: false) before it was sent"}
    assert {why for (check, service), why in closed.items() if check not in ("readme-present", "github-org-audit")} == {
        "not sent: service admin-console was removed from the catalog before it was sent",
        "not sent: service notifications-worker was made inactive before it was sent"}
    for result_id, why in second.failed:
        assert (rows[result_id]["status"], rows[result_id]["message"]) == ("error", why)
    sent = [json.loads(base64.b64decode(r.body["client_payload"]["data"])) for r in github.dispatches]
    assert sent and len(sent) == len(second.sent) == 28 - len(second.failed)
    assert not {(d["check"]["slug"], (d.get("service") or {}).get("slug")) for d in sent} & set(closed)


def test_server_errors_and_hangs_leave_results_pending_for_a_later_pass(synced_store, github, clock):
    github.script(Answer.error(500), Answer.hanging(5), Answer.error(502))
    dispatcher = github_dispatcher(github, clock, request_timeout=0.3)
    first = run_pass(synced_store, dispatcher, settings=settings_for(github.url), clock=clock)

    assert first.sent == [] and not first.failed  # three transient failures in a row end the pass
    assert "GitHub answered 500" in first.deferred[0][1] and "did not answer" in first.deferred[1][1]
    assert results_by_status(synced_store) == {"pending": 28}

    clock.advance(61)  # past the backoff (30 s after a failure without a hint)
    second = run_pass(synced_store, dispatcher, settings=settings_for(github.url), clock=clock)
    assert len(second.sent) == 28 and second.created == []
    assert results_by_status(synced_store) == {"sent": 28}


def test_pacing_spaces_posts_one_second_apart_by_default(synced_store, github, clock):
    run_pass(synced_store, github_dispatcher(github, clock), settings=settings_for(github.url), clock=clock, max_results=5)
    assert clock.slept == [1.0] * 4


def test_a_check_without_any_repository_gets_a_clear_error(store, tmp_path, github, clock):
    from conftest import write_catalog

    write_catalog(tmp_path / "c", services=[{"name": "A", "priority": 1}], checks=[{"name": "Lonely", "frequency": "daily"}])
    sync_directory(store, tmp_path / "c")
    report = run_pass(store, github_dispatcher(github, clock), settings=settings_for(github.url), clock=clock)
    assert "check 'lonely' has no repository" in report.failed[0][1]
    assert github.requests == []


def test_a_repository_url_dispatches_to_owner_and_repo(store, tmp_path, github, clock):
    from conftest import write_catalog

    write_catalog(
        tmp_path / "c", services=[{"name": "A", "priority": 1}],
        checks=[{"name": "X", "frequency": "daily", "repository": "https://github.com/acme/checks.git"}],
    )
    sync_directory(store, tmp_path / "c")
    run_pass(store, github_dispatcher(github, clock), settings=settings_for(github.url), clock=clock)
    assert github.dispatches[0].owner_repo == "acme/checks"


def test_a_payload_over_64_kb_is_refused_before_sending(store, tmp_path, github, clock):
    from conftest import write_catalog

    write_catalog(
        tmp_path / "c",
        services=[
            {"name": "A", "priority": 1, "description": "x" * 19_000, "meta": {f"k{i}": "z" * 1900 for i in range(10)}},
            {"name": "B", "priority": 1},
        ],
        checks=[{"name": "X", "frequency": "daily", "repository": "acme/checks", "description": "y" * 19_000}],
    )
    sync_directory(store, tmp_path / "c")
    report = run_pass(store, github_dispatcher(github, clock), settings=settings_for(github.url), clock=clock)
    assert len(report.failed) == 1 and "over GitHub's 64 KB limit" in report.failed[0][1]
    assert len(github.dispatches) == 1  # the small one went


def test_github_dispatcher_needs_a_token():
    with pytest.raises(ConfigError, match="CATALOG_GITHUB_TOKEN is not set"):
        dispatcher_from_settings(Settings.resolve({}, {}))


# -- local ---------------------------------------------------------------------------------------


class RecordingAPI:
    """A loopback HTTP server that records PATCHes (form or JSON) and answers 200."""

    def __init__(self):
        self.patches: list[dict] = []
        api = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def do_PATCH(self):
                raw = self.rfile.read(int(self.headers.get("content-length") or 0)).decode()
                form = {k: v[0] for k, v in parse_qs(raw).items()}
                api.patches.append({"path": self.path, "auth": self.headers.get("authorization"),
                                    "type": self.headers.get("content-type"), "form": form})
                self.send_response(200)
                self.send_header("content-length", "2")
                self.end_headers()
                self.wfile.write(b"{}")

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"

    def close(self):
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def api():
    server = RecordingAPI()
    yield server
    server.close()


def write_script(directory: Path, name: str, body: str, executable: bool = True) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / name
    path.write_text("#!/usr/bin/env python3\n" + body)
    if executable:
        path.chmod(path.stat().st_mode | stat.S_IXUSR)
    return path


def test_local_dispatcher_runs_the_script_with_the_actions_environment(synced_store, tmp_path, api, clock):
    scripts = tmp_path / "checks"
    write_script(scripts, "github-org-audit", (
        "import base64, json, os, requests\n"
        "payload = json.loads(base64.b64decode(os.getenv('PAYLOAD')).decode('utf-8'))\n"
        "url = payload['server']['url'] + payload['server']['endpoint']\n"
        "res = requests.patch(url, {'result': 'pass', 'message': os.getcwd()},"
        " headers={'Authorization': f\"Token {os.getenv('SERVICE_CATALOG_TOKEN')}\"})\n"
        "print('Response', res.status_code)\n"
    ))
    dispatcher = LocalDispatcher(scripts, "local-secret")
    rows = run_check(synced_store, dispatcher, "github-org-audit", settings=settings_for(server_url=api.url), clock=clock)

    (row,) = rows
    assert row["status"] == "sent" and row["service"] is None  # the API (not running here) would complete it
    (patch,) = api.patches
    assert patch["path"] == f"/api/results/{row['id']}/"
    assert patch["auth"] == "Token local-secret"
    assert patch["type"] == "application/x-www-form-urlencoded"
    assert patch["form"] == {"result": "pass", "message": str(scripts.resolve())}


def test_local_dispatcher_missing_or_non_executable_script_is_an_error_naming_the_path(synced_store, tmp_path, clock):
    scripts = tmp_path / "checks"
    write_script(scripts, "has-owner", "print('hi')\n", executable=False)
    report = run_pass(synced_store, LocalDispatcher(scripts), settings=settings_for(), clock=clock)

    messages = {synced_store.results.get(i)["check"]: m for i, m in report.failed}
    assert messages["has-owner"] == f"check script {scripts.resolve() / 'has-owner'} is not executable (chmod +x it)"
    assert messages["readme-present"] == f"no check script {scripts.resolve() / 'readme-present'}"
    assert report.sent == []


def test_local_dispatcher_kills_a_script_past_its_time_limit(synced_store, tmp_path, clock, caplog):
    scripts = tmp_path / "checks"
    write_script(scripts, "github-org-audit", "import time\nprint('working', flush=True)\ntime.sleep(30)\n")
    caplog.set_level(logging.WARNING, "catalog.dispatch")
    dispatcher = LocalDispatcher(scripts, time_limit=0.5)
    (row,) = run_check(synced_store, dispatcher, "github-org-audit", settings=settings_for(), clock=clock)

    assert row["status"] == "sent"  # started = sent; unanswered, it times out like a silent Action
    assert "killed after 0 s" in caplog.text or "killed after 1 s" in caplog.text
    assert "working" in caplog.text


def test_local_dispatchers_time_limit_kills_what_the_script_started_too(synced_store, tmp_path, clock, caplog):
    """A shell script waiting on `sleep` or `curl`: killing the shell alone left the child holding the
    output pipe, and the scheduler waited for it (95 s for a 60 s limit)."""
    scripts = tmp_path / "checks"
    write_script(scripts, "github-org-audit",
                 "import subprocess, time\n"
                 "child = subprocess.Popen(['sleep', '30'])\n"
                 "print('child', child.pid, flush=True)\n"
                 "time.sleep(30)\n")
    caplog.set_level(logging.WARNING, "catalog.dispatch")
    started = time.monotonic()
    run_check(synced_store, LocalDispatcher(scripts, time_limit=1), "github-org-audit", settings=settings_for(), clock=clock)
    assert time.monotonic() - started < 10
    child = int(caplog.text.split("child ", 1)[1].split()[0])
    time.sleep(0.2)  # its new parent (init) reaps it
    assert not os.path.exists(f"/proc/{child}") or _state(child) == "Z", "the script's child outlived the time limit"


def _state(pid: int) -> str:
    try:
        return open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()[0]
    except OSError:
        return "gone"


def test_local_dispatcher_refuses_a_missing_directory(tmp_path):
    with pytest.raises(ConfigError, match="does not exist"):
        dispatcher_from_settings(Settings.resolve({"dispatcher": f"local:{tmp_path / 'nope'}"}, {}))


def test_local_token_comes_from_the_environment_then_the_home_file(tmp_path, monkeypatch):
    settings = Settings.resolve({"home": str(tmp_path)}, {})
    monkeypatch.delenv("SERVICE_CATALOG_TOKEN", raising=False)
    assert local_token(settings) == ""
    (tmp_path / "local-dispatcher.token").write_text("from-file\n")
    assert local_token(settings) == "from-file"
    monkeypatch.setenv("SERVICE_CATALOG_TOKEN", "from-env")
    assert local_token(settings) == "from-env"


def test_each_home_keeps_its_own_local_dispatcher_token(store, tmp_path, clock):
    """Two `catalog up` on one database (replicas, each with its own CATALOG_HOME): the second's start
    made a new `local-dispatcher` token and revoked the first's, so every answer of the first's local
    checks was refused with 401. Each home's token is its own; a restart keeps it, a lost file replaces only it."""
    from api.up import ensure_local_token
    from reconciler.tokens import list_tokens, verify_token

    homes = [Settings.resolve({"home": str(tmp_path / name)}, {}) for name in ("a", "b")]
    files = [ensure_local_token(store, settings, clock) for settings in homes]
    secrets = [path.read_text().strip() for path in files]
    assert all(verify_token(store, secret, now=clock.now()) is not None for secret in secrets)
    assert ensure_local_token(store, homes[0], clock) == files[0] and files[0].read_text().strip() == secrets[0]
    files[1].unlink()  # home b lost its file: b gets a new token, a's still answers
    ensure_local_token(store, homes[1], clock)
    assert verify_token(store, secrets[0], now=clock.now()) is not None
    assert verify_token(store, secrets[1], now=clock.now()) is None
    assert verify_token(store, files[1].read_text().strip(), now=clock.now()) is not None
    live = [t["name"] for t in list_tokens(store) if t["revoked_at"] is None]
    assert len(live) == 2 and all(name.startswith("local-dispatcher") for name in live)


def test_the_example_health_check_scripts_answer_every_example_check(synced_store, api, clock):
    settings = settings_for(server_url=api.url)
    dispatcher = LocalDispatcher(EXAMPLE / "health-checks", "example-token")
    report = run_pass(synced_store, dispatcher, settings=settings, clock=clock)
    report.sent += [row["id"] for row in run_check(synced_store, dispatcher, "pci-dependency-review", settings=settings, clock=clock)]

    assert not report.failed and len(report.sent) == 31
    answers = {}
    for patch in api.patches:
        row = synced_store.results.get(int(patch["path"].split("/")[3]))
        answers[(row["check"], row["service"])] = patch["form"]["result"]
        assert patch["auth"] == "Token example-token"
    assert len(answers) == 31
    assert answers[("has-owner", "admin-console")] == "fail"
    assert answers[("has-owner", "payments-api")] == "pass"
    assert answers[("oncall-configured", "catalog-api")] == "fail"  # no meta.oncall
    assert answers[("oncall-configured", "storefront-web")] == "pass"
    assert answers[("readme-present", "storefront-web")] == "pass"
    assert answers[("github-org-audit", None)] == "warning"
    assert answers[("log4j-vulnerability", "payments-db")] == "pass"
    assert answers[("pci-dependency-review", "ledger-worker")] == "warning"


@pytest.mark.parametrize("batch", [1, 4])
def test_every_example_script_answers_single_pairs_and_batches_through_the_local_dispatcher(tmp_path, batch):
    """Each script of the example's health-checks/ takes both payload shapes: with `batch: 4` in
    catalog.yaml's defaults all but one crashed on the batch (KeyError: 'service'), and their results
    stayed sent until they timed out. Real server, real scripts, real `catalog answer`."""
    from api.app import create_app
    from api_support import live_server, make_token
    from conftest import copy_example
    from reconciler.store import open_database

    example = copy_example(tmp_path / "catalog")
    catalog_file = example / "catalog.yaml"
    catalog_file.write_text(catalog_file.read_text().replace("defaults:\n", f"defaults:\n  batch: {batch}\n", 1))
    store = open_database(f"sqlite://{tmp_path / 'catalog.db'}")
    assert not sync_directory(store, example).errors
    dispatcher = LocalDispatcher(example / "health-checks", make_token(store, "results:write", name="local"))
    checks = sorted(path.stem for path in (example / "checks").glob("*.yaml"))
    clock = FakeClock()
    with live_server(create_app(store, Settings(home=tmp_path / "home"), sync_trigger=lambda: None, clock=clock)) as server:
        settings = Settings.resolve({"server_url": server}, {})
        rows = [store.results.get(row["id"]) for check in checks
                for row in run_check(store, dispatcher, check, settings=settings, clock=clock)]
    assert len(rows) == 31 and results_in_batches(store) == (31 if batch > 1 else 0)
    assert {row["status"] for row in rows} == {"completed"}
    answers = {(row["check"], row["service"]): row["result"] for row in rows}
    assert answers[("has-owner", "admin-console")] == "fail" and answers[("has-owner", "payments-api")] == "pass"
    assert answers[("oncall-configured", "catalog-api")] == "fail" and answers[("readme-present", "storefront-web")] == "pass"
    assert answers[("github-org-audit", None)] == "warning" and answers[("log4j-vulnerability", "payments-db")] == "pass"
    assert answers[("pci-dependency-review", "ledger-worker")] == "warning"
    store.close()


def results_in_batches(store) -> int:
    """How many results went out in batch dispatches (batch ids count up from 1)."""
    from reconciler.errors import NotFound

    count = 0
    for batch_id in range(1, 1000):
        try:
            count += len(store.dispatch.batch(batch_id)[1])
        except NotFound:
            return count
    return count


def test_example_scripts_are_executable_and_named_for_each_example_check():
    checks = {yaml.safe_load(p.read_text())["slug"] for p in (EXAMPLE / "checks").glob("*.yaml")}
    scripts = {p.name for p in (EXAMPLE / "health-checks").iterdir() if not p.name.startswith((".", "_"))}
    assert scripts == checks
    for name in scripts:
        path = EXAMPLE / "health-checks" / name
        assert os.access(path, os.X_OK) and path.read_text().startswith("#!/usr/bin/env python3\n")


# -- log -------------------------------------------------------------------------------------------


def test_log_dispatcher_prints_what_would_be_sent(synced_store, clock):
    out = io.StringIO()
    rows = run_check(synced_store, LogDispatcher(out), "has-owner", "payments-api", settings=settings_for(), clock=clock)
    line = json.loads(out.getvalue())
    assert line["event_type"] == "has-owner" and line["repository"] == "acme-rockets/health-checks"
    assert line["client_payload"]["data"]["result"]["id"] == rows[0]["id"]
    assert rows[0]["status"] == "sent"
