"""The Database: one backend (SQLite or PostgreSQL), its transactions, and one repository per concept.

    db = open_database(url)           # migrates unless told not to
    db.catalog    services, checks, catalog files, sync runs (the reconciler's writes)
    db.reads      services and checks as the API and pages read them
    db.results    results: answers, one result, result lists
    db.dispatch   due pairs, their results, leases, batches, sent / failed / timed-out
    db.budget     the GitHub dispatch budget: requests made per window, pauses from rate limits
    db.writeback  the write-back queue, what was pushed, summaries
    db.tokens     API tokens (hashes only)
    db.pages      the dashboard's aggregates: matrix, summary, timelines, pass rates
    db.state      small key/value facts (applied revision, catalog config, write-back baseline)
    db.scorecards scorecard, waiver and campaign definitions, each service's levels, the daily trend
    db.events     events (recorded with their cause), the outbox, deliveries to notification routes
"""

from __future__ import annotations

import json
import re
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator

from ..errors import ConfigError
from .budget import BudgetRepository
from .catalog import CatalogRepository
from .dispatch import DispatchRepository
from .events import EventRepository
from .metrics import MetricsRepository
from .pages import PageRepository
from .reads import ReadRepository
from .results import ResultRepository
from .scorecards import ScorecardRepository
from .sqlite import SqliteBackend
from .tokens import TokenRepository
from .writeback import WritebackRepository


class Database:
    """A backend and its repositories. Repositories run all SQL; callers never see a connection."""

    def __init__(self, backend):
        self.backend = backend
        self.dialect = backend.dialect
        self.state = StateRepository(self)
        self.catalog = CatalogRepository(self)
        self.reads = ReadRepository(self)
        self.results = ResultRepository(self)
        self.dispatch = DispatchRepository(self)
        self.budget = BudgetRepository(self)
        self.writeback = WritebackRepository(self)
        self.tokens = TokenRepository(self)
        self.pages = PageRepository(self)
        self.scorecards = ScorecardRepository(self)
        self.events = EventRepository(self)
        self.metrics = MetricsRepository(self)

    @property
    def key(self) -> str:
        """Names this database, without secrets: equal for two Database objects on one database."""
        return self.backend.key

    def describe(self) -> str:
        """`SQLite: PATH` or `PostgreSQL: URL` (no password), for banners and `catalog status`."""
        return self.backend.describe()

    @property
    def reads_on_loop(self) -> bool:
        """True when a short read is a local file read (SQLite), cheaper on an event loop than a hop to
        a thread and back (bench/bench_api.py, GET service); False when it is a network round trip."""
        return self.backend.local

    @contextmanager
    def session(self) -> Iterator[Any]:
        """A connection for reads (each statement on its own, or inside the thread's transaction)."""
        with self.backend.session() as session:
            yield session

    @contextmanager
    def transaction(self, serialize: str | None = None) -> Iterator[Any]:
        """All or nothing. `serialize` names work that must not interleave with itself across
        processes (sync, dispatch, ...): on PostgreSQL an advisory lock; SQLite's write lock does it."""
        with self.backend.transaction() as session:
            if serialize and self.dialect.serialize:
                session.run(self.dialect.serialize(serialize))
            yield session

    def migrate(self) -> list[int]:
        return self.backend.migrate()

    def schema_version(self) -> int:
        return self.backend.schema_version()

    def leader_lock(self):
        """A lock at most one process holds at a time: the one that runs the loops (`catalog up`)."""
        return self.backend.leader_lock()

    def close(self) -> None:
        self.backend.close()


class StateRepository:
    """Small facts kept as JSON by key: applied revision, catalog config, write-back baseline."""

    def __init__(self, db: Database):
        self.db = db

    def get(self, key: str, default: Any = None) -> Any:
        with self.db.session() as session:
            value = session.value("SELECT value FROM catalog_state WHERE key = ?", (key,))
        return default if value is None else json.loads(value)

    def set(self, values: dict[str, Any]) -> None:
        """Set each key to its value, in the caller's transaction if there is one."""
        with self.db.transaction() as session:
            session.many(
                "INSERT INTO catalog_state (key, value) VALUES (?, ?)"
                " ON CONFLICT (key) DO UPDATE SET value = excluded.value",
                [(key, json.dumps(value)) for key, value in values.items()],
            )


# The forms of a database URL (docs/operating.md): the one text every "not a database URL" error gives.
DATABASE_URL_FORMS = "sqlite:///ABSOLUTE/PATH.db or postgresql://USER[:PASSWORD]@HOST[:PORT]/DB"
_SCHEME = re.compile(r"([A-Za-z][A-Za-z0-9+.-]*)://")


def open_database(url: str | Path | None = None, *, home: str | Path = ".catalog", migrate: bool = True,
                  create: bool = True) -> Database:
    """The database at `url` (`sqlite:///PATH`, `postgresql://...`, `postgres://...`, or a Path);
    by default SQLite in `home`. Applies the migrations unless `migrate` is False. With `create` False
    (commands that only read), a store that does not exist yet is a ConfigError, not a new empty one:
    a mistyped CATALOG_HOME made `status` and `export` answer "nothing", exit 0."""
    if url is None or url == "":
        url = Path(home) / "catalog.db"
    elif isinstance(url, str) and url.startswith("sqlite://"):
        if not url[len("sqlite://"):]:
            raise ConfigError("a SQLite database URL needs a path: sqlite:///ABSOLUTE/PATH.db")
        url = Path(url[len("sqlite://"):])
    if isinstance(url, Path):
        if not create and not url.is_file():
            raise ConfigError(f"no catalog store at {url}: check CATALOG_HOME (--home) and CATALOG_DATABASE_URL"
                              " (`catalog sync` or `catalog up` makes one)")
        backend = SqliteBackend(url)
    elif url.startswith(("postgresql://", "postgres://")):
        # imported here: psycopg and its pool cost a SQLite process ~12 MB it never uses (bench/bench_sync.py's peak)
        from .postgres import PostgresBackend

        backend = PostgresBackend(url)
    else:
        raise ConfigError(_not_a_database_url(url))
    db = Database(backend)
    if not create and db.schema_version() == 0:
        described = db.describe()
        db.close()
        raise ConfigError(f"{described} holds no catalog yet: check CATALOG_DATABASE_URL"
                          " (`catalog sync` or `catalog up` makes one)")
    if migrate:
        db.migrate()
    return db


def _not_a_database_url(url: str) -> str:
    """Why `url` is refused, without quoting it: it may be libpq's `host=... password=...`."""
    scheme = _SCHEME.match(url)
    if scheme:
        return f"unknown database URL scheme {scheme.group(1)!r}: use {DATABASE_URL_FORMS}"
    return f"the database URL is not a URL: use {DATABASE_URL_FORMS} (libpq's key=value settings go in the URL)"
