"""End to end: a bare git remote, `catalog up` as a subprocess, a GitHub stand-in playing the Action."""

from __future__ import annotations

import base64
import json
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import pytest
import requests
import yaml

from e2e_support import (
    DROPPED_CHECKS,
    INITIAL_PAIRS,
    ActionPlayer,
    CatalogRemote,
    UpProcess,
    create_token,
    git,
    history_ids,
    push_webhook,
    wait_for,
)
from conftest import BACKENDS
from github_standin import GitHubStandIn
from reconciler.store import Database, open_database

pytestmark = pytest.mark.e2e

WEBHOOK_SECRET = "e2e-webhook-secret"
GITHUB_TOKEN = "e2e-github-token"
STARTED: list[UpProcess] = []  # every `catalog up` of the session, for the log tail of a failing test

NEW_SERVICE = {
    "name": "Checkout Web", "slug": "checkout-web", "priority": 2, "type": "web", "owner": "team-checkout",
    "repository": "acme-rockets/checkout-web", "tags": ["pci"], "dependencies": ["payments-api"],
}


class Stack:
    """One catalog remote, one GitHub stand-in with its Action player, one `catalog up`."""

    def __init__(self, root: Path, *, sync_interval: float, name: str, hold_actions: bool = False,
                 database_url: str | None = None):
        root.mkdir(parents=True, exist_ok=True)
        self.remote = CatalogRemote(root, drop_checks=DROPPED_CHECKS)
        home = root / "home"
        self.database_url = database_url or f"sqlite://{home / 'catalog.db'}"
        self.action_token = create_token(home, "actions", "results:write", database_url=self.database_url)
        self.actions = ActionPlayer(root, self.action_token)
        if hold_actions:
            self.actions.hold()
        self.github = GitHubStandIn(token=GITHUB_TOKEN, on_dispatch=self.actions.on_dispatch).start()
        self.up = UpProcess(home, {
            "CATALOG_DATABASE_URL": self.database_url,
            "CATALOG_REPO": str(self.remote.bare),
            "CATALOG_DISPATCHER": "github",
            "CATALOG_GITHUB_API_URL": self.github.url,
            "CATALOG_GITHUB_TOKEN": GITHUB_TOKEN,
            "CATALOG_WEBHOOK_SECRET": WEBHOOK_SECRET,
            "CATALOG_PUBLIC_READ": "true",
            "CATALOG_SYNC_INTERVAL": str(sync_interval),
            "CATALOG_DISPATCH_INTERVAL": "1",
            "CATALOG_WRITEBACK_INTERVAL": "1",
        }, name=name)
        STARTED.append(self.up)

    def close(self) -> None:
        self.up.stop()
        self.actions.stop()
        self.github.stop()

    def push(self, message: str, changes: dict[str, str | None]) -> str:
        """Commit and push to the remote, then send GitHub's push webhook for it."""
        sha = self.remote.commit_and_push(message, changes)
        response = push_webhook(self.up.base, WEBHOOK_SECRET, after=sha)
        assert response.status_code == 202 and response.json()["status"] == "started", response.text
        return sha

    def wait_synced(self, sha: str) -> dict:
        return wait_for(lambda: _last_run_at(self.up, sha), f"a sync of {sha[:10]}")

    def settle(self, timeout: float = 30.0) -> list[dict]:
        """Wait until every result is completed and written back; the results."""

        def settled():
            results = self.up.results()
            if not results or any(r["status"] != "completed" for r in results) or not self.actions.idle():
                return None
            return results if sorted(history_ids(self.remote.bare)) == sorted(r["id"] for r in results) else None

        return wait_for(settled, "every result completed and written back", timeout=timeout)

    def dispatch_counts(self) -> Counter:
        return Counter((d.body["event_type"], d.body["client_payload"]["service"]) for d in self.github.dispatches)


def _last_run_at(up: UpProcess, sha: str) -> dict | None:
    run = up.get("/api/sync")["last_run"]
    return run if run and run["attempted_revision"] == sha else None


def _results_in_store(stack: "Stack") -> list[dict]:
    """The results as the database holds them (read through the store, the server being dead)."""
    store = open_database(stack.database_url)
    try:
        return store.results.list(limit=1000)
    finally:
        store.close()


def _service_yaml(service: dict) -> str:
    return yaml.safe_dump(service, sort_keys=False)


@pytest.fixture(autouse=True)
def up_log_on_failure(request):
    """A failing test shows the tail of every `catalog up` log it started."""
    failed_before = request.session.testsfailed
    already = len(STARTED)
    yield
    if request.session.testsfailed > failed_before:
        reporter = request.config.pluginmanager.get_plugin("terminalreporter")
        for up in [u for u in STARTED if u in STARTED[already:] or (u.process and u.process.poll() is None)]:
            reporter.write_line(f"\n----- tail of {up.log_path} -----\n{up.log_tail(80)}\n-----")


def _database_url(request) -> str | None:
    """None for SQLite in the stack's home, or a new PostgreSQL database."""
    return None if request.param == "sqlite" else request.getfixturevalue("postgres_server").new_database()


@pytest.fixture(scope="module", params=BACKENDS)
def stack(request, tmp_path_factory):
    """A shared `catalog up` that syncs only when told (webhook), its poll an hour apart; on each backend."""
    stack = Stack(tmp_path_factory.mktemp("e2e-shared"), sync_interval=3600, name=f"shared-{request.param}",
                  database_url=_database_url(request))
    try:
        stack.up.start()
        stack.settle()
        yield stack
    finally:
        stack.close()


@pytest.fixture(params=BACKENDS)
def fresh_stack(request, tmp_path):
    stacks: list[Stack] = []

    def make(**options) -> Stack:
        stacks.append(Stack(tmp_path / f"stack{len(stacks)}", database_url=_database_url(request), **options))
        return stacks[-1]

    yield make
    for stack in stacks:
        stack.close()


# -- the shared process -----------------------------------------------------------------------------


def test_pushed_service_is_synced_by_the_webhook_and_its_checks_dispatched(stack):
    before = stack.up.get("/api/sync")["last_run"]
    forged = push_webhook(stack.up.base, WEBHOOK_SECRET, signature="sha256=" + "0" * 64)
    assert forged.status_code == 401

    sha = stack.push("Add checkout-web", {"services/checkout-web.yaml": _service_yaml(NEW_SERVICE)})

    run = stack.wait_synced(sha)
    assert run["applied_revision"] == sha and run["errors"] == [] and run["created"] >= 1
    assert run["id"] > before["id"]
    assert stack.up.get("/api/services/checkout-web")["slug"] == "checkout-web"
    dispatch = wait_for(
        lambda: [d for d in stack.github.dispatches if d.body["client_payload"]["service"] == "checkout-web"],
        "a dispatch for checkout-web")
    assert len(dispatch) == 1, "one check (readme-present) targets a web service automatically"
    request = dispatch[0]
    assert request.problems == [] and request.path == "/repos/acme-rockets/health-checks/dispatches"
    assert request.headers["authorization"] == f"Bearer {GITHUB_TOKEN}"
    body = request.body
    assert body["event_type"] == "readme-present"
    payload = body["client_payload"]
    assert payload["check"] == "readme-present" and payload["repository"] == "acme-rockets/checkout-web"
    assert payload["server"] == stack.up.base
    data = json.loads(base64.b64decode(payload["data"]))
    assert data["service"]["slug"] == "checkout-web" and data["check"]["slug"] == "readme-present"
    assert data["server"]["url"] == stack.up.base
    assert data["server"]["endpoint"].rstrip("/") == f"/api/results/{data['result']['id']}"
    assert data["result"]["status"] in ("pending", "sent") and data["result"]["result"] == "unknown"
    assert [r.problems for r in stack.github.requests if r.problems] == [], "every dispatch was well-formed"


def test_results_land_completed_and_are_written_back_once(stack):
    results = stack.settle()
    assert {r["result"] for r in results} == {"pass"}, "the Action sets every check to pass"
    assert all(r["finished_at"] for r in results)
    one = stack.up.get(f"/api/results/{results[0]['id']}")
    assert one["status"] == "completed" and one["result"] == "pass"

    subjects = stack.remote.log("catalog-results")
    assert subjects, "the write-back branch has commits on the catalog remote"
    ids = history_ids(stack.remote.bare)
    assert Counter(ids).most_common(1)[0][1] == 1, "each result appears once in the history"
    assert sorted(ids) == sorted(r["id"] for r in results)
    assert stack.remote.log("main")[0] != subjects[0], "results never land on the catalog branch"


def test_a_second_patch_to_a_completed_result_gets_409_and_changes_nothing(stack):
    result = stack.settle()[-1]
    url = f"{stack.up.base}/api/results/{result['id']}"
    headers = {"Authorization": f"Token {stack.action_token}"}

    again = requests.patch(url, {"result": "fail", "message": "second answer"}, headers=headers, timeout=10)
    assert again.status_code == 409, again.text
    assert "detail" in again.json() or "message" in again.json() or "error" in again.json()
    bad_value = requests.patch(url, {"result": "maybe"}, headers=headers, timeout=10)
    assert bad_value.status_code in (400, 409, 422)
    no_token = requests.patch(url, {"result": "fail"}, timeout=10)
    assert no_token.status_code == 401

    # The Action re-run from GitHub's "Re-run all jobs": the docs' code, unchanged, is refused too.
    data = next(d.body["client_payload"]["data"] for d in stack.github.dispatches
                if json.loads(base64.b64decode(d.body["client_payload"]["data"]))["result"]["id"] == result["id"])
    rerun = subprocess.run([sys.executable, str(stack.actions.script)], capture_output=True, text=True, timeout=60,
                           env={"PAYLOAD": data, "SERVICE_CATALOG_TOKEN": stack.action_token, "PATH": "/usr/bin:/bin"})
    assert rerun.returncode == 0 and rerun.stdout.strip().endswith("Response 409"), rerun.stdout + rerun.stderr

    assert stack.up.get(f"/api/results/{result['id']}") == result
    assert Counter(history_ids(stack.remote.bare))[result["id"]] == 1


def test_a_service_removed_by_a_commit_keeps_its_history(stack):
    stack.settle()
    kept = stack.up.results(service="storefront-web")
    assert kept and all(r["status"] == "completed" for r in kept)

    sha = stack.push("Retire storefront-web", {"services/storefront-web.yaml": None})
    run = stack.wait_synced(sha)
    assert run["removed"] == 1 and run["errors"] == []

    current = [s["slug"] for s in stack.up.get("/api/services")["services"]]
    assert "storefront-web" not in current
    everything = {s["slug"]: s for s in stack.up.get("/api/services", include_removed="true")["services"]}
    assert everything["storefront-web"]["removed_at"]
    assert stack.up.results(service="storefront-web") == kept
    assert {r["id"] for r in kept} <= set(history_ids(stack.remote.bare))


def test_a_bad_yaml_commit_keeps_everything_and_reports_file_and_line(stack):
    def catalog_view():
        return {s["slug"]: (s["name"], s["priority"], s["owner"], s["tags"], s["removed_at"])
                for s in stack.up.get("/api/services", include_removed="true")["services"]}

    before = catalog_view()
    original = (stack.remote.work / "services/payments-api.yaml").read_text()
    broken = original.replace("tags: [pci, tier-1]", "tags: [pci, tier-1\nowner: [")
    line = original.splitlines().index("tags: [pci, tier-1]") + 1
    sha = stack.push("Break payments-api", {"services/payments-api.yaml": broken})

    run = stack.wait_synced(sha)
    errors = [e for e in run["errors"] if e["file"] == "services/payments-api.yaml"]
    assert errors, run
    assert isinstance(errors[0]["line"], int) and line <= errors[0]["line"] <= line + 2, errors
    assert catalog_view() == before, "a bad file changes and removes nothing"
    assert stack.up.get("/api/services/payments-api")["owner"] == "team-payments"

    fixed = stack.push("Fix payments-api", {"services/payments-api.yaml": original})
    assert stack.wait_synced(fixed)["errors"] == []


# -- processes of their own ----------------------------------------------------------------------


def test_a_pushed_commit_is_picked_up_by_the_poll_without_a_webhook(fresh_stack):
    stack = fresh_stack(sync_interval=1, name="poll")
    stack.up.start()
    wait_for(lambda: stack.up.get("/api/sync")["last_run"], "the first sync")
    sha = stack.remote.commit_and_push("Add checkout-web", {"services/checkout-web.yaml": _service_yaml(NEW_SERVICE)})
    run = wait_for(lambda: _last_run_at(stack.up, sha), "the poll to sync the push")
    assert run["applied_revision"] == sha and run["created"] == 1
    assert stack.up.get("/api/services/checkout-web")["owner"] == "team-checkout"
    # (its dispatch waits behind the first pass's six, a second apiece: the webhook test checks it)


def test_kill_9_in_the_middle_and_a_restart_lose_nothing_and_duplicate_nothing(fresh_stack):
    stack = fresh_stack(sync_interval=1, name="kill", hold_actions=True)
    stack.up.start()
    # GitHub accepted every dispatch; the Actions run now and answer while the server dies.
    wait_for(lambda: len(stack.github.dispatches) == INITIAL_PAIRS, "every pair dispatched", timeout=30)
    wait_for(lambda: all(r["status"] == "sent" for r in stack.up.results()), "results marked sent")
    stack.actions.release()
    wait_for(lambda: sum(r["status"] == "completed" for r in stack.up.results()) >= 2, "the first answers",
             interval=0.05)
    stack.up.kill()
    finished_before_kill = sum(r["status"] == "completed" for r in _results_in_store(stack))
    time.sleep(1.5)  # Actions meanwhile fail to reach the catalog and are re-run
    stack.up.start()

    results = stack.settle(timeout=45)
    assert len(results) == INITIAL_PAIRS, "the restart created no second result for any pair"
    counts = stack.dispatch_counts()
    assert len(counts) == INITIAL_PAIRS and set(counts.values()) == {1}, counts
    answered = stack.actions.answered()
    assert all(statuses.count(200) <= 1 for statuses in answered.values()), answered
    assert set(answered) == {r["id"] for r in results}
    ids = history_ids(stack.remote.bare)
    assert sorted(ids) == sorted(r["id"] for r in results) and len(ids) == len(set(ids))
    failed_runs = sum(run.returncode != 0 for run in stack.actions.runs)
    print(f"\nkill -9 with {finished_before_kill}/{INITIAL_PAIRS} results finished; {failed_runs} Action runs"
          f" failed during the outage and were re-run; {len(stack.remote.log('catalog-results'))} write-back commits")
    assert finished_before_kill < INITIAL_PAIRS, "the kill came in the middle, not after the end"


def test_sigterm_stops_catalog_up_cleanly_with_exit_code_0(fresh_stack):
    stack = fresh_stack(sync_interval=1, name="sigterm")
    stack.up.start()
    wait_for(lambda: stack.github.dispatches, "a first dispatch")
    started = time.monotonic()
    assert stack.up.terminate(timeout=10) == 0
    print(f"\ncatalog up exited 0 {time.monotonic() - started:.1f} s after SIGTERM (mid dispatch pass)")
    assert "Application shutdown complete" in stack.up.log_text()
    assert "Traceback" not in stack.up.log_text()
    # The pass in flight finished its bookkeeping: whatever GitHub accepted is recorded as sent (or answered).
    dispatched = {json.loads(base64.b64decode(d.body["client_payload"]["data"]))["result"]["id"]
                  for d in stack.github.dispatches}
    statuses = {r["id"]: r["status"] for r in _results_in_store(stack)}
    assert dispatched and all(statuses[i] in ("sent", "completed") for i in dispatched), statuses


# -- embedded defaults ----------------------------------------------------------------------------


def test_catalog_up_with_no_settings_runs_the_example_to_results_and_a_writeback_commit(tmp_path):
    # cwd: the project, as after a fresh clone; no catalog setting but a shorter write-back interval
    # (its default is 30 s; bench/bench_up.py measures the untouched defaults).
    up = UpProcess(tmp_path / "home", {"CATALOG_WRITEBACK_INTERVAL": "2"}, name="defaults")
    STARTED.append(up)
    try:
        up.start(wait=False)
        first = wait_for(lambda: up.healthy() and up.results(status="completed"), "a first completed result",
                         timeout=40, interval=0.1)
        to_first_result = time.monotonic() - up.started_at
        results_git = up.home / "results.git"
        wait_for(lambda: results_git.is_dir() and history_ids(results_git), "a write-back commit", timeout=40)
        to_writeback = time.monotonic() - up.started_at
        print(f"\nembedded defaults: first completed result after {to_first_result:.1f} s"
              f" ({first[-1]['check']} on {first[-1]['service']}), first write-back commit after {to_writeback:.1f} s")

        services = up.get("/api/services")["services"]
        assert len(services) == 11 and "payments-api" in {s["slug"] for s in services}
        assert (up.home / "local-dispatcher.token").exists()
        banner = up.log_text()
        assert up.base in banner and "local-dispatcher.token" in banner and str(results_git) in banner
        log = git("log", "--format=%an %s", "catalog-results", cwd=results_git)
        assert log.strip(), "the write-back branch has a commit"
        ids = history_ids(results_git)
        assert len(ids) == len(set(ids))
        assert up.terminate(timeout=15) == 0
    finally:
        up.stop()
