"""`catalog answer` end to end with no catalog secret: the real scheduler dispatches to the GitHub
stand-in, the real CLI reads that payload, asks the runner's token endpoint (the loopback OIDC issuer)
for a token with the server as audience, and answers the real server on loopback, which verifies it."""

from __future__ import annotations

import base64
import json
import os
import subprocess
import sys

import pytest

from api.app import create_app
from api_support import live_server
from conftest import sync_directory
from github_standin import GitHubStandIn
from reconciler.dispatch import GitHubDispatcher
from reconciler.oidc import OidcVerifier
from reconciler.schedule import run_check
from reconciler.settings import Settings

GITHUB_TOKEN = "ghp_answer"
REPOSITORY = "acme-rockets/health-checks"  # the example catalog's defaults.repository


@pytest.fixture
def catalog_server(store, example_dir, tmp_path, issuer):
    """The example catalog (readme-present in batches of 2) served on loopback, accepting the issuer's
    tokens for the server's own URL; yields (base URL, a function dispatching a check, the payloads)."""
    check = example_dir / "checks" / "readme-present.yaml"
    check.write_text(check.read_text() + "batch: 2\n")
    sync_directory(store, example_dir)
    verifier = OidcVerifier(issuer.url, "not yet")
    app = create_app(store, Settings(home=tmp_path / "home", oidc_issuer=issuer.url), sync_trigger=lambda: None, oidc=verifier)
    with live_server(app) as base, GitHubStandIn(token=GITHUB_TOKEN) as github:
        verifier.audience = base  # the server's URL (CATALOG_OIDC_AUDIENCE's default), known once it listens
        settings = Settings.resolve({"github_api_url": github.url, "github_token": GITHUB_TOKEN, "server_url": base}, {})

        def dispatch(check: str, service: str | None = None) -> list[dict]:
            """The decoded `data` of each dispatch the run sent: what the Action gets in $PAYLOAD."""
            before = len(github.dispatches)
            run_check(store, GitHubDispatcher(github.url, GITHUB_TOKEN), check, service, settings=settings)
            return [json.loads(base64.b64decode(request.body["client_payload"]["data"]))
                    for request in github.dispatches[before:]]

        yield base, dispatch
    issuer.actions_repository = REPOSITORY


def answer(issuer, data: dict, *args: str, stdin: str | None = None) -> subprocess.CompletedProcess:
    """`catalog answer ...` in an Action run that has no SERVICE_CATALOG_TOKEN, only `id-token: write`."""
    outside = {k: v for k, v in os.environ.items() if not k.startswith(("ACTIONS_", "GITHUB_", "SERVICE_CATALOG"))}
    env = {**outside, "PAYLOAD": base64.b64encode(json.dumps(data).encode()).decode(),
           "ACTIONS_ID_TOKEN_REQUEST_URL": issuer.token_request_url, "ACTIONS_ID_TOKEN_REQUEST_TOKEN": issuer.request_token,
           "GITHUB_SERVER_URL": "https://github.com", "GITHUB_REPOSITORY": REPOSITORY, "GITHUB_RUN_ID": "4242"}
    return subprocess.run([sys.executable, "-m", "reconciler.cli", "answer", *args], input=stdin, env=env,
                          capture_output=True, text=True, timeout=60)


def test_catalog_answer_records_one_result_with_the_runs_attestation(store, catalog_server, issuer):
    base, dispatch = catalog_server
    [data] = dispatch("has-owner", "payments-api")
    done = answer(issuer, data, "pass", "--message", "owned by team-payments")
    assert done.returncode == 0, done.stderr
    assert issuer.audiences[-1] == base  # the token was asked for with the server as audience
    row = store.results.get(data["result"]["id"])
    assert (row["status"], row["result"], row["message"]) == ("completed", "pass", "owned by team-payments")
    assert row["url"] == "https://github.com/acme-rockets/health-checks/actions/runs/4242"
    assert row["attestation"]["repository"] == REPOSITORY and row["attestation"]["run_id"] == "9876543210"
    assert issuer.request_token not in done.stdout + done.stderr


def test_catalog_answer_results_records_a_batch_with_attestations_reading_its_list_from_the_server(
        store, catalog_server, issuer):
    _, dispatch = catalog_server
    data = dispatch("readme-present")[0]
    items = data["batch"].pop("results")  # as if the list had passed 64 KB: read with GET /api/batches/{id}
    assert len(items) == 2
    listed = answer(issuer, data, "--list")
    assert listed.returncode == 0, listed.stderr
    served = [json.loads(line) for line in listed.stdout.splitlines()]
    # the same list; the payload's was taken before the dispatch marked its results sent
    assert [(i["result"]["id"], i["service"], i["endpoint"]) for i in served] == [
        (i["result"]["id"], i["service"], i["endpoint"]) for i in items]
    assert {i["result"]["status"] for i in served} == {"sent"}
    lines = "".join(json.dumps({"service": item["service"]["slug"], "result": "fail", "message": "no README"}) + "\n"
                    for item in items)
    done = answer(issuer, data, "--results", "-", stdin=lines)
    assert done.returncode == 0, done.stderr
    assert "answered 2 of 2 results" in done.stderr
    for item in items:
        row = store.results.get(item["result"]["id"])
        assert (row["status"], row["result"], row["message"]) == ("completed", "fail", "no README")
        assert row["attestation"]["repository"] == REPOSITORY


def test_a_token_of_another_repository_is_refused_for_one_result_for_each_item_and_for_the_list(
        store, catalog_server, issuer):
    _, dispatch = catalog_server
    [single] = dispatch("has-owner", "payments-api")
    batch = dispatch("readme-present")[0]
    issuer.actions_repository = "mallory/health-checks"  # a run of another repository asks for its token
    one = answer(issuer, single, "pass")
    assert one.returncode == 1
    assert (f"answered 403: an OIDC token of repository 'mallory/health-checks' may not answer result"
            f" {single['result']['id']}: its check 'has-owner' runs in '{REPOSITORY}'") in one.stderr
    lines = "".join(json.dumps({"service": item["service"]["slug"], "result": "pass"}) + "\n"
                    for item in batch["batch"]["results"])
    bulk = answer(issuer, batch, "--results", "-", stdin=lines)
    assert bulk.returncode == 1 and "answered 0 of 2 results" in bulk.stderr
    for item in batch["batch"]["results"]:
        assert (f"catalog: result {item['result']['id']}: 403 an OIDC token of repository 'mallory/health-checks'"
                f" may not answer result {item['result']['id']}") in bulk.stderr
        assert store.results.get(item["result"]["id"])["status"] == "sent"
    del batch["batch"]["results"]
    listing = answer(issuer, batch, "--list")
    assert listing.returncode == 1 and listing.stdout == ""
    assert (f"answered 403: an OIDC token of repository 'mallory/health-checks' may not read batch {batch['batch']['id']}:"
            f" its check 'readme-present' runs in '{REPOSITORY}'") in listing.stderr
    assert store.results.get(single["result"]["id"])["status"] == "sent"
