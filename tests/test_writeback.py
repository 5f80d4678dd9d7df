"""Write-back to git: history lines, summaries, commits, push races, crashes and tampering."""

from __future__ import annotations

import hashlib
import json
import os
import sqlite3
import subprocess
import sys
import threading
from datetime import timedelta
from pathlib import Path

import pytest
import yaml

from reconciler.clock import FakeClock, format_time
from reconciler.errors import WritebackError
from reconciler.settings import Settings
from reconciler.store import Database, open_database
from reconciler.writeback import _remember, resolve_target, writeback_pass

from conftest import sync_directory
from store_support import answer
from store_support import new_result

GIT = ["git", "-c", "user.name=Someone Else", "-c", "user.email=else@example.com"]


def git(*args: str, cwd: Path | None = None) -> str:
    return subprocess.run([*GIT, *args], cwd=cwd, check=True, capture_output=True, text=True).stdout


@pytest.fixture
def remote(tmp_path: Path) -> Path:
    path = tmp_path / "remote.git"
    git("init", "-q", "--bare", str(path))
    return path


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


def settings_for(tmp_path: Path, repo: Path | str, home: str = "home") -> Settings:
    return Settings(home=tmp_path / home, repo=str(repo))


def finish(store: Database, clock: FakeClock, check: str, service: str | None, result: str = "pass", **fields) -> dict:
    """A result created and completed through the store's own primitives."""
    row = new_result(store, check, service, now=clock.now(), revision=fields.pop("revision", "rev-1"))
    return answer(store, row["id"], result, now=clock.now(), **fields)


def remote_lines(remote: Path, path: str, branch: str = "catalog-results") -> list[str]:
    return git("--git-dir", str(remote), "show", f"{branch}:{path}").splitlines()


def history_ids_in_log(remote: Path, branch: str = "catalog-results") -> list[int]:
    """Every result id added by any commit of `git log -p -- results/history`, in order."""
    log = git("--git-dir", str(remote), "log", "-p", "--reverse", "--format=", branch, "--", "results/history")
    return [json.loads(line[1:])["id"] for line in log.splitlines() if line.startswith("+{")]


def day_file(clock: FakeClock) -> str:
    now = clock.now()
    return f"results/history/{now:%Y/%m/%d}.jsonl"


def test_history_lines_match_the_store_exactly(synced_store, remote, tmp_path, clock):
    first = finish(synced_store, clock, "has-owner", "payments-api", "pass", message="owner: team-payments", url="https://ci/1")
    second = finish(synced_store, clock, "has-owner", "users-api", "fail", message='no owner | "quoted"\nline two')
    audit = finish(synced_store, clock, "github-org-audit", None, "warning")
    clock.advance(timedelta(days=1))
    failed = new_result(synced_store, "readme-present", "storefront-web", now=clock.now(), revision="rev-2")
    synced_store.dispatch.mark_failed_many([failed["id"]], "repository not found", now=format_time(clock.now()))
    report = writeback_pass(synced_store, settings_for(tmp_path, remote), clock=clock)

    assert report.pushed and report.written == [first["id"], second["id"], audit["id"], failed["id"]]
    day_one = [json.loads(line) for line in remote_lines(remote, "results/history/2026/01/05.jsonl")]
    raw_lines = remote_lines(remote, "results/history/2026/01/05.jsonl")
    assert day_one[0]["prev"] == "0" * 64  # the ledger: each line names the sha256 of the one before it
    assert day_one[1].pop("prev") == hashlib.sha256(raw_lines[0].encode()).hexdigest()
    assert day_one[1] == {
        "id": second["id"], "check": "has-owner", "service": "users-api", "status": "completed", "result": "fail",
        "message": 'no owner | "quoted"\nline two', "url": None, "created": second["created_at"],
        "finished": second["finished_at"], "revision": "rev-1", "trigger": "ad-hoc",
    }
    assert [line["id"] for line in day_one] == [first["id"], second["id"], audit["id"]]
    assert day_one[2]["service"] is None and day_one[0]["url"] == "https://ci/1"
    day_two = [json.loads(line) for line in remote_lines(remote, "results/history/2026/01/06.jsonl")]
    assert [(d["id"], d["status"], d["result"], d["revision"]) for d in day_two] == [(failed["id"], "error", "unknown", "rev-2")]
    raw = remote_lines(remote, "results/history/2026/01/05.jsonl")[0]
    assert raw == json.dumps(json.loads(raw), sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    assert synced_store.writeback.writes(report.written) == {rid: report.commit for rid in report.written}
    assert synced_store.writeback.queue_size() == 0


def test_nothing_new_makes_no_commit(synced_store, remote, tmp_path, clock):
    finish(synced_store, clock, "has-owner", "payments-api")
    settings = settings_for(tmp_path, remote)
    writeback_pass(synced_store, settings, clock=clock)
    head = git("--git-dir", str(remote), "rev-parse", "catalog-results")
    again = writeback_pass(synced_store, settings, clock=clock)
    assert again.commits == [] and again.written == [] and not again.findings
    assert git("--git-dir", str(remote), "rev-parse", "catalog-results") == head


def test_commit_is_by_the_bot_and_names_every_result_id(synced_store, remote, tmp_path, clock):
    ids = [finish(synced_store, clock, "has-owner", slug)["id"] for slug in ("payments-api", "users-api", "users-db")]
    writeback_pass(synced_store, settings_for(tmp_path, remote), clock=clock)
    log = git("--git-dir", str(remote), "log", "--format=%an|%s|%b", "catalog-results")
    author, subject, body = log.split("|", 2)
    assert author == Settings.bot_name and subject == "Record 3 health check results"
    head = json.loads(git("--git-dir", str(remote), "show", "catalog-results:results/ledger.json"))["head"]
    assert body.split() == ["Result", "ids:", *map(str, ids), "Ledger-Head:", head]
    # an orphan branch: its one commit has no parent
    assert git("--git-dir", str(remote), "rev-list", "--count", "catalog-results").strip() == "1"


def test_summaries_and_readme_show_the_latest_result(synced_store, remote, tmp_path, clock):
    finish(synced_store, clock, "has-owner", "payments-api", "fail")
    clock.advance(60)
    latest = finish(synced_store, clock, "has-owner", "payments-api", "pass", message="fixed")
    finish(synced_store, clock, "log4j-vulnerability", "payments-api", "warning")
    writeback_pass(synced_store, settings_for(tmp_path, remote), clock=clock)

    service = yaml.safe_load("\n".join(remote_lines(remote, "results/services/payments-api.yaml")))
    assert service["checks"]["has-owner"]["id"] == latest["id"] and service["checks"]["has-owner"]["message"] == "fixed"
    assert service["counts"] == {"pass": 1, "warning": 1}
    check = yaml.safe_load("\n".join(remote_lines(remote, "results/checks/has-owner.yaml")))
    assert check["services"]["payments-api"]["outcome"] == "pass"
    readme = remote_lines(remote, "results/README.md")
    row = next(line for line in readme if line.startswith("| [payments-api](services/payments-api.yaml)"))
    header = next(line for line in readme if line.startswith("| Service |"))
    cells = dict(zip([c.strip() for c in header.split("|")[2:-1]], [c.strip() for c in row.split("|")[2:-1]]))
    assert cells["[has-owner](checks/has-owner.yaml)"] == "✅"
    assert cells["[log4j-vulnerability](checks/log4j-vulnerability.yaml)"] == "⚠️"


def test_a_concurrent_push_from_elsewhere_is_survived(synced_store, remote, tmp_path, clock):
    finish(synced_store, clock, "has-owner", "payments-api")
    settings = settings_for(tmp_path, remote)
    writeback_pass(synced_store, settings, clock=clock)
    second = finish(synced_store, clock, "has-owner", "users-api")
    # Someone else pushes between our fetch and our push: git's own pre-push hook does it, once.
    other = tmp_path / "other"
    git("clone", "-q", "--branch", "catalog-results", str(remote), str(other))
    hook = settings.home / "writeback" / "hooks" / "pre-push"
    hook.write_text(
        f"#!/bin/sh\nunset GIT_DIR\n[ -e {tmp_path}/raced ] && exit 0\ntouch {tmp_path}/raced\n"
        f"cd {other} && echo hello > results/NOTES.md && git add results/NOTES.md"
        " && git -c user.name=x -c user.email=x@x commit -qm notes && git push -q origin HEAD\n"
    )
    hook.chmod(0o755)
    report = writeback_pass(synced_store, settings, clock=clock)

    assert report.pushed and report.push_retries == 1 and clock.slept and report.written == [second["id"]]
    assert remote_lines(remote, "results/NOTES.md") == ["hello"]
    assert history_ids_in_log(remote) == [1, second["id"]]
    assert not report.findings


def test_unreachable_remote_then_reachable_writes_every_result_once(synced_store, remote, tmp_path, clock):
    ids = [finish(synced_store, clock, "has-owner", slug)["id"] for slug in ("payments-api", "users-api")]
    settings = settings_for(tmp_path, f"file://{remote}")
    hidden = tmp_path / "elsewhere.git"
    remote.rename(hidden)
    with pytest.raises(WritebackError, match="cannot reach .*stay queued"):
        writeback_pass(synced_store, settings, clock=clock)
    assert synced_store.writeback.queue_size() == 2 and synced_store.writeback.writes(ids) == {}
    ids.append(finish(synced_store, clock, "has-owner", "users-db")["id"])
    hidden.rename(remote)
    report = writeback_pass(synced_store, settings, clock=clock)
    assert report.written == ids and history_ids_in_log(remote) == ids


def test_crash_between_push_and_mark_never_writes_a_line_twice(example_dir, remote, tmp_path, clock):
    """SQLite only: a file copy taken before the pass and put back after it is the crash (PostgreSQL's
    commits cannot be undone from outside; its write-back runs the same code)."""
    from conftest import sync_directory

    synced_store = open_database(tmp_path / "sqlite" / "catalog.db")
    sync_directory(synced_store, example_dir)
    ids = [finish(synced_store, clock, "has-owner", slug)["id"] for slug in ("payments-api", "users-api")]
    settings = settings_for(tmp_path, remote)
    # The database as it was before the pass: restoring it is the crash right after the push.
    before = tmp_path / "before.db"
    live = sqlite3.connect(synced_store.backend.path)
    with sqlite3.connect(before) as copy:
        live.backup(copy)
    pushed = writeback_pass(synced_store, settings, clock=clock)
    source = sqlite3.connect(before)
    source.backup(live)
    source.close()
    live.close()
    crashed = synced_store
    assert crashed.writeback.queue_size() == 2

    report = writeback_pass(crashed, settings, clock=clock)
    assert report.written == ids and report.appended == 0 and report.commits == []
    assert crashed.writeback.writes(ids) == {rid: pushed.commit for rid in ids}
    assert history_ids_in_log(remote) == ids and crashed.writeback.queue_size() == 0


def test_two_racing_passes_on_one_remote_lose_and_duplicate_nothing(synced_store, remote, tmp_path):
    clock = FakeClock()
    slugs = [s["slug"] for s in synced_store.reads.services() if s["active"]]
    ids = [finish(synced_store, clock, "has-owner", slug)["id"] for slug in slugs]
    start, errors = threading.Barrier(2), []

    def run(home: str) -> None:
        start.wait()
        try:
            writeback_pass(synced_store, settings_for(tmp_path, remote, home))
        except Exception as error:  # collected: an assertion in a thread would be lost
            errors.append(error)

    threads = [threading.Thread(target=run, args=(home,)) for home in ("one", "two")]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    assert sorted(history_ids_in_log(remote)) == ids
    assert set(synced_store.writeback.writes(ids)) == set(ids) and synced_store.writeback.queue_size() == 0


def test_a_tampered_line_is_reported_and_not_overwritten(synced_store, remote, tmp_path, clock):
    ids = [finish(synced_store, clock, "has-owner", slug)["id"] for slug in ("payments-api", "users-api")]
    settings = settings_for(tmp_path, remote)
    writeback_pass(synced_store, settings, clock=clock)
    work = tmp_path / "tamper"
    git("clone", "-q", "--branch", "catalog-results", str(remote), str(work))
    history = work / day_file(clock)
    lines = history.read_text().splitlines()
    lines[1] = lines[1].replace('"result":"pass"', '"result":"fail"')
    history.write_text("\n".join(lines) + "\n")
    git("commit", "-qam", "nothing to see here", cwd=work)
    git("push", "-q", "origin", "HEAD", cwd=work)

    later = finish(synced_store, clock, "has-owner", "users-db")
    report = writeback_pass(synced_store, settings, clock=clock)
    assert [(f.result_id, f.path) for f in report.findings] == [(ids[1], day_file(clock))]
    assert "changed or removed after it was pushed" in str(report.findings[0])
    on_remote = remote_lines(remote, day_file(clock))
    assert on_remote[:2] == lines[:2] and json.loads(on_remote[2])["id"] == later["id"]
    [kept] = synced_store.state.get("writeback_findings")
    assert kept["result_id"] == ids[1] and kept["found_at"] == format_time(clock.now())  # status says when
    assert writeback_pass(synced_store, settings, clock=clock).findings == []  # reported once, kept in state
    [event] = synced_store.events.list(type="tamper-detected")  # recorded with the finding, once
    assert event["result_id"] == ids[1] and "changed or removed after it was pushed" in event["summary"]
    clock.advance(60)  # found again later (a branch pushed back as it was): one entry, with the later time
    _remember(synced_store, report.findings, None, resolve_target(synced_store, settings), clock)
    assert [f["found_at"] for f in synced_store.state.get("writeback_findings")] == [format_time(clock.now())]


def test_a_deleted_branch_is_restored_but_another_repository_is_not_given_the_old_ones_history(
        synced_store, remote, tmp_path, clock):
    """The branch deleted on its remote is restored from what this store last saw (a finding). CATALOG_REPO
    switched to another repository, which has no such branch, is refused: the write-back said the branch
    had been deleted, and pushed the old repository's whole results history, messages included, there."""
    first = finish(synced_store, clock, "has-owner", "payments-api", "fail", message="internal finding")
    writeback_pass(synced_store, settings_for(tmp_path, remote), clock=clock)
    git("--git-dir", str(remote), "branch", "-D", "catalog-results")
    finish(synced_store, clock, "has-owner", "users-api")
    restored = writeback_pass(synced_store, settings_for(tmp_path, remote), clock=clock)
    assert [str(f) for f in restored.findings] == [f"branch catalog-results was deleted on the remote; restoring it from {restored.findings[0].message.rsplit(' ', 1)[1]}"]
    assert json.loads(remote_lines(remote, day_file(clock))[0])["id"] == first["id"]

    other = tmp_path / "other.git"
    git("init", "-q", "--bare", str(other))
    later = finish(synced_store, clock, "has-owner", "users-db")
    with pytest.raises(WritebackError, match=(
            f"branch catalog-results was last written to {remote}; the write-back repository is now {other},"
            " which has no such branch: the results history is not copied there, and 1 results stay queued")):
        writeback_pass(synced_store, settings_for(tmp_path, other), clock=clock)
    assert git("--git-dir", str(other), "branch", "--list") == ""
    assert synced_store.writeback.queue_size() == 1 and synced_store.events.list(type="tamper-detected") != []
    # pushed there by the operator (the repository's new home): the next pass goes on from it
    git("--git-dir", str(remote), "push", "-q", str(other), "catalog-results")
    moved = writeback_pass(synced_store, settings_for(tmp_path, other), clock=clock)
    assert moved.findings == [] and moved.written == [later["id"]]


def test_a_forged_line_appended_on_the_remote_is_reported(synced_store, remote, tmp_path, clock):
    finish(synced_store, clock, "has-owner", "payments-api")
    settings = settings_for(tmp_path, remote)
    writeback_pass(synced_store, settings, clock=clock)
    work = tmp_path / "forge"
    git("clone", "-q", "--branch", "catalog-results", str(remote), str(work))
    with open(work / day_file(clock), "a") as history:
        history.write('{"id":999,"result":"pass"}\n')
    git("commit", "-qam", "add a result", cwd=work)
    git("push", "-q", "origin", "HEAD", cwd=work)
    report = writeback_pass(synced_store, settings, clock=clock)
    assert [f.result_id for f in report.findings] == [999]


def test_a_plain_directory_catalog_writes_to_a_local_bare_repository(synced_store, example_dir, tmp_path, clock):
    result = finish(synced_store, clock, "has-owner", "payments-api")
    settings = settings_for(tmp_path, example_dir)
    report = writeback_pass(synced_store, settings, clock=clock)
    fallback = settings.home / "results.git"
    assert report.local_fallback and report.remote == str(fallback.resolve())
    assert "not a git repository" in report.lines()[0]
    assert history_ids_in_log(fallback) == [result["id"]]
    assert not (example_dir / "results").exists()


def test_no_push_commits_locally_and_marks_nothing(synced_store, remote, tmp_path, clock):
    result = finish(synced_store, clock, "has-owner", "payments-api")
    settings = settings_for(tmp_path, remote)
    report = writeback_pass(synced_store, settings, push=False, clock=clock)
    assert report.commit and not report.pushed and report.remaining == 1
    assert synced_store.writeback.writes([result["id"]]) == {}
    assert git("--git-dir", str(remote), "branch", "--list").strip() == ""
    local = settings.home / "writeback"
    assert history_ids_in_log(local) == [result["id"]]
    assert writeback_pass(synced_store, settings, clock=clock).written == [result["id"]]
    assert history_ids_in_log(remote) == [result["id"]]


def test_batches_commit_and_push_one_by_one(synced_store, remote, tmp_path, clock):
    ids = [finish(synced_store, clock, "has-owner", slug)["id"] for slug in [s["slug"] for s in synced_store.reads.services() if s["active"]][:5]]
    report = writeback_pass(synced_store, settings_for(tmp_path, remote), clock=clock, batch_size=2)
    assert len(report.commits) == 3 and report.written == ids and history_ids_in_log(remote) == ids


def test_the_synced_branch_itself_can_hold_the_results(store, example_dir, tmp_path, clock):
    config = example_dir / "catalog.yaml"
    config.write_text(config.read_text().replace("branch: catalog-results", "branch: main"))
    git("init", "-q", "-b", "main", cwd=example_dir)
    git("add", "-A", cwd=example_dir)
    git("commit", "-qm", "catalog", cwd=example_dir)
    remote = tmp_path / "catalog.git"
    git("clone", "-q", "--bare", str(example_dir), str(remote))
    sync_directory(store, example_dir)
    result = finish(store, clock, "has-owner", "payments-api")
    report = writeback_pass(store, settings_for(tmp_path, remote), clock=clock)
    assert report.branch == "main" and report.pushed
    files = git("--git-dir", str(remote), "ls-tree", "-r", "--name-only", "main").split()
    assert "services/payments-api.yaml" in files and "catalog.yaml" in files
    assert history_ids_in_log(remote, "main") == [result["id"]]


def test_a_new_writeback_branch_starts_without_a_tampering_alarm(store, example_dir, remote, tmp_path, clock):
    """Changing writeback.branch is a plain start of the new branch: it was taken for the old one deleted."""
    sync_directory(store, example_dir)
    finish(store, clock, "has-owner", "payments-api")
    assert writeback_pass(store, settings_for(tmp_path, remote), clock=clock).findings == []
    config = example_dir / "catalog.yaml"
    config.write_text(config.read_text().replace("branch: catalog-results", "branch: audit-results"))
    sync_directory(store, example_dir)
    result = finish(store, clock, "has-owner", "users-api")
    report = writeback_pass(store, settings_for(tmp_path, remote), clock=clock)
    assert report.branch == "audit-results" and report.pushed and report.findings == []
    assert store.events.list(type="tamper-detected") == []
    assert history_ids_in_log(remote, "audit-results") == [result["id"]]


def cli(*args: str, home: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "CATALOG_HOME": str(home)}
    return subprocess.run([sys.executable, "-m", "reconciler.cli", *args], capture_output=True, text=True, env=env)


def test_cli_writeback_reports_the_pass_and_errors_as_one_line(example_dir, remote, tmp_path, clock):
    home = tmp_path / "home"
    store = open_database(home / "catalog.db")
    sync_directory(store, example_dir)
    finish(store, clock, "has-owner", "payments-api")
    missing = cli("writeback", "--repo", str(tmp_path / "missing"), home=home)
    assert missing.returncode == 1 and missing.stderr.count("\n") == 1
    assert "does not exist" in missing.stderr and store.writeback.queue_size() == 1

    done = cli("writeback", "--repo", str(remote), home=home)
    assert done.returncode == 0, done.stderr
    assert "recorded 1 results" in done.stdout and store.writeback.queue_size() == 0


def test_summary_files_are_yaml_that_keeps_any_message_intact(synced_store, remote, tmp_path, clock):
    message = 'colon: "quotes" # not a comment\n- dash\u2028sep \x85 nel \x7f del ✅ {braces} [x]'
    finish(synced_store, clock, "has-owner", "payments-api", "fail", message=message)
    writeback_pass(synced_store, settings_for(tmp_path, remote), clock=clock)
    raw = git("--git-dir", str(remote), "show", "catalog-results:results/services/payments-api.yaml")
    service = yaml.safe_load(raw)
    assert service["checks"]["has-owner"]["message"] == message and service["counts"] == {"fail": 1}
    history = json.loads(remote_lines(remote, day_file(clock))[0])
    assert history["message"] == message


def test_scorecard_levels_are_written_back_beside_the_results(synced_store, remote, tmp_path, clock):
    for check in ("has-owner", "readme-present", "oncall-configured"):
        finish(synced_store, clock, check, "payments-api", "pass")
    finish(synced_store, clock, "has-owner", "search-index", "pass")  # log4j waived for it
    writeback_pass(synced_store, settings_for(tmp_path, remote), clock=clock)

    card = yaml.safe_load("\n".join(remote_lines(remote, "results/scorecards/production-readiness.yaml")))
    assert card["levels"] == ["Bronze", "Silver", "Gold"]
    assert card["services"]["payments-api"] == {"level": "Silver", "checks": {"log4j-vulnerability": "missing"}}
    assert card["services"]["search-index"] == {"level": "Gold", "checks": {"log4j-vulnerability": "waived"}}
    assert card["counts"]["Gold"] == 1 and "legacy-reports" not in card["services"]  # priority 8: not in it
    readme = remote_lines(remote, "results/README.md")
    header = next(line for line in readme if line.startswith("| Service |"))
    rows = {line.split("|")[1].strip(): line for line in readme if line.startswith("| [")}
    columns = [c.strip() for c in header.split("|")[2:-1]]
    cells = lambda slug: dict(zip(columns, [c.strip() for c in rows[f"[{slug}](services/{slug}.yaml)"].split("|")[2:-1]]))  # noqa: E731
    level = "[Production readiness](scorecards/production-readiness.yaml)"
    assert columns[0] == level
    assert cells("payments-api")[level] == "Silver" and cells("admin-console")[level] == "-"
