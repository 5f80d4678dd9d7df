"""Due computation, the result lifecycle, run-check, the scheduler loop and the dispatch CLI."""

from __future__ import annotations

import io
import json
import logging
import os
import signal
import threading
import time
from datetime import datetime, timedelta, timezone

import pytest

from conftest import sync_directory, write_catalog
from reconciler import cli
from reconciler.clock import FakeClock, format_time
from reconciler.dispatch import LogDispatcher
from reconciler.errors import Conflict, DispatchError, InvalidInput, NotFound
from reconciler.schedule import CLAIM_SECONDS, Scheduler, due_pairs, run_check, run_pass
from reconciler.settings import Settings
from store_support import answer

SETTINGS = Settings.resolve({}, {})


class Recorder:
    """A dispatcher that records payloads and can fail or answer (complete the result) on the way."""

    name = "recorder"

    def __init__(self, store=None, *, fail: DispatchError | None = None, answer: str | None = None,
                 clock: FakeClock | None = None):
        self.sent: list = []
        self.store, self.fail, self.answer, self.clock = store, fail, answer, clock

    def send(self, payload) -> None:
        if self.fail:
            raise self.fail
        if self.answer:  # the Action answers before the scheduler records `sent`
            answer(self.store, payload.result_id, self.answer, now=self.clock.now())
        self.sent.append(payload)


def slug_pairs(store, pairs) -> set[tuple[str, str | None]]:
    checks = {c["id"]: c["slug"] for c in store.reads.checks()}
    services = {s["id"]: s["slug"] for s in store.reads.services(include_removed=True)}
    return {(checks[c], services.get(s)) for c, s in pairs}


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()  # Monday 2026-01-05 12:00 UTC


# -- due -------------------------------------------------------------------------------------------


def test_due_pairs_follow_each_checks_targets(synced_store, clock):
    pairs = slug_pairs(synced_store, due_pairs(synced_store, clock.now()))

    by_check: dict[str, set] = {}
    for check, service in pairs:
        by_check.setdefault(check, set()).add(service)
    assert len(by_check["has-owner"]) == 10 and "legacy-reports" not in by_check["has-owner"]  # inactive
    assert by_check["readme-present"] == {"storefront-web", "payments-api", "users-api", "catalog-api", "admin-console"}
    assert by_check["log4j-vulnerability"] == {
        "storefront-web", "payments-api", "payments-db", "users-api", "users-db", "catalog-api", "ledger-worker", "search-index",
    }
    assert by_check["oncall-configured"] == {"storefront-web", "payments-api", "users-api", "catalog-api"}
    assert by_check["github-org-audit"] == {None}
    assert "pci-dependency-review" not in by_check  # ad-hoc: only on request
    assert len(pairs) == 28


def test_selectors_match_owner_and_all_tags(store, tmp_path, clock):
    write_catalog(
        tmp_path / "c",
        services=[
            {"name": "A", "priority": 1, "owner": "x", "tags": ["pci", "tier-1"]},
            {"name": "B", "priority": 1, "owner": "x", "tags": ["pci"]},
            {"name": "C", "priority": 1, "owner": "y", "tags": ["pci", "tier-1"]},
        ],
        checks=[{"name": "K", "services": {"owner": "x", "tags": ["pci", "tier-1"]}}],
    )
    sync_directory(store, tmp_path / "c")
    assert slug_pairs(store, due_pairs(store, clock.now())) == {("k", "a")}


def test_a_pair_is_due_again_exactly_one_period_after_its_last_run(synced_store, clock):
    run_pass(synced_store, Recorder(), settings=SETTINGS, clock=clock)
    for row in synced_store.results.list(limit=100):
        answer(synced_store, row["id"], "pass", now=clock.now())
    assert due_pairs(synced_store, clock.now()) == []

    clock.advance(timedelta(hours=1) - timedelta(microseconds=1))
    assert due_pairs(synced_store, clock.now()) == []
    clock.advance(timedelta(microseconds=1))
    assert {c for c, _ in slug_pairs(synced_store, due_pairs(synced_store, clock.now()))} == {"has-owner"}

    clock.advance(timedelta(days=1))  # a day and an hour on: daily checks too, weekly ones not
    assert {c for c, _ in slug_pairs(synced_store, due_pairs(synced_store, clock.now()))} == {
        "has-owner", "readme-present", "oncall-configured",
    }
    clock.advance(timedelta(days=6))  # over a week (real timedelta arithmetic, not .seconds)
    assert "log4j-vulnerability" in {c for c, _ in slug_pairs(synced_store, due_pairs(synced_store, clock.now()))}


def test_a_cron_check_is_due_when_its_next_scheduled_time_has_passed(synced_store, clock):
    run_pass(synced_store, Recorder(), settings=SETTINGS, clock=clock)  # Monday 12:00: first runs
    for row in synced_store.results.list(limit=100):
        answer(synced_store, row["id"], "pass", now=clock.now())

    def oncall_due() -> bool:
        return any(c == "oncall-configured" for c, _ in slug_pairs(synced_store, due_pairs(synced_store, clock.now())))

    clock.advance(timedelta(hours=20, minutes=59, seconds=59))  # Tuesday 08:59:59
    assert not oncall_due()
    clock.advance(timedelta(seconds=1))  # Tuesday 09:00 ("0 9 * * 1-5")
    assert oncall_due()
    run_pass(synced_store, Recorder(), settings=SETTINGS, clock=clock)
    clock.advance(timedelta(days=3, minutes=30))  # Friday 09:30: the pass times out Tuesday's (2h) first
    friday = run_pass(synced_store, Recorder(), settings=SETTINGS, clock=clock)
    assert "oncall-configured" in {synced_store.results.get(i)["check"] for i in friday.created}
    for row in synced_store.results.list(status="sent", limit=100):
        answer(synced_store, row["id"], "pass", now=clock.now())
    clock.advance(timedelta(days=2, minutes=30))  # Sunday 10:00: the weekend is not scheduled
    assert not oncall_due()
    clock.advance(timedelta(hours=23))  # Monday 09:00
    assert oncall_due()


def test_an_open_result_keeps_its_pair_from_being_dispatched_again(synced_store, clock):
    first = run_pass(synced_store, Recorder(), settings=SETTINGS, clock=clock)
    clock.advance(timedelta(hours=1))
    second = run_pass(synced_store, Recorder(), settings=SETTINGS, clock=clock)
    # has-owner results timed out (30 min) and are due again; others are still sent and wait
    assert len(second.expired) == 10 and len(second.created) == 10
    assert len(first.created) == 28


# -- lifecycle ---------------------------------------------------------------------------------


def test_results_carry_the_applied_revision_and_go_pending_to_sent(synced_store, clock):
    report = run_pass(synced_store, Recorder(), settings=SETTINGS, clock=clock)
    row = synced_store.results.get(report.sent[0])
    assert row["status"] == "sent" and row["sent_at"] == format_time(clock.now())
    assert row["revision"] == synced_store.state.get("applied_revision") and row["trigger"] == "schedule"


def test_an_answer_before_sent_is_kept(synced_store, clock):
    report = run_pass(synced_store, Recorder(synced_store, answer="pass", clock=clock), settings=SETTINGS, clock=clock, max_results=3)
    assert report.sent == [] and len(report.answered_first) == 3
    assert {synced_store.results.get(i)["status"] for i in report.answered_first} == {"completed"}


def test_a_crash_after_creating_rows_resends_the_same_rows_once_the_lease_ends(synced_store, clock):
    # a pass that died right after creating its rows: they are pending and leased
    crashed = synced_store.dispatch.create_due(
        [(c["id"], "9999") for c in synced_store.reads.checks() if c["slug"] == "has-owner"],
        now=format_time(clock.now()), revision="r1",
        claim_until=format_time(clock.now() + timedelta(seconds=CLAIM_SECONDS)), holder="dead",
    )
    assert len(crashed) == 10
    recorder = Recorder()
    during = run_pass(synced_store, recorder, settings=SETTINGS, clock=clock)
    assert not set(during.created) & {r["id"] for r in crashed} and during.retried == []
    assert {p.event_type for p in recorder.sent} == {"readme-present", "log4j-vulnerability", "oncall-configured", "github-org-audit"}

    clock.advance(CLAIM_SECONDS)
    after = run_pass(synced_store, recorder, settings=SETTINGS, clock=clock)
    assert after.created == [] and sorted(after.retried) == sorted(r["id"] for r in crashed)
    assert sorted(after.sent) == sorted(r["id"] for r in crashed)
    assert len(synced_store.results.list(limit=1000)) == 28  # one result per pair, none lost


def test_leases_of_a_scheduler_killed_on_this_host_are_taken_over_at_once(synced_store, clock):
    import socket

    dead_holder = f"{socket.gethostname()}:{_dead_pid()}:abc"
    crashed = synced_store.dispatch.create_due(
        [(c["id"], "9999") for c in synced_store.reads.checks() if c["slug"] == "has-owner"],
        now=format_time(clock.now()), revision="r1",
        claim_until=format_time(clock.now() + timedelta(seconds=CLAIM_SECONDS)), holder=dead_holder,
    )
    live_holder = f"{socket.gethostname()}:{os.getpid()}:live"
    alive = synced_store.dispatch.create_due(
        [(c["id"], "9999") for c in synced_store.reads.checks() if c["slug"] == "readme-present"],
        now=format_time(clock.now()), revision="r1",
        claim_until=format_time(clock.now() + timedelta(seconds=CLAIM_SECONDS)), holder=live_holder,
    )
    report = run_pass(synced_store, Recorder(), settings=SETTINGS, clock=clock)
    assert sorted(report.retried) == sorted(r["id"] for r in crashed)  # no waiting for the lease to end
    assert not set(report.retried) & {r["id"] for r in alive}  # a live holder keeps its lease


def _dead_pid() -> int:
    """The pid of a process that has exited (and been reaped): no process has it now."""
    import subprocess
    import sys

    process = subprocess.Popen([sys.executable, "-c", "pass"])
    process.wait()
    return process.pid


def test_permanent_failure_sets_error_and_transient_keeps_pending(synced_store, clock):
    failed = run_pass(synced_store, Recorder(fail=DispatchError("nope", transient=False)), settings=SETTINGS, clock=clock, max_results=2)
    assert [synced_store.results.get(i)["status"] for i, _ in failed.failed] == ["error", "error"]
    assert synced_store.results.get(failed.failed[0][0])["message"] == "nope"

    kept = run_pass(synced_store, Recorder(fail=DispatchError("later", transient=True)), settings=SETTINGS, clock=clock, max_results=2)
    assert [synced_store.results.get(i)["status"] for i in kept.still_pending] == ["pending", "pending"]


def test_unanswered_results_time_out_after_the_checks_timeout(synced_store, clock):
    run_pass(synced_store, Recorder(), settings=SETTINGS, clock=clock)
    pending_only = run_pass(synced_store, Recorder(fail=DispatchError("down", transient=True)), settings=SETTINGS, clock=clock)
    assert pending_only.created == []
    answered = synced_store.results.list(check="readme-present", limit=1)[0]
    answer(synced_store, answered["id"], "pass", now=clock.now())

    clock.advance(timedelta(minutes=30))
    report = run_pass(synced_store, Recorder(fail=DispatchError("down", transient=True)), settings=SETTINGS, clock=clock)
    expired = [synced_store.results.get(i) for i in report.expired]
    assert {r["check"] for r in expired} == {"has-owner"} and len(expired) == 10
    assert expired[0]["status"] == "timed-out" and expired[0]["finished_at"] == format_time(clock.now())
    assert expired[0]["message"] == "no answer within 30m (the check's timeout)"

    clock.advance(timedelta(hours=6))
    later = run_pass(synced_store, Recorder(fail=DispatchError("down", transient=True)), settings=SETTINGS, clock=clock)
    statuses = {synced_store.results.get(i)["check"] for i in later.expired}
    assert {"readme-present", "oncall-configured"} <= statuses
    assert synced_store.results.get(answered["id"])["status"] == "completed"  # finished rows never change


def test_a_result_never_sent_times_out_from_its_creation(synced_store, clock):
    report = run_pass(synced_store, Recorder(fail=DispatchError("down", transient=True)), settings=SETTINGS, clock=clock, max_results=1)
    clock.advance(timedelta(minutes=30))
    later = run_pass(synced_store, Recorder(fail=DispatchError("down", transient=True)), settings=SETTINGS, clock=clock, max_results=0)
    assert report.still_pending[0] in later.expired


# -- run-check ---------------------------------------------------------------------------------


def test_run_check_runs_an_ad_hoc_check_on_its_services(synced_store, clock):
    rows = run_check(synced_store, Recorder(), "pci-dependency-review", settings=SETTINGS, clock=clock)
    assert {r["service"] for r in rows} == {"payments-api", "payments-db", "ledger-worker"}
    assert {r["trigger"] for r in rows} == {"ad-hoc"} and {r["status"] for r in rows} == {"sent"}


def test_run_check_on_one_service(synced_store, clock):
    (row,) = run_check(synced_store, Recorder(), "has-owner", "users-db", settings=SETTINGS, clock=clock)
    assert row["check"] == "has-owner" and row["service"] == "users-db"
    with pytest.raises(Conflict, match=f"already running \\(result {row['id']} is sent\\)"):
        run_check(synced_store, Recorder(), "has-owner", "users-db", settings=SETTINGS, clock=clock)


@pytest.mark.parametrize(
    "check, service, error, text",
    [
        ("nope", None, NotFound, "check 'nope' does not exist"),
        ("has-owner", "nope", NotFound, "service 'nope' does not exist"),
        ("readme-present", "users-db", InvalidInput, "does not target service 'users-db'"),
        ("github-org-audit", "users-db", InvalidInput, "runs without a service"),
        ("has-owner", "legacy-reports", InvalidInput, "inactive"),
    ],
)
def test_run_check_refuses_bad_requests_clearly(synced_store, clock, check, service, error, text):
    with pytest.raises(error, match=text):
        run_check(synced_store, Recorder(), check, service, settings=SETTINGS, clock=clock)
    assert synced_store.results.list(limit=10) == []


def test_run_check_refuses_a_removed_check(synced_store, example_dir, clock):
    (example_dir / "checks" / "has-owner.yaml").unlink()
    sync_directory(synced_store, example_dir)
    with pytest.raises(NotFound, match="was removed"):
        run_check(synced_store, Recorder(), "has-owner", settings=SETTINGS, clock=clock)


# -- the loop ------------------------------------------------------------------------------------


def test_a_failing_job_is_retried_with_backoff_and_never_stops_the_loop(caplog):
    scheduler = Scheduler(retry_base_seconds=0.05, tick_seconds=0.01)
    calls = {"bad": 0, "good": 0}

    def bad():
        calls["bad"] += 1
        if calls["bad"] < 3:
            raise RuntimeError("git fetch failed")
        scheduler.stop()

    def good():
        calls["good"] += 1

    scheduler.every(60, "bad", bad)
    scheduler.every(0.02, "good", good)
    thread = threading.Thread(target=scheduler.run)
    thread.start()
    thread.join(10)
    assert not thread.is_alive() and calls["bad"] == 3 and calls["good"] >= 2
    assert "job bad failed (RuntimeError: git fetch failed); retrying in 0 s" in caplog.text
    assert scheduler.failures["bad"] == 0  # recovered


def test_jobs_are_timed_on_the_monotonic_clock_alone():
    """Each job is next due its interval after it ended, read from the scheduler's monotonic clock only:
    timed on naive local wall time (the `schedule` library), every loop of `catalog up` stood still for
    an hour at a DST fall-back, and for as long as any step back of the wall clock."""
    now = [1000.0]
    scheduler = Scheduler(monotonic=lambda: now[0])
    ran: list[tuple[str, float]] = []
    scheduler.every(15, "dispatch", lambda: ran.append(("dispatch", now[0])))
    scheduler.every(60, "writeback", lambda: ran.append(("writeback", now[0])), run_now=False)
    assert scheduler.run_pending() == 15 and ran == [("dispatch", 1000.0)]
    now[0] = 1014.9
    assert scheduler.run_pending() == pytest.approx(0.1) and len(ran) == 1
    for step in range(1, 9):  # two minutes of one-second ticks
        now[0] = 1000.0 + 15 * step
        scheduler.run_pending()
    assert [name for name, _ in ran].count("dispatch") == 9 and ran.count(("writeback", 1060.0)) == 1
    assert [at for name, at in ran if name == "dispatch"] == [1000.0 + 15 * k for k in range(9)]


def test_stop_from_another_thread_ends_the_loop_and_says_which_loop_stopped(caplog):
    """`catalog up` runs four loops: each said only "scheduler stopped", four times alike."""
    scheduler = Scheduler(tick_seconds=0.05)
    scheduler.every(3600, "idle", lambda: None)
    scheduler.every(3600, "also-idle", lambda: None)
    thread = threading.Thread(target=scheduler.run)
    with caplog.at_level(logging.INFO, logger="catalog.schedule"):
        thread.start()
        scheduler.stop()
        thread.join(5)
    assert not thread.is_alive()
    assert "scheduler stopped: idle, also-idle" in caplog.messages


def test_sigterm_stops_the_loop_cleanly():
    scheduler = Scheduler(tick_seconds=0.05)
    ran = []
    scheduler.every(3600, "once", lambda: ran.append(1))
    previous = signal.getsignal(signal.SIGTERM)
    threading.Timer(0.2, os.kill, (os.getpid(), signal.SIGTERM)).start()
    scheduler.run()  # returns instead of dying
    assert ran == [1] and signal.getsignal(signal.SIGTERM) is previous


# -- CLI ---------------------------------------------------------------------------------------------


@pytest.fixture
def home(synced_store, database_url, tmp_path, monkeypatch):
    """The CLI's CATALOG_HOME and CATALOG_DATABASE_URL: the synced store, on either backend."""
    monkeypatch.setenv("CATALOG_HOME", str(tmp_path / "state"))
    monkeypatch.setenv("CATALOG_DATABASE_URL", database_url)
    monkeypatch.delenv("CATALOG_GITHUB_TOKEN", raising=False)
    return tmp_path / "state"


def test_cli_dispatch_dry_run_lists_what_is_due_and_sends_nothing(home, synced_store, capsys):
    assert cli.main(["dispatch", "--dry-run"]) == 0
    out, err = capsys.readouterr()
    assert "due  has-owner  admin-console" in out and "due  github-org-audit  -" in out
    assert "28 due, 0 would time out" in err
    assert synced_store.results.list(limit=5) == []


def test_cli_dispatch_with_the_log_dispatcher(home, synced_store, capsys):
    assert cli.main(["dispatch", "--dispatcher", "log"]) == 0
    out, err = capsys.readouterr()
    assert "28 created" in err and "28 dispatched" in err
    assert len([line for line in out.splitlines() if line.startswith("{")]) == 28


def test_cli_dispatch_without_a_github_token_says_what_to_do(home, capsys):
    assert cli.main(["dispatch"]) == 1
    assert capsys.readouterr().err.startswith("catalog: CATALOG_GITHUB_TOKEN is not set")


def test_cli_run_check_errors_are_one_line(home, capsys):
    assert cli.main(["run-check", "nope", "--dispatcher", "log"]) == 1
    assert capsys.readouterr().err == "catalog: check 'nope' does not exist\n"
    assert cli.main(["run-check", "pci-dependency-review", "--service", "payments-db", "--dispatcher", "log"]) == 0
    assert "pci-dependency-review  payments-db  sent" in capsys.readouterr().out


def test_targeted_pairs_select_exactly_the_pairs_a_first_pass_dispatches(synced_store, clock):
    recorder = Recorder()
    run_pass(synced_store, recorder, settings=SETTINGS, clock=clock)
    dispatched = {(p.client_payload["check"], p.client_payload["service"]) for p in recorder.sent}
    checks = {c["id"]: c["slug"] for c in synced_store.reads.checks()}
    services = {s["id"]: s["slug"] for s in synced_store.reads.services()}
    targeted = {(checks[c], services[s]) for c, s in synced_store.dispatch.targeted_pairs()}
    scheduled = {c["slug"] for c in synced_store.reads.checks() if c["frequency"] != "ad-hoc"}
    assert {pair for pair in targeted if pair[0] in scheduled} == {pair for pair in dispatched if pair[1]}
    assert ("has-owner", "legacy-reports") not in targeted  # inactive services are never targeted
    assert {s for c, s in targeted if c == "readme-present"} == {
        "admin-console", "catalog-api", "payments-api", "storefront-web", "users-api"}
    # some checks, some services, or both: the same pairs as all of them, filtered
    every = synced_store.dispatch.targeted_pairs()
    some_checks, some_services = sorted(checks)[::2], sorted(services)[1::3]
    assert synced_store.dispatch.targeted_pairs(check_ids=some_checks) == {p for p in every if p[0] in some_checks}
    assert synced_store.dispatch.targeted_pairs(service_ids=some_services) == {p for p in every if p[1] in some_services}
    assert synced_store.dispatch.targeted_pairs(check_ids=some_checks, service_ids=some_services) == {
        p for p in every if p[0] in some_checks and p[1] in some_services}
    assert synced_store.dispatch.targeted_pairs(service_ids=[]) == set()
