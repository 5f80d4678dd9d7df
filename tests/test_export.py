"""Exports for auditors: GET /api/results.csv and `catalog export results`, streamed in id order."""

from __future__ import annotations

import csv
import io
import json
import os
import subprocess
import sys
from datetime import timedelta

import pytest
from litestar.testing import TestClient

from api.app import create_app
from api_support import auth, make_token
from conftest import PROJECT
from reconciler.clock import FakeClock
from reconciler.export import COLUMNS, result_batches
from reconciler.settings import Settings
from store_support import finished_result, new_result
from terminal_support import run_on_terminal


@pytest.fixture
def history(synced_store):
    """Five results: four finished over four days, one still pending."""
    now = FakeClock().now()
    made = [finished_result(synced_store, "has-owner", "payments-api", "pass", now=now - timedelta(days=4))]
    made.append(finished_result(synced_store, "has-owner", "users-api", "fail", now=now - timedelta(days=3),
                                message="=HYPERLINK(\"http://evil.example\")"))
    made.append(finished_result(synced_store, "readme-present", "payments-api", "warning", now=now - timedelta(days=2),
                                message="line one\nline \"two\", with a comma"))
    made.append(finished_result(synced_store, "has-owner", "payments-api", "pass", now=now - timedelta(days=1)))
    made.append(new_result(synced_store, "readme-present", "users-api", now=now))
    return made


@pytest.fixture
def client(synced_store, tmp_path):
    with TestClient(create_app(synced_store, Settings(home=tmp_path), sync_trigger=lambda: None)) as client:
        client.headers.update(auth(make_token(synced_store, "read", name="auditor")))
        yield client


def _rows(text: str) -> list[dict]:
    return list(csv.DictReader(io.StringIO(text, newline="")))


def test_csv_has_every_result_oldest_first_with_the_text_kept_whole(client, history):
    response = client.get("/api/results.csv")
    assert response.status_code == 200 and response.headers["content-type"].startswith("text/csv")
    assert 'filename="results.csv"' in response.headers["content-disposition"]
    rows = _rows(response.text)
    assert list(rows[0]) == list(COLUMNS)
    assert [int(row["id"]) for row in rows] == sorted(result["id"] for result in history)
    assert [row["result"] for row in rows] == ["pass", "fail", "warning", "pass", "unknown"]
    assert rows[2]["message"] == "line one\nline \"two\", with a comma"
    assert rows[1]["message"] == "'=HYPERLINK(\"http://evil.example\")"  # a spreadsheet shows it, never runs it
    assert (rows[4]["status"], rows[4]["finished_at"], rows[4]["check"]) == ("pending", "", "readme-present")


def test_csv_takes_the_filters_of_api_results(client, history):
    assert [r["result"] for r in _rows(client.get("/api/results.csv?check=has-owner&service=payments-api").text)] == ["pass", "pass"]
    assert [r["id"] for r in _rows(client.get("/api/results.csv?status=pending").text)] == [str(history[4]["id"])]
    since = history[2]["created_at"].replace(" ", "T")
    assert len(_rows(client.get(f"/api/results.csv?since={since}").text)) == 3
    bad = client.get("/api/results.csv?result=great")
    assert bad.status_code in (400, 422) and "great" in bad.json()["message"]
    assert client.get("/api/results.csv", headers={"Authorization": ""}).status_code == 401


def test_batches_follow_each_other_by_id_without_a_gap_or_a_repeat(synced_store, history):
    batches = list(result_batches(synced_store, batch=2))
    assert [len(batch) for batch in batches] == [2, 2, 1]
    assert [row[0] for batch in batches for row in batch] == [result["id"] for result in history]


def _cli(database_url: str, *args: str, **options) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "api.cli", "export", "results", "--database-url", database_url, *args],
                          cwd=PROJECT, env={**os.environ, "PYTHONPATH": str(PROJECT)}, **options)


def test_cli_exports_jsonl_and_csv_and_prints_nothing_else_off_a_terminal(synced_store, history, database_url):
    done = _cli(database_url, "--format", "jsonl", "--since", history[1]["created_at"],
                capture_output=True, text=True)
    assert done.returncode == 0 and done.stderr == ""
    lines = [json.loads(line) for line in done.stdout.splitlines()]
    assert [line["id"] for line in lines] == [result["id"] for result in history[1:]]
    assert list(lines[0]) == list(COLUMNS) and lines[0]["check"] == "has-owner" and lines[0]["service"] == "users-api"
    assert lines[0]["message"] == "=HYPERLINK(\"http://evil.example\")"  # JSON is read by programs: kept as sent
    done = _cli(database_url, capture_output=True, text=True)
    assert len(_rows(done.stdout)) == 5 and done.stderr == ""
    refused = _cli(database_url, "--since", "last tuesday", capture_output=True, text=True)
    assert refused.returncode == 1 and "ISO 8601" in refused.stderr and "Traceback" not in refused.stderr


def test_cli_shows_progress_on_a_terminal_unless_quiet(synced_store, history, database_url, tmp_path):
    for quiet, expect_bar in (((), True), (("--quiet",), False)):
        done, seen = run_on_terminal(lambda terminal: _cli(
            database_url, "--output", str(tmp_path / "out.csv"), *quiet, stderr=terminal, stdout=subprocess.PIPE))
        assert done.returncode == 0
        assert (b"exporting results" in seen) is expect_bar, seen
        assert len(_rows((tmp_path / "out.csv").read_text())) == 5


def test_results_page_links_a_download_with_its_filters(client, history):
    page = client.get("/results?check=has-owner&result=pass")
    assert page.status_code == 200
    assert 'href="/api/results.csv?check=has-owner&amp;result=pass"' in page.text
    empty_filters = client.get("/api/results.csv?service=&check=&result=&status=")
    assert empty_filters.status_code == 200 and len(_rows(empty_filters.text)) == 5
