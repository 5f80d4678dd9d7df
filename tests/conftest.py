"""Shared fixtures: a copy of the example catalog, a synced store, YAML writing helpers."""

from __future__ import annotations

import shutil
from datetime import date, datetime, time, timedelta, timezone
from pathlib import Path

import pytest
import yaml

from reconciler.clock import Clock
from reconciler.gitsource import DirectorySource
from reconciler.reconcile import SyncReport, sync
from reconciler.store import Database, open_database
from oidc_issuer import OidcIssuer
from postgres_server import PostgresServer

PROJECT = Path(__file__).resolve().parent.parent
EXAMPLE = PROJECT / "catalog-repo-example"

# The example's two dated lines, as written (waivers/search-index-log4j.yaml, campaigns/log4j-2026.yaml),
# and where every copy the tests use puts them: as far from the day the tests run as the example's dates
# were from the day they were written (2026-12-01), so no test's outcome depends on when it runs (the
# example's own waiver stops counting on 2027-04-01 and becomes a warning to renew it).
EXAMPLE_DATES = {"expires": "2027-03-31", "deadline": "2027-01-31"}
_TODAY = datetime.now(timezone.utc).date()
WAIVER_EXPIRES = _TODAY + timedelta(days=120)  # the last day the example's waiver counts
CAMPAIGN_DEADLINE = _TODAY + timedelta(days=61)  # the example's campaign is overdue after this day


def utc_at(day: date, hour: int = 0, minute: int = 0, second: int = 0) -> datetime:
    """That moment of `day`, UTC (for clocks set relative to WAIVER_EXPIRES or CAMPAIGN_DEADLINE)."""
    return datetime.combine(day, time(hour, minute, second), tzinfo=timezone.utc)


def date_example(root: Path) -> Path:
    """Move a copy of the example's dated lines to WAIVER_EXPIRES and CAMPAIGN_DEADLINE."""
    for path, field, day in (("waivers/search-index-log4j.yaml", "expires", WAIVER_EXPIRES),
                             ("campaigns/log4j-2026.yaml", "deadline", CAMPAIGN_DEADLINE)):
        file = root / path
        if file.exists():
            text = file.read_text()
            line = f"{field}: {EXAMPLE_DATES[field]}"
            assert line in text, f"{path} no longer has {line!r}: update EXAMPLE_DATES in tests/conftest.py"
            file.write_text(text.replace(line, f"{field}: {day}"))
    return root


def copy_example(target: Path, **options) -> Path:
    """A copy of catalog-repo-example (without caches), its dated lines moved (`date_example`)."""
    ignore = shutil.ignore_patterns("__pycache__", *options.pop("ignore", ()))
    shutil.copytree(EXAMPLE, target, ignore=ignore, **options)
    return date_example(target)


def write_catalog(root: Path, services: list[dict] = (), checks: list[dict] = (), catalog: dict | None = None) -> Path:
    """Write service and check dicts as YAML files (named by slug or slugified name) under root."""
    from reconciler.schema import slugify

    for kind, items in (("services", services), ("checks", checks)):
        (root / kind).mkdir(parents=True, exist_ok=True)
        for item in items:
            name = item.get("slug") or slugify(item["name"])
            (root / kind / f"{name}.yaml").write_text(yaml.safe_dump(dict(item), sort_keys=False))
    if catalog is not None:
        (root / "catalog.yaml").write_text(yaml.safe_dump(catalog, sort_keys=False))
    return root


def sync_directory(store: Database, root: Path, clock: Clock | None = None, **options) -> SyncReport:
    return sync(store, DirectorySource(root), clock=clock, **options)


@pytest.fixture
def example_dir(tmp_path: Path) -> Path:
    """A fresh copy of catalog-repo-example (without its health-check scripts' caches), its dates moved."""
    return copy_example(tmp_path / "catalog")


@pytest.fixture(scope="module")
def issuer():
    """A loopback OIDC issuer with its own keys, playing GitHub Actions' token service."""
    with OidcIssuer() as issuer:
        yield issuer


BACKENDS = ["sqlite", "postgresql"]


@pytest.fixture(scope="session")
def postgres_server() -> PostgresServer:
    """One throwaway PostgreSQL server for the whole run (started on first use, never skipped)."""
    server = PostgresServer().start()
    yield server
    server.stop()


@pytest.fixture(params=BACKENDS)
def database_url(request, tmp_path: Path) -> str:
    """A new, empty database on each backend in turn: every test that uses the store runs on both."""
    if request.param == "sqlite":
        return f"sqlite://{tmp_path / 'state' / 'catalog.db'}"
    return request.getfixturevalue("postgres_server").new_database()


@pytest.fixture
def store(database_url: str) -> Database:
    store = open_database(database_url)
    yield store
    store.close()


@pytest.fixture
def synced_store(store: Database, example_dir: Path) -> Database:
    """A store synced from the example catalog: 11 services, 6 checks."""
    report = sync_directory(store, example_dir)
    assert report.outcome == "applied" and not report.errors, report.errors
    return store


GIT = ["git", "-c", "user.name=Catalog Tests", "-c", "user.email=tests@example.invalid", "-c", "init.defaultBranch=main"]


class GitCatalog:
    """A bare `remote` and a work clone `work` of it: write files, commit, push, like a team would."""

    def __init__(self, base: Path):
        import subprocess

        self._run = lambda *args, cwd: subprocess.run(
            [*GIT, *args], cwd=cwd, check=True, capture_output=True, text=True
        ).stdout.strip()
        self.remote = base / "remote.git"
        self.work = base / "work"
        base.mkdir(parents=True, exist_ok=True)
        self._run("init", "--quiet", "--bare", str(self.remote), cwd=base)
        self._run("clone", "--quiet", str(self.remote), str(self.work), cwd=base)

    @property
    def url(self) -> str:
        return str(self.remote)

    def git(self, *args: str) -> str:
        return self._run(*args, cwd=self.work)

    def commit(self, message: str = "Change the catalog", branch: str | None = None) -> str:
        """Commit everything in the work tree and push it; returns the commit sha."""
        self.git("add", "--all")
        self.git("commit", "--quiet", "--allow-empty", "-m", message)
        self.git("push", "--quiet", "--force", "origin", f"HEAD:{branch or self.branch}")
        return self.git("rev-parse", "HEAD")

    @property
    def branch(self) -> str:
        return self.git("rev-parse", "--abbrev-ref", "HEAD")


@pytest.fixture
def git_catalog(tmp_path: Path) -> GitCatalog:
    """The example catalog committed to a bare remote on branch main (through a work clone)."""
    repo = GitCatalog(tmp_path / "git")
    copy_example(repo.work, dirs_exist_ok=True)
    repo.git("checkout", "--quiet", "-B", "main")
    repo.commit("The example catalog", branch="main")
    return repo
