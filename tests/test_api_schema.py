"""The OpenAPI document, checked against the real server by schemathesis: every documented operation,
called with generated values and a token holding every scope, never answers 5xx and always answers
as documented."""

from __future__ import annotations

import pytest
import requests
import schemathesis
from hypothesis import HealthCheck, settings
from litestar.testing import TestClient
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from api.app import create_app
from api_support import auth, live_server, make_token, new_result
from conftest import copy_example, sync_directory
from reconciler.settings import Settings
from reconciler.store import Database, open_database

EVERY_SCOPE = ("read", "results:write", "checks:run", "sync", "admin")
# No 5xx, and status, content type, headers and body as the document says. Not schemathesis's stricter
# guesses: that unknown query parameters are refused, that every schema-valid body is accepted (a run
# naming two different services is a 422 no schema can express), or the Allow header of OPTIONS
# (Litestar 2 names only one method of a path that has several: litestar-org/litestar#4169).
ANSWERS_AS_DOCUMENTED = [
    not_a_server_error, status_code_conformance, content_type_conformance,
    response_headers_conformance, response_schema_conformance,
]


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    """A real server on loopback over the synced example catalog, with a few results to read and answer."""
    base = tmp_path_factory.mktemp("schema")
    catalog = base / "catalog"
    copy_example(catalog)
    store = open_database(base / "home" / "catalog.db")
    sync_directory(store, catalog)
    for check in ("has-owner", "readme-present"):
        new_result(store, check, "payments-api")
    # The real sync and dispatch seams: a sync of the example directory, checks dispatched to the log.
    settings = Settings(home=base / "home", repo=str(catalog), dispatcher="log", webhook_secret="secret")
    with live_server(create_app(store, settings)) as url:
        yield url, make_token(store, *EVERY_SCOPE, name="every-scope")
    store.close()


@pytest.fixture(scope="module")
def api_schema(server):
    url, _ = server
    return schemathesis.openapi.from_url(f"{url}/schema/openapi.json")


schema = schemathesis.pytest.from_fixture("api_schema")


@schema.parametrize()
@settings(max_examples=25, deadline=None, derandomize=True, database=None, suppress_health_check=list(HealthCheck))
def test_every_operation_answers_as_documented(case, server):
    url, token = server
    case.call_and_validate(base_url=url, headers=auth(token), checks=ANSWERS_AS_DOCUMENTED)


def test_the_document_is_served_at_a_stable_path_and_the_schema_page_loads_nothing_from_elsewhere(server):
    url, _ = server
    document = requests.get(f"{url}/schema/openapi.json", timeout=5)
    assert document.status_code == 200 and document.json()["info"]["title"] == "Service catalog API"
    page = requests.get(f"{url}/schema", timeout=5)
    assert page.status_code == 200 and 'href="/schema/openapi.json"' in page.text
    assert "<script" not in page.text and "http" not in page.text.replace('href="/schema/openapi.json"', "")


def test_an_unknown_schema_path_answers_the_one_json_error_shape(server):
    """Litestar answered /schema/<anything else> with an HTML page of its own."""
    url, _ = server
    for path in ("/schema/redoc", "/schema/swagger", "/schema/openapi.yaml", "/schema/a/b"):
        response = requests.get(url + path, timeout=5)
        assert (response.status_code, response.headers["content-type"]) == (404, "application/json"), path
        assert response.json() == {"message": "Not Found",
                                   "error": {"status": 404, "code": "not_found", "message": "Not Found"}}


def test_the_document_is_the_same_from_every_server(tmp_path):
    """Litestar filled each error response with generated examples (`"status": 4966`, random text),
    new for every app: two replicas, or one restarted, served different documents."""
    documents = []
    for name in ("one", "two"):
        store = open_database(tmp_path / f"{name}.db")
        with TestClient(create_app(store, Settings(home=tmp_path / name), sync_trigger=lambda: None)) as client:
            documents.append(client.get("/schema/openapi.json").content)
        store.close()
    assert documents[0] == documents[1]
    assert b'"examples"' not in documents[0]
