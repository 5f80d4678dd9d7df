"""Reconcile semantics (docs/catalog-yaml.md) on real directories, real git repositories and both backends."""

from __future__ import annotations

import json
import re
import shutil
from datetime import datetime, timezone

import pytest

from conftest import GitCatalog, sync_directory, write_catalog
from reconciler.clock import FakeClock
from reconciler.errors import SyncRefused
from reconciler.gitsource import DirectorySource, GitSource
from reconciler.reconcile import make_plan, sync
from reconciler.store import open_database
from store_support import raw_rows
from store_support import answer
from store_support import new_result
from store_support import read_plans

NOW = datetime(2026, 1, 5, 12, 0, tzinfo=timezone.utc)


def _service(store, slug):
    return raw_rows(store, "SELECT * FROM services WHERE slug = ?", (slug,))[0]


def test_plan_lists_creates_without_applying(store, example_dir):
    plan = make_plan(store, DirectorySource(example_dir))
    assert plan.count("create") == 20 and plan.count("update") == plan.count("remove") == 0
    assert "+ service payments-api  [services/payments-api.yaml]" in [str(c) for c in plan.changes]
    assert store.catalog.counts()["services"] == 0  # nothing applied


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
    check = raw_rows(synced_store, "SELECT * FROM checks WHERE slug = 'oncall-configured'")[0]
    assert check["schedule"] == "0 9 * * 1-5" and check["frequency"] is None and check["timeout_seconds"] == 7200
    targets = raw_rows(synced_store, 
        "SELECT service_slug FROM check_targets WHERE check_id = ? ORDER BY service_slug", (check["id"],)
    )
    assert [t["service_slug"] for t in targets] == ["catalog-api", "payments-api", "storefront-web", "users-api"]
    default = raw_rows(synced_store, "SELECT * FROM checks WHERE slug = 'github-org-audit'")[0]
    assert default["target_kind"] == "none" and default["timeout_seconds"] == 6 * 3600  # catalog.yaml default


def test_bad_file_keeps_last_good_state_and_blocks_nothing(synced_store, example_dir):
    (example_dir / "checks" / "has-owner.yaml").write_text("name: Has an owner\nslug: has-owner\nfrequency: often\n")
    _set_priority(example_dir / "services" / "users-db.yaml", 4)
    report = sync_directory(synced_store, example_dir)
    assert report.outcome == "applied"
    assert [str(e) for e in report.errors] == [
        "checks/has-owner.yaml:3:12: frequency: must be one of 'hourly', 'daily', 'weekly' or 'ad-hoc'"
    ]
    check = raw_rows(synced_store, "SELECT * FROM checks WHERE slug = 'has-owner'")[0]
    assert check["frequency"] == "hourly" and check["removed_at"] is None and "frequency" in check["error"]
    assert _service(synced_store, "users-db")["priority"] == 4
    # fixed: the error mark goes away
    (example_dir / "checks" / "has-owner.yaml").write_text("name: Has an owner\nslug: has-owner\nfrequency: daily\n")
    report = sync_directory(synced_store, example_dir)
    assert report.errors == []
    check = raw_rows(synced_store, "SELECT * FROM checks WHERE slug = 'has-owner'")[0]
    assert check["frequency"] == "daily" and check["error"] is None


def test_a_file_moved_and_broken_in_one_commit_keeps_its_service(store, git_catalog, tmp_path):
    """`git mv` to a sub-folder plus a typo: the old path's deletion removed the service, although the
    broken file at the new path still names it. A bad file never removes anything."""
    source = GitSource(git_catalog.url, tmp_path / "checkout")
    assert sync(store, source).outcome == "applied"
    old = git_catalog.work / "services" / "users-api.yaml"
    moved = git_catalog.work / "services" / "identity" / "users-api.yaml"
    moved.parent.mkdir()
    moved.write_text(re.sub(r"priority: .*", "priority: 11", old.read_text()))
    old.unlink()
    git_catalog.commit("Move users-api, with a typo")
    report = sync(store, source)
    assert [str(e) for e in report.errors] == ["services/identity/users-api.yaml:3:11: priority: must be <= 10"]
    assert report.plan.count("remove") == 0
    row = _service(store, "users-api")
    assert row["removed_at"] is None and row["path"] == "services/identity/users-api.yaml"
    assert row["error"].startswith("services/identity/users-api.yaml:3:11") and row["priority"] == 2
    moved.write_text(re.sub(r"priority: .*", "priority: 3", moved.read_text()))  # fixed: it applies there
    git_catalog.commit("Fix the typo")
    assert sync(store, source).errors == [] and _service(store, "users-api")["priority"] == 3


def test_a_source_reachable_again_is_no_longer_a_failed_sync(store, git_catalog, tmp_path):
    """The last recorded run stayed `failed` (status, /api/sync, catalog_sync_last_outcome's alert)
    until the next commit, however long that took."""
    from reconciler.errors import SourceError

    source = GitSource(git_catalog.url, tmp_path / "checkout")
    assert sync(store, source).outcome == "applied"
    assert sync(store, source).outcome == "unchanged" and len(store.catalog.sync_runs(limit=10)) == 1  # polls: no row
    away = git_catalog.remote.with_name("away.git")
    git_catalog.remote.rename(away)
    with pytest.raises(SourceError):
        sync(store, source)
    assert store.catalog.sync_runs(limit=1)[0]["outcome"] == "failed"
    away.rename(git_catalog.remote)
    assert sync(store, source).outcome == "unchanged"
    assert store.catalog.sync_runs(limit=1)[0]["outcome"] == "unchanged"
    sync(store, source)
    assert len(store.catalog.sync_runs(limit=10)) == 3  # applied, failed, unchanged: polls after it add none


def test_deleting_a_file_soft_deletes_and_keeps_results(synced_store, example_dir):
    service = _service(synced_store, "notifications-worker")
    result = new_result(synced_store, "has-owner", "notifications-worker", now=NOW)
    answer(synced_store, result["id"], "fail", now=NOW)
    (example_dir / "services" / "notifications-worker.yaml").unlink()
    report = sync_directory(synced_store, example_dir, clock=FakeClock(NOW))
    assert report.plan.count("remove") == 1
    row = _service(synced_store, "notifications-worker")
    assert row["removed_at"] == "2026-01-05T12:00:00.000000Z"
    assert synced_store.results.get(result["id"])["result"] == "fail"
    # coming back revives the same row: same id, results still attached
    write_catalog(example_dir, services=[{"name": "Notifications worker", "slug": "notifications-worker", "priority": 9}])
    sync_directory(synced_store, example_dir)
    again = _service(synced_store, "notifications-worker")
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
    revision = synced_store.state.get("applied_revision")
    for name in ("users-db", "search-index", "ledger-worker", "notifications-worker", "admin-console", "legacy-reports"):
        (example_dir / "services" / f"{name}.yaml").unlink()
    for path in (example_dir / "services").glob("*.yaml"):  # drop dependencies on them
        path.write_text("\n".join(line for line in path.read_text().splitlines() if not line.startswith("dependencies")) + "\n")
    with pytest.raises(SyncRefused, match="refusing to remove 6 of 11 services"):
        sync_directory(synced_store, example_dir)
    assert synced_store.catalog.counts()["services"] == 11
    assert synced_store.state.get("applied_revision") == revision
    assert synced_store.catalog.sync_runs(1)[0]["outcome"] == "refused"
    report = sync_directory(synced_store, example_dir, allow_mass_removal=True)
    assert report.outcome == "applied" and synced_store.catalog.counts()["services"] == 5


def test_a_sync_that_would_remove_every_check_is_refused_unless_allowed(synced_store, example_dir):
    """Once a `writeback.path: checks/` did this; that setting is now refused (test_catalog_config.py),
    and the guard counts checks as it counts services, whatever empties the folder."""
    shutil.rmtree(example_dir / "checks")
    _set_priority(example_dir / "services" / "users-db.yaml", 4)
    with pytest.raises(SyncRefused, match="refusing to remove 6 of 6 checks"):
        sync_directory(synced_store, example_dir)
    assert synced_store.catalog.counts()["checks"] == 6
    assert synced_store.catalog.sync_runs(1)[0]["outcome"] == "refused"
    report = sync_directory(synced_store, example_dir, allow_mass_removal=True)
    assert report.outcome == "applied" and synced_store.catalog.counts()["checks"] == 0


def test_removing_more_than_half_of_the_checks_is_refused(synced_store, example_dir):
    for name in ("has-owner", "readme-present", "log4j-vulnerability", "oncall-configured"):
        (example_dir / "checks" / f"{name}.yaml").unlink()
    with pytest.raises(SyncRefused, match="refusing to remove 4 of 6 checks"):
        sync_directory(synced_store, example_dir)
    (example_dir / "checks" / "has-owner.yaml").write_text("name: Has an owner\nslug: has-owner\n")
    report = sync_directory(synced_store, example_dir)  # three of six: not more than half
    assert report.outcome == "applied" and synced_store.catalog.counts()["checks"] == 3


def _active_definitions(store, kind):
    return sorted(slug for (k, slug), row in store.catalog.definition_index().items() if k == kind and row["removed_at"] is None)


def test_the_guard_counts_waivers_scorecards_and_campaigns_but_one_removal_is_never_mass(synced_store, example_dir):
    """Every kind counts (issue 16): an emptied waivers/ folder is refused like an emptied checks/.
    Deleting one file (the waiver that ended, the only scorecard) is routine and applies."""
    waiver = example_dir / "waivers" / "search-index-log4j.yaml"
    for service in ("payments-api", "users-api"):
        (example_dir / "waivers" / f"{service}-log4j.yaml").write_text(waiver.read_text().replace("search-index", service))
    assert sync_directory(synced_store, example_dir).outcome == "applied"
    assert len(_active_definitions(synced_store, "waiver")) == 3
    kept = {path: path.read_text() for path in (example_dir / "waivers").iterdir()}
    shutil.rmtree(example_dir / "waivers")
    with pytest.raises(SyncRefused, match="refusing to remove 3 of 3 waivers"):
        sync_directory(synced_store, example_dir)
    assert len(_active_definitions(synced_store, "waiver")) == 3
    (example_dir / "waivers").mkdir()
    for path, text in kept.items():
        if path.name != "users-api-log4j.yaml":
            path.write_text(text)
    shutil.rmtree(example_dir / "campaigns")  # the only campaign: one removal
    assert sync_directory(synced_store, example_dir).outcome == "applied"
    assert len(_active_definitions(synced_store, "waiver")) == 2 and _active_definitions(synced_store, "campaign") == []


def test_an_empty_repository_is_refused_not_applied(synced_store, example_dir):
    shutil.rmtree(example_dir / "services")
    shutil.rmtree(example_dir / "checks")
    with pytest.raises(SyncRefused, match="remove 11 of 11"):
        sync_directory(synced_store, example_dir)
    assert synced_store.catalog.counts()["services"] == 11


def test_same_revision_is_no_work(synced_store, example_dir):
    runs = len(synced_store.catalog.sync_runs())
    report = sync_directory(synced_store, example_dir)
    assert report.outcome == "unchanged" and report.plan.same_revision
    assert len(synced_store.catalog.sync_runs()) == runs


def test_sync_run_is_recorded_with_revisions_counts_duration_errors(synced_store, example_dir):
    first = synced_store.catalog.sync_runs(1)[0]
    assert first["outcome"] == "applied" and first["previous_revision"] is None
    assert first["created"] == 20 and first["duration_ms"] > 0 and first["errors"] == []
    (example_dir / "services" / "users-db.yaml").write_text("name: Users DB\npriority: zero\n")
    (example_dir / "services" / "new.yaml").write_text("name: New thing\npriority: 5\n")
    sync_directory(synced_store, example_dir)
    run = synced_store.catalog.sync_runs(1)[0]
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
    assert synced_store.catalog.sync_runs(1)[0]["outcome"] == "failed"
    assert synced_store.catalog.counts()["services"] == 11


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
    store.state.set({"applied_revision": "f" * 40})
    git_catalog.commit("Another commit")
    report = sync(store, source)
    assert [e.location.path for e in report.errors] == ["services/users-db.yaml"]


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
def test_a_one_file_sync_scans_no_service_or_file_row_by_row(store, git_catalog, tmp_path):
    """What a one-file sync reads of `services` and `catalog_files` it finds through an index: at
    100,000 services each scan of either cost ~10-20 ms (bench/bench_sync.py), more than all the rest."""
    source = GitSource(git_catalog.url, tmp_path / "checkout")
    assert sync(store, source).outcome == "applied"
    _set_priority(git_catalog.work / "services" / "users-api.yaml", 3)
    git_catalog.commit("Lower users-api")
    def one_file_sync():  # on this thread's connection, which read_plans watches
        assert [c.slug for c in sync(store, source).plan.changes] == ["users-api"]

    reads = read_plans(store, one_file_sync)
    assert reads
    scans = [(detail, sql) for sql, plan in reads for detail in plan
             if re.fullmatch(r"SCAN (services|catalog_files)( AS \w+)?", detail)]
    assert scans == []


def test_force_push_reads_everything_again(store, git_catalog, tmp_path):
    source = GitSource(git_catalog.url, tmp_path / "checkout")
    old = sync(store, source).revision
    (git_catalog.work / "services" / "search-index.yaml").unlink()
    (git_catalog.work / "waivers" / "search-index-log4j.yaml").unlink()  # it would name an unknown service
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


def _core_and_34_dependents(root, core: str) -> None:
    """services/core.yaml as given, and 34 services and checks that depend on core, directly or not."""
    (root / "services").mkdir(parents=True)
    (root / "services" / "core.yaml").write_text(core)
    services = [{"name": f"A{n}", "slug": f"a{n}", "priority": 1, "dependencies": ["core"]} for n in range(10)]
    services += [{"name": f"B{n}", "slug": f"b{n}", "priority": 1, "dependencies": [f"a{n}"]} for n in range(10)]
    checks = [{"name": f"C{n}", "slug": f"c{n}", "services": ["core"] if n % 2 else [f"b{n % 10}"]} for n in range(14)]
    write_catalog(root, services, checks)


def test_a_never_valid_file_that_parses_blocks_none_of_its_34_dependents(store, tmp_path):
    from reconciler.validation import validate_directory

    repo = GitCatalog(tmp_path / "git")
    _core_and_34_dependents(repo.work, "name: Core\nslug: core\npriority: 42\n")
    repo.commit("Core, broken from the start, and what depends on it")
    source = GitSource(repo.url, tmp_path / "checkout")
    report = sync(store, source)
    assert [str(e) for e in report.errors] == ["services/core.yaml:3:11: priority: must be <= 10"]
    assert report.plan.count("create") == 34 and store.catalog.counts()["services"] == 20
    warned = sorted({w.location.path for w in report.plan.warnings})
    assert warned == sorted([f"services/a{n}.yaml" for n in range(10)] + [f"checks/c{n}.yaml" for n in range(1, 14, 2)])
    assert all("services/core.yaml, which has errors" in w.message for w in report.plan.warnings)
    assert [str(e) for e in validate_directory(repo.work)[1]] == ["services/core.yaml:3:11: priority: must be <= 10"]
    # after a git diff too: a new dependent applies, with its warning
    write_catalog(repo.work, [{"name": "A new", "slug": "a-new", "priority": 1, "dependencies": ["core"]}])
    repo.commit("Another dependent")
    report = sync(store, source)
    assert [c.slug for c in report.plan.changes] == ["a-new"]
    assert [str(w) for w in report.plan.warnings] == [
        "services/a-new.yaml:5:3: dependencies: service 'core' is declared by services/core.yaml, which has errors;"
        " it exists once that file is fixed"
    ]
    # fixed: core exists, and nothing warns any more
    (repo.work / "services" / "core.yaml").write_text("name: Core\nslug: core\npriority: 4\n")
    repo.commit("Fix core")
    report = sync(store, source)
    assert [c.slug for c in report.plan.changes] == ["core"] and report.errors == report.plan.warnings == []


def test_a_never_valid_file_that_does_not_parse_declares_no_slug(store, tmp_path):
    from reconciler.validation import validate_directory

    root = tmp_path / "catalog"
    _core_and_34_dependents(root, "name: [Core\nslug: core\n")
    report = sync_directory(store, root)
    errors = [str(e) for e in report.errors]
    assert errors[0] == ("checks/c1.yaml:4:3: services: unknown service 'core' (no service file or Backstage Component defines it;"
                         " services/core.yaml has errors and declares no slug)")
    assert len(errors) == 1 + 10 + 7  # core itself, and each file that names core
    assert store.catalog.counts()["services"] == 10 and report.plan.count("create") == 17  # b* and the c* on b*
    assert len(validate_directory(root)[1]) == 18


def test_a_long_chain_on_a_broken_file_applies_in_one_pass(store, tmp_path):
    root = tmp_path / "catalog"
    (root / "services").mkdir(parents=True)
    (root / "services" / "s0000.yaml").write_text("name: S0000\npriority: 0\n")
    write_catalog(root, [{"name": f"S{n:04d}", "slug": f"s{n:04d}", "priority": 1, "dependencies": [f"s{n - 1:04d}"]}
                         for n in range(1, 2100)])
    report = sync_directory(store, root)
    assert len(report.errors) == 1 and report.plan.count("create") == 2099
    assert [w.location.path for w in report.plan.warnings] == ["services/s0001.yaml"]


def _edit(path, old: str, new: str) -> None:
    path.write_text(path.read_text().replace(old, new))


# each change to the example: after a git diff it gives the errors a full read of the same tree gives
RULE_BREAKS = {
    "a new file duplicating a slug": lambda work: (work / "services" / "zz-copy.yaml").write_text(
        "name: Copy\nslug: users-api\npriority: 3\n"),
    "a dependency that closes a cycle": lambda work: _edit(
        work / "services" / "users-db.yaml", "priority:", "dependencies: [admin-console]\npriority:"),
    "a deleted service others depend on": lambda work: (work / "services" / "users-api.yaml").unlink(),
    "a slug changed under its dependents": lambda work: _edit(
        work / "services" / "users-api.yaml", "name: Users API", "name: Users API\nslug: accounts-api"),
    "a check listing an unknown service": lambda work: _edit(
        work / "checks" / "oncall-configured.yaml", "catalog-api]", "catalog-api, ghost]"),
}


@pytest.mark.parametrize("case", sorted(RULE_BREAKS))
def test_rules_after_a_git_diff_find_what_a_full_read_finds(store, git_catalog, tmp_path, case):
    from reconciler.store import Database

    source = GitSource(git_catalog.url, tmp_path / "checkout")
    sync(store, source)
    RULE_BREAKS[case](git_catalog.work)
    git_catalog.commit(case)
    incremental = sync(store, source)
    full = sync(open_database(tmp_path / "full.db"), GitSource(git_catalog.url, tmp_path / "checkout-full"))
    assert incremental.errors and [str(e) for e in incremental.errors] == [str(e) for e in full.errors]
    marked = store.catalog.file_errors()
    assert marked == open_database(tmp_path / "full.db").catalog.file_errors()


def test_a_cycle_is_reported_in_each_file_and_nothing_of_it_applies(store, git_catalog, tmp_path):
    source = GitSource(git_catalog.url, tmp_path / "checkout")
    sync(store, source)
    RULE_BREAKS["a dependency that closes a cycle"](git_catalog.work)
    git_catalog.commit()
    report = sync(store, source)
    cycle = ("dependency cycle: admin-console -> users-api -> users-db -> admin-console"
             " (services/admin-console.yaml, services/users-api.yaml, services/users-db.yaml)")
    assert [e.message for e in report.errors] == [cycle] * 3
    assert report.plan.changes == [] and store.reads.service("users-db")["dependencies"] == []
    assert store.reads.service("admin-console")["error"].endswith(cycle)


def test_new_defaults_after_a_git_diff_update_the_checks_that_use_them(store, git_catalog, tmp_path):
    source = GitSource(git_catalog.url, tmp_path / "checkout")
    sync(store, source)
    _edit(git_catalog.work / "catalog.yaml", "timeout: 6h", "timeout: 2h")
    git_catalog.commit("Shorter default timeout")
    report = sync(store, source)
    updated = {c.slug for c in report.plan.changes if c.action == "update"}
    assert "github-org-audit" in updated and "oncall-configured" not in updated  # that one sets its own
    assert store.reads.check_with_latest("github-org-audit")["timeout_seconds"] == 7200 and report.errors == []


def test_a_bad_catalog_yaml_keeps_the_old_defaults_and_blocks_nothing(store, git_catalog, tmp_path):
    source = GitSource(git_catalog.url, tmp_path / "checkout")
    sync(store, source)
    _edit(git_catalog.work / "catalog.yaml", "timeout: 6h", "timeout: soon")
    _set_priority(git_catalog.work / "services" / "users-db.yaml", 4)
    git_catalog.commit("A typo in the defaults, and a real change")
    report = sync(store, source)
    assert [e.location.path for e in report.errors] == ["catalog.yaml"]
    assert [c.slug for c in report.plan.changes] == ["users-db"]
    assert store.reads.check_with_latest("github-org-audit")["timeout_seconds"] == 6 * 3600


def _add_hidden_services(root) -> None:
    (root / "services" / ".hidden").mkdir()
    (root / "services" / ".hidden" / "h.yaml").write_text("name: Hidden\npriority: 1\n")
    (root / "services" / ".dotfile.yaml").write_text("name: Dotfile\npriority: 1\n")
    (root / "checks" / ".drafts").mkdir()
    (root / "checks" / ".drafts" / "c.yaml").write_text("name: Draft\nservices: [nowhere]\n")


def test_hidden_files_and_folders_are_ignored_by_git_sync_directory_sync_and_validate(store, git_catalog, tmp_path):
    from reconciler.store import Database
    from reconciler.validation import validate_directory

    source = GitSource(git_catalog.url, tmp_path / "checkout")
    sync(store, source)
    _add_hidden_services(git_catalog.work)
    git_catalog.commit("Hidden files")
    report = sync(store, source)  # after a git diff
    assert report.outcome == "applied" and report.plan.changes == [] and report.errors == []
    cold = open_database(tmp_path / "cold.db")
    report = sync(cold, GitSource(git_catalog.url, tmp_path / "checkout-2"))  # a full read of the clone
    assert report.plan.count("create") == 20 and report.errors == []
    report = sync_directory(open_database(tmp_path / "directory.db"), git_catalog.work)
    assert report.plan.count("create") == 20 and report.errors == []
    assert validate_directory(git_catalog.work) == (21, [])


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
    from reconciler.store import Database, open_database

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
    serial = open_database(tmp_path / "serial.db")
    sync_directory(serial, root)

    forked = open_database(tmp_path / "forked" / "catalog.db")
    columns = "slug, name, priority, type, owner, tags, dependencies, meta, path, digest, error, removed_at"
    for sql in (f"SELECT {columns} FROM services ORDER BY slug", "SELECT * FROM checks ORDER BY slug",
                "SELECT * FROM catalog_files ORDER BY path"):
        rows = [{k: v for k, v in row.items() if k not in ("id", "created_at", "updated_at")}
                for row in raw_rows(forked, sql)]
        assert rows == [{k: v for k, v in row.items() if k not in ("id", "created_at", "updated_at")}
                        for row in raw_rows(serial, sql)]
    errors = sorted(row["path"] for row in raw_rows(serial, "SELECT path FROM catalog_files WHERE error IS NOT NULL"))
    assert errors == ["services/svc-0010.yaml", "services/svc-1500.yaml"]


def test_a_first_sync_writes_every_row_of_a_catalog_larger_than_one_insert(store, tmp_path):
    """Services and catalog files go in 100 rows an INSERT, the rest one by one: every row lands, in
    path order (ids as a row-at-a-time insert gave them), a broken file's error as JSON."""
    root = tmp_path / "catalog"
    write_catalog(root, [{"name": f"S{n:03d}", "slug": f"s{n:03d}", "priority": 1 + n % 10, "owner": f"team-{n % 7}",
                          "tags": ["t"] if n % 2 else [], "meta": {"k": str(n)}} for n in range(251)])
    (root / "services" / "zz-broken.yaml").write_text("name: Broken\npriority: 11\n")
    report = sync_directory(store, root)
    assert report.outcome == "applied" and report.plan.count("create") == 251 and len(report.errors) == 1
    services = store.catalog.service_index()
    assert len(services) == 251
    assert [slug for slug, _ in sorted(services.items(), key=lambda item: item[1]["id"])] == sorted(services)
    assert all(row["path"] == f"services/{slug}.yaml" and len(row["digest"]) == 32 for slug, row in services.items())
    files = store.catalog.files()
    assert len(files) == 252 and files["services/s250.yaml"]["slug"] == "s250"
    assert files["services/zz-broken.yaml"]["error"]["message"].startswith("priority")
    assert json.loads(store.reads.service_json("s137"))["meta"] == {"k": "137"}
    assert sync_directory(store, root).outcome == "unchanged"


class _RacedSource(DirectorySource):
    """A directory whose revision another process (`catalog sync`) applies while this one plans it."""

    def __init__(self, path, database_url: str, home):
        super().__init__(path)
        self.database_url, self.home = database_url, home

    def changed_paths(self, old: str, new: str) -> set[str] | None:  # asked once the store's revision is read
        import os
        import subprocess
        import sys

        env = {**{k: v for k, v in os.environ.items() if not k.startswith("CATALOG_")},
               "CATALOG_HOME": str(self.home), "CATALOG_REPO": str(self.root), "CATALOG_DATABASE_URL": self.database_url}
        other = subprocess.run([sys.executable, "-m", "reconciler.cli", "sync"], env=env, capture_output=True, text=True,
                               timeout=120)
        assert other.returncode == 0, other.stderr
        return super().changed_paths(old, new)


def test_a_revision_another_process_applied_meanwhile_is_no_conflict(store, database_url, example_dir, tmp_path):
    """Two syncs of one revision at once (a cron `catalog sync` beside `serve`'s webhook): the one that
    applied second exited 1, "another sync applied a revision in the meantime; plan again", though
    its revision was applied."""
    sync_directory(store, example_dir)
    (example_dir / "services" / "zeta.yaml").write_text("name: Zeta\npriority: 3\n")
    report = sync(store, _RacedSource(example_dir, database_url, tmp_path / "home"))
    assert report.outcome == "unchanged" and report.revision == store.state.get("applied_revision")
    assert "zeta" in store.catalog.service_index()
