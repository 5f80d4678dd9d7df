"""PATCH /api/results/{id}: what the origin's Actions send works, and a result is recorded only once."""

from __future__ import annotations

import socket
import threading
from datetime import timedelta

import pytest
import requests
from litestar.testing import TestClient

from api.app import create_app
from api_support import auth, live_server, make_token, new_result
from reconciler.settings import Settings
from reconciler.tokens import revoke_token
from reconciler.clock import Clock


@pytest.fixture
def app(synced_store, tmp_path):
    return create_app(synced_store, Settings(home=tmp_path), sync_trigger=lambda: None)


@pytest.fixture
def client(app):
    with TestClient(app) as client:
        yield client


@pytest.fixture
def writer(synced_store) -> str:
    return make_token(synced_store, "results:write", name="action")


def test_form_body_completes_a_pending_result(client, synced_store, writer):
    result = new_result(synced_store)
    response = client.patch(f"/api/results/{result['id']}", data={"result": "pass", "message": "all good"},
                            headers=auth(writer))
    assert response.status_code == 200, response.text
    body = response.json()
    assert (body["id"], body["status"], body["result"], body["message"]) == (result["id"], "completed", "pass", "all good")
    assert (body["check"], body["service"]) == ("has-owner", "payments-api")
    assert synced_store.results.get(result["id"])["status"] == "completed"


def test_json_body_with_trailing_slash_and_a_link(client, synced_store, writer):
    result = new_result(synced_store)
    response = client.patch(f"/api/results/{result['id']}/", json={"result": "fail", "url": "https://github.com/a/b/actions/runs/1"},
                            headers=auth(writer))
    assert response.status_code == 200, response.text
    assert response.json()["url"] == "https://github.com/a/b/actions/runs/1"
    assert response.json()["result"] == "fail"


@pytest.mark.parametrize("scheme", ["Token", "token", "Bearer"])
def test_every_authorization_scheme_is_accepted(client, synced_store, writer, scheme):
    result = new_result(synced_store)
    response = client.patch(f"/api/results/{result['id']}", data={"result": "pass"}, headers=auth(writer, scheme))
    assert response.status_code == 200, response.text


def test_the_dashboards_sign_in_cookie_cannot_answer(client, synced_store, writer):
    """A browser sends the cookie with a form another site posts: a write needs the Authorization header."""
    result = new_result(synced_store)
    client.cookies.set("catalog_token", writer)
    response = client.patch(f"/api/results/{result['id']}", data={"result": "skipped"})
    assert response.status_code == 401, response.text
    assert "the sign-in cookie authorizes reads only" in response.json()["message"]
    assert synced_store.results.get(result["id"])["status"] == "pending"


def test_second_answer_is_refused_with_409_and_changes_nothing(client, synced_store, writer):
    result = new_result(synced_store)
    assert client.patch(f"/api/results/{result['id']}", data={"result": "pass"}, headers=auth(writer)).status_code == 200
    before = synced_store.results.get(result["id"])
    response = client.patch(f"/api/results/{result['id']}", data={"result": "fail", "message": "retry"}, headers=auth(writer))
    assert response.status_code == 409
    assert response.json()["error"]["code"] == "conflict"
    assert "already completed" in response.json()["error"]["message"]
    assert synced_store.results.get(result["id"]) == before


def test_an_answer_past_the_checks_timeout_is_409_alone_and_names_the_timeout(client, synced_store, writer):
    """The API's clock is the real one: a result created an hour ago is past has-owner's 30m timeout."""
    late = new_result(synced_store, now=Clock().now() - timedelta(hours=1))
    response = client.patch(f"/api/results/{late['id']}", data={"result": "pass"}, headers=auth(writer))
    assert response.status_code == 409, response.text
    assert response.json()["message"] == (f"result {late['id']} was not answered within its check's timeout (30m):"
                                          " it is timed out, and this answer is not recorded")
    assert response.json()["error"]["code"] == "timed_out"  # a client's retry can tell it from "recorded before"
    fresh = new_result(synced_store, service="users-api")
    bulk = client.patch("/api/results", json={"results": [{"id": late["id"], "result": "pass"},
                                                            {"id": fresh["id"], "result": "pass"}]}, headers=auth(writer))
    assert [item["status"] for item in bulk.json()["results"]] == [409, 200]
    assert bulk.json()["results"][0]["error"]["code"] == "timed_out"
    assert synced_store.results.get(late["id"])["status"] == "pending"  # for the next pass to time out


def test_unknown_result_is_404(client, writer):
    response = client.patch("/api/results/999999", data={"result": "pass"}, headers=auth(writer))
    assert response.status_code == 404
    assert response.json() == {"message": "result 999999 does not exist",
                               "error": {"status": 404, "code": "not_found", "message": "result 999999 does not exist"}}


def test_non_numeric_id_is_an_error_in_the_json_shape(client, writer):
    response = client.patch("/api/results/abc", data={"result": "pass"}, headers=auth(writer))
    assert response.status_code in (400, 404)
    assert set(response.json()["error"]) >= {"status", "code", "message"}


def test_missing_bad_and_revoked_tokens_are_401_and_wrong_scope_is_403(client, synced_store):
    result = new_result(synced_store)
    url = f"/api/results/{result['id']}"
    assert client.patch(url, data={"result": "pass"}).status_code == 401
    missing = client.patch(url, data={"result": "pass"}, headers=auth("cat_not-a-real-token"))
    assert missing.status_code == 401
    assert "unknown or revoked" in missing.json()["error"]["message"]
    assert client.patch(url, data={"result": "pass"}, headers={"Authorization": "Basic abc"}).status_code == 401
    reader = make_token(synced_store, "read", name="reader")
    forbidden = client.patch(url, data={"result": "pass"}, headers=auth(reader))
    assert forbidden.status_code == 403
    assert "results:write" in forbidden.json()["error"]["message"]
    revoked = make_token(synced_store, "results:write", name="gone")
    revoke_token(synced_store, "gone", now=Clock().now())
    assert client.patch(url, data={"result": "pass"}, headers=auth(revoked)).status_code == 401
    assert synced_store.results.get(result["id"])["status"] == "pending"


def test_admin_token_may_answer(client, synced_store):
    result = new_result(synced_store)
    admin = make_token(synced_store, "admin", name="root")
    assert client.patch(f"/api/results/{result['id']}", data={"result": "pass"}, headers=auth(admin)).status_code == 200


@pytest.mark.parametrize(
    ("kwargs", "status", "fragment"),
    [
        ({"data": {}}, 422, "empty"),
        ({"data": {"message": "no result"}}, 422, "'result' is required"),
        ({"data": {"result": "passed"}}, 422, "must be one of"),
        ({"json": {"result": 1}}, 422, "must be one of"),
        ({"json": ["pass"]}, 422, "must be an object"),
        ({"data": {"result": "pass", "status": "completed"}}, 422, "unknown field 'status'"),
        ({"content": b"result=pass&result=fail", "headers": {"Content-Type": "application/x-www-form-urlencoded"}},
         422, "more than once"),
        ({"content": b'{"result": "pass", "result": "fail"}', "headers": {"Content-Type": "application/json"}},
         422, "field 'result' is given more than once"),
        ({"content": b'{"result": "pass", "message": "a\\nb", "message": "c"}', "headers": {"Content-Type": "application/json"}},
         422, "field 'message' is given more than once"),
        ({"data": {"result": "pass", "message": "x" * (64 * 1024 + 1)}}, 422, "64 KiB"),
        ({"data": {"result": "pass", "url": "javascript:alert(1)"}}, 422, "http(s) link"),
        ({"json": {"result": "pass", "message": ["a"]}}, 422, "must be text"),
        ({"json": {"result": "pass", "message": "a\x00b"}}, 422, "NUL character"),
        ({"json": {"result": "pass", "url": "https://ci/\x00"}}, 422, "without NUL"),
        ({"content": b"{not json", "headers": {"Content-Type": "application/json"}}, 400, "not valid JSON"),
        ({"content": b"[" * 5000 + b"]" * 5000, "headers": {"Content-Type": "application/json"}}, 400, "nests too deeply"),
        ({"content": b'{"result": ' + b"[" * 50 + b"]" * 50 + b"}", "headers": {"Content-Type": "application/json"}},
         422, "must be one of"),
        ({"content": b"result=pass", "headers": {"Content-Type": "text/plain"}}, 415, "unsupported content type"),
        ({"content": b"result=pass&message=" + b"x" * (1024 * 1024 + 10),
          "headers": {"Content-Type": "application/x-www-form-urlencoded"}}, 413, ""),
    ],
)
def test_bad_bodies_get_a_clear_error_and_leave_the_result_pending(client, synced_store, writer, kwargs, status, fragment):
    result = new_result(synced_store)
    kwargs = dict(kwargs)  # the parameters are shared by both backends' runs: never change them
    headers = {**auth(writer), **kwargs.pop("headers", {})}
    response = client.patch(f"/api/results/{result['id']}", headers=headers, **kwargs)
    assert response.status_code == status, response.text
    error = response.json()["error"]
    assert error["status"] == status
    assert fragment in error["message"]
    assert synced_store.results.get(result["id"])["status"] == "pending"


def test_a_bulk_item_that_repeats_a_field_is_refused_alone_and_a_body_that_is_not_json_is_415(client, synced_store, writer):
    """JSON decoders keep the last of a repeated key: which answer was meant is unknown, so it is refused."""
    one, two = new_result(synced_store), new_result(synced_store, "readme-present")
    body = ('{"results": [{"id": %d, "result": "pass", "result": "fail"}, {"id": %d, "result": "fail"}]}'
            % (one["id"], two["id"])).encode()
    response = client.patch("/api/results", content=body, headers={**auth(writer), "Content-Type": "application/json"})
    assert response.status_code == 200, response.text
    assert [item["status"] for item in response.json()["results"]] == [422, 200]
    assert "field 'result' is given more than once" in response.json()["results"][0]["error"]["message"]
    assert synced_store.results.get(one["id"])["status"] == "pending"
    twice = client.patch("/api/results", content=b'{"results": [], "results": []}',
                         headers={**auth(writer), "Content-Type": "application/json"})
    assert twice.status_code == 422 and "field 'results' is given more than once" in twice.json()["message"]
    form = client.patch("/api/results", content=b"id=1&result=pass",
                        headers={**auth(writer), "Content-Type": "application/x-www-form-urlencoded"})
    assert form.status_code == 415 and "send the answers as application/json" in form.json()["message"]


def test_a_bulk_item_with_a_nul_is_refused_alone(client, synced_store, writer):
    """PostgreSQL keeps no NUL in text: such an item is its own 422 before the batch, on both backends,
    and the others of the request (and of the batch they share) are answered."""
    one, two = new_result(synced_store), new_result(synced_store, "readme-present")
    response = client.patch("/api/results", json={"results": [
        {"id": one["id"], "result": "pass", "message": "bad\x00text"}, {"id": two["id"], "result": "fail"}]},
        headers=auth(writer))
    assert response.status_code == 200, response.text
    assert [item["status"] for item in response.json()["results"]] == [422, 200]
    assert "NUL" in response.json()["results"][0]["error"]["message"]
    assert [synced_store.results.get(r["id"])["status"] for r in (one, two)] == ["pending", "completed"]


def test_message_of_exactly_64_kib_is_kept(client, synced_store, writer):
    result = new_result(synced_store)
    message = "é" * (32 * 1024)  # two bytes each: exactly 64 KiB of UTF-8
    response = client.patch(f"/api/results/{result['id']}", json={"result": "warning", "message": message}, headers=auth(writer))
    assert response.status_code == 200
    assert synced_store.results.get(result["id"])["message"] == message


# -- through a real server on loopback -----------------------------------------------------------


def test_origin_docs_snippet_works_verbatim(app, synced_store, writer):
    result = new_result(synced_store)
    with live_server(app) as base:
        payload = {"server": {"url": base, "endpoint": f"/api/results/{result['id']}/"}}
        token = writer
        # From the origin project's health-checks page, unchanged:
        url = payload["server"]["url"] + payload["server"]["endpoint"]
        headers = {"Authorization": f"Token {token}"}

        data = {"result": "pass"} # Set the health check to pass
        res = requests.patch(url, data, headers=headers)
        print("Response", res.status_code)
    assert res.status_code == 200
    assert synced_store.results.get(result["id"])["result"] == "pass"


def test_send_result_action_request_byte_for_byte(app, synced_store, writer):
    result = new_result(synced_store)
    body = b"result=fail&message=Found+3+services+without+an+owner%3A+admin-console"
    with live_server(app) as base:
        host, port = base.removeprefix("http://").split(":")
        request = (
            f"PATCH /api/results/{result['id']}/ HTTP/1.1\r\n"
            f"Host: {host}:{port}\r\n"
            "User-Agent: curl/7.88.1\r\n"
            "Accept: */*\r\n"
            f"Authorization: token {writer}\r\n"
            "Content-Type: application/x-www-form-urlencoded\r\n"
            f"Content-Length: {len(body)}\r\n"
            "\r\n"
        ).encode() + body
        with socket.create_connection((host, int(port)), timeout=5) as connection:
            connection.sendall(request)
            answer = b""
            while b"\r\n\r\n" not in answer:
                answer += connection.recv(65536)
    assert answer.startswith(b"HTTP/1.1 200 "), answer[:200]
    stored = synced_store.results.get(result["id"])
    assert (stored["status"], stored["result"]) == ("completed", "fail")
    assert stored["message"] == "Found 3 services without an owner: admin-console"


def test_one_of_100_concurrent_answers_wins_and_99_get_409(app, synced_store, writer):
    result = new_result(synced_store)
    statuses: list[int] = []
    lock = threading.Lock()
    with live_server(app) as base:
        start = threading.Barrier(100)
        url = f"{base}/api/results/{result['id']}"

        def answer(n: int) -> None:
            session = requests.Session()
            start.wait()
            status = session.patch(url, {"result": "pass" if n % 2 else "fail", "message": f"from {n}"},
                                   headers=auth(writer)).status_code
            with lock:
                statuses.append(status)

        threads = [threading.Thread(target=answer, args=(n,)) for n in range(100)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
    assert sorted(statuses) == [200] + [409] * 99
    assert synced_store.results.get(result["id"])["status"] == "completed"


PAST_SQLITE_INTEGER = 2**63  # one more than any id can be


def test_ids_past_the_integer_range_are_404_or_400_never_500(synced_store, tmp_path, writer):
    app = create_app(synced_store, Settings(home=tmp_path, public_read=True), sync_trigger=lambda: None)
    with TestClient(app, raise_server_exceptions=False) as client:
        for path in (f"/api/results/{PAST_SQLITE_INTEGER}", f"/api/results/{-PAST_SQLITE_INTEGER - 1}",
                     f"/results/{PAST_SQLITE_INTEGER}"):
            assert client.get(path).status_code == 404, path
        patched = client.patch(f"/api/results/{PAST_SQLITE_INTEGER}", json={"result": "pass"}, headers=auth(writer))
        assert patched.status_code == 404
        assert patched.json()["error"]["message"] == f"result {PAST_SQLITE_INTEGER} does not exist"
        response = client.get(f"/api/results?cursor={PAST_SQLITE_INTEGER}")
        assert response.status_code == 400 and response.json()["error"]["details"][0]["key"] == "cursor"
        for path in (f"/results?before={PAST_SQLITE_INTEGER}", f"/sync?before={PAST_SQLITE_INTEGER}"):
            response = client.get(path)  # a page: its error is a page too
            assert response.status_code == 400, path
            assert response.headers["content-type"].startswith("text/html") and "before:" in response.text


def test_every_refusal_carries_a_top_level_message_for_the_origin_send_result_action(client, synced_store, writer):
    """The origin's send-result Action logs `parsed.message`: without it the log said `Error: undefined`."""
    done = new_result(synced_store)
    client.patch(f"/api/results/{done['id']}", data={"result": "pass"}, headers=auth(writer))
    pending = new_result(synced_store, "readme-present")
    refusals = [
        client.patch(f"/api/results/{done['id']}", data={"result": "pass"}, headers={"Authorization": f"token {writer}"}),
        client.patch(f"/api/results/{pending['id']}", data={"result": "passed"}, headers=auth(writer)),
        client.patch(f"/api/results/{pending['id']}", data={"result": "pass"}),
        client.patch("/api/results/999999", data={"result": "pass"}, headers=auth(writer)),
        client.patch(f"/api/results/{pending['id']}", content=b"{not json", headers={**auth(writer), "Content-Type": "application/json"}),
        client.get("/api/results?limit=0", headers=auth(make_token(synced_store, "read", name="reader"))),
    ]
    assert [response.status_code for response in refusals] == [409, 422, 401, 404, 400, 400]
    for response in refusals:
        parsed = response.json()
        assert parsed["message"] and parsed["message"] == parsed["error"]["message"], parsed
        assert parsed["error"]["status"] == response.status_code
    assert "already completed" in refusals[0].json()["message"]


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)  # PostgreSQL has no WAL file to copy back
def test_bulk_answers_reach_the_database_file_through_the_checkpoint_thread(synced_store, tmp_path, writer):
    """On SQLite the writer thread's commits leave the WAL to the API's own checkpoints (a thread of
    their own, every 200 answers): the answers of bulk PATCHes reach the database file itself (read
    here without the WAL) without waiting for SQLite's automatic checkpoint at 1,000 pages."""
    import sqlite3
    import time

    from reconciler.clock import format_time
    from reconciler.schedule import NEVER

    checks = [(row["id"], NEVER) for row in synced_store.catalog.check_index().values()]
    answered = []
    with TestClient(create_app(synced_store, Settings(home=tmp_path), sync_trigger=lambda: None)) as client:
        while len(answered) < 210:
            stamp = format_time(Clock().now())
            ids = [row["id"] for row in synced_store.dispatch.create_due(
                checks, now=stamp, revision=None, claim_until=stamp, holder="tests")]
            response = client.patch("/api/results", json={"results": [{"id": i, "result": "pass"} for i in ids]},
                                    headers=auth(writer))
            assert [item["status"] for item in response.json()["results"]] == [200] * len(ids)
            answered += ids
        file_only = f"file:{synced_store.backend.path}?immutable=1"  # the database file, its WAL ignored
        done, deadline = 0, time.monotonic() + 10
        while time.monotonic() < deadline:
            conn = sqlite3.connect(file_only, uri=True)
            try:
                done = conn.execute("SELECT count(*) FROM results WHERE status = 'completed' AND id >= ?",
                                    (answered[0],)).fetchone()[0]
            except sqlite3.OperationalError:  # not even the tables copied back yet
                done = 0
            finally:
                conn.close()
            if done == len(answered):
                break
            time.sleep(0.05)
        assert done == len(answered)


def test_every_request_after_postgresql_restarts_succeeds(example_dir, tmp_path):
    """A restart ends every pooled connection while it is idle; none of them is handed to a request
    (each was one HTTP 500, AdminShutdown, and an answer lost)."""
    from conftest import sync_directory
    from postgres_server import PostgresServer
    from reconciler.store import open_database

    server = PostgresServer().start()  # a server of its own: this test restarts it
    store = open_database(server.new_database())
    try:
        sync_directory(store, example_dir)
        writer, reader = make_token(store, "results:write"), make_token(store, "read")
        services = ("payments-api", "users-api", "catalog-api", "storefront-web", "search-index", "ledger-worker",
                    "notifications-worker", "admin-console", "users-db", "payments-db")
        results = [new_result(store, "has-owner", slug) for slug in services]
        idle = [store.backend.pool.getconn() for _ in range(8)]  # the pool of a busy minute: 8 connections
        for conn in idle:
            store.backend.pool.putconn(conn)
        app = create_app(store, Settings(home=tmp_path), sync_trigger=lambda: None)
        with live_server(app) as base:
            assert requests.get(f"{base}/api/services/payments-api", headers=auth(reader)).status_code == 200
            server.restart()
            statuses = []
            for result in results:
                statuses.append(requests.get(f"{base}/api/services/payments-api", headers=auth(reader)).status_code)
                statuses.append(requests.patch(f"{base}/api/results/{result['id']}", data={"result": "pass"},
                                               headers=auth(writer)).status_code)
        assert statuses == [200] * 2 * len(results)
        assert {store.results.get(result["id"])["status"] for result in results} == {"completed"}
    finally:
        store.close()
        server.stop()
