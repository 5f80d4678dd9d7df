"""The SQLite store: schema, migrations and every SQL statement the catalog runs.

Callers ask for what they need by name and never see a cursor. Times are stored as fixed-width
UTC text (see `clock.TIME_FORMAT`), so they compare correctly as strings. Results are immutable
once finished and can never be deleted: triggers enforce it, whatever the caller does.
"""

from __future__ import annotations

import json
import sqlite3
import threading
from contextlib import contextmanager
from datetime import datetime
from pathlib import Path
from typing import Any, Iterator

from .clock import format_time
from .errors import Conflict, NotFound

FINISHED_STATUSES = ("completed", "timed-out", "error")
OPEN_STATUSES = ("pending", "sent")
RESULT_VALUES = ("pass", "warning", "fail", "error", "skipped")

# Version 1 is the first schema. Pre-release: edit it in place; after the first release, append.
MIGRATIONS: list[tuple[int, str]] = [
    (
        1,
        """
        CREATE TABLE IF NOT EXISTS catalog_state (
            key   TEXT PRIMARY KEY,
            value TEXT NOT NULL
        );

        CREATE TABLE IF NOT EXISTS services (
            id           INTEGER PRIMARY KEY,
            slug         TEXT NOT NULL UNIQUE,
            name         TEXT NOT NULL,
            priority     INTEGER NOT NULL CHECK (priority BETWEEN 1 AND 10),
            type         TEXT,
            description  TEXT,
            owner        TEXT,
            repository   TEXT,
            active       INTEGER NOT NULL DEFAULT 1,
            tags         TEXT NOT NULL DEFAULT '[]',   -- JSON list
            dependencies TEXT NOT NULL DEFAULT '[]',   -- JSON list of slugs
            meta         TEXT NOT NULL DEFAULT '{}',   -- JSON object, string -> string
            path         TEXT NOT NULL,                -- file it was last read from
            digest       TEXT NOT NULL,                -- hash of its definition, to see updates
            error        TEXT,                         -- its file's current error, if any
            removed_at   TEXT,                         -- soft delete: results stay forever
            created_at   TEXT NOT NULL,
            updated_at   TEXT NOT NULL
        );

        CREATE TABLE IF NOT EXISTS checks (
            id                  INTEGER PRIMARY KEY,
            slug                TEXT NOT NULL UNIQUE,
            name                TEXT NOT NULL,
            description         TEXT,
            frequency           TEXT CHECK (frequency IN ('hourly', 'daily', 'weekly', 'ad-hoc')),
            schedule            TEXT,                   -- cron, instead of frequency
            timeout_seconds     INTEGER NOT NULL CHECK (timeout_seconds > 0),
            active              INTEGER NOT NULL DEFAULT 1,
            repository          TEXT,
            targets             TEXT NOT NULL,          -- JSON as written: "all", "none", [..], {..}
            target_kind         TEXT NOT NULL CHECK (target_kind IN ('all', 'none', 'list', 'selector')),
            target_type         TEXT,
            target_owner        TEXT,
            target_tags         TEXT,                   -- JSON list; a service needs all of them
            target_max_priority INTEGER,
            path                TEXT NOT NULL,
            digest              TEXT NOT NULL,
            error               TEXT,
            removed_at          TEXT,
            created_at          TEXT NOT NULL,
            updated_at          TEXT NOT NULL,
            CHECK ((frequency IS NULL) <> (schedule IS NULL))
        );

        -- Check targeting by a list of slugs (target_kind = 'list').
        CREATE TABLE IF NOT EXISTS check_targets (
            check_id     INTEGER NOT NULL REFERENCES checks(id),
            service_slug TEXT NOT NULL,
            PRIMARY KEY (check_id, service_slug)
        ) WITHOUT ROWID;

        -- The last good state of each catalog file, and its current error.
        CREATE TABLE IF NOT EXISTS catalog_files (
            path     TEXT PRIMARY KEY,
            kind     TEXT NOT NULL CHECK (kind IN ('service', 'check', 'catalog')),
            slug     TEXT,                               -- the entity it defines, when valid
            digest   TEXT NOT NULL,                      -- hash of the bytes last read
            error    TEXT                                -- JSON {file,line,col,message} or NULL
        );

        CREATE TABLE IF NOT EXISTS results (
            id          INTEGER PRIMARY KEY,
            check_id    INTEGER NOT NULL REFERENCES checks(id),
            service_id  INTEGER REFERENCES services(id),  -- NULL for checks with services: none
            status      TEXT NOT NULL DEFAULT 'pending'
                        CHECK (status IN ('pending', 'sent', 'completed', 'timed-out', 'error')),
            result      TEXT NOT NULL DEFAULT 'unknown'
                        CHECK (result IN ('unknown', 'pass', 'warning', 'fail', 'error', 'skipped')),
            message     TEXT,
            url         TEXT,
            revision    TEXT,                              -- catalog revision it ran under
            trigger     TEXT NOT NULL DEFAULT 'schedule' CHECK (trigger IN ('schedule', 'ad-hoc')),
            created_at  TEXT NOT NULL,
            sent_at     TEXT,
            finished_at TEXT,
            CHECK ((status = 'completed') = (result <> 'unknown')),
            CHECK ((status IN ('completed', 'timed-out', 'error')) = (finished_at IS NOT NULL))
        );
        CREATE INDEX IF NOT EXISTS results_by_pair ON results (check_id, service_id, id);
        CREATE INDEX IF NOT EXISTS results_open ON results (status) WHERE status IN ('pending', 'sent');
        CREATE INDEX IF NOT EXISTS results_by_service ON results (service_id, id);

        CREATE TRIGGER IF NOT EXISTS results_never_deleted BEFORE DELETE ON results
        BEGIN
            SELECT RAISE(ABORT, 'results can never be deleted');
        END;

        CREATE TRIGGER IF NOT EXISTS results_finished_never_change BEFORE UPDATE ON results
        WHEN OLD.status IN ('completed', 'timed-out', 'error')
        BEGIN
            SELECT RAISE(ABORT, 'a finished result can never change');
        END;

        CREATE TRIGGER IF NOT EXISTS results_identity_never_changes BEFORE UPDATE ON results
        WHEN NEW.id IS NOT OLD.id OR NEW.check_id IS NOT OLD.check_id
          OR NEW.service_id IS NOT OLD.service_id OR NEW.created_at IS NOT OLD.created_at
          OR NEW.revision IS NOT OLD.revision OR NEW.trigger IS NOT OLD.trigger
        BEGIN
            SELECT RAISE(ABORT, 'the identity of a result can never change');
        END;

        CREATE TRIGGER IF NOT EXISTS results_status_moves_forward BEFORE UPDATE OF status ON results
        WHEN NOT (OLD.status = NEW.status OR OLD.status = 'pending'
                  OR (OLD.status = 'sent' AND NEW.status <> 'pending'))
        BEGIN
            SELECT RAISE(ABORT, 'a result status only moves forward');
        END;

        CREATE TABLE IF NOT EXISTS sync_runs (
            id                 INTEGER PRIMARY KEY,
            started_at         TEXT NOT NULL,
            finished_at        TEXT NOT NULL,
            duration_ms        REAL NOT NULL,
            outcome            TEXT NOT NULL,          -- applied | unchanged | refused | failed
            previous_revision  TEXT,                   -- what was applied before this run
            attempted_revision TEXT,                   -- what this run read
            applied_revision   TEXT,                   -- what is applied after this run
            created            INTEGER NOT NULL DEFAULT 0,
            updated            INTEGER NOT NULL DEFAULT 0,
            removed            INTEGER NOT NULL DEFAULT 0,
            unchanged          INTEGER NOT NULL DEFAULT 0,
            errors             TEXT NOT NULL DEFAULT '[]',   -- JSON list of {file,line,col,message}
            message            TEXT
        );

        CREATE TABLE IF NOT EXISTS api_tokens (
            id           INTEGER PRIMARY KEY,
            name         TEXT NOT NULL UNIQUE,
            token_hash   TEXT NOT NULL UNIQUE,          -- sha256 hex of the secret
            scopes       TEXT NOT NULL,                 -- JSON list
            created_at   TEXT NOT NULL,
            last_used_at TEXT,
            revoked_at   TEXT
        );

        -- Write-back: a row once the result's line is pushed. Insert-only, like results.
        CREATE TABLE IF NOT EXISTS result_writes (
            result_id  INTEGER PRIMARY KEY REFERENCES results(id),
            commit_sha TEXT NOT NULL,
            written_at TEXT NOT NULL
        );
        CREATE TRIGGER IF NOT EXISTS result_writes_never_change BEFORE UPDATE ON result_writes
        BEGIN
            SELECT RAISE(ABORT, 'a recorded write-back can never change');
        END;
        CREATE TRIGGER IF NOT EXISTS result_writes_never_deleted BEFORE DELETE ON result_writes
        BEGIN
            SELECT RAISE(ABORT, 'a recorded write-back can never be deleted');
        END;

        CREATE TABLE IF NOT EXISTS webhook_deliveries (
            delivery_id TEXT PRIMARY KEY,
            received_at TEXT NOT NULL
        );
        """,
    ),
]


def _row_factory(cursor: sqlite3.Cursor, row: tuple) -> dict[str, Any]:
    return {column[0]: value for column, value in zip(cursor.description, row)}


class Store:
    """One SQLite file. Each thread gets its own connection; writes go through `transaction()`."""

    def __init__(self, path: str | Path):
        self.path = str(path)
        if self.path != ":memory:":
            Path(self.path).parent.mkdir(parents=True, exist_ok=True)
        self._local = threading.local()
        self.migrate()

    # -- connections and transactions ---------------------------------------------------------

    @property
    def connection(self) -> sqlite3.Connection:
        conn = getattr(self._local, "conn", None)
        if conn is None:
            conn = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False, timeout=30)
            conn.row_factory = _row_factory
            conn.execute("PRAGMA journal_mode=WAL")
            conn.execute("PRAGMA synchronous=NORMAL")
            conn.execute("PRAGMA foreign_keys=ON")
            conn.execute("PRAGMA busy_timeout=30000")
            self._local.conn = conn
        return conn

    def close(self) -> None:
        conn = getattr(self._local, "conn", None)
        if conn is not None:
            conn.close()
            self._local.conn = None

    @contextmanager
    def transaction(self) -> Iterator[sqlite3.Connection]:
        """BEGIN IMMEDIATE ... COMMIT, rolled back on any exception. Nested use joins the outer one."""
        conn = self.connection
        if conn.in_transaction:
            yield conn
            return
        conn.execute("BEGIN IMMEDIATE")
        try:
            yield conn
        except BaseException:
            conn.execute("ROLLBACK")
            raise
        conn.execute("COMMIT")

    def migrate(self) -> None:
        with self.transaction() as conn:
            conn.execute(
                "CREATE TABLE IF NOT EXISTS schema_migrations"
                " (version INTEGER PRIMARY KEY, applied_at TEXT NOT NULL)"
            )
            applied = {row["version"] for row in conn.execute("SELECT version FROM schema_migrations")}
            for version, script in MIGRATIONS:
                if version in applied:
                    continue
                for statement in _split_statements(script):
                    conn.execute(statement)
                conn.execute(
                    "INSERT INTO schema_migrations (version, applied_at) VALUES (?, datetime('now'))",
                    (version,),
                )

    def schema_version(self) -> int:
        row = self.connection.execute("SELECT max(version) AS v FROM schema_migrations").fetchone()
        return row["v"] or 0

    # -- catalog state (key/value) -------------------------------------------------------------

    def get_state(self, key: str, default: Any = None) -> Any:
        row = self.connection.execute("SELECT value FROM catalog_state WHERE key = ?", (key,)).fetchone()
        return json.loads(row["value"]) if row else default

    def set_state(self, key: str, value: Any) -> None:
        with self.transaction() as conn:
            conn.execute(
                "INSERT INTO catalog_state (key, value) VALUES (?, ?)"
                " ON CONFLICT (key) DO UPDATE SET value = excluded.value",
                (key, json.dumps(value)),
            )

    # -- catalog: what the reconciler reads and writes ----------------------------------------

    def catalog_files(self) -> dict[str, dict]:
        """Every catalog file last seen: path -> {kind, slug, digest, error (decoded)}."""
        rows = self.connection.execute("SELECT path, kind, slug, digest, error FROM catalog_files")
        return {row["path"]: {**row, "error": json.loads(row["error"]) if row["error"] else None} for row in rows}

    def service_index(self) -> dict[str, dict]:
        """slug -> {id, path, digest, dependencies, removed_at} for every service ever synced."""
        rows = self.connection.execute("SELECT id, slug, path, digest, dependencies, removed_at, error FROM services")
        return {row["slug"]: {**row, "dependencies": json.loads(row["dependencies"])} for row in rows}

    def check_index(self) -> dict[str, dict]:
        """slug -> {id, path, digest, target_kind, list_targets, removed_at} for every check ever synced."""
        rows = self.connection.execute("SELECT id, slug, path, digest, target_kind, targets, removed_at, error FROM checks")
        index = {}
        for row in rows:
            targets = json.loads(row.pop("targets"))
            row["list_targets"] = targets if row["target_kind"] == "list" else []
            index[row["slug"]] = row
        return index

    def apply_catalog(
        self,
        *,
        now: datetime,
        services: list[dict],
        checks: list[dict],
        removed_services: list[str],
        removed_checks: list[str],
        entity_errors: dict[tuple[str, str], str | None],
        files: list[dict],
        deleted_files: list[str],
        state: dict[str, Any],
        expected_revision: str | None,
        sync_run: dict,
    ) -> dict:
        """Apply one sync in one transaction; Conflict if another sync applied in the meantime."""
        stamp = format_time(now)
        with self.transaction() as conn:
            current = conn.execute("SELECT value FROM catalog_state WHERE key = 'applied_revision'").fetchone()
            if (json.loads(current["value"]) if current else None) != expected_revision:
                raise Conflict("another sync applied a revision in the meantime; plan again")
            if services:
                conn.executemany(
                    f"INSERT INTO services ({_SERVICE_COLUMNS}, created_at, updated_at)"
                    f" VALUES ({_placeholders(_SERVICE_COLUMNS)}, :now, :now)"
                    f" ON CONFLICT (slug) DO UPDATE SET {_updates(_SERVICE_COLUMNS)},"
                    " updated_at = :now, removed_at = NULL",
                    [{**record, "now": stamp} for record in services],
                )
            if checks:
                conn.executemany(
                    f"INSERT INTO checks ({_CHECK_COLUMNS}, created_at, updated_at)"
                    f" VALUES ({_placeholders(_CHECK_COLUMNS)}, :now, :now)"
                    f" ON CONFLICT (slug) DO UPDATE SET {_updates(_CHECK_COLUMNS)},"
                    " updated_at = :now, removed_at = NULL",
                    [{**record, "now": stamp} for record in checks],
                )
                for record in checks:
                    check_id = conn.execute("SELECT id FROM checks WHERE slug = ?", (record["slug"],)).fetchone()["id"]
                    conn.execute("DELETE FROM check_targets WHERE check_id = ?", (check_id,))
                    if record["target_kind"] == "list":
                        conn.executemany(
                            "INSERT OR IGNORE INTO check_targets (check_id, service_slug) VALUES (?, ?)",
                            [(check_id, slug) for slug in json.loads(record["targets"])],
                        )
            conn.executemany(
                "UPDATE services SET removed_at = ?, updated_at = ? WHERE slug = ? AND removed_at IS NULL",
                [(stamp, stamp, slug) for slug in removed_services],
            )
            conn.executemany(
                "UPDATE checks SET removed_at = ?, updated_at = ? WHERE slug = ? AND removed_at IS NULL",
                [(stamp, stamp, slug) for slug in removed_checks],
            )
            for (kind, slug), error in entity_errors.items():
                table = "services" if kind == "service" else "checks"
                conn.execute(f"UPDATE {table} SET error = ? WHERE slug = ? AND error IS NOT ?", (error, slug, error))
            conn.executemany(
                "INSERT INTO catalog_files (path, kind, slug, digest, error) VALUES (:path, :kind, :slug, :digest, :error)"
                " ON CONFLICT (path) DO UPDATE SET kind = excluded.kind, slug = excluded.slug,"
                " digest = excluded.digest, error = excluded.error",
                [{**f, "error": json.dumps(f["error"]) if f["error"] else None} for f in files],
            )
            conn.executemany("DELETE FROM catalog_files WHERE path = ?", [(path,) for path in deleted_files])
            for key, value in state.items():
                conn.execute(
                    "INSERT INTO catalog_state (key, value) VALUES (?, ?)"
                    " ON CONFLICT (key) DO UPDATE SET value = excluded.value",
                    (key, json.dumps(value)),
                )
            return self._insert_sync_run(conn, sync_run)

    def record_sync_run(self, sync_run: dict) -> dict:
        """A sync that applied nothing (refused or failed) is recorded too."""
        with self.transaction() as conn:
            return self._insert_sync_run(conn, sync_run)

    @staticmethod
    def _insert_sync_run(conn: sqlite3.Connection, run: dict) -> dict:
        row = conn.execute(
            "INSERT INTO sync_runs (started_at, finished_at, duration_ms, outcome, previous_revision,"
            " attempted_revision, applied_revision, created, updated, removed, unchanged, errors, message)"
            " VALUES (:started_at, :finished_at, :duration_ms, :outcome, :previous_revision,"
            " :attempted_revision, :applied_revision, :created, :updated, :removed, :unchanged, :errors, :message)"
            " RETURNING *",
            {**run, "errors": json.dumps(run.get("errors", []))},
        ).fetchone()
        row["errors"] = json.loads(row["errors"])
        return row

    def active_service_count(self) -> int:
        return self.connection.execute("SELECT count(*) AS n FROM services WHERE removed_at IS NULL").fetchone()["n"]

    def sync_runs(self, limit: int = 20) -> list[dict]:
        rows = self.connection.execute("SELECT * FROM sync_runs ORDER BY id DESC LIMIT ?", (limit,)).fetchall()
        for row in rows:
            row["errors"] = json.loads(row["errors"])
        return rows

    def catalog_counts(self) -> dict[str, int]:
        """Counts for `catalog status`: services, checks, open and finished results."""
        return self.connection.execute(
            "SELECT (SELECT count(*) FROM services WHERE removed_at IS NULL) AS services,"
            " (SELECT count(*) FROM services WHERE removed_at IS NOT NULL) AS removed_services,"
            " (SELECT count(*) FROM checks WHERE removed_at IS NULL) AS checks,"
            " (SELECT count(*) FROM results WHERE status = 'pending') AS pending_results,"
            " (SELECT count(*) FROM results WHERE status = 'sent') AS sent_results,"
            " (SELECT count(*) FROM results) AS results"
        ).fetchone()

    # -- results: the primitives every part shares ---------------------------------------------

    def create_result(
        self,
        check_id: int,
        service_id: int | None,
        *,
        now: datetime,
        revision: str | None = None,
        trigger: str = "schedule",
    ) -> dict:
        """A new pending/unknown result row for one (check, service) run."""
        with self.transaction() as conn:
            return conn.execute(
                "INSERT INTO results (check_id, service_id, revision, trigger, created_at)"
                " VALUES (?, ?, ?, ?, ?) RETURNING *",
                (check_id, service_id, revision, trigger, format_time(now)),
            ).fetchone()

    def complete_result(
        self, result_id: int, result: str, *, now: datetime, message: str | None = None, url: str | None = None
    ) -> dict:
        """Record the answer of an open (pending or sent) result; one atomic conditional update."""
        with self.transaction() as conn:
            row = conn.execute(
                "UPDATE results SET status = 'completed', result = ?, message = ?, url = ?, finished_at = ?"
                " WHERE id = ? AND status IN ('pending', 'sent') RETURNING *",
                (result, message, url, format_time(now), result_id),
            ).fetchone()
            if row is not None:
                return row
            current = conn.execute("SELECT status FROM results WHERE id = ?", (result_id,)).fetchone()
        if current is None:
            raise NotFound(f"result {result_id} does not exist")
        raise Conflict(f"result {result_id} is already {current['status']} and can never change")

    def get_result(self, result_id: int) -> dict:
        row = self.connection.execute("SELECT * FROM results WHERE id = ?", (result_id,)).fetchone()
        if row is None:
            raise NotFound(f"result {result_id} does not exist")
        return row


_SERVICE_COLUMNS = (
    "slug, name, priority, type, description, owner, repository, active, tags, dependencies, meta, path, digest, error"
)
_CHECK_COLUMNS = (
    "slug, name, description, frequency, schedule, timeout_seconds, active, repository, targets, target_kind,"
    " target_type, target_owner, target_tags, target_max_priority, path, digest, error"
)


def _names(columns: str) -> list[str]:
    return [name.strip() for name in columns.split(",")]


def _placeholders(columns: str) -> str:
    return ", ".join(f":{name}" for name in _names(columns))


def _updates(columns: str) -> str:
    return ", ".join(f"{name} = excluded.{name}" for name in _names(columns) if name != "slug")


def _split_statements(script: str) -> list[str]:
    """Split a migration into statements, keeping trigger bodies whole."""
    statements, buffer = [], ""
    for line in script.splitlines(keepends=True):
        if line.strip().startswith("--"):
            continue
        buffer += line
        if sqlite3.complete_statement(buffer):
            if buffer.strip():
                statements.append(buffer.strip())
            buffer = ""
    if buffer.strip():
        statements.append(buffer.strip())
    return statements
