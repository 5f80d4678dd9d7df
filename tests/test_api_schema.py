"""The OpenAPI document, checked against the real server by schemathesis: every documented operation,
called with generated values and a token holding every scope, never answers 5xx and always answers
as documented."""

from __future__ import annotations

import pytest
import requests
import schemathesis
from hypothesis import HealthCheck, settings
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
