"""Actions (run a check, sync, GitHub webhook) and operability (healthz, OpenAPI, errors, access log, serve)."""

from __future__ import annotations

import hashlib
import hmac
import io
import json
import os
import re
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import requests
from litestar.testing import TestClient

from api.access import AccessLog
from api.app import create_app
from api_support import auth, make_token, new_result
from reconciler.errors import NotFound
from reconciler.settings import Settings

SECRET = "webhook-secret"


class Calls:
    """Records the seams' calls: sync_trigger() and check_runner(slug, service)."""

    def __init__(self, store):
        self.store = store
        self.syncs = 0
        self.runs: list[tuple] = []

    def sync(self) -> None:
        self.syncs += 1

    def run(self, check: str, service: str | None) -> list:
        self.runs.append((check, service))
        if check == "no-such-check":
            raise NotFound(f"check {check!r} does not exist")
        return [new_result(self.store, check, service or "payments-api", trigger="ad-hoc")]


@pytest.fixture
def calls(synced_store):
    return Calls(synced_store)


@pytest.fixture
def app(synced_store, tmp_path, calls):
    settings = Settings(home=tmp_path, webhook_secret=SECRET, branch="main")
    return create_app(synced_store, settings, sync_trigger=calls.sync, check_runner=calls.run)


@pytest.fixture
def client(app):
    with TestClient(app) as client:
        yield client


def test_run_check_dispatches_through_the_runner(client, synced_store, calls):
    runner = make_token(synced_store, "checks:run", name="runner")
    response = client.post("/api/checks/has-owner/run", headers=auth(runner))
    assert response.status_code == 201, response.text
    assert response.json()["results"][0]["trigger"] == "ad-hoc"
    response = client.post("/api/checks/has-owner/run?service=users-api", headers=auth(runner))
    assert response.status_code == 201
    response = client.post("/api/checks/has-owner/run", json={"service": "users-db"}, headers=auth(runner))
    assert response.status_code == 201
    assert calls.runs == [("has-owner", None), ("has-owner", "users-api"), ("has-owner", "users-db")]


def test_run_check_errors(client, synced_store, calls):
    runner = make_token(synced_store, "checks:run", name="runner")
    reader = make_token(synced_store, "read", name="reader")
    assert client.post("/api/checks/has-owner/run").status_code == 401
    assert client.post("/api/checks/has-owner/run", headers=auth(reader)).status_code == 403
    assert client.post("/api/checks/no-such-check/run", headers=auth(runner)).status_code == 404
    clash = client.post("/api/checks/has-owner/run?service=a", json={"service": "b"}, headers=auth(runner))
    assert clash.status_code == 422 and "two different services" in clash.json()["error"]["message"]
    assert client.post("/api/checks/has-owner/run", json={"servic": "a"}, headers=auth(runner)).status_code == 422
    assert calls.runs == [("no-such-check", None)]


def test_post_sync_starts_a_sync_and_needs_the_sync_scope(client, synced_store, calls):
    assert client.post("/api/sync").status_code == 401
    assert client.post("/api/sync", headers=auth(make_token(synced_store, "read", name="r"))).status_code == 403
    response = client.post("/api/sync", headers=auth(make_token(synced_store, "sync", name="s")))
    assert response.status_code == 202 and response.json()["status"] == "started"
    assert calls.syncs == 1


# -- the GitHub webhook ----------------------------------------------------------------------------


def _deliver(client, event: str, payload: dict, *, delivery: str = "d-1", secret: str = SECRET, signature=None):
    body = json.dumps(payload).encode()
    digest = "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()
    headers = {"X-GitHub-Event": event, "X-GitHub-Delivery": delivery, "Content-Type": "application/json",
               "X-Hub-Signature-256": signature if signature is not None else digest}
    return client.post("/webhooks/github", content=body, headers=headers)


PUSH = {"ref": "refs/heads/main", "after": "abc123", "repository": {"full_name": "acme/catalog", "default_branch": "main"}}


def test_signed_push_starts_a_sync_at_once(client, calls):
    response = _deliver(client, "push", PUSH)
    assert response.status_code == 202 and response.json()["status"] == "started"
    assert calls.syncs == 1


def test_redelivered_push_is_ignored(client, calls):
    assert _deliver(client, "push", PUSH, delivery="same").json()["status"] == "started"
    again = _deliver(client, "push", PUSH, delivery="same")
    assert again.status_code == 202 and "already received" in again.json()["note"]
    assert calls.syncs == 1


def test_ping_is_answered_and_other_events_and_branches_are_ignored(client, calls):
    assert _deliver(client, "ping", {"zen": "Keep it logically awesome."}).status_code == 200
    issues = _deliver(client, "issues", {"action": "opened"}, delivery="d-2")
    assert issues.status_code == 202 and issues.json()["status"] == "ignored"
    writeback = _deliver(client, "push", {**PUSH, "ref": "refs/heads/catalog-results"}, delivery="d-3")
    assert writeback.json()["status"] == "ignored" and "refs/heads/main" in writeback.json()["note"]
    assert calls.syncs == 0


@pytest.mark.parametrize("signature", ["", "sha256=00", "sha1=abc", None])
def test_bad_signatures_are_refused(client, calls, signature):
    kwargs = {"secret": "wrong-secret"} if signature is None else {"signature": signature}
    response = _deliver(client, "push", PUSH, **kwargs)
    assert response.status_code == 401
    assert "X-Hub-Signature-256" in response.json()["error"]["message"]
    assert calls.syncs == 0


def test_webhook_without_a_configured_secret_is_refused_clearly(synced_store, tmp_path, calls):
    app = create_app(synced_store, Settings(home=tmp_path), sync_trigger=calls.sync)
    with TestClient(app) as client:
        response = _deliver(client, "push", PUSH)
    assert response.status_code == 503
    assert "CATALOG_WEBHOOK_SECRET" in response.json()["error"]["message"]
    assert calls.syncs == 0


def test_push_without_a_configured_branch_follows_the_default_branch(synced_store, tmp_path, calls):
    app = create_app(synced_store, Settings(home=tmp_path, webhook_secret=SECRET), sync_trigger=calls.sync)
    with TestClient(app) as client:
        assert _deliver(client, "push", {**PUSH, "ref": "refs/heads/feature"}).json()["status"] == "ignored"
        assert _deliver(client, "push", PUSH, delivery="d-2").json()["status"] == "started"
    assert calls.syncs == 1


def test_push_with_a_broken_body_is_a_clear_error(client, calls):
    body = b"{broken"
    signature = "sha256=" + hmac.new(SECRET.encode(), body, hashlib.sha256).hexdigest()
    response = client.post("/webhooks/github", content=body, headers={
        "X-GitHub-Event": "push", "X-Hub-Signature-256": signature, "Content-Type": "application/json"})
    assert response.status_code == 422 and "not valid JSON" in response.json()["error"]["message"]
    assert calls.syncs == 0


# GitHub's own payloads and signature vector, in the shared folder beside the project's checkout.
GITHUB_CONTRACT = Path(__file__).resolve().parents[2] / "shared" / "github-contract"
needs_contract = pytest.mark.skipif(not GITHUB_CONTRACT.is_dir(), reason="GitHub's reference payloads are not here")


def _deliver_bytes(client, event: str, body: bytes, *, delivery: str, secret: str = SECRET, signature=None):
    """A delivery as GitHub sends it: these exact bytes, signed with the secret."""
    digest = "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()
    return client.post("/webhooks/github", content=body, headers={
        "X-GitHub-Event": event, "X-GitHub-Delivery": delivery, "Content-Type": "application/json",
        "X-Hub-Signature-256": signature or digest})


@needs_contract
@pytest.mark.parametrize("repo", ["https://github.com/codertocat/hello-world.git", "git@github.com:Codertocat/Hello-World.git"])
def test_a_push_to_another_repository_of_the_organisation_starts_no_sync(synced_store, tmp_path, calls, repo):
    """An organisation's webhook sends every repository's pushes with one secret: a push to another
    repository's default branch started a sync of the catalog each time. GitHub's own push payload
    (Codertocat/Hello-World) is the catalog's push when CATALOG_REPO names that repository (any case)."""
    body = (GITHUB_CONTRACT / "push-with-new-branch.payload.json").read_bytes()
    other = Settings(home=tmp_path, webhook_secret=SECRET, repo="https://u:SECRET-PASSWORD@github.com/acme/catalog.git")
    with TestClient(create_app(synced_store, other, sync_trigger=calls.sync)) as client:
        ignored = _deliver_bytes(client, "push", body, delivery="d-1")
    assert ignored.status_code == 202 and ignored.json() == {
        "status": "ignored", "note": "push to repository Codertocat/Hello-World; this catalog syncs acme/catalog"}
    assert calls.syncs == 0
    ours = Settings(home=tmp_path, webhook_secret=SECRET, repo=repo)
    with TestClient(create_app(synced_store, ours, sync_trigger=calls.sync)) as client:
        assert _deliver_bytes(client, "push", body, delivery="d-2").json()["status"] == "started"
    assert calls.syncs == 1


@pytest.mark.parametrize("payload", [
    {"ref": "refs/heads/main", "repository": {"full_name": 7}},
    {"ref": "refs/heads/main", "repository": "str"},
    {"ref": "refs/heads/main", "repository": {"default_branch": ["main"]}},
    {"ref": 5, "repository": {"default_branch": "main"}},
    {"repository": {"default_branch": "main"}},
])
def test_a_signed_push_with_an_unusable_payload_is_a_422_json_error(synced_store, tmp_path, calls, payload):
    app = create_app(synced_store, Settings(home=tmp_path, webhook_secret=SECRET), sync_trigger=calls.sync)
    with TestClient(app, raise_server_exceptions=False) as client:
        response = _deliver(client, "push", payload)
    assert response.status_code == 422, response.text
    assert "push payload" in response.json()["message"]
    assert calls.syncs == 0


@needs_contract
def test_a_captured_delivery_replayed_under_a_new_delivery_id_is_ignored(synced_store, tmp_path, calls):
    body = (GITHUB_CONTRACT / "push-with-new-branch.payload.json").read_bytes()
    app = create_app(synced_store, Settings(home=tmp_path, webhook_secret=SECRET), sync_trigger=calls.sync)
    with TestClient(app) as client:
        first = _deliver_bytes(client, "push", body, delivery="72d3162e-cc78-11e3-81ab-4c9367dc0958")
        assert first.status_code == 202 and first.json()["status"] == "started"
        replayed = _deliver_bytes(client, "push", body, delivery="00000000-0000-0000-0000-000000000001")
        assert replayed.status_code == 202 and replayed.json()["status"] == "ignored"
        assert "already received" in replayed.json()["note"]
        next_push = body.replace(b"6113728f27ae82c7b1a177c8d03f9e96e0adf246", b"0" * 39 + b"1")
        assert _deliver_bytes(client, "push", next_push, delivery="d-next").json()["status"] == "started"
    assert calls.syncs == 2


@needs_contract
def test_githubs_documented_signature_test_vector_is_accepted(synced_store, tmp_path, calls):
    vector = json.loads((GITHUB_CONTRACT / "webhook-signature-test-vector.json").read_text())
    app = create_app(synced_store, Settings(home=tmp_path, webhook_secret=vector["secret"]), sync_trigger=calls.sync)
    body = vector["payload"].encode()
    with TestClient(app) as client:
        ping = _deliver_bytes(client, "ping", body, delivery="p-1", signature=vector["X-Hub-Signature-256"])
        assert ping.status_code == 200
        push = _deliver_bytes(client, "push", body, delivery="p-2", signature=vector["X-Hub-Signature-256"])
        assert push.status_code == 422 and "not valid JSON" in push.json()["message"]  # signed, but not a payload
        forged = _deliver_bytes(client, "ping", body + b" ", delivery="p-3", signature=vector["X-Hub-Signature-256"])
        assert forged.status_code == 401
    assert calls.syncs == 0


# -- operability -----------------------------------------------------------------------------------


def test_healthz_answers_without_a_token(client):

    from reconciler.store.migrations import MIGRATIONS

    newest = max(version for version, _ in MIGRATIONS)  # migrations_*.py: the newest version
    assert client.get("/healthz").json() == {"status": "ok", "schema_version": newest}


def test_framework_errors_use_the_one_error_shape(client):
    assert client.get("/no/such/path").json() == {
        "message": "Not Found", "error": {"status": 404, "code": "not_found", "message": "Not Found"}}
    not_allowed = client.delete("/api/services")
    assert not_allowed.status_code == 405 and not_allowed.json()["error"]["code"] == "method_not_allowed"


def test_openapi_documents_every_route_with_auth_and_error_shape(client):
    schema = client.get("/schema/openapi.json").json()
    assert schema["components"]["securitySchemes"]["catalogToken"] == {
        "type": "apiKey", "name": "Authorization", "in": "header",
        "description": schema["components"]["securitySchemes"]["catalogToken"]["description"]}
    expected = {
        ("/api/results/{result_id}", "patch"), ("/api/results/{result_id}", "get"), ("/api/results", "get"),
        ("/api/services", "get"), ("/api/services/{slug}", "get"), ("/api/checks", "get"),
        ("/api/checks/{slug}", "get"), ("/api/sync", "get"), ("/api/sync", "post"),
        ("/api/checks/{slug}/run", "post"), ("/webhooks/github", "post"), ("/healthz", "get"),
        ("/api/results.csv", "get"), ("/metrics", "get"),
    }
    documented = {(path, method) for path, item in schema["paths"].items() for method in item}
    assert expected <= documented
    for path, method in expected - {("/healthz", "get"), ("/webhooks/github", "post")}:
        operation = schema["paths"][path][method]
        assert operation["security"] == [{"catalogToken": []}], (path, method)
        assert operation["responses"]["401"]["content"]["application/json"]["schema"] == {"$ref": "#/components/schemas/ErrorOut"}
    patch = schema["paths"]["/api/results/{result_id}"]["patch"]
    assert set(patch["requestBody"]["content"]) == {"application/json", "application/x-www-form-urlencoded"}
    assert {"200", "401", "403", "404", "409", "422"} <= set(patch["responses"])


def test_access_log_has_a_line_per_request_and_never_the_token(synced_store, tmp_path):
    reader = make_token(synced_store, "read", name="reader")
    stream = io.StringIO()
    app = create_app(synced_store, Settings(home=tmp_path), sync_trigger=lambda: None, access_log=AccessLog(stream))
    with TestClient(app) as client:
        client.get("/api/services?owner=x", headers=auth(reader))
        client.cookies.set("catalog_token", reader)
        client.get("/api/services")
        client.cookies.clear()
        client.get("/missing")
        client.patch("/api/results/1", data={"result": "pass"}, headers=auth(reader))
    lines = stream.getvalue().splitlines()
    assert len(lines) == 4, lines
    stamp = r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3} INFO catalog.access: "
    assert re.fullmatch(stamp + r"GET /api/services 200 reader \d+\.\dms", lines[0])
    assert re.fullmatch(stamp + r"GET /api/services 200 reader \d+\.\dms", lines[1])
    assert re.fullmatch(stamp + r"GET /missing 404 -", lines[2])
    assert re.fullmatch(stamp + r"PATCH /api/results/1 403 reader \d+\.\dms", lines[3])
    assert not any(reader in line for line in lines)


def test_every_guarded_route_is_declared_with_api_routing(client):
    from api.routing import RouteHandler

    guarded = [handler for route in client.app.routes for handler in getattr(route, "route_handlers", [])
               if handler.resolve_guards() and "OPTIONS" not in handler.http_methods]  # Litestar's own
    assert len(guarded) >= 15
    assert [h.handler_name for h in guarded if not isinstance(h, RouteHandler)] == [], \
        "declare routes with api.routing's get/post/patch"


def test_no_access_log_unless_asked_for(client, synced_store, capsys):
    client.get("/healthz")
    assert "catalog.access" not in capsys.readouterr().err


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_catalog_serve_runs_the_api(tmp_path):
    port = _free_port()
    env = {**os.environ, "CATALOG_HOME": str(tmp_path / "home")}
    created = subprocess.run([sys.executable, "-m", "reconciler.cli", "token", "create", "r", "--scope", "read"],
                             capture_output=True, text=True, env=env, check=True)
    server = subprocess.Popen([sys.executable, "-m", "api.cli", "serve", "--port", str(port)],
                              env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        deadline = time.monotonic() + 20
        while True:
            try:
                health = requests.get(f"http://127.0.0.1:{port}/healthz", timeout=1)
                break
            except requests.ConnectionError:
                assert time.monotonic() < deadline and server.poll() is None, "catalog serve did not start"
                time.sleep(0.1)
        assert health.status_code == 200
        services = requests.get(f"http://127.0.0.1:{port}/api/services", headers=auth(created.stdout.strip()), timeout=5)
        assert services.json() == {"services": []}
    finally:
        server.terminate()
        output, _ = server.communicate(timeout=20)
    assert "GET /api/services 200 r " in output
    assert created.stdout.strip() not in output


@pytest.mark.parametrize("command", ["serve", "up"])
def test_a_port_in_use_is_one_clear_error(tmp_path, command):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        env = {**os.environ, "CATALOG_HOME": str(tmp_path / "home"), "CATALOG_REPO": str(tmp_path / "empty")}
        (tmp_path / "empty").mkdir()
        options = ["--dispatcher", "log"] if command == "up" else []
        done = subprocess.run([sys.executable, "-m", "api.cli", command, "--port", str(port), *options],
                              env=env, capture_output=True, text=True, timeout=60)
    assert done.returncode == 1
    assert done.stderr.rstrip().splitlines()[-1] == (
        f"catalog: could not listen on http://127.0.0.1:{port} (is the port in use? try --port)")
    assert "Traceback" not in done.stderr


FORGED = "2026-11-30 12:00:00,000 INFO catalog.access: POST /api/sync 202 admin 0.1ms"


def test_a_path_with_a_newline_or_escape_codes_cannot_forge_an_access_log_line(tmp_path):
    port = _free_port()
    env = {**os.environ, "CATALOG_HOME": str(tmp_path / "home"), "CATALOG_PUBLIC_READ": "true",
           "CATALOG_WEBHOOK_SECRET": SECRET, "CATALOG_BRANCH": "main"}
    server = subprocess.Popen([sys.executable, "-m", "api.cli", "serve", "--port", str(port)],
                              env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 20
        while True:
            try:
                requests.get(f"{base}/healthz", timeout=1)
                break
            except requests.ConnectionError:
                assert time.monotonic() < deadline and server.poll() is None, "catalog serve did not start"
                time.sleep(0.1)
        forged_path = "/api/services/x%0A" + FORGED.replace(" ", "%20") + "%1B[2J%C2%9B31m%E2%80%AEgnp.exe%7F"
        assert requests.get(base + forged_path, timeout=5).status_code == 404
        body = json.dumps(PUSH).encode()
        signature = "sha256=" + hmac.new(SECRET.encode(), body, hashlib.sha256).hexdigest()
        # The server refuses C0 controls in a header; a C1 control (byte 0x9b, CSI) gets through.
        pushed = requests.post(f"{base}/webhooks/github", data=body, timeout=5, headers={
            "X-GitHub-Event": "push", "X-GitHub-Delivery": "d-1\x9b31m", "X-Hub-Signature-256": signature,
            "Content-Type": "application/json"})
        assert pushed.status_code == 202
    finally:
        server.terminate()
        output, _ = server.communicate(timeout=20)
    lines = output.splitlines()
    assert FORGED not in lines and not any(line.startswith(FORGED[:19]) for line in lines), output
    assert "GET /api/services/x\\x0a2026-11-30 12:00:00,000 INFO catalog.access: POST /api/sync 202 admin " \
           "0.1ms\\x1b[2J\\x9b31m\\u202egnp.exe\\x7f 404 -" in output
    assert "(delivery d-1\\x9b31m): sync started" in output
    assert not any(char in output for char in "\x1b\x7f\x9b\u202e")
