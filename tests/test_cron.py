"""Cron schedules: a schedule that never fires is a validation error, and a stored one stops nothing."""

from __future__ import annotations

import os
import shutil
import sqlite3
import subprocess
from datetime import datetime, timezone
from pathlib import Path

import httpx
import pytest
from pydantic import ValidationError

from api.app import create_app
from api_support import live_server
from conftest import sync_directory
from reconciler.clock import FakeClock
from reconciler.cron import next_time, previous_time, runs_per_day, schedule_problem
from reconciler.dispatch import LogDispatcher
from reconciler.schedule import due_pairs, run_pass
from reconciler.schema import Check
from reconciler.settings import Settings
from store_support import raw_sql

CATALOG = shutil.which("catalog")
NOW = datetime(2026, 1, 5, 12, 0, tzinfo=timezone.utc)
NEVER_FIRES = ["0 0 30 2 *", "0 0 31 4 *", "0 0 31 2,4,6,9,11 *"]


def store_schedule(database: Path, check: str, schedule: str) -> None:
    """Give a stored check a schedule the way a sync under the old rules (croniter.is_valid only) did."""
    with sqlite3.connect(database) as connection:
        connection.execute("UPDATE checks SET schedule = ?, frequency = NULL WHERE slug = ?", (schedule, check))


def run_catalog(*args: str, home: Path, repo: Path | None = None, cwd: Path | None = None):
    env = {key: value for key, value in os.environ.items() if not key.startswith("CATALOG_")}
    env.update(CATALOG_HOME=str(home), CATALOG_DISPATCHER="log")
    if repo is not None:
        env["CATALOG_REPO"] = str(repo)
    return subprocess.run([CATALOG, *args], capture_output=True, text=True, env=env, cwd=cwd, timeout=60)


# -- which expressions a check may use ------------------------------------------------------------


@pytest.mark.parametrize("expression", NEVER_FIRES)
def test_a_schedule_that_never_fires_is_refused(expression):
    assert "never fires" in schedule_problem(expression, NOW)
    with pytest.raises(ValidationError, match="never fires"):
        Check.model_validate({"name": "C", "schedule": expression})


@pytest.mark.parametrize("expression", ["0 3 * * 1 30", "0 0 1 1 * 0 2030", "0 0 3 * * * *", "0 3 * *"])
def test_a_schedule_needs_exactly_five_fields(expression):
    """A 6th field is seconds and a 7th a year to croniter: a year in the past never fires again."""
    assert "five fields" in schedule_problem(expression, NOW)


@pytest.mark.parametrize("expression", [
    "0 3 * * 1", "0 9 * * 1-5", "0 0 29 2 *", "0 0 L 2 *", "@daily", "@HOURLY", " 0 3 * * mon ",
    "*/59 * * * *", "0 0 * * 0-7", "0 0 1-31/10 * *", "0 */12 * * *",
])
def test_usual_schedules_are_accepted(expression):
    assert schedule_problem(expression, NOW) is None
    assert Check.model_validate({"name": "C", "schedule": expression}).schedule == expression


@pytest.mark.parametrize("expression, why", [
    ("5-1 * * * *", "the minute range 5-1 runs backwards"),  # croniter: 5..59 and 0..1, 57 runs an hour
    ("0 0 * * 5-1", "the day-of-week range 5-1 runs backwards"),
    ("*/1000 * * * *", "the minute step /1000 is larger than the field's values (0-59)"),  # croniter: hourly
    ("0 0 */40 * *", "the day-of-month step /40 is larger than the field's values (1-31)"),
])
def test_a_range_that_runs_backwards_or_a_step_past_the_field_is_an_error(expression, why):
    assert why in schedule_problem(expression, NOW)
    with pytest.raises(ValidationError, match="runs backwards|is larger than"):
        Check.model_validate({"name": "C", "schedule": expression})


def test_times_of_a_schedule_that_never_fires_are_none_not_an_exception():
    assert previous_time("0 0 30 2 *", NOW) is None and next_time("0 0 30 2 *", NOW) is None
    assert previous_time("not cron", NOW) is None
    assert previous_time("0 3 * * *", NOW) == datetime(2026, 1, 5, 3, 0, tzinfo=timezone.utc)


@pytest.mark.skipif(CATALOG is None, reason="the project is not installed (pip install -e .)")
def test_validate_names_file_and_line_of_a_schedule_that_never_fires(example_dir, tmp_path):
    (example_dir / "checks" / "leap.yaml").write_text('name: Leap\nschedule: "0 0 30 2 *"\n')
    result = run_catalog("validate", ".", home=tmp_path / "home", cwd=example_dir)
    assert result.returncode == 1, result.stderr
    assert result.stdout.splitlines() == [
        "checks/leap.yaml:2:11: schedule: '0 0 30 2 *' never fires (no date matches it, such as 30 February);"
        " the check would never run"
    ]


# -- a stored check that cannot be scheduled stops nothing ------------------------------------


@pytest.mark.parametrize("schedule, why", [
    ("0 0 30 2 *", "'0 0 30 2 *' never fires"),
    ("0 0 1 1 * 0 2030", "'0 0 1 1 * 0 2030' must have five fields"),  # croniter: first time in 2030
])
def test_a_pass_skips_and_reports_a_stored_check_that_cannot_be_scheduled(synced_store, schedule, why):
    raw_sql(synced_store, "UPDATE checks SET schedule = ?, frequency = NULL WHERE slug = ?", (schedule, "has-owner"))
    clock = FakeClock()
    assert due_pairs(synced_store, clock.now())  # the other checks are still due
    report = run_pass(synced_store, LogDispatcher(), settings=Settings.resolve({}, {}), clock=clock)
    assert report.created and report.dispatched
    slugs = {synced_store.results.get(result_id)["check"] for result_id in report.created}
    assert "has-owner" not in slugs and "readme-present" in slugs
    assert [slug for slug, _ in report.unschedulable] == ["has-owner"]
    assert f"skipped, as their schedule gives no time: has-owner ({why}" in str(report)


@pytest.mark.skipif(CATALOG is None, reason="the project is not installed (pip install -e .)")
def test_dispatch_cli_survives_a_stored_check_that_cannot_be_scheduled(example_dir, tmp_path):
    home = tmp_path / "home"
    assert run_catalog("sync", home=home, repo=example_dir).returncode == 0
    store_schedule(home / "catalog.db", "has-owner", "0 0 30 2 *")

    dry = run_catalog("dispatch", "--dry-run", home=home, repo=example_dir)
    assert dry.returncode == 0 and "Traceback" not in dry.stderr, dry.stderr
    assert "due  readme-present" in dry.stdout and "due  has-owner" not in dry.stdout
    assert "check has-owner skipped" in dry.stderr

    sent = run_catalog("dispatch", home=home, repo=example_dir)
    assert sent.returncode == 0 and "internal error" not in sent.stderr, sent.stderr
    assert "skipped, as their schedule gives no time: has-owner" in sent.stderr
    outcomes = [line.split()[2] for line in sent.stdout.splitlines() if line.startswith("result ")]
    assert "readme-present" in outcomes and "has-owner" not in outcomes


def test_pages_and_badges_survive_a_stored_check_that_cannot_be_scheduled(synced_store):
    raw_sql(synced_store, "UPDATE checks SET schedule = ?, frequency = NULL WHERE slug = ?", ("0 0 30 2 *", "has-owner"))
    app = create_app(synced_store, Settings(home=Path("unused"), public_read=True), clock=FakeClock())
    with live_server(app) as base:
        for path in ("/", "/services/payments-api", "/checks/has-owner", "/checks/readme-present",
                     "/badges/services/payments-api.svg", "/badges/services/payments-api/has-owner.svg"):
            assert httpx.get(base + path).status_code == 200, path
        assert "not scheduled" in httpx.get(base + "/checks/has-owner").text


@pytest.mark.parametrize("expression, per_year", [("@monthly", 12), ("0 0 1 1,7 *", 2), ("0 3 * * 1", 52.18), ("0 0 29 2 *", 0.25)])
def test_a_dispatch_plan_counts_a_rare_schedule_by_its_year_whatever_the_day(expression, per_year):
    """A week's sample gave `@monthly` 0 runs a day on 5 January and 0.14 on 27 January: the plan's
    verdict (and its exit status) hung on the day it was made."""
    for day in (datetime(2026, 1, 5, 12, tzinfo=timezone.utc), datetime(2026, 1, 27, 12, tzinfo=timezone.utc),
                datetime(2027, 6, 30, 23, tzinfo=timezone.utc)):
        assert runs_per_day(expression, day) == pytest.approx(per_year / 365.25, rel=0.01), day
    assert runs_per_day("*/5 * * * *", datetime(2026, 1, 5, tzinfo=timezone.utc)) == 288
