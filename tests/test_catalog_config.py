"""catalog.yaml's write-back settings: checked at file:line, and one stored by an older version stops nothing."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest
from pydantic import ValidationError

from conftest import GIT, sync_directory
from reconciler.clock import FakeClock
from reconciler.schema import CatalogConfig, check_branch_name
from reconciler.settings import Settings
from reconciler.validation import validate_directory
from reconciler.writeback import writeback_pass
from store_support import finished_result

CATALOG = shutil.which("catalog")

# Names on both sides of each of git's rules for a branch (git help check-ref-format)
BRANCH_NAMES = [
    "catalog-results", "results/2026", "a+b", "é", "@", "@a", "a@", "a{b", "a.lock.x", "x/HEAD", "FETCH_HEAD",
    "refs/heads/x", "main..x", "a..lock", "-x", "--", "HEAD", "a@{b", "a@{", "@{-1}", "a/.b", ".a", "a/.",
    "a.lock", "a/b.lock/c", "a.lock/b", "a/.lock", "a/", "/a", "a//b", "a.", "a/b.", "a b", "a\tb", "a\x7fb",
    "a~b", "a^b", "a:b", "a?b", "a*b", "a[b", "a\\b",
]


def writeback_of(catalog_yaml: str) -> CatalogConfig:
    return CatalogConfig.model_validate({"writeback": dict([catalog_yaml.split(": ", 1)])})


@pytest.mark.parametrize("name", BRANCH_NAMES)
def test_branch_names_are_judged_exactly_as_git_judges_them(name, tmp_path):
    # run outside any repository: inside one, git expands @{-1} to the previous branch
    git_accepts = subprocess.run(["git", "check-ref-format", "--branch", name], cwd=tmp_path,
                                 capture_output=True).returncode == 0
    try:
        check_branch_name(name)
        we_accept = True
    except ValueError:
        we_accept = False
    assert we_accept == git_accepts


def test_a_bad_branch_says_why():
    with pytest.raises(ValidationError, match=r"'main\.\.x' is not a valid git branch name: must not contain '\.\.'"):
        writeback_of("branch: main..x")


@pytest.mark.parametrize("path, normalised", [
    ("results", "results/"), ("results/", "results/"), ("ops/results/", "ops/results/"), ("results//", "results/"),
    ("servicesx/", "servicesx/"), ("history.v2", "history.v2/"),
])
def test_a_folder_of_its_own_is_a_write_back_path(path, normalised):
    assert writeback_of(f"path: {path}").writeback.path == normalised


@pytest.mark.parametrize("path, why", [
    (".", "is the repository root"), ("./", "is the repository root"),
    ("checks/", "folder the catalog is read from"), ("services", "folder the catalog is read from"),
    ("Checks/", "folder the catalog is read from"), ("services/results/", "folder the catalog is read from"),
    ("catalog.yaml", "folder the catalog is read from"),
    (".git/", "must not be or contain a .git folder"), ("x/.git/hooks/", "must not be or contain a .git folder"),
    ("x/.GIT/", "must not be or contain a .git folder"), ("x/.git./", "must not be or contain a .git folder"),
    ("../outside", "written plainly"), ("a/../b", "written plainly"), ("./results", "written plainly"),
    ("a//b/", "written plainly"), ("a/./b", "written plainly"),
])
def test_a_write_back_path_that_would_harm_the_catalog_or_git_is_refused(path, why):
    with pytest.raises(ValidationError, match=why):
        writeback_of(f"path: {path}")


@pytest.mark.parametrize("line, col, message", [
    ("path: checks/", 9, "writeback.path: 'checks/' is (or is inside) a folder the catalog is read from"),
    ("path: x/.git/hooks/", 9, "writeback.path: 'x/.git/hooks/' must not be or contain a .git folder"),
    ("branch: main..x", 11, "writeback.branch: 'main..x' is not a valid git branch name"),
])
def test_validate_names_file_and_line_of_a_bad_write_back_setting(example_dir, line, col, message):
    (example_dir / "catalog.yaml").write_text(f"writeback:\n  {line}\n")
    _, errors = validate_directory(example_dir)
    assert [(e.location.path, e.location.line, e.location.col) for e in errors] == [("catalog.yaml", 2, col)]
    assert errors[0].message.startswith(message), errors[0].message


@pytest.mark.skipif(CATALOG is None, reason="the project is not installed (pip install -e .)")
def test_validate_cli_refuses_a_write_back_path_over_the_checks(example_dir, tmp_path):
    (example_dir / "catalog.yaml").write_text("writeback:\n  path: checks/\n")
    env = {key: value for key, value in os.environ.items() if not key.startswith("CATALOG_")}
    result = subprocess.run([CATALOG, "validate", "."], cwd=example_dir, capture_output=True, text=True,
                            env={**env, "CATALOG_HOME": str(tmp_path / "home")}, timeout=60)
    assert result.returncode == 1
    assert result.stdout.startswith("catalog.yaml:2:9: writeback.path: 'checks/' is (or is inside) a folder")


def test_a_write_back_path_over_the_checks_removes_no_check(store, example_dir):
    sync_directory(store, example_dir)
    (example_dir / "catalog.yaml").write_text("writeback:\n  path: checks/\n")
    report = sync_directory(store, example_dir)
    assert [(e.location.path, e.location.line) for e in report.errors] == [("catalog.yaml", 2)]
    assert len(store.reads.checks()) == 6


# -- a config stored by an older version, under looser rules --------------------------------------


@pytest.mark.parametrize("stored", [{"path": "checks/"}, {"path": "."}, {"branch": "main..x"}])
def test_a_sync_runs_over_a_stored_write_back_setting_that_is_now_refused(synced_store, example_dir, stored):
    synced_store.state.set({"catalog_config": {"writeback": {"branch": "catalog-results", "path": "results/", **stored}}})
    (example_dir / "services" / "new-one.yaml").write_text("name: New one\npriority: 3\n")
    report = sync_directory(synced_store, example_dir)
    assert report.outcome == "applied" and not report.errors, report.errors
    assert len(synced_store.reads.checks()) == 6 and "new-one" in synced_store.catalog.service_index()
    assert synced_store.state.get("catalog_config")["writeback"] == {"branch": "catalog-results", "path": "results/"}


def test_write_back_over_a_stored_setting_that_is_now_refused_writes_a_tree_git_accepts(synced_store, tmp_path):
    synced_store.state.set({"catalog_config": {"writeback": {"branch": "main..x", "path": "x/.git/hooks/"}}})
    clock = FakeClock()
    row = finished_result(synced_store, "has-owner", "payments-api", now=clock.now())
    remote = tmp_path / "remote.git"
    subprocess.run([*GIT, "init", "-q", "--bare", str(remote)], check=True)
    report = writeback_pass(synced_store, Settings(home=tmp_path / "home", repo=str(remote)), clock=clock)
    assert report.written == [row["id"]]
    files = subprocess.run([*GIT, "--git-dir", str(remote), "ls-tree", "-r", "--name-only", "catalog-results"],
                           check=True, capture_output=True, text=True).stdout.split()
    assert files and all(name.startswith("results/") for name in files)
    subprocess.run([*GIT, "--git-dir", str(remote), "fsck", "--strict"], check=True, capture_output=True)
