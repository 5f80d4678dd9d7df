"""`catalog answer` end to end with no catalog secret: the real scheduler dispatches to the GitHub
stand-in, the real CLI reads that payload, asks the runner's token endpoint (the loopback OIDC issuer)
for a token with the server as audience, and answers the real server on loopback, which verifies it."""

from __future__ import annotations

import base64
import json
import os
import subprocess
import sys
import time
from contextlib import contextmanager
from datetime import datetime, timedelta

import pytest

from api.app import create_app
from api_support import live_server, make_token
from conftest import sync_directory, write_catalog
from flaky_proxy import DROP, LOSE, FlakyProxy
from github_standin import GitHubStandIn
from reconciler.answer import BULK_HEAD, BULK_TAIL, bulk_bodies
from reconciler.answer_limits import MAX_BULK_ANSWERS, MAX_BULK_BODY_BYTES
from reconciler.clock import Clock, FakeClock
from reconciler.dispatch import GitHubDispatcher
from reconciler.oidc import OidcVerifier
from reconciler.schedule import run_check
from reconciler.settings import Settings

GITHUB_TOKEN = "ghp_answer"
REPOSITORY = "acme-rockets/health-checks"  # the example catalog's defaults.repository
BACKOFF = "0.01"  # seconds before the first retry (CATALOG_ANSWER_BACKOFF), so tests do not wait


@contextmanager
def serving(store, catalog_dir, home, issuer):
    """`catalog_dir` synced and served on loopback, accepting the issuer's tokens for the server's own URL;
    yields (base URL, a function dispatching a check through the GitHub stand-in)."""
    report = sync_directory(store, catalog_dir)
    assert not report.errors, report.errors
    verifier = OidcVerifier(issuer.url, "not yet")
    app = create_app(store, Settings(home=home, oidc_issuer=issuer.url), sync_trigger=lambda: None, oidc=verifier)
    with live_server(app) as base, GitHubStandIn(token=GITHUB_TOKEN) as github:
        verifier.audience = base  # the server's URL (CATALOG_OIDC_AUDIENCE's default), known once it listens
        settings = Settings.resolve({"github_api_url": github.url, "github_token": GITHUB_TOKEN, "server_url": base}, {})

        def dispatch(check: str, service: str | None = None, *, at: datetime | None = None) -> list[dict]:
            """The decoded `data` of each dispatch the run sent (`at` that time): what the Action gets in $PAYLOAD."""
            before = len(github.dispatches)
            run_check(store, GitHubDispatcher(github.url, GITHUB_TOKEN), check, service, settings=settings,
                      clock=FakeClock(at) if at else None)
            return [json.loads(base64.b64decode(request.body["client_payload"]["data"]))
                    for request in github.dispatches[before:]]

        yield base, dispatch


@pytest.fixture
def catalog_server(store, example_dir, tmp_path, issuer):
    """The example catalog (readme-present in batches of 2) served on loopback (`serving`)."""
    check = example_dir / "checks" / "readme-present.yaml"
    check.write_text(check.read_text() + "batch: 2\n")
    with serving(store, example_dir, tmp_path / "home", issuer) as served:
        yield served
    issuer.actions_repository = REPOSITORY


def answer(issuer, data: dict, *args: str, stdin: str | None = None, env: dict | None = None) -> subprocess.CompletedProcess:
    """`catalog answer ...` in an Action run that has no SERVICE_CATALOG_TOKEN, only `id-token: write`
    (unless `env` gives one); retries wait BACKOFF seconds at first."""
    outside = {k: v for k, v in os.environ.items()
               if not k.startswith(("ACTIONS_", "GITHUB_", "SERVICE_CATALOG", "CATALOG_ANSWER"))}
    env = {**outside, "PAYLOAD": base64.b64encode(json.dumps(data).encode()).decode(),
           "ACTIONS_ID_TOKEN_REQUEST_URL": issuer.token_request_url, "ACTIONS_ID_TOKEN_REQUEST_TOKEN": issuer.request_token,
           "GITHUB_SERVER_URL": "https://github.com", "GITHUB_REPOSITORY": REPOSITORY, "GITHUB_RUN_ID": "4242",
           "CATALOG_ANSWER_BACKOFF": BACKOFF, **(env or {})}
    return subprocess.run([sys.executable, "-m", "reconciler.cli", "answer", *args], input=stdin, env=env,
                          capture_output=True, text=True, timeout=120)


def lines_of(*answers: dict) -> str:
    """--results input: one JSON line per answer."""
    return "".join(json.dumps(answer) + "\n" for answer in answers)


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


def proxied(data: dict, url: str) -> dict:
    """The payload with another server URL: the proxy's, or one where nothing listens."""
    return {**data, "server": {**data["server"], "url": url}}


# -- a batch larger than one request may carry -------------------------------------------------------


def test_a_batch_over_the_servers_body_cap_is_answered_in_several_requests(store, tmp_path, issuer):
    """130 answers of 65,000 characters, each within the 64 KiB a message may hold, pass the 8 MiB one
    PATCH /api/results may carry (it was one 413, and nothing recorded): all are recorded."""
    services = [{"name": f"Service {i}", "slug": f"svc-{i:03d}", "priority": 3} for i in range(130)]
    check = {"name": "Runbook", "slug": "runbook", "services": "all", "batch": 200}
    root = write_catalog(tmp_path / "catalog", services, [check], catalog={"defaults": {"repository": REPOSITORY}})
    message = "x" * 65_000
    with serving(store, root, tmp_path / "home", issuer) as (_, dispatch):
        [data] = dispatch("runbook")
        done = answer(issuer, data, "--results", "-",
                      stdin=lines_of(*({"service": s["slug"], "result": "fail", "message": message} for s in services)))
    assert done.returncode == 0, done.stderr
    assert "answered 130 of 130 results" in done.stderr
    rows = store.results.list(check="runbook", limit=1000)
    assert len(rows) == 130
    assert {(row["status"], row["result"], row["message"]) for row in rows} == {("completed", "fail", message)}


def test_a_split_batch_refused_after_its_first_request_says_what_was_recorded_and_what_was_not(
        store, tmp_path, issuer):
    """The second of two requests refused whole (a proxy's 413): the first request's answers are
    recorded and said to be; the rest are counted as not recorded, still open, and the exit is 1. (Only
    the refusal was printed: a check author could not tell that most of the batch had gone in.)"""
    services = [{"name": f"Service {i}", "slug": f"svc-{i:03d}", "priority": 3} for i in range(130)]
    check = {"name": "Runbook", "slug": "runbook", "services": "all", "batch": 200}
    root = write_catalog(tmp_path / "catalog", services, [check], catalog={"defaults": {"repository": REPOSITORY}})
    message = "x" * 65_000  # 130 of them pass the 8 MiB one request may carry: two requests
    with serving(store, root, tmp_path / "home", issuer) as (base, dispatch):
        [data] = dispatch("runbook")
        with FlakyProxy(base) as proxy:
            proxy.faults = [None, (413, {})]
            done = answer(issuer, proxied(data, proxy.url), "--results", "-",
                          stdin=lines_of(*({"service": s["slug"], "result": "fail", "message": message} for s in services)),
                          env={"SERVICE_CATALOG_TOKEN": make_token(store, "results:write")})
    assert done.returncode == 1, done.stderr
    assert [what for _, _, what in proxy.patches] == ["relay", "413"]
    statuses = [row["status"] for row in store.results.list(check="runbook", limit=1000)]
    first = statuses.count("completed")  # the first request's answers, as many as its 8 MiB held
    assert 0 < first < 130 and statuses.count("sent") == 130 - first
    assert "answered 413: the proxy answers 413" in done.stderr
    assert f"{130 - first} answers not recorded" in done.stderr
    assert done.stderr.splitlines()[-1] == f"answered {first} of 130 results"


def test_bulk_bodies_keep_within_the_servers_count_and_byte_limits():
    room = MAX_BULK_BODY_BYTES - len(BULK_HEAD) - len(BULK_TAIL)  # for the answers and their commas
    def answer_of(size: int) -> bytes:  # a JSON answer of `size` bytes (a string will do for the count)
        return b'"' + b"x" * (size - 2) + b'"'

    assert bulk_bodies([answer_of(room)]) == [BULK_HEAD + answer_of(room) + BULK_TAIL]  # exactly the cap still goes
    assert len(bulk_bodies([answer_of(room - 1), b"0"])) == 2  # with the comma, a byte over: two bodies
    assert len(bulk_bodies([answer_of(room - 2), b"0"])) == 1
    large = [json.dumps({"id": i, "message": "x" * 100_000}).encode() for i in range(200)]
    small = [json.dumps({"id": i}).encode() for i in range(2_500)]
    for answers in (large, small, large + small):
        items = [json.loads(body)["results"] for body in bulk_bodies(answers)]
        assert all(len(body) <= MAX_BULK_BODY_BYTES for body in bulk_bodies(answers))
        assert max(map(len, items)) <= MAX_BULK_ANSWERS
        assert [item for chunk in items for item in chunk] == [json.loads(answer) for answer in answers]


# -- retries ---------------------------------------------------------------------------------------------


def test_one_answer_is_tried_again_after_a_dropped_connection_a_503_and_a_lost_response(store, catalog_server, issuer):
    base, dispatch = catalog_server
    [data] = dispatch("has-owner", "payments-api")
    with FlakyProxy(base) as proxy:
        proxy.faults = [DROP, (503, {}), LOSE]
        done = answer(issuer, proxied(data, proxy.url), "pass", "--message", "owned",
                      env={"SERVICE_CATALOG_TOKEN": make_token(store, "results:write")})
    assert done.returncode == 0, done.stderr
    assert [what for _, _, what in proxy.patches] == ["drop", "503", "lose", "relay"]
    assert done.stderr.count("trying again in") == 3
    # the lost response's request was recorded: the retry's 409 says so, and the answer is in
    assert "recorded by an earlier attempt whose response was lost (the retry got 409)" in done.stderr
    row = store.results.get(data["result"]["id"])
    assert (row["status"], row["result"], row["message"]) == ("completed", "pass", "owned")


def test_a_batch_waits_as_long_as_a_429_asks_and_counts_409s_after_a_lost_response_as_recorded(
        store, catalog_server, issuer):
    base, dispatch = catalog_server
    data = dispatch("readme-present")[0]
    items = data["batch"]["results"]
    with FlakyProxy(base) as proxy:
        proxy.faults = [(429, {"Retry-After": "1"}), LOSE]
        done = answer(issuer, proxied(data, proxy.url), "--results", "-",
                      stdin=lines_of(*({"service": item["service"]["slug"], "result": "pass"} for item in items)),
                      env={"SERVICE_CATALOG_TOKEN": make_token(store, "results:write")})
    assert done.returncode == 0, done.stderr
    (limited, _, _), (retried, _, _), _ = proxy.patches
    assert retried - limited >= 1.0  # Retry-After: 1, though the backoff starts at 0.01 s
    assert "2 results recorded by an earlier attempt whose response was lost" in done.stderr
    assert "answered 2 of 2 results" in done.stderr
    assert {store.results.get(item["result"]["id"])["status"] for item in items} == {"completed"}


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)  # the client's reading; both stores refuse alike (test_store.py)
def test_an_answer_past_the_checks_timeout_fails_even_when_a_retry_gets_the_409(store, example_dir, tmp_path, issuer):
    """A dispatch sent an hour ago, past has-owner's 30m timeout (readme-present's batch too): the answer
    gets 409 `timed_out`. After a dropped first attempt that 409 was taken for "recorded by the lost
    attempt" and the exit was 0, for an answer nobody recorded."""
    check = example_dir / "checks" / "readme-present.yaml"
    check.write_text(check.read_text() + "batch: 2\ntimeout: 30m\n")
    token = {"SERVICE_CATALOG_TOKEN": make_token(store, "results:write")}
    an_hour_ago = Clock().now() - timedelta(hours=1)
    with serving(store, example_dir, tmp_path / "home", issuer) as (base, dispatch):
        [single], batch = dispatch("has-owner", "payments-api", at=an_hour_ago), dispatch("readme-present", at=an_hour_ago)[0]
        with FlakyProxy(base) as proxy:
            proxy.faults = [DROP]
            one = answer(issuer, proxied(single, proxy.url), "pass", env=token)
            proxy.faults = [DROP]
            many = answer(issuer, proxied(batch, proxy.url), "--results", "-", env=token, stdin=lines_of(
                *({"service": item["service"]["slug"], "result": "pass"} for item in batch["batch"]["results"])))
    assert one.returncode == 1 and "recorded by an earlier attempt" not in one.stderr
    assert "answered 409: result" in one.stderr and "was not answered within its check's timeout (30m)" in one.stderr
    assert many.returncode == 1 and "recorded by an earlier attempt" not in many.stderr
    assert many.stderr.count(": 409 result ") == 2 and "answered 0 of 2 results" in many.stderr
    ids = [single["result"]["id"], *(item["result"]["id"] for item in batch["batch"]["results"])]
    assert {store.results.get(result_id)["status"] for result_id in ids} == {"sent"}  # the next pass times them out


def test_a_refusal_is_never_tried_again_and_failures_for_now_give_up_after_five_attempts(store, catalog_server, issuer):
    base, dispatch = catalog_server
    [data] = dispatch("has-owner", "payments-api")
    token = {"SERVICE_CATALOG_TOKEN": make_token(store, "results:write")}
    with FlakyProxy(base) as proxy:
        refused = answer(issuer, proxied(data, proxy.url), "pass", env={"SERVICE_CATALOG_TOKEN": "not-a-token"})
        assert refused.returncode == 1 and "answered 401" in refused.stderr
        assert len(proxy.patches) == 1 and "trying again" not in refused.stderr
        proxy.faults = [(500, {})] * 5
        started = time.monotonic()
        failing = answer(issuer, proxied(data, proxy.url), "pass", env=token)
        assert time.monotonic() - started < 30
    assert failing.returncode == 1 and failing.stderr.count("trying again in") == 4
    assert failing.stderr.splitlines()[-1].endswith("answered 500: the proxy answers 500; gave up after 5 attempts")
    unreachable = answer(issuer, proxied(data, "http://127.0.0.1:1"), "pass", env=token)
    assert unreachable.returncode == 1 and unreachable.stderr.count("trying again in") == 4
    assert unreachable.stderr.splitlines()[-1] == (
        f"catalog: PATCH http://127.0.0.1:1{data['server']['endpoint']} failed (ConnectionError); gave up after 5 attempts")
    assert store.results.get(data["result"]["id"])["status"] == "sent"


# -- what it says --------------------------------------------------------------------------------------------

SERVER = {"url": "http://127.0.0.1:1", "endpoint": "/api/results/9/"}  # nothing listens: each is refused before sending
BATCH = {"id": 4, "size": 1,
         "results": [{"result": {"id": 9}, "service": {"slug": "search-index"}, "endpoint": "/api/results/9/"}]}
PASSING = lines_of({"service": "search-index", "result": "pass"})


@pytest.mark.parametrize("data, args, stdin, says", [
    ({"server": {}}, ["pass"], None, "PAYLOAD's server.url must be the catalog's http(s) URL, not None"),
    ({"server": {"url": "http://x"}}, ["pass"], None,
     "PAYLOAD's server.endpoint must be a path such as /api/results/29/, not None"),
    ({"server": {**SERVER, "endpoint": 5}}, ["pass"], None,
     "PAYLOAD's server.endpoint must be a path such as /api/results/29/, not 5"),
    ({"server": SERVER, "batch": 5}, ["pass"], None,
     "PAYLOAD's batch must be an object {id, size, results?} with a number as id, not 5"),
    ({"server": SERVER, "batch": {"results": [5]}}, ["--results", "-"], PASSING,
     "PAYLOAD's batch must be an object {id, size, results?} with a number as id, not {'results': [5]}"),
    ({"server": SERVER, "batch": {"id": 4, "results": [5]}}, ["--results", "-"], PASSING,
     "the batch's results[0] must be {result: {id}, service: {slug} or null, endpoint}, not 5"),
    ({"server": SERVER, "batch": BATCH}, ["--results", "-"], '{"service":["x"],"result":"pass"}\n',
     "line 1: 'service' must be a service's slug (null for `services: none`), not ['x']"),
    ({"server": SERVER, "batch": BATCH}, ["--results", "-"], PASSING * 2,
     "line 2: service 'search-index' is given twice (first on line 1)"),
])
def test_a_bad_payload_or_line_is_refused_in_one_line_that_says_what_is_wrong(issuer, data, args, stdin, says):
    done = answer(issuer, data, *args, stdin=stdin, env={"SERVICE_CATALOG_TOKEN": "t"})
    assert done.returncode == 1
    assert done.stderr == f"catalog: {says}\n"


def test_results_take_any_case_and_a_rerun_tells_finished_results_from_unanswered_ones(store, catalog_server, issuer):
    _, dispatch = catalog_server
    data = dispatch("readme-present")[0]
    items = data["batch"]["results"]
    first, second = (item["service"]["slug"] for item in items)
    partial = answer(issuer, data, "--results", "-", stdin=lines_of({"service": first, "result": "PASS"}))
    assert partial.returncode == 1  # one left to time out
    assert f"1 results of the batch not answered (they will time out): {second}" in partial.stderr
    rest = answer(issuer, data, "--results", "-", stdin=lines_of({"service": second, "result": " Fail "}))
    assert rest.returncode == 0, rest.stderr
    assert f"1 results of the batch were already finished, not answered again: {first} (completed)" in rest.stderr
    assert "time out" not in rest.stderr and "answered 1 of 1 results" in rest.stderr
    assert [store.results.get(item["result"]["id"])["result"] for item in items] == ["pass", "fail"]
