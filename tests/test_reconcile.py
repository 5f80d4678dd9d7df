"""Reconcile semantics (DESIGN.md section 3) on real directories, real git repositories and real SQLite."""

from __future__ import annotations

import shutil
from datetime import datetime, timezone

import pytest

from conftest import sync_directory, write_catalog
from reconciler.clock import FakeClock
from reconciler.errors import SyncRefused
from reconciler.gitsource import DirectorySource, GitSource
from reconciler.reconcile import make_plan, sync

NOW = datetime(2026, 1, 5, 12, 0, tzinfo=timezone.utc)


def _service(store, slug):
    return store.connection.execute("SELECT * FROM services WHERE slug = ?", (slug,)).fetchone()


def test_plan_lists_creates_without_applying(store, example_dir):
    plan = make_plan(store, DirectorySource(example_dir))
    assert plan.count("create") == 17 and plan.count("update") == plan.count("remove") == 0
    assert "+ service payments-api  [services/payments-api.yaml]" in [str(c) for c in plan.changes]
    assert store.catalog_counts()["services"] == 0  # nothing applied


def test_plan_shows_update_and_remove(synced_store, example_dir):
    (example_dir / "services" / "users-db.yaml").unlink()
    text = (example_dir / "services" / "payments-api.yaml").read_text()
    (example_dir / "services" / "payments-api.yaml").write_text(text.replace("priority: 1", "priority: 2"))
    (example_dir / "services" / "payments-api.yaml").write_text(
        (example_dir / "services" / "payments-api.yaml").read_text()
    )
    # users-db is a dependency of others: remove those edges too so the catalog stays valid
    for path in (example_dir / "services").glob("*.yaml"):
        path.write_text(path.read_text().replace(", users-db", "").replace("users-db, ", "").replace("[users-db]", "[]"))
    plan = make_plan(synced_store, DirectorySource(example_dir))
    assert not plan.errors, plan.errors
    changes = {(c.slug, c.action) for c in plan.changes}
    assert ("users-db", "remove") in changes and ("payments-api", "update") in changes
    payments = next(c for c in plan.changes if c.slug == "payments-api")
    assert payments.fields == ["definition"]


def test_apply_writes_every_field(synced_store):
    row = _service(synced_store, "payments-api")
    assert (row["name"], row["priority"], row["owner"], row["type"]) == ("Payments API", 1, "team-payments", "web")
    check = synced_store.connection.execute("SELECT * FROM checks WHERE slug = 'oncall-configured'").fetchone()
    assert check["schedule"] == "0 9 * * 1-5" and check["frequency"] is None and check["timeout_seconds"] == 7200
    targets = synced_store.connection.execute(
        "SELECT service_slug FROM check_targets WHERE check_id = ? ORDER BY service_slug", (check["id"],)
    ).fetchall()
    assert [t["service_slug"] for t in targets] == ["catalog-api", "payments-api", "storefront-web", "users-api"]
    default = synced_store.connection.execute("SELECT * FROM checks WHERE slug = 'github-org-audit'").fetchone()
    assert default["target_kind"] == "none" and default["timeout_seconds"] == 6 * 3600  # catalog.yaml default


def test_bad_file_keeps_last_good_state_and_blocks_nothing(synced_store, example_dir):
    (example_dir / "checks" / "has-owner.yaml").write_text("name: Has an owner\nslug: has-owner\nfrequency: often\n")
    _set_priority(example_dir / "services" / "users-db.yaml", 4)
    report = sync_directory(synced_store, example_dir)
    assert report.outcome == "applied"
    assert [str(e) for e in report.errors] == [
        "checks/has-owner.yaml:3:12: frequency: must be one of 'hourly', 'daily', 'weekly' or 'ad-hoc'"
    ]
    check = synced_store.connection.execute("SELECT * FROM checks WHERE slug = 'has-owner'").fetchone()
    assert check["frequency"] == "hourly" and check["removed_at"] is None and "frequency" in check["error"]
    assert _service(synced_store, "users-db")["priority"] == 4
    # fixed: the error mark goes away
    (example_dir / "checks" / "has-owner.yaml").write_text("name: Has an owner\nslug: has-owner\nfrequency: daily\n")
    report = sync_directory(synced_store, example_dir)
    assert report.errors == []
    check = synced_store.connection.execute("SELECT * FROM checks WHERE slug = 'has-owner'").fetchone()
    assert check["frequency"] == "daily" and check["error"] is None


def test_deleting_a_file_soft_deletes_and_keeps_results(synced_store, example_dir):
    service = _service(synced_store, "legacy-reports")
    check = synced_store.connection.execute("SELECT id FROM checks WHERE slug = 'has-owner'").fetchone()
    result = synced_store.create_result(check["id"], service["id"], now=NOW)
    synced_store.complete_result(result["id"], "fail", now=NOW)
    (example_dir / "services" / "legacy-reports.yaml").unlink()
    report = sync_directory(synced_store, example_dir, clock=FakeClock(NOW))
    assert report.plan.count("remove") == 1
    row = _service(synced_store, "legacy-reports")
    assert row["removed_at"] == "2026-01-05T12:00:00.000000Z"
    assert synced_store.get_result(result["id"])["result"] == "fail"
    # coming back revives the same row: same id, results still attached
    write_catalog(example_dir, services=[{"name": "Legacy reports", "slug": "legacy-reports", "priority": 9}])
    sync_directory(synced_store, example_dir)
    again = _service(synced_store, "legacy-reports")
    assert again["id"] == service["id"] and again["removed_at"] is None


def test_moving_a_file_changes_nothing(synced_store, example_dir):
    before = _service(synced_store, "payments-api")
    (example_dir / "services" / "team-payments").mkdir()
    (example_dir / "services" / "payments-api.yaml").rename(example_dir / "services" / "team-payments" / "api.yaml")
    report = sync_directory(synced_store, example_dir)
    assert [(c.slug, c.action, c.fields) for c in report.plan.changes] == [("payments-api", "update", ["path"])]
    after = _service(synced_store, "payments-api")
    assert after["id"] == before["id"] and after["digest"] == before["digest"]
    assert after["path"] == "services/team-payments/api.yaml" and after["created_at"] == before["created_at"]


def test_removing_more_than_half_is_refused_then_allowed(synced_store, example_dir):
    revision = synced_store.get_state("applied_revision")
    for name in ("users-db", "search-index", "ledger-worker", "notifications-worker", "admin-console", "legacy-reports"):
        (example_dir / "services" / f"{name}.yaml").unlink()
    for path in (example_dir / "services").glob("*.yaml"):  # drop dependencies on them
        path.write_text("\n".join(line for line in path.read_text().splitlines() if not line.startswith("dependencies")) + "\n")
    with pytest.raises(SyncRefused, match="refusing to remove 6 of 11 services"):
        sync_directory(synced_store, example_dir)
    assert synced_store.catalog_counts()["services"] == 11
    assert synced_store.get_state("applied_revision") == revision
    assert synced_store.sync_runs(1)[0]["outcome"] == "refused"
    report = sync_directory(synced_store, example_dir, allow_mass_removal=True)
    assert report.outcome == "applied" and synced_store.catalog_counts()["services"] == 5


def test_a_writeback_path_over_checks_cannot_remove_every_check_unasked(synced_store, example_dir):
    config = example_dir / "catalog.yaml"
    config.write_text(config.read_text().replace("path: results/", "path: checks/"))
    sync_directory(synced_store, example_dir)  # the new write-back path applies from the next sync
    _set_priority(example_dir / "services" / "users-db.yaml", 4)
    with pytest.raises(SyncRefused, match="refusing to remove 6 of 6 checks"):
        sync_directory(synced_store, example_dir)
    assert synced_store.catalog_counts()["checks"] == 6
    assert synced_store.sync_runs(1)[0]["outcome"] == "refused"
    report = sync_directory(synced_store, example_dir, allow_mass_removal=True)
    assert report.outcome == "applied" and synced_store.catalog_counts()["checks"] == 0


def test_removing_more_than_half_of_the_checks_is_refused(synced_store, example_dir):
    for name in ("has-owner", "readme-present", "log4j-vulnerability", "oncall-configured"):
        (example_dir / "checks" / f"{name}.yaml").unlink()
    with pytest.raises(SyncRefused, match="refusing to remove 4 of 6 checks"):
        sync_directory(synced_store, example_dir)
    (example_dir / "checks" / "has-owner.yaml").write_text("name: Has an owner\nslug: has-owner\n")
    report = sync_directory(synced_store, example_dir)  # three of six: not more than half
    assert report.outcome == "applied" and synced_store.catalog_counts()["checks"] == 3


def test_an_empty_repository_is_refused_not_applied(synced_store, example_dir):
    shutil.rmtree(example_dir / "services")
    shutil.rmtree(example_dir / "checks")
    with pytest.raises(SyncRefused, match="remove 11 of 11"):
        sync_directory(synced_store, example_dir)
    assert synced_store.catalog_counts()["services"] == 11


def test_same_revision_is_no_work(synced_store, example_dir):
    runs = len(synced_store.sync_runs())
    report = sync_directory(synced_store, example_dir)
    assert report.outcome == "unchanged" and report.plan.same_revision
    assert len(synced_store.sync_runs()) == runs


def test_sync_run_is_recorded_with_revisions_counts_duration_errors(synced_store, example_dir):
    first = synced_store.sync_runs(1)[0]
    assert first["outcome"] == "applied" and first["previous_revision"] is None
    assert first["created"] == 17 and first["duration_ms"] > 0 and first["errors"] == []
    (example_dir / "services" / "users-db.yaml").write_text("name: Users DB\npriority: zero\n")
    (example_dir / "services" / "new.yaml").write_text("name: New thing\npriority: 5\n")
    sync_directory(synced_store, example_dir)
    run = synced_store.sync_runs(1)[0]
    assert run["previous_revision"] == first["applied_revision"]
    assert run["attempted_revision"] == run["applied_revision"] != first["applied_revision"]
    assert (run["created"], run["updated"], run["removed"]) == (1, 0, 0)
    assert run["errors"] == [{
        "file": "services/users-db.yaml", "line": 2, "col": 11, "message": "priority: must be a whole number",
    }]


def test_failed_fetch_is_recorded_and_removes_nothing(synced_store, tmp_path):
    from reconciler.errors import SourceError

    with pytest.raises(SourceError):
        sync(synced_store, GitSource(str(tmp_path / "gone.git"), tmp_path / "checkout"))
    assert synced_store.sync_runs(1)[0]["outcome"] == "failed"
    assert synced_store.catalog_counts()["services"] == 11


# -- git: only the changed paths are read; everything when the old revision is unknown -----------


def test_only_changed_paths_are_reread(store, git_catalog, tmp_path):
    source = GitSource(git_catalog.url, tmp_path / "checkout")
    assert sync(store, source).outcome == "applied"
    # corrupt an unchanged file in the checkout, hidden from git: a full re-read would report it
    checkout = tmp_path / "checkout"
    subprocess_git(checkout, "update-index", "--skip-worktree", "services/users-db.yaml")
    (checkout / "services" / "users-db.yaml").write_text("priority: [broken\n")
    _set_priority(git_catalog.work / "services" / "users-api.yaml", 3)
    git_catalog.commit("Lower users-api")
    report = sync(store, source)
    assert report.errors == [] and [c.slug for c in report.plan.changes] == ["users-api"]
    # the same corruption with the old revision unknown (e.g. the store came from elsewhere): reported
    store.set_state("applied_revision", "f" * 40)
    git_catalog.commit("Another commit")
    report = sync(store, source)
    assert [e.location.path for e in report.errors] == ["services/users-db.yaml"]


def test_force_push_reads_everything_again(store, git_catalog, tmp_path):
    source = GitSource(git_catalog.url, tmp_path / "checkout")
    old = sync(store, source).revision
    (git_catalog.work / "services" / "search-index.yaml").unlink()
    for path in (git_catalog.work / "services").glob("*.yaml"):
        path.write_text(path.read_text().replace(", search-index", "").replace("search-index, ", "").replace("[search-index]", "[]"))
    git_catalog.git("add", "--all")
    git_catalog.git("commit", "--quiet", "--amend", "-m", "Rewritten history")
    git_catalog.git("push", "--quiet", "--force", "origin", "HEAD:main")
    git_catalog._run("gc", "--quiet", "--prune=now", cwd=git_catalog.remote)  # the old commit is gone
    fresh = GitSource(git_catalog.url, tmp_path / "fresh-checkout")  # a new clone never saw `old`
    new = fresh.fetch()
    assert fresh.changed_paths(old, new) is None
    report = sync(store, fresh)
    assert report.outcome == "applied" and not report.errors
    assert ("search-index", "remove") in {(c.slug, c.action) for c in report.plan.changes}


def test_writeback_path_is_ignored(store, git_catalog, tmp_path):
    source = GitSource(git_catalog.url, tmp_path / "checkout")
    sync(store, source)
    (git_catalog.work / "results" / "services").mkdir(parents=True)
    (git_catalog.work / "results" / "services" / "x.yaml").write_text("not: a service\n")
    git_catalog.commit("Results")
    report = sync(store, source)
    assert report.outcome == "applied" and report.plan.changes == [] and report.errors == []


def _add_hidden_services(root) -> None:
    (root / "services" / ".hidden").mkdir()
    (root / "services" / ".hidden" / "h.yaml").write_text("name: Hidden\npriority: 1\n")
    (root / "services" / ".dotfile.yaml").write_text("name: Dotfile\npriority: 1\n")
    (root / "checks" / ".drafts").mkdir()
    (root / "checks" / ".drafts" / "c.yaml").write_text("name: Draft\nservices: [nowhere]\n")


def test_hidden_files_and_folders_are_ignored_by_git_sync_directory_sync_and_validate(store, git_catalog, tmp_path):
    from reconciler.store import Store
    from reconciler.validation import validate_directory

    source = GitSource(git_catalog.url, tmp_path / "checkout")
    sync(store, source)
    _add_hidden_services(git_catalog.work)
    git_catalog.commit("Hidden files")
    report = sync(store, source)  # after a git diff
    assert report.outcome == "applied" and report.plan.changes == [] and report.errors == []
    cold = Store(tmp_path / "cold.db")
    report = sync(cold, GitSource(git_catalog.url, tmp_path / "checkout-2"))  # a full read of the clone
    assert report.plan.count("create") == 17 and report.errors == []
    report = sync_directory(Store(tmp_path / "directory.db"), git_catalog.work)
    assert report.plan.count("create") == 17 and report.errors == []
    assert validate_directory(git_catalog.work) == (18, [])


def test_sync_leaves_the_garbage_collector_running_for_the_processes_other_threads(store, tmp_path):
    """`catalog up` syncs in a process that serves requests: gc.disable there would stop them collecting."""
    import gc
    import sys
    import threading

    services = [{"name": f"Svc {n}", "slug": f"svc-{n:03d}", "priority": 1} for n in range(300)]
    root = write_catalog(tmp_path / "catalog", services)
    seen, done = set(), threading.Event()

    def watch() -> None:  # another thread of the process, as the API's are
        while not done.is_set():
            seen.add(gc.isenabled())

    interval = sys.getswitchinterval()
    sys.setswitchinterval(1e-5)  # let the watcher look often while the sync runs
    watcher = threading.Thread(target=watch)
    watcher.start()
    try:
        assert sync_directory(store, root).outcome == "applied"
    finally:
        done.set()
        watcher.join()
        sys.setswitchinterval(interval)
    assert seen == {True}


def _set_priority(path, priority: int) -> None:
    lines = [f"priority: {priority}" if line.startswith("priority:") else line for line in path.read_text().splitlines()]
    path.write_text("\n".join(lines) + "\n")


def subprocess_git(cwd, *args):
    import subprocess

    subprocess.run(["git", *args], cwd=cwd, check=True, capture_output=True)


def test_a_catalog_big_enough_for_two_readers_syncs_as_one_reader_does(tmp_path, monkeypatch):
    """A fresh `catalog sync` process reads 2,100 files in two processes; in-process, one reads them."""
    import os
    import subprocess
    import sys

    from reconciler import loader
    from reconciler.store import Store

    root = tmp_path / "big"
    services = [{"name": f"Svc {n}", "slug": f"svc-{n:04d}", "priority": n % 10 + 1, "owner": f"team-{n % 7}",
                 "tags": ["bench"] if n % 3 else [], "dependencies": [f"svc-{n % 5:04d}"] if n > 4 else []}
                for n in range(2_100)]
    services[1500]["priority"] = 42  # a bad file on the worker's side, and one on this side
    services[10]["ownr"] = "typo"
    write_catalog(root, services, [{"name": "Owned", "slug": "owned", "frequency": "daily", "services": "all"}])
    assert len(loader.list_catalog_files(root)) >= loader.PARALLEL_FROM

    env = {**os.environ, "CATALOG_HOME": str(tmp_path / "forked"), "CATALOG_REPO": str(root)}
    done = subprocess.run([sys.executable, "-m", "reconciler.cli", "sync"], env=env, capture_output=True, text=True)
    assert done.returncode == 3, done.stderr  # applied, with file errors
    monkeypatch.setattr(loader, "PARALLEL_FROM", 10**9)
    serial = Store(tmp_path / "serial.db")
    sync_directory(serial, root)

    forked = Store(tmp_path / "forked" / "catalog.db")
    columns = "slug, name, priority, type, owner, tags, dependencies, meta, path, digest, error, removed_at"
    for sql in (f"SELECT {columns} FROM services ORDER BY slug", "SELECT * FROM checks ORDER BY slug",
                "SELECT * FROM catalog_files ORDER BY path"):
        rows = [{k: v for k, v in row.items() if k not in ("id", "created_at", "updated_at")}
                for row in forked.connection.execute(sql)]
        assert rows == [{k: v for k, v in row.items() if k not in ("id", "created_at", "updated_at")}
                        for row in serial.connection.execute(sql)]
    errors = sorted(row["path"] for row in serial.connection.execute("SELECT path FROM catalog_files WHERE error IS NOT NULL"))
    assert errors == ["services/svc-0010.yaml", "services/svc-1500.yaml"]
