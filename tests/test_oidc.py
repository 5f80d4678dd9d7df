"""Answers attested by GitHub's OIDC: a local issuer with its own keys; every accepted and refused case."""

from __future__ import annotations

import time

import pytest
from litestar.testing import TestClient

from api.app import create_app
from api_support import auth, make_token
from conftest import sync_directory, write_catalog
from oidc_issuer import new_key
from reconciler import writeback_files
from reconciler.oidc import OidcVerifier
from reconciler.settings import Settings
from store_support import INTEGRITY_ERRORS, answer, new_result, raw_sql

AUDIENCE = "http://catalog.test"
REPOSITORY = "acme-rockets/health-checks"  # the example catalog's defaults.repository


@pytest.fixture
def verifier(issuer):
    return OidcVerifier(issuer.url, AUDIENCE, refetch_after=0)


@pytest.fixture
def client(synced_store, tmp_path, verifier, issuer):
    settings = Settings(home=tmp_path, server_url=AUDIENCE, oidc_issuer=issuer.url)
    with TestClient(create_app(synced_store, settings, sync_trigger=lambda: None, oidc=verifier)) as client:
        yield client


def patch(client, result_id: int, token: str, **body):
    return client.patch(f"/api/results/{result_id}", json={"result": "pass", **body}, headers=auth(token, "Bearer"))


@pytest.mark.parametrize("kid", ["key-rs", "key-es"])
def test_a_token_of_the_checks_repository_answers_and_the_result_keeps_its_attestation(client, synced_store, issuer, kid):
    result = new_result(synced_store)
    response = patch(client, result["id"], issuer.mint(kid, run_id="555", actor="hubot"), message="attested")
    assert response.status_code == 200, response.text
    expected = {
        "repository": REPOSITORY, "workflow_ref": f"{REPOSITORY}/.github/workflows/health.yml@refs/heads/main",
        "run_id": "555", "run_attempt": "1", "sha": "1f2e3d4c5b6a79881f2e3d4c5b6a79881f2e3d4c", "actor": "hubot",
    }
    assert response.json()["attestation"] == expected
    assert client.get(f"/api/results/{result['id']}", headers=auth(make_token(synced_store, "read"))).json()["attestation"] == expected
    page = client.get(f"/results/{result['id']}", headers=auth(make_token(synced_store, "read", name="pages")))
    assert "OIDC attested" in page.text and "hubot" in page.text and "run 555" in page.text
    [row] = synced_store.writeback.batch(10)
    line = writeback_files.history_line(row)
    assert '"attestation":{"actor":"hubot","repository":"acme-rockets/health-checks","run_attempt":"1"' in line


def test_an_attestation_without_the_optional_claims_shows_on_the_result_page(client, synced_store, issuer):
    """Only `repository` is required of a token; the page shows a dash for each claim it did not carry."""
    result = new_result(synced_store)
    token = issuer.mint(sha=None, workflow_ref=None, run_id=None, run_attempt=None, actor=None)
    assert patch(client, result["id"], token).json()["attestation"] == {"repository": REPOSITORY}
    page = client.get(f"/results/{result['id']}", headers=auth(make_token(synced_store, "read")))
    assert page.status_code == 200, page.text
    assert f"<code>{REPOSITORY}</code>, workflow <code>–</code>, run – (attempt –)" in page.text


@pytest.mark.parametrize("kid", [["key-rs"], {"id": "key-rs"}, 7])
def test_a_token_whose_key_id_is_not_text_is_refused_with_401(client, synced_store, issuer, kid):
    """Anyone can send such a header: it was a 500 on every route before anything was checked."""
    import base64
    import json

    def part(value) -> str:
        return base64.urlsafe_b64encode(json.dumps(value).encode()).rstrip(b"=").decode()

    token = f"{part({'alg': 'RS256', 'kid': kid})}.{part(issuer.claims())}.c2ln"
    for response in (patch(client, new_result(synced_store)["id"], token),
                     client.get("/api/services", headers=auth(token, "Bearer"))):
        assert response.status_code == 401, response.text
        assert "its header's 'kid' is not text" in response.json()["message"]


def test_the_origin_scripts_token_scheme_carries_an_oidc_token_too(client, synced_store, issuer):
    result = new_result(synced_store)
    response = client.patch(f"/api/results/{result['id']}", data={"result": "pass"}, headers=auth(issuer.mint(), "Token"))
    assert response.status_code == 200 and response.json()["attestation"]["repository"] == REPOSITORY


def test_an_answer_with_an_api_token_has_no_attestation_and_its_history_line_is_unchanged(client, synced_store):
    result = new_result(synced_store)
    response = patch(client, result["id"], make_token(synced_store, "results:write"))
    assert response.status_code == 200 and response.json()["attestation"] is None
    assert "attestation" not in writeback_files.history_line(synced_store.writeback.batch(10)[0])


def test_keys_are_fetched_once_and_again_only_for_an_unknown_key_id(client, synced_store, issuer):
    before = issuer.fetches
    for _ in range(2):
        assert patch(client, new_result(synced_store)["id"], issuer.mint()).status_code == 200
    assert issuer.fetches == before + 1
    issuer.add_key("key-rotated", "RS256")
    try:
        assert patch(client, new_result(synced_store)["id"], issuer.mint("key-rotated")).status_code == 200
    finally:
        del issuer.keys["key-rotated"]
    assert issuer.fetches == before + 2


def test_a_token_just_past_its_expiry_is_within_the_leeway(client, synced_store, issuer):
    token = issuer.mint(exp=int(time.time()) - 20)
    assert patch(client, new_result(synced_store)["id"], token).status_code == 200


def test_a_workflow_pin_lets_its_workflow_answer_and_refuses_another(synced_store, tmp_path, example_dir, issuer, client):
    catalog = (example_dir / "catalog.yaml").read_text() + "oidc:\n  workflow: .github/workflows/health.yml\n"
    (example_dir / "catalog.yaml").write_text(catalog)
    assert sync_directory(synced_store, example_dir).outcome == "applied"
    assert patch(client, new_result(synced_store)["id"], issuer.mint()).status_code == 200
    other = f"{REPOSITORY}/.github/workflows/anything.yml@refs/heads/main"
    response = patch(client, new_result(synced_store)["id"], issuer.mint(workflow_ref=other))
    assert response.status_code == 403
    assert "catalog.yaml pins oidc.workflow to '.github/workflows/health.yml'" in response.json()["message"]


WRONG = [
    ("issuer", {"iss": "https://token.actions.example"}, "issuer 'https://token.actions.example' is not the trusted issuer"),
    ("audience", {"aud": "https://someone-else.test"}, "audience 'https://someone-else.test' is not this server's 'http://catalog.test'"),
    ("expired", {"exp": int(time.time()) - 3600, "iat": int(time.time()) - 7200, "nbf": int(time.time()) - 7200}, "expired at"),
    ("future", {"iat": int(time.time()) + 3600, "nbf": int(time.time()) + 3600}, "not valid yet"),
    ("no repository", {"repository": None}, "the 'repository' claim is missing"),
]


@pytest.mark.parametrize("what,claims,message", WRONG, ids=[case[0] for case in WRONG])
def test_a_token_with_a_wrong_claim_is_refused_with_401_saying_which(client, synced_store, issuer, what, claims, message):
    if what == "expired" or what == "future":  # times made now, not at collection
        now = int(time.time())
        claims = {key: now + (value - int(time.time())) for key, value in claims.items()}
    result = new_result(synced_store)
    response = client.patch(f"/api/results/{result['id']}", json={"result": "pass"},
                            headers=auth(issuer.mint(**claims), "Bearer"))
    assert response.status_code == 401, response.text
    assert message in response.json()["message"]
    assert response.json()["error"]["code"] == "not_authenticated"
    assert synced_store.results.get(result["id"])["status"] == "pending"


def test_a_forged_signature_is_refused(client, synced_store, issuer):
    forged = issuer.mint("key-rs", key=new_key("RS256"))  # names the issuer's key id, signed by another key
    response = patch(client, new_result(synced_store)["id"], forged)
    assert response.status_code == 401
    assert "the signature does not verify with the issuer's key 'key-rs'" in response.json()["message"]


def test_a_key_id_the_issuer_does_not_publish_is_refused(client, synced_store, issuer):
    response = patch(client, new_result(synced_store)["id"], issuer.mint("key-unknown", key=new_key("RS256"), alg="RS256"))
    assert response.status_code == 401
    assert "key id 'key-unknown', which issuer" in response.json()["message"]


@pytest.mark.parametrize("alg", ["HS256", "none"])
def test_a_token_not_signed_with_rs256_or_es256_is_refused(client, synced_store, issuer, alg):
    import jwt

    token = jwt.encode(issuer.claims(), "a-shared-secret-of-thirty-two-bytes!" if alg == "HS256" else None,
                       algorithm=alg, headers={"kid": "key-rs"})
    if alg == "none":
        token = token.rstrip(".") + "."
        token = token if token.count(".") == 2 else token + "."
    response = patch(client, new_result(synced_store)["id"], token)
    assert response.status_code == 401
    assert "only RS256 and ES256 are accepted" in response.json()["message"]


def test_a_token_of_another_repository_is_refused_with_403(client, synced_store, issuer):
    result = new_result(synced_store)
    response = patch(client, result["id"], issuer.mint(repository="mallory/health-checks"))
    assert response.status_code == 403
    assert response.json()["message"] == (
        f"an OIDC token of repository 'mallory/health-checks' may not answer result {result['id']}:"
        " its check 'has-owner' runs in 'acme-rockets/health-checks'")
    assert synced_store.results.get(result["id"])["status"] == "pending"


def test_a_token_cannot_answer_a_check_that_lives_in_another_repository(client, synced_store, example_dir, issuer):
    write_catalog(example_dir, checks=[{"name": "Elsewhere", "frequency": "ad-hoc", "repository": "https://github.com/acme-rockets/other-checks"}])
    assert sync_directory(synced_store, example_dir).outcome == "applied"
    elsewhere = new_result(synced_store, "elsewhere")
    response = patch(client, elsewhere["id"], issuer.mint())
    assert response.status_code == 403 and "runs in 'acme-rockets/other-checks'" in response.json()["message"]
    assert patch(client, elsewhere["id"], issuer.mint(repository="Acme-Rockets/Other-Checks")).status_code == 200


def test_a_check_without_a_repository_cannot_be_answered_with_oidc(client, synced_store, example_dir, issuer):
    (example_dir / "catalog.yaml").write_text("defaults:\n  frequency: daily\n")
    assert sync_directory(synced_store, example_dir).outcome == "applied"
    response = patch(client, new_result(synced_store)["id"], issuer.mint())
    assert response.status_code == 403 and "names no repository, so no OIDC token may answer it" in response.json()["message"]


def test_an_oidc_token_may_do_nothing_but_answer(client, synced_store, issuer):
    response = client.post("/api/sync", headers=auth(issuer.mint(), "Bearer"))
    assert response.status_code == 403
    assert "an OIDC token (of 'acme-rockets/health-checks') may only answer results" in response.json()["message"]


def test_an_unknown_result_is_404_for_an_oidc_token_too(client, issuer):
    assert patch(client, 999_999, issuer.mint()).status_code == 404


def test_an_unreachable_issuer_is_503_and_says_so(synced_store, tmp_path, issuer):
    dead = OidcVerifier("http://127.0.0.1:9", AUDIENCE)  # the discard port: nothing listens
    settings = Settings(home=tmp_path, server_url=AUDIENCE)
    with TestClient(create_app(synced_store, settings, sync_trigger=lambda: None, oidc=dead)) as client:
        response = patch(client, new_result(synced_store)["id"], issuer.mint(iss="http://127.0.0.1:9"))
    assert response.status_code == 503
    assert "cannot check the OIDC token now: fetching http://127.0.0.1:9/.well-known/openid-configuration failed" in response.json()["message"]


def test_an_attestation_is_recorded_only_for_a_completed_result_and_never_changes_or_goes(synced_store, client, issuer):
    result = new_result(synced_store)
    with pytest.raises(INTEGRITY_ERRORS, match="attestation is recorded only with the answer"):
        raw_sql(synced_store, "INSERT INTO result_attestations (result_id, attestation) VALUES (?, '{}')", (result["id"],))
    assert patch(client, result["id"], issuer.mint()).status_code == 200
    for sql, message in [("UPDATE result_attestations SET attestation = '{}' WHERE result_id = ?", "can never change"),
                         ("DELETE FROM result_attestations WHERE result_id = ?", "can never be deleted")]:
        with pytest.raises(INTEGRITY_ERRORS, match=message):
            raw_sql(synced_store, sql, (result["id"],))
    assert synced_store.results.get(result["id"])["attestation"]["repository"] == REPOSITORY


def test_an_action_without_a_catalog_secret_records_its_result_and_its_history_line_says_who(synced_store, tmp_path, issuer):
    """The real server on loopback; the Action's only credential is the OIDC token its run was given."""
    import json
    import subprocess

    import requests

    from api_support import live_server
    from reconciler.verify import verify
    from reconciler.ledger import ResultsBranch
    from reconciler.writeback import writeback_pass

    settings = Settings(home=tmp_path / "home", server_url=AUDIENCE, oidc_issuer=issuer.url,
                        repo=str(tmp_path / "remote.git"))
    subprocess.run(["git", "init", "-q", "--bare", settings.repo], check=True)
    result = new_result(synced_store)
    with live_server(create_app(synced_store, settings, sync_trigger=lambda: None)) as base:
        response = requests.patch(f"{base}/api/results/{result['id']}/", data={"result": "pass", "message": "attested"},
                                  headers={"Authorization": f"Bearer {issuer.mint(run_id='777')}"}, timeout=10)
    assert response.status_code == 200, response.text
    assert writeback_pass(synced_store, settings).pushed
    branch = ResultsBranch.open(settings.repo, "catalog-results", settings.home)
    [line] = [line for _, path in branch.tree() if path.startswith("results/history/") for line in branch.read(path).splitlines()]
    assert json.loads(line)["attestation"]["run_id"] == "777"
    assert verify(branch).ok


# -- the bulk answer and the batch list (DESIGN.md sections 9 and 12) ------------------------------------


def test_a_bulk_answer_with_an_oidc_token_records_its_repositorys_results_and_refuses_others_with_403_each(
        client, synced_store, example_dir, issuer):
    write_catalog(example_dir, checks=[{"name": "Elsewhere", "frequency": "ad-hoc", "repository": "acme-rockets/other-checks"}])
    assert sync_directory(synced_store, example_dir).outcome == "applied"
    ours, elsewhere = new_result(synced_store), new_result(synced_store, "elsewhere")
    body = {"results": [{"id": ours["id"], "result": "pass"}, {"id": elsewhere["id"], "result": "fail"},
                        {"id": 999_999, "result": "pass"}]}
    response = client.patch("/api/results", json=body, headers=auth(issuer.mint(run_id="31"), "Bearer"))
    assert response.status_code == 200, response.text
    first, second, third = response.json()["results"]
    assert first["status"] == 200 and first["result"]["attestation"]["run_id"] == "31"
    assert second == {"id": elsewhere["id"], "status": 403, "error": {
        "status": 403, "code": "forbidden",
        "message": f"an OIDC token of repository {REPOSITORY!r} may not answer result {elsewhere['id']}:"
                   " its check 'elsewhere' runs in 'acme-rockets/other-checks'"}}
    assert third["status"] == 404
    assert synced_store.results.get(ours["id"])["attestation"]["repository"] == REPOSITORY
    assert synced_store.results.get(elsewhere["id"])["status"] == "pending"


def test_a_bulk_answer_with_an_api_token_still_needs_results_write(client, synced_store):
    body = {"results": [{"id": new_result(synced_store)["id"], "result": "pass"}]}
    assert client.patch("/api/results", json=body, headers=auth(make_token(synced_store, "read"))).status_code == 403
    answered = client.patch("/api/results", json=body, headers=auth(make_token(synced_store, "results:write")))
    assert answered.json()["results"][0]["status"] == 200 and answered.json()["results"][0]["result"]["attestation"] is None


def test_a_batch_list_is_served_to_an_oidc_token_of_its_checks_repository_only(client, synced_store, issuer):
    results = [new_result(synced_store, service=slug) for slug in ("payments-api", "storefront-web")]
    check_id = synced_store.catalog.check_index()["has-owner"]["id"]
    batch_id = synced_store.dispatch.create_batch(check_id, [row["id"] for row in results], now="2026-01-01T00:00:00Z")
    listing = client.get(f"/api/batches/{batch_id}", headers=auth(issuer.mint(), "Bearer"))
    assert listing.status_code == 200, listing.text
    assert [item["result"]["id"] for item in listing.json()["results"]] == [row["id"] for row in results]
    refused = client.get(f"/api/batches/{batch_id}", headers=auth(issuer.mint(repository="mallory/health-checks"), "Bearer"))
    assert refused.status_code == 403
    assert refused.json()["message"] == (f"an OIDC token of repository 'mallory/health-checks' may not read batch {batch_id}:"
                                         " its check 'has-owner' runs in 'acme-rockets/health-checks'")
    assert client.get("/api/batches/999999", headers=auth(issuer.mint(), "Bearer")).status_code == 404
    assert client.get(f"/api/batches/{batch_id}", headers=auth(make_token(synced_store, "read"))).status_code == 403
