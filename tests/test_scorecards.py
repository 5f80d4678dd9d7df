"""Scorecards, waivers and campaigns: validation with file:line, last good state, levels kept current."""

from __future__ import annotations

import re
from datetime import datetime, timedelta, timezone

import pytest

from conftest import WAIVER_EXPIRES, sync_directory, utc_at
from store_support import answer, finished_result, new_result, raw_rows
from reconciler import scorecards
from reconciler.clock import FakeClock, format_time
from reconciler.store import open_database
from reconciler.validation import validate_directory

CARD = "scorecards/production-readiness.yaml"


def write_files(root, files: dict[str, str]) -> None:
    """Write each file (path relative to `root`: its folders are made) as a pull request would add it."""
    for path, text in files.items():
        (root / path).parent.mkdir(parents=True, exist_ok=True)
        (root / path).write_text(text)


def levels_of(store, rubric: str = "production-readiness") -> dict[str, int]:
    return {row["service"]: row["level"] for row in store.scorecards.levels(rubric=rubric)}


def test_mistakes_in_scorecards_waivers_and_campaigns_name_file_and_line(example_dir):
    write_files(example_dir, {
        "scorecards/broken.yaml": "name: Broken\nlevels:\n  - name: One\n    checks: [has-owner, no-such-check]\n    chekcs: []\n",
        "waivers/old.yaml": "check: log4j-vulnerabilty\nservices: [search-index, nobody]\nreason: x\nexpires: 2020-01-01\n",
        "waivers/far.yaml": "check: has-owner\nservices: [admin-console]\nreason: x\n"
                            f"expires: {datetime.now(timezone.utc).date() + timedelta(days=400)}\n",
        "campaigns/platinum.yaml": "name: Platinum\nscorecard: production-readiness\nlevel: Platinum\ndeadline: 2027-01-01\n",
        "campaigns/nothing.yaml": "name: Nothing\nscorecard: nope\nlevel: Gold\ndeadlin: 2027-01-01\n",
    })
    count, errors = validate_directory(example_dir)
    text = [str(error) for error in errors]
    assert "scorecards/broken.yaml:5:5: unknown key 'chekcs' (did you mean 'checks'?)" in text
    assert "campaigns/nothing.yaml:4:1: unknown key 'deadlin' (did you mean 'deadline'?)" in text
    assert "waivers/old.yaml:1:8: check: unknown check 'log4j-vulnerabilty' (no file under checks/ defines it)" in text
    assert "waivers/old.yaml:2:26: services: unknown service 'nobody' (no service file or Backstage Component defines it)" in text
    assert any(t.startswith("waivers/old.yaml:4:10: expires: 2020-01-01 is in the past") for t in text)
    assert any(t.startswith("waivers/far.yaml:4:10: expires:") and "more than 365 days ahead" in t for t in text)
    platinum = next(e for e in errors if e.location.path == "campaigns/platinum.yaml")
    assert str(platinum).startswith("campaigns/platinum.yaml:3:8: level: 'Platinum' is not a level of scorecard")
    assert CARD in str(platinum) and platinum.other.path == CARD  # both files named


def test_rules_across_a_files_keys_are_errors_at_the_line_of_the_key_that_breaks_them(example_dir):
    """Not at 1:1: in a pull request the annotation lands on the line to change."""
    write_files(example_dir, {
        "scorecards/twice.yaml": "name: Twice\nlevels:\n  - {name: A, checks: [has-owner]}\n  - {name: A, checks: [readme-present]}\n",
        "scorecards/none.yaml": "name: None card\nlevels:\n  - {name: Top, checks: [has-owner]}\n"
                                "  - {name: None, checks: [readme-present]}\n",
        "campaigns/both.yaml": "name: Both\nscorecard: production-readiness\nlevel: Gold\nchecks: [has-owner]\ndeadline: 2027-01-31\n",
        "checks/both.yaml": "name: Both\nfrequency: daily\nschedule: '0 * * * *'\n",
        "services/blank.yaml": "priority: 2\nname: '--'\n",
        "blank/catalog-info.yaml": "apiVersion: backstage.io/v1alpha1\nkind: Component\nmetadata:\n  name: ___\n"
                                   "spec: {type: service, owner: x}\n",
    })
    errors = sorted(str(e) for e in validate_directory(example_dir)[1])
    assert errors == [
        "blank/catalog-info.yaml:4:9: metadata.name: has no letters or digits to make a slug from",
        "campaigns/both.yaml:4:9: checks: give either scorecard with level, or checks, not both",
        "checks/both.yaml:3:11: schedule: give either frequency or schedule, not both",
        "scorecards/none.yaml:4:12: levels.1.name: 'None' is what pages, the API and the write-back call a service"
        " below the first level; give the level another name",
        "scorecards/twice.yaml:4:12: levels.1.name: each level needs its own name; 'A' is the name of level 1 too",
        "services/blank.yaml:2:7: name: has no letters or digits to make a slug from; set slug",
    ]


def test_an_expiry_or_deadline_is_a_day_not_a_number_of_seconds_or_a_time(example_dir):
    """The schema says `format: date`; pydantic took 1798761600 as 2027-01-01 and a time with an offset as its day."""
    for name, value in (("seconds", "1798761600"), ("time", "2027-01-01T00:00:00-05:00"), ("compact", "'20270101'")):
        (example_dir / "waivers" / f"{name}.yaml").write_text(
            f"check: has-owner\nservices: [payments-api]\nreason: r\nexpires: {value}\n")
    (example_dir / "waivers" / "quoted.yaml").write_text(
        f"check: has-owner\nservices: [users-api]\nreason: r\nexpires: '{WAIVER_EXPIRES}'\n")
    campaign = example_dir / "campaigns" / "log4j-2026.yaml"
    campaign.write_text(re.sub(r"deadline: .*", "deadline: 1798761600", campaign.read_text()))
    errors = sorted(str(e) for e in validate_directory(example_dir)[1])
    assert errors == [
        "campaigns/log4j-2026.yaml:9:11: deadline: must be a day such as 2027-01-31, not 1798761600",
        "waivers/compact.yaml:4:10: expires: must be a day such as 2027-01-31, not '20270101'",
        "waivers/seconds.yaml:4:10: expires: must be a day such as 2027-01-31, not 1798761600",
        "waivers/time.yaml:4:10: expires: must be a day such as 2027-01-31, not 2027-01-01T00:00:00-05:00",
    ]


def test_a_level_naming_an_unknown_check_is_an_error_at_its_line(example_dir):
    card = example_dir / CARD
    card.write_text(card.read_text().replace("checks: [oncall-configured]", "checks: [oncall-configurd]"))
    errors = [str(e) for e in validate_directory(example_dir)[1]]
    assert errors == [f"{CARD}:8:29: levels: unknown check 'oncall-configurd' (no file under checks/ defines it)"]


def test_a_bad_scorecard_keeps_its_last_good_state(store, example_dir):
    sync_directory(store, example_dir)
    before = store.scorecards.definitions()
    card = example_dir / CARD
    card.write_text(card.read_text().replace("met_by: [pass]", "met_by: [pass]\nmet_bi: [warning]"))
    report = sync_directory(store, example_dir)
    assert [str(e) for e in report.errors] == [f"{CARD}:11:1: unknown key 'met_bi' (did you mean 'met_by'?)"]
    after = store.scorecards.definitions()
    assert [(r["slug"], r["body"]) for r in after] == [(r["slug"], r["body"]) for r in before]
    assert next(r for r in after if r["slug"] == "production-readiness")["error"].startswith(f"{CARD}:11:1")
    assert levels_of(store)  # still evaluated from the last good definition


def test_a_scorecard_that_does_not_parse_keeps_its_slug_for_the_campaign_that_names_it(store, example_dir):
    """The campaign did not change: only the scorecard's own error is reported, and both keep applying."""
    sync_directory(store, example_dir)
    card = example_dir / CARD
    card.write_text(card.read_text() + "  - {name: Platinum, checks: [has-owner]\n")
    report = sync_directory(store, example_dir)
    assert [e.location.path for e in report.errors] == [CARD]
    assert "YAML" in str(report.errors[0])
    campaign = next(r for r in store.scorecards.definitions() if r["slug"] == "log4j-2026")
    assert campaign["error"] is None
    assert {r["slug"] for r in store.scorecards.definitions()} >= {"production-readiness", "log4j-2026"}


def test_services_listed_by_a_scorecard_or_campaign_must_exist(store, example_dir):
    (example_dir / "scorecards" / "listed.yaml").write_text(
        "name: Listed\nservices: [payments-api, nothere]\nlevels:\n  - {name: One, checks: [has-owner]}\n")
    (example_dir / "campaigns" / "listed.yaml").write_text(
        f"name: Listed\nchecks: [has-owner]\nservices: [nothere]\nowner: x\ndeadline: {WAIVER_EXPIRES}\n")
    errors = [str(e) for e in validate_directory(example_dir)[1]]
    assert errors == [
        "campaigns/listed.yaml:3:12: services: unknown service 'nothere' (no service file or Backstage Component defines it)",
        "scorecards/listed.yaml:2:26: services: unknown service 'nothere' (no service file or Backstage Component defines it)",
    ]
    # applied, then the service goes: the kept files are blamed, as a kept check or waiver is
    for path in ("scorecards/listed.yaml", "campaigns/listed.yaml"):
        text = (example_dir / path).read_text()
        (example_dir / path).write_text(text.replace("nothere", "users-db"))
    assert sync_directory(store, example_dir).errors == []
    (example_dir / "services" / "users-db.yaml").unlink()
    report = sync_directory(store, example_dir)
    blamed = {e.location.path: str(e) for e in report.errors}
    assert "unknown service 'users-db'" in blamed["scorecards/listed.yaml"]
    assert "unknown service 'users-db'" in blamed["campaigns/listed.yaml"]


def test_a_waiver_past_its_expiry_is_applied_with_a_warning_by_a_first_sync(store, example_dir):
    """A home that first syncs a commit after one of its waivers ended (a new replica, a rebuilt
    database, the example next year) reads it like the homes that applied it in time: the waiver is
    there and shows as expired. Only `catalog validate` refuses it (a pull request's new waiver)."""
    waiver = example_dir / "waivers" / "search-index-log4j.yaml"
    waiver.write_text(waiver.read_text().replace(f"expires: {WAIVER_EXPIRES}", "expires: 2020-01-31"))
    report = sync_directory(store, example_dir)
    assert report.outcome == "applied" and report.errors == []
    [warning] = [str(w) for w in report.plan.warnings if w.location.path.startswith("waivers/")]
    assert warning.startswith("waivers/search-index-log4j.yaml:6:10: expires: 2020-01-31 has passed (today is ")
    assert "the waiver no longer counts" in warning
    assert "search-index-log4j" in {row["slug"] for row in store.scorecards.definitions() if row["kind"] == "waiver"}
    row = next(r for r in store.scorecards.levels(rubric="production-readiness") if r["service"] == "search-index")
    assert row["checks"]["log4j-vulnerability"] == "waiver-expired"
    errors = [str(e) for e in validate_directory(example_dir)[1]]
    assert [e for e in errors if e.startswith("waivers/")] == [
        f"waivers/search-index-log4j.yaml:6:10: expires: 2020-01-31 is in the past (today is"
        f" {datetime.now(timezone.utc).date()}, UTC); renew the waiver with a reason, or remove it"]


def test_renaming_a_level_blames_the_campaign_that_names_it_with_both_files(store, example_dir):
    sync_directory(store, example_dir)
    card = example_dir / CARD
    card.write_text(card.read_text().replace("name: Gold", "name: Platinum"))
    report = sync_directory(store, example_dir)
    assert [e.location.path for e in report.errors] == ["campaigns/log4j-2026.yaml"]
    assert report.errors[0].other.path == CARD and "'Gold' is not a level" in str(report.errors[0])


def test_levels_follow_answers_waivers_and_staleness(synced_store):
    store = synced_store
    clock = FakeClock(utc_at(WAIVER_EXPIRES, 22))
    now = clock.now()
    assert set(levels_of(store)) == {"storefront-web", "payments-api", "payments-db", "catalog-api",
                                     "ledger-worker", "users-api", "users-db", "search-index"}  # max_priority 3
    assert set(levels_of(store).values()) == {0}
    for check in ("has-owner", "readme-present", "oncall-configured"):
        finished_result(store, check, "payments-api", "pass", now=now)
    assert levels_of(store)["payments-api"] == 2  # Bronze and Silver; Gold's log4j has no result yet
    log4j = new_result(store, "log4j-vulnerability", "payments-api", now=now)
    answer(store, log4j["id"], "pass", now=now)
    assert levels_of(store)["payments-api"] == 3
    # payments-db: readme (web only) and on-call (a list without it) do not target it, so do not count
    finished_result(store, "has-owner", "payments-db", "pass", now=now)
    assert levels_of(store)["payments-db"] == 2
    finished_result(store, "has-owner", "payments-db", "fail", now=now)
    row = next(r for r in store.scorecards.levels(rubric="production-readiness") if r["service"] == "payments-db")
    assert row["level"] == 0 and row["checks"] == {"has-owner": "failing", "log4j-vulnerability": "missing"}
    # search-index: log4j waived until the end of WAIVER_EXPIRES, UTC
    finished_result(store, "has-owner", "search-index", "pass", now=now)
    row = next(r for r in store.scorecards.levels(rubric="production-readiness") if r["service"] == "search-index")
    assert row["level"] == 3 and row["checks"] == {"has-owner": "met", "log4j-vulnerability": "waived"}
    # one hour and a half later (has-owner: hourly, 30m timeout) its results went stale; the waiver ended
    changes = scorecards.refresh_due(store, now + timedelta(hours=2, seconds=1))
    assert {(c.rubric, c.before, c.after) for c in changes} == {("production-readiness", 3, 0)}
    row = next(r for r in store.scorecards.levels(rubric="production-readiness") if r["service"] == "search-index")
    assert row["checks"] == {"has-owner": "stale", "log4j-vulnerability": "waiver-expired"}


def test_after_answers_returns_the_level_changes(synced_store):
    store, now = synced_store, datetime.now(timezone.utc)
    result = new_result(store, "has-owner", "payments-db", now=now)
    with store.transaction() as session:
        completed = store.dialect.complete_results(session, [(result["id"], "pass", None, None, format_time(now))])
        changes = scorecards.after_answers(store, session, completed.values(), now)
        session.run("SELECT 1")  # the hook's writes share the answer's transaction
    service_id = store.catalog.service_index()["payments-db"]["id"]
    assert changes == [scorecards.LevelChange("production-readiness", service_id, 0, 2)]


def test_a_campaign_of_checks_is_evaluated_as_one_level(store, example_dir):
    (example_dir / "campaigns" / "owners.yaml").write_text(
        "name: Every service owned\nchecks: [has-owner]\nservices: all\ndeadline: 2027-06-30\n")
    sync_directory(store, example_dir)
    finished_result(store, "has-owner", "admin-console", "pass")
    assert levels_of(store, "campaign:every-service-owned")["admin-console"] == 1
    assert levels_of(store, "campaign:every-service-owned")["payments-api"] == 0


def test_scorecard_targeting_is_the_due_querys_rule(synced_store):
    """`scorecards.selects` (Python) and the store's targeting (SQL) agree on every pair of the example."""
    store = synced_store
    with store.session() as session:
        services, _ = store.scorecards.evaluation_inputs(session, ())
    removed_or_inactive = raw_rows(store, "SELECT id, slug FROM services WHERE active = 0")
    assert removed_or_inactive  # the example has an inactive service, which nothing targets
    checks = store.scorecards.live_checks()
    in_python = {(c["id"], s["id"]) for c in checks for s in services if scorecards.selects(c["targets"], s)}
    assert in_python == store.dispatch.targeted_pairs()


def test_daily_snapshot_records_levels_and_counts_once_a_day(synced_store):
    """The answer lands on the day the fixture's sync recorded (today, by the real clock: the test read
    a fixed day once, and failed from the next day on, with a row of each day)."""
    store = synced_store
    service_id = store.catalog.service_index()["payments-db"]["id"]
    [(day, level)] = store.scorecards.service_trend("production-readiness", service_id, since="2000-01-01")
    assert level == 0
    now = datetime.fromisoformat(day).replace(hour=1, tzinfo=timezone.utc)
    finished_result(store, "has-owner", "payments-db", "pass", now=now)
    assert scorecards.snapshot(store, now) is True
    assert scorecards.snapshot(store, now + timedelta(hours=5)) is False
    assert ((day, 0, 7) in store.scorecards.trend("production-readiness", since="2000-01-01")
            and (day, 2, 1) in store.scorecards.trend("production-readiness", since="2000-01-01"))
    assert store.scorecards.trend("production-readiness", team="team-payments", since="2000-01-01")
    assert store.scorecards.service_trend("production-readiness", service_id, since="2000-01-01") == [(day, 2)]
    # the next day's, then the clock stepped back to the first day: a recorded day is history, not rewritten
    assert scorecards.snapshot(store, now + timedelta(days=1)) is True
    finished_result(store, "has-owner", "payments-db", "fail", now=now + timedelta(days=1, hours=1))
    assert scorecards.snapshot(store, now + timedelta(hours=12)) is False
    assert store.scorecards.service_trend("production-readiness", service_id, since="2000-01-01")[0] == (day, 2)



def test_answers_keep_the_same_levels_and_states_a_full_evaluation_gives(synced_store):
    store, now = synced_store, datetime.now(timezone.utc)
    outcomes = ["pass", "fail", "warning", "pass", "error", "pass"]
    services = ["payments-api", "payments-db", "search-index", "users-api", "catalog-api", "storefront-web"]
    for n, service in enumerate(services):
        for m, check in enumerate(("has-owner", "readme-present", "oncall-configured", "log4j-vulnerability")):
            row = new_result(store, check, service, now=now) if _targets(store, check, service) else None
            if row:
                answer(store, row["id"], outcomes[(n + m) % len(outcomes)], now=now)
    incremental = {(r["service"], r["level"], tuple(sorted(r["checks"].items()))) for r in store.scorecards.levels()}
    assert scorecards.evaluate_all(store, now) == []
    assert {(r["service"], r["level"], tuple(sorted(r["checks"].items()))) for r in store.scorecards.levels()} == incremental


def _targets(store, check: str, service: str) -> bool:
    check_id = store.catalog.check_index()[check]["id"]
    return (check_id, store.catalog.service_index()[service]["id"]) in store.dispatch.targeted_pairs(check_ids=[check_id])


def test_a_sync_that_changes_services_only_leaves_the_levels_a_full_evaluation_gives(synced_store, example_dir):
    """A sync of service files re-evaluates those services alone; the levels must equal a full evaluation:
    a service that leaves a scorecard's targets loses its row, one that enters gets one, a new one is counted."""
    store, now = synced_store, datetime.now(timezone.utc)
    for check in ("has-owner", "readme-present", "oncall-configured", "log4j-vulnerability"):
        for service in ("payments-db", "catalog-api"):
            if _targets(store, check, service):
                finished_result(store, check, service, "pass", now=now)
    before = levels_of(store)
    assert "payments-db" in before
    services = example_dir / "services"
    db_file = services / "payments-db.yaml"
    db_file.write_text(db_file.read_text().replace("priority: 1", "priority: 4"))  # out of max_priority: 3
    api_file = services / "catalog-api.yaml"
    api_file.write_text(api_file.read_text().replace("tags: [customer-facing]", "tags: [customer-facing, pci]"))
    (services / "ledger-replica.yaml").write_text(
        "name: Ledger Replica\npriority: 2\ntype: database\nowner: team-payments\ndescription: A read replica.\n")
    report = sync_directory(store, example_dir)
    assert report.outcome == "applied" and {c.kind for c in report.plan.changes} == {"service"}
    synced = {(r["rubric"], r["service"], r["level"], tuple(sorted(r["checks"].items()))) for r in store.scorecards.levels()}
    assert "payments-db" not in levels_of(store) and "ledger-replica" in levels_of(store)
    assert scorecards.evaluate_all(store, now) == []  # a full evaluation changes nothing
    assert {(r["rubric"], r["service"], r["level"], tuple(sorted(r["checks"].items())))
            for r in store.scorecards.levels()} == synced


def _row(store, service: str, rubric: str = "production-readiness") -> dict:
    return next(r for r in store.scorecards.levels(rubric=rubric) if r["service"] == service)


def _full_evaluation_agrees(store, now: datetime) -> None:
    rows = {(r["rubric"], r["service"], r["level"], tuple(sorted(r["checks"].items()))) for r in store.scorecards.levels()}
    assert scorecards.evaluate_all(store, now) == []
    assert {(r["rubric"], r["service"], r["level"], tuple(sorted(r["checks"].items())))
            for r in store.scorecards.levels()} == rows


def test_an_answer_that_changes_no_state_writes_nothing_yet_staleness_and_a_flip_still_move_the_level(synced_store):
    store = synced_store
    now = datetime(2027, 3, 1, 12, 0, tzinfo=timezone.utc)
    for check in ("has-owner", "readme-present", "oncall-configured", "log4j-vulnerability"):
        finished_result(store, check, "payments-api", "pass", now=now)
    assert _row(store, "payments-api")["level"] == 3
    written = raw_rows(store, "SELECT updated_at, valid_until FROM scorecard_levels WHERE rubric = 'production-readiness'"
                              " AND service_id = ?", (store.catalog.service_index()["payments-api"]["id"],))
    # a pass after a pass: the state is met as before, and valid_until stays the earliest end: no write
    finished_result(store, "has-owner", "payments-api", "pass", now=now + timedelta(minutes=50))
    assert raw_rows(store, "SELECT updated_at, valid_until FROM scorecard_levels WHERE rubric = 'production-readiness'"
                           " AND service_id = ?", (store.catalog.service_index()["payments-api"]["id"],)) == written
    _full_evaluation_agrees(store, now + timedelta(minutes=50))
    # has-owner (hourly, 30 min timeout) went stale at 13:30 for the first result, not for the second:
    # the row asks for a look at 13:30 (early, never late), and the level holds on the newer result
    assert scorecards.refresh_due(store, now + timedelta(hours=1, minutes=31)) == []
    assert _row(store, "payments-api")["checks"]["has-owner"] == "met"
    # past the newer result's end too: stale, and the level falls
    later = now + timedelta(hours=2, minutes=21)
    changes = scorecards.refresh_due(store, later)
    assert [(c.before, c.after) for c in changes] == [(3, 0)]
    assert _row(store, "payments-api")["checks"]["has-owner"] == "stale"
    # a flip: a failing answer, then a passing one
    finished_result(store, "has-owner", "payments-api", "fail", now=later)
    assert (_row(store, "payments-api")["level"], _row(store, "payments-api")["checks"]["has-owner"]) == (0, "failing")
    finished_result(store, "has-owner", "payments-api", "pass", now=later)
    assert (_row(store, "payments-api")["level"], _row(store, "payments-api")["checks"]["has-owner"]) == (3, "met")
    _full_evaluation_agrees(store, later)


def test_an_answer_builds_on_a_level_row_another_connection_rewrote(synced_store, database_url):
    """The answer hook may keep a connection's level rows between transactions (SQLite): a row another
    connection rewrote meanwhile (here the leader's refresh on a second replica) must be read anew."""
    store = synced_store
    now = datetime(2027, 3, 1, 12, 0, tzinfo=timezone.utc)
    finished_result(store, "has-owner", "payments-api", "pass", now=now)
    assert _row(store, "payments-api")["checks"]["has-owner"] == "met"
    replica = open_database(database_url)
    try:
        later = now + timedelta(hours=2)
        assert [(c.before, c.after) for c in scorecards.refresh_due(replica, later)] == []  # level 0 either way
        assert _row(replica, "payments-api")["checks"]["has-owner"] == "stale"
    finally:
        replica.close()
    finished_result(store, "readme-present", "payments-api", "pass", now=later)
    row = _row(store, "payments-api")
    assert (row["level"], row["checks"]["has-owner"], row["checks"]["readme-present"]) == (0, "stale", "met")
    _full_evaluation_agrees(store, later)


def test_a_rolled_back_answer_leaves_no_trace_in_the_levels_the_next_answer_builds_on(synced_store):
    store = synced_store
    now = datetime(2027, 3, 1, 12, 0, tzinfo=timezone.utc)
    finished_result(store, "readme-present", "payments-api", "pass", now=now)  # the row is read and written here
    result = new_result(store, "has-owner", "payments-api", now=now)
    with pytest.raises(RuntimeError):
        with store.transaction() as session:
            completed = store.dialect.complete_results(session, [(result["id"], "pass", None, None, format_time(now))])
            assert scorecards.after_answers(store, session, completed.values(), now)  # Bronze, then undone
            raise RuntimeError("the transaction fails after the hook wrote")
    assert (_row(store, "payments-api")["level"], _row(store, "payments-api")["checks"]["has-owner"]) == (0, "missing")
    finished_result(store, "oncall-configured", "payments-api", "pass", now=now)
    row = _row(store, "payments-api")
    assert (row["level"], row["checks"]["has-owner"], row["checks"]["oncall-configured"]) == (0, "missing", "met")
    _full_evaluation_agrees(store, now)
