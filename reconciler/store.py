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
from typing import Any, Callable, Iterator

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

        -- Write-back queue: finished results not yet pushed, filled by triggers, emptied once pushed,
        -- so a pass costs as much as its batch whatever the length of the history.
        CREATE TABLE IF NOT EXISTS writeback_queue (
            result_id INTEGER PRIMARY KEY REFERENCES results(id)
        );
        CREATE TRIGGER IF NOT EXISTS writeback_queue_on_finish AFTER UPDATE OF status ON results
        WHEN NEW.status IN ('completed', 'timed-out', 'error') AND OLD.status IN ('pending', 'sent')
        BEGIN
            INSERT OR IGNORE INTO writeback_queue (result_id) VALUES (NEW.id);
        END;
        CREATE TRIGGER IF NOT EXISTS writeback_queue_on_insert AFTER INSERT ON results
        WHEN NEW.status IN ('completed', 'timed-out', 'error')
        BEGIN
            INSERT OR IGNORE INTO writeback_queue (result_id) VALUES (NEW.id);
        END;
        -- The latest result per (check, service) among those already pushed: the summaries' source.
        CREATE TABLE IF NOT EXISTS writeback_latest (
            check_id    INTEGER NOT NULL,
            service_key INTEGER NOT NULL,              -- service_id, or 0 for checks with services: none
            result_id   INTEGER NOT NULL,
            PRIMARY KEY (check_id, service_key)
        ) WITHOUT ROWID;

        -- Dashboard: the latest finished result of each (check, service) pair, kept by triggers so
        -- the service x check matrix reads one small table instead of grouping all history.
        -- Finished results never change, so copying their fields here can never go stale.
        CREATE TABLE IF NOT EXISTS latest_results (
            check_id    INTEGER NOT NULL,
            service_key INTEGER NOT NULL,              -- service_id, or 0 for checks with services: none
            result_id   INTEGER NOT NULL,
            status      TEXT NOT NULL,
            result      TEXT NOT NULL,
            created_at  TEXT NOT NULL,
            finished_at TEXT NOT NULL,
            PRIMARY KEY (check_id, service_key)
        ) WITHOUT ROWID;
        -- Covering: the dashboard's totals and the matrix's per-page read (every column) use it
        -- without touching the table.
        CREATE INDEX IF NOT EXISTS latest_results_by_service
            ON latest_results (service_key, check_id, status, result, created_at, result_id, finished_at);
        CREATE TRIGGER IF NOT EXISTS latest_results_on_finish AFTER UPDATE OF finished_at ON results
        WHEN NEW.finished_at IS NOT NULL AND OLD.finished_at IS NULL
        BEGIN
            INSERT INTO latest_results (check_id, service_key, result_id, status, result, created_at, finished_at)
            VALUES (NEW.check_id, coalesce(NEW.service_id, 0), NEW.id, NEW.status, NEW.result,
                    NEW.created_at, NEW.finished_at)
            ON CONFLICT (check_id, service_key) DO UPDATE SET
                result_id = excluded.result_id, status = excluded.status, result = excluded.result,
                created_at = excluded.created_at, finished_at = excluded.finished_at
            WHERE excluded.result_id > latest_results.result_id;
        END;
        CREATE TRIGGER IF NOT EXISTS latest_results_on_insert AFTER INSERT ON results
        WHEN NEW.finished_at IS NOT NULL
        BEGIN
            INSERT INTO latest_results (check_id, service_key, result_id, status, result, created_at, finished_at)
            VALUES (NEW.check_id, coalesce(NEW.service_id, 0), NEW.id, NEW.status, NEW.result,
                    NEW.created_at, NEW.finished_at)
            ON CONFLICT (check_id, service_key) DO UPDATE SET
                result_id = excluded.result_id, status = excluded.status, result = excluded.result,
                created_at = excluded.created_at, finished_at = excluded.finished_at
            WHERE excluded.result_id > latest_results.result_id;
        END;
        CREATE INDEX IF NOT EXISTS results_by_check ON results (check_id, id);

        -- API: the newest result of ANY status (open ones too) of each (check, service) pair, with the
        -- fields GET /api/services/{slug} answers, kept by triggers. Keyed by service first, so one
        -- service's rows sit side by side: one short range read instead of a search per check.
        CREATE TABLE IF NOT EXISTS latest_runs (
            service_key INTEGER NOT NULL,              -- service_id, or 0 for checks with services: none
            check_id    INTEGER NOT NULL,
            result_id   INTEGER NOT NULL,
            status      TEXT NOT NULL,
            result      TEXT NOT NULL,
            url         TEXT,
            created_at  TEXT NOT NULL,
            sent_at     TEXT,
            finished_at TEXT,
            PRIMARY KEY (service_key, check_id)
        ) WITHOUT ROWID;
        CREATE TRIGGER IF NOT EXISTS latest_runs_on_insert AFTER INSERT ON results
        BEGIN
            INSERT INTO latest_runs (service_key, check_id, result_id, status, result, url, created_at, sent_at, finished_at)
            VALUES (coalesce(NEW.service_id, 0), NEW.check_id, NEW.id, NEW.status, NEW.result, NEW.url,
                    NEW.created_at, NEW.sent_at, NEW.finished_at)
            ON CONFLICT (service_key, check_id) DO UPDATE SET
                result_id = excluded.result_id, status = excluded.status, result = excluded.result,
                url = excluded.url, created_at = excluded.created_at, sent_at = excluded.sent_at,
                finished_at = excluded.finished_at
            WHERE excluded.result_id > latest_runs.result_id;
        END;
        -- One primary-key update per status change, and only when the result is its pair's newest.
        CREATE TRIGGER IF NOT EXISTS latest_runs_on_update AFTER UPDATE OF status, result, url, sent_at, finished_at ON results
        BEGIN
            UPDATE latest_runs SET status = NEW.status, result = NEW.result, url = NEW.url,
                sent_at = NEW.sent_at, finished_at = NEW.finished_at
            WHERE service_key = coalesce(NEW.service_id, 0) AND check_id = NEW.check_id AND result_id = NEW.id;
        END;
        INSERT INTO latest_runs (service_key, check_id, result_id, status, result, url, created_at, sent_at, finished_at)
        SELECT coalesce(service_id, 0), check_id, id, status, result, url, created_at, sent_at, finished_at
        FROM results WHERE id IN (SELECT max(id) FROM results GROUP BY check_id, service_id)
        ON CONFLICT (service_key, check_id) DO NOTHING;

        -- Dispatch: per (check, service) pair, when its newest result was created and how many of
        -- its results are open, kept by triggers, so the due computation reads one small row per
        -- pair (an integer-key seek) instead of searching the history. The key packs both ids.
        CREATE TABLE IF NOT EXISTS dispatch_pairs (
            pair_key        INTEGER PRIMARY KEY,      -- check_id * 2^32 + (service_id or 0)
            last_created_at TEXT NOT NULL,
            open_results    INTEGER NOT NULL          -- results pending or sent
        );
        CREATE TRIGGER IF NOT EXISTS dispatch_pairs_on_insert AFTER INSERT ON results
        BEGIN
            INSERT INTO dispatch_pairs (pair_key, last_created_at, open_results)
            VALUES (NEW.check_id * 4294967296 + coalesce(NEW.service_id, 0), NEW.created_at,
                    NEW.status IN ('pending', 'sent'))
            ON CONFLICT (pair_key) DO UPDATE SET
                last_created_at = max(last_created_at, excluded.last_created_at),
                open_results = open_results + excluded.open_results;
        END;
        -- One write per PATCH: a single integer-key update. (Statuses only move forward, open to
        -- finished, and a result's check, service and created_at never change: see above.)
        CREATE TRIGGER IF NOT EXISTS dispatch_pairs_on_finish AFTER UPDATE OF status ON results
        WHEN OLD.status IN ('pending', 'sent') AND NEW.status NOT IN ('pending', 'sent')
        BEGIN
            UPDATE dispatch_pairs SET open_results = open_results - 1
            WHERE pair_key = NEW.check_id * 4294967296 + coalesce(NEW.service_id, 0);
        END;
        INSERT INTO dispatch_pairs (pair_key, last_created_at, open_results)
        SELECT check_id * 4294967296 + coalesce(service_id, 0), max(created_at), sum(status IN ('pending', 'sent'))
        FROM results WHERE true GROUP BY check_id, service_id
        ON CONFLICT (pair_key) DO NOTHING;
        -- Dispatch: a lease and a backoff per pending result, so that two schedulers (or the API's
        -- run-check and the scheduler) never send one result at once, and a crash is retried later.
        CREATE TABLE IF NOT EXISTS dispatch_attempts (
            result_id  INTEGER PRIMARY KEY REFERENCES results(id),
            attempts   INTEGER NOT NULL DEFAULT 0,
            not_before TEXT NOT NULL,                 -- nobody sends it again before this time
            holder     TEXT,                          -- the scheduler pass that holds the lease
            last_error TEXT                           -- the last transient failure, for `status`
        );
        -- Leases still held: what a restart checks for a dead predecessor's, without a full scan.
        CREATE INDEX IF NOT EXISTS dispatch_leases ON dispatch_attempts (not_before) WHERE holder IS NOT NULL;
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
        rows = _fetch_dicts(self.connection, "SELECT path, kind, slug, digest, error FROM catalog_files")
        for row in rows:
            if row["error"]:
                row["error"] = json.loads(row["error"])
        return {row["path"]: row for row in rows}

    def service_index(self, *, decode: bool = True) -> dict[str, dict]:
        """slug -> {id, path, digest, dependencies, removed_at} for every service ever synced.

        `decode=False` leaves `dependencies` as its JSON text: a one-file sync reads few of them.
        """
        rows = _fetch_dicts(self.connection, "SELECT id, slug, path, digest, dependencies, removed_at, error FROM services")
        if decode:
            for row in rows:
                row["dependencies"] = [] if row["dependencies"] == "[]" else json.loads(row["dependencies"])
        return {row["slug"]: row for row in rows}

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
                # the targets of every written check, replaced in three statements (no query per check)
                slugs = [record["slug"] for record in checks]
                ids = {
                    row["slug"]: row["id"]
                    for row in conn.execute(
                        "SELECT id, slug FROM checks WHERE slug IN (SELECT value FROM json_each(?))",
                        (json.dumps(slugs),),
                    )
                }
                conn.executemany("DELETE FROM check_targets WHERE check_id = ?", [(ids[slug],) for slug in slugs])
                conn.executemany(
                    "INSERT OR IGNORE INTO check_targets (check_id, service_slug) VALUES (?, ?)",
                    [
                        (ids[record["slug"]], slug)
                        for record in checks if record["target_kind"] == "list"
                        for slug in json.loads(record["targets"])
                    ],
                )
            conn.executemany(
                "UPDATE services SET removed_at = ?, updated_at = ? WHERE slug = ? AND removed_at IS NULL",
                [(stamp, stamp, slug) for slug in removed_services],
            )
            conn.executemany(
                "UPDATE checks SET removed_at = ?, updated_at = ? WHERE slug = ? AND removed_at IS NULL",
                [(stamp, stamp, slug) for slug in removed_checks],
            )
            for kind, table in (("service", "services"), ("check", "checks")):
                conn.executemany(
                    f"UPDATE {table} SET error = ? WHERE slug = ? AND error IS NOT ?",
                    [(error, slug, error) for (k, slug), error in entity_errors.items() if k == kind],
                )
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

    def catalog_file_errors(self) -> list[dict]:
        """Every catalog file whose current version has an error: {path, kind, slug, error (decoded)}."""
        rows = self.connection.execute(
            "SELECT path, kind, slug, error FROM catalog_files WHERE error IS NOT NULL ORDER BY path"
        ).fetchall()
        return [{**row, "error": json.loads(row["error"])} for row in rows]

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

    _COMPLETE = (
        "UPDATE results SET status = 'completed', result = ?, message = ?, url = ?, finished_at = ?"
        " WHERE id = ? AND status IN ('pending', 'sent') RETURNING *"
    )
    # The API's answer also names the check and the service: read in the same statement.
    _COMPLETE_WITH_SLUGS = _COMPLETE + (
        ', (SELECT slug FROM checks WHERE id = results.check_id) AS "check",'
        " (SELECT slug FROM services WHERE id = results.service_id) AS service"
    )

    def complete_result(
        self, result_id: int, result: str, *, now: datetime, message: str | None = None, url: str | None = None
    ) -> dict:
        """Record the answer of an open (pending or sent) result; one atomic conditional update."""
        with self.transaction() as conn:
            return _complete(conn, self._COMPLETE, result_id, (result, message, url, format_time(now), result_id))

    def answer_results(
        self, answers: list[tuple[int, str, str | None, str | None, datetime]], *, wait: bool = True
    ) -> list[dict | NotFound | Conflict] | None:
        """Many `complete_result`s (id, result, message, url, now) in one transaction: one commit for all.

        Each answer gets its row, carrying the slugs of its check and service (the API's answer), or the
        NotFound or Conflict `complete_result` would have raised. With wait=False it never waits for the
        write lock (for a caller on an event loop): None at once when another connection holds it (a sync
        applying, say), to be retried where waiting is harmless.
        """
        if wait:
            with self.transaction() as conn:
                return [_answer(conn, self._COMPLETE_WITH_SLUGS, answer) for answer in answers]
        conn = self.connection
        # A caller that must not wait must not copy the WAL back either (a checkpoint writes and syncs
        # the database file): it calls `checkpoint()` where waiting is harmless.
        conn.execute("PRAGMA wal_autocheckpoint = 0")
        conn.execute("PRAGMA busy_timeout = 0")
        try:
            conn.execute("BEGIN IMMEDIATE")
        except sqlite3.OperationalError as error:
            if error.sqlite_errorcode & 0xFF in (sqlite3.SQLITE_BUSY, sqlite3.SQLITE_LOCKED):
                return None
            raise
        finally:
            conn.execute("PRAGMA busy_timeout = 30000")
        try:
            outcomes = [_answer(conn, self._COMPLETE_WITH_SLUGS, answer) for answer in answers]
        except BaseException:
            conn.execute("ROLLBACK")
            raise
        conn.execute("COMMIT")
        return outcomes

    def checkpoint(self) -> None:
        """Copy the WAL back into the database without blocking readers or writers (PASSIVE)."""
        self.connection.execute("PRAGMA wal_checkpoint(PASSIVE)")

    def get_result(self, result_id: int) -> dict:
        row = self.connection.execute("SELECT * FROM results WHERE id = ?", (result_id,)).fetchone()
        if row is None:
            raise NotFound(f"result {result_id} does not exist")
        return row

    # -- dispatch ------------------------------------------------------------------------------
    # The scheduler's reads and writes (reconciler/schedule.py). Per-check cutoffs are computed in
    # Python (cron needs croniter) and passed in as JSON [[check_id, cutoff_text], ...]; a pair is
    # due when no result of it was created at or after its cutoff and none is pending or sent; both
    # facts come from dispatch_pairs (kept by triggers on results), never from the history itself.

    _WANTED = """
        WITH wanted AS MATERIALIZED (
            SELECT c.id, c.target_kind, c.target_type, c.target_owner, c.target_tags, c.target_max_priority,
                   json_extract(j.value, '$[1]') AS cutoff
            FROM json_each(:cutoffs) AS j JOIN checks AS c ON c.id = json_extract(j.value, '$[0]')
        )
    """
    # Service `s` is active and targeted by wanted check `w` (not for `services: none`).
    _TARGETED = """
        s.removed_at IS NULL AND s.active = 1 AND (:service_id IS NULL OR s.id = :service_id)
        AND (w.target_kind = 'all'
          OR (w.target_kind = 'list' AND EXISTS (
              SELECT 1 FROM check_targets AS t WHERE t.check_id = w.id AND t.service_slug = s.slug))
          OR (w.target_kind = 'selector'
              AND (w.target_type IS NULL OR s.type = w.target_type)
              AND (w.target_owner IS NULL OR s.owner = w.target_owner)
              AND (w.target_max_priority IS NULL OR s.priority <= w.target_max_priority)
              AND (w.target_tags IS NULL OR NOT EXISTS (
                  SELECT 1 FROM json_each(w.target_tags) AS need
                  WHERE need.value NOT IN (SELECT value FROM json_each(s.tags))))))
    """
    _TARGETED_PAIRS = _WANTED + f"""
        , pairs AS (
            SELECT w.id AS check_id, s.id AS service_id FROM wanted AS w JOIN services AS s WHERE {_TARGETED}
            UNION ALL
            SELECT w.id, NULL FROM wanted AS w WHERE w.target_kind = 'none' AND :service_id IS NULL
        )
    """
    # Pair (w, service key) has run recently enough, or has an open result: not due.
    _NOT_DUE = """
        EXISTS (SELECT 1 FROM dispatch_pairs AS d WHERE d.pair_key = w.id * 4294967296 + {key}
                AND (d.open_results > 0 OR d.last_created_at >= w.cutoff))
    """
    # One row per wanted check: its due service ids as a JSON array ([null] for `services: none`;
    # those checks come last, as pairs are created in this order up to a limit). Grouping per check
    # keeps half a million pairs out of Python and out of a sorter: services are scanned in id
    # order inside each check, with one integer-key seek into dispatch_pairs each (a LEFT JOIN:
    # a correlated NOT EXISTS costs half as much again per pair).
    _DUE_BY_CHECK = _WANTED + f"""
        , due AS (
            SELECT w.id AS check_id, (
                    SELECT json_group_array(s.id) FROM services AS s
                    LEFT JOIN dispatch_pairs AS d ON d.pair_key = w.id * 4294967296 + s.id
                    WHERE {_TARGETED}
                      AND (d.pair_key IS NULL OR (d.open_results = 0 AND d.last_created_at < w.cutoff))
                   ) AS service_ids
            FROM wanted AS w WHERE w.target_kind <> 'none'
            UNION ALL
            SELECT w.id, CASE WHEN :service_id IS NULL AND NOT {_NOT_DUE.format(key="0")} THEN '[null]' ELSE '[]' END
            FROM wanted AS w WHERE w.target_kind = 'none'
        )
    """
    _DUE_PAIRS = _DUE_BY_CHECK + """
        SELECT due.check_id, j.value AS service_id FROM due, json_each(due.service_ids) AS j
    """

    def due_services(self, cutoffs: list[tuple[int, str]]) -> list[tuple[int, list[int | None]]]:
        """(check_id, [service_id or None, ...]) per wanted check with due pairs; one query."""
        cursor = self.connection.cursor()
        cursor.row_factory = None
        rows = cursor.execute(
            self._DUE_BY_CHECK + " SELECT check_id, service_ids FROM due WHERE service_ids <> '[]'",
            {"cutoffs": json.dumps(cutoffs), "service_id": None},
        ).fetchall()
        return [(check_id, json.loads(service_ids)) for check_id, service_ids in rows]

    def due_pairs(self, cutoffs: list[tuple[int, str]]) -> list[tuple[int, int | None]]:
        """(check_id, service_id or None) of every due pair, in one query; see the section note."""
        return [(check_id, service_id) for check_id, ids in self.due_services(cutoffs) for service_id in ids]

    def create_due_results(
        self,
        cutoffs: list[tuple[int, str]],
        *,
        now: str,
        revision: str | None,
        claim_until: str,
        holder: str,
        trigger: str = "schedule",
        service_id: int | None = None,
        limit: int = -1,
    ) -> list[dict]:
        """Create a pending result for every due pair and lease it to the caller, in one transaction.

        The due query and the insert share the transaction, so two schedulers can never both create
        a result for one pair. The lease (`claim_until`) keeps others from sending these rows.
        """
        with self.transaction() as conn:
            rows = conn.execute(
                "INSERT INTO results (check_id, service_id, revision, trigger, created_at)"
                f" SELECT check_id, service_id, :revision, :trigger, :now FROM ({self._DUE_PAIRS} LIMIT :limit)"
                " RETURNING *",
                {"cutoffs": json.dumps(cutoffs), "service_id": service_id, "revision": revision,
                 "trigger": trigger, "now": now, "limit": limit},
            ).fetchall()
            conn.execute(
                "INSERT INTO dispatch_attempts (result_id, attempts, not_before, holder)"
                " SELECT value, 0, ?, ? FROM json_each(?)",
                (claim_until, holder, json.dumps([row["id"] for row in rows])),
            )
        rows.sort(key=lambda row: row["id"])
        return rows

    def targeted_service_ids(self, check_id: int) -> list[int | None]:
        """The active services a check targets now (None alone for `services: none`), open or not."""
        rows = self.connection.execute(
            self._TARGETED_PAIRS + " SELECT service_id FROM pairs ORDER BY service_id",
            {"cutoffs": json.dumps([[check_id, ""]]), "service_id": None},
        ).fetchall()
        return [row["service_id"] for row in rows]

    def open_results_of_pair(self, check_id: int, service_id: int | None) -> list[dict]:
        return self.connection.execute(
            "SELECT * FROM results WHERE check_id = ? AND service_id IS ? AND status IN ('pending', 'sent')"
            " ORDER BY id",
            (check_id, service_id),
        ).fetchall()

    def claim_pending_results(self, *, now: str, claim_until: str, holder: str, limit: int = 10_000) -> list[dict]:
        """Lease pending results nobody holds (crash leftovers, deferred retries), oldest first."""
        with self.transaction() as conn:
            ids = [
                row["id"]
                for row in conn.execute(
                    "SELECT r.id FROM results AS r LEFT JOIN dispatch_attempts AS d ON d.result_id = r.id"
                    " WHERE r.status = 'pending' AND (d.not_before IS NULL OR d.not_before <= ?)"
                    " ORDER BY r.id LIMIT ?",
                    (now, limit),
                )
            ]
            conn.execute(
                "INSERT INTO dispatch_attempts (result_id, attempts, not_before, holder)"
                " SELECT value, 0, :until, :holder FROM json_each(:ids) WHERE true"
                " ON CONFLICT (result_id) DO UPDATE SET not_before = :until, holder = :holder",
                {"until": claim_until, "holder": holder, "ids": json.dumps(ids)},
            )
            return conn.execute(
                "SELECT r.*, d.attempts FROM results AS r JOIN dispatch_attempts AS d ON d.result_id = r.id"
                " WHERE r.id IN (SELECT value FROM json_each(?)) ORDER BY r.id",
                (json.dumps(ids),),
            ).fetchall()

    def release_leases(self, *, now: str, keep: Callable[[str], bool]) -> int:
        """End the unexpired leases whose holder `keep` rejects (a scheduler that died); their results
        become claimable at once."""
        holders = [
            row["holder"]
            for row in self.connection.execute(
                "SELECT DISTINCT holder FROM dispatch_attempts WHERE holder IS NOT NULL AND not_before > ?", (now,)
            )
        ]
        dead = [holder for holder in holders if not keep(holder)]
        if not dead:
            return 0
        with self.transaction() as conn:
            return conn.execute(
                "UPDATE dispatch_attempts SET not_before = ?, holder = NULL"
                " WHERE holder IN (SELECT value FROM json_each(?))",
                (now, json.dumps(dead)),
            ).rowcount

    def renew_claim(self, result_id: int, *, holder: str, claim_until: str) -> bool:
        """Just before sending: extend our lease; False if the result is no longer ours to send."""
        with self.transaction() as conn:
            return conn.execute(
                "UPDATE dispatch_attempts SET not_before = ?, attempts = attempts + 1"
                " WHERE result_id = ? AND holder = ?"
                " AND (SELECT status FROM results WHERE id = ?) = 'pending' RETURNING result_id",
                (claim_until, result_id, holder, result_id),
            ).fetchone() is not None

    def mark_result_sent(self, result_id: int, *, now: str) -> bool:
        """pending -> sent; False when the result moved on already (the Action may have answered)."""
        with self.transaction() as conn:
            return conn.execute(
                "UPDATE results SET status = 'sent', sent_at = ? WHERE id = ? AND status = 'pending' RETURNING id",
                (now, result_id),
            ).fetchone() is not None

    def mark_result_failed(self, result_id: int, message: str, *, now: str) -> bool:
        """pending -> error with the reason (a permanent dispatch failure); False if it moved on."""
        with self.transaction() as conn:
            return conn.execute(
                "UPDATE results SET status = 'error', message = ?, finished_at = ?"
                " WHERE id = ? AND status = 'pending' RETURNING id",
                (message, now, result_id),
            ).fetchone() is not None

    def defer_results(self, result_ids: list[int], *, until: str, error: str | None) -> None:
        """Keep pending results for a later pass: nobody sends them before `until`."""
        with self.transaction() as conn:
            conn.execute(
                "INSERT INTO dispatch_attempts (result_id, attempts, not_before, last_error)"
                " SELECT value, 0, :until, :error FROM json_each(:ids) WHERE true"
                " ON CONFLICT (result_id) DO UPDATE SET not_before = :until, holder = NULL,"
                " last_error = coalesce(:error, last_error)",
                {"until": until, "error": error, "ids": json.dumps(result_ids)},
            )

    def expire_results(self, limits: list[tuple[int, str, str]], *, now: str, dry_run: bool = False) -> list[int]:
        """Open results sent (or, never sent, created) at or before their check's cutoff -> timed-out.

        `limits` is [[check_id, cutoff_text, message], ...]; returns the ids, sorted.
        """
        limit_cte = (
            "WITH limits AS (SELECT json_extract(value, '$[0]') AS check_id, json_extract(value, '$[1]') AS cutoff,"
            " json_extract(value, '$[2]') AS message FROM json_each(:limits))"
        )
        params = {"limits": json.dumps(limits), "now": now}
        if dry_run:
            rows = self.connection.execute(
                limit_cte + " SELECT r.id FROM results AS r JOIN limits AS l ON l.check_id = r.check_id"
                " WHERE r.status IN ('pending', 'sent') AND coalesce(r.sent_at, r.created_at) <= l.cutoff",
                params,
            ).fetchall()
        else:
            with self.transaction() as conn:
                rows = conn.execute(
                    limit_cte + " UPDATE results SET status = 'timed-out', finished_at = :now,"
                    " message = limits.message FROM limits WHERE results.check_id = limits.check_id"
                    " AND results.status IN ('pending', 'sent')"
                    " AND coalesce(results.sent_at, results.created_at) <= limits.cutoff RETURNING results.id",
                    params,
                ).fetchall()
        return sorted(row["id"] for row in rows)

    def services_by_id(self, service_ids: list[int]) -> dict[int, dict]:
        """id -> service row (JSON fields decoded), removed or not."""
        rows = self.connection.execute(
            "SELECT * FROM services WHERE id IN (SELECT value FROM json_each(?))", (json.dumps(list(service_ids)),)
        )
        return {row["id"]: _decode_service(row) for row in rows}

    def dispatch_attempt(self, result_id: int) -> dict | None:
        """The lease and retry state of a result, or None if it was never leased."""
        return self.connection.execute(
            "SELECT * FROM dispatch_attempts WHERE result_id = ?", (result_id,)
        ).fetchone()

    # -- tokens -------------------------------------------------------------------------------
    # API tokens (reconciler/tokens.py): only sha256 hashes of the secrets are ever stored.

    def insert_token(self, name: str, token_hash: str, scopes: str, created_at: str) -> None:
        """A new token; a revoked token's name may be taken again (its row is reused)."""
        with self.transaction() as conn:
            existing = conn.execute("SELECT revoked_at FROM api_tokens WHERE name = ?", (name,)).fetchone()
            if existing is not None and existing["revoked_at"] is None:
                raise Conflict(f"a token named {name!r} already exists; revoke it first or pick another name")
            conn.execute(
                "INSERT INTO api_tokens (name, token_hash, scopes, created_at) VALUES (?, ?, ?, ?)"
                " ON CONFLICT (name) DO UPDATE SET token_hash = excluded.token_hash, scopes = excluded.scopes,"
                " created_at = excluded.created_at, last_used_at = NULL, revoked_at = NULL",
                (name, token_hash, scopes, created_at),
            )

    def list_token_rows(self) -> list[dict]:
        return self.connection.execute(
            "SELECT id, name, scopes, created_at, last_used_at, revoked_at FROM api_tokens ORDER BY name"
        ).fetchall()

    def revoke_token(self, name: str, revoked_at: str) -> None:
        with self.transaction() as conn:
            row = conn.execute(
                "UPDATE api_tokens SET revoked_at = coalesce(revoked_at, ?) WHERE name = ? RETURNING id",
                (revoked_at, name),
            ).fetchone()
        if row is None:
            raise NotFound(f"no token named {name!r}")

    def token_by_hash(self, token_hash: str) -> dict | None:
        return self.connection.execute(
            "SELECT id, name, token_hash, scopes, last_used_at, revoked_at FROM api_tokens WHERE token_hash = ?",
            (token_hash,),
        ).fetchone()

    def touch_token(self, token_id: int, used_at: str) -> None:
        with self.transaction() as conn:
            conn.execute("UPDATE api_tokens SET last_used_at = ? WHERE id = ?", (used_at, token_id))

    # -- reads --------------------------------------------------------------------------------
    # What the HTTP API serves. JSON columns come back decoded; results carry their slugs.

    def list_services(
        self, *, type: str | None = None, owner: str | None = None, tag: str | None = None,
        include_removed: bool = False,
    ) -> list[dict]:
        sql, params = "SELECT * FROM services WHERE 1", []
        if not include_removed:
            sql += " AND removed_at IS NULL"
        if type is not None:
            sql, params = sql + " AND type = ?", params + [type]
        if owner is not None:
            sql, params = sql + " AND owner = ?", params + [owner]
        if tag is not None:
            sql += " AND EXISTS (SELECT 1 FROM json_each(services.tags) WHERE value = ?)"
            params.append(tag)
        return [_decode_service(row) for row in self.connection.execute(sql + " ORDER BY slug", params)]

    def get_service(self, slug: str) -> dict:
        """A service (removed or not) with `latest_results` (one per live check) and their `counts`."""
        conn = self.connection
        row = conn.execute("SELECT * FROM services WHERE slug = ?", (slug,)).fetchone()
        if row is None:
            raise NotFound(f"service {slug!r} does not exist")
        # One range of `latest_runs` (kept by triggers), however long the history is. A summary:
        # no message (up to 64 KiB each); GET /api/results/{id} has the whole result.
        latest = _fetch_dicts(conn, self._SERVICE_LATEST, (row["id"],))
        service = _decode_service(row)
        service["latest_results"] = latest
        service["counts"] = _count_results(latest)
        return service

    # The newest result of each live check on one service: its rows of `latest_runs`, side by side.
    _SERVICE_LATEST = (
        'SELECT l.result_id AS id, c.slug AS "check", l.status, l.result, l.url, l.created_at, l.sent_at,'
        " l.finished_at FROM latest_runs AS l JOIN checks AS c ON c.id = l.check_id"
        " WHERE l.service_key = ? AND c.removed_at IS NULL ORDER BY c.slug"
    )

    # `get_service` as JSON text built by SQLite itself: no Python object per result (the API's hot read).
    _SERVICE_JSON = """
        WITH service AS (SELECT * FROM services WHERE slug = ?),
        latest AS MATERIALIZED (
            SELECT l.result_id AS id, c.slug AS "check", l.status, l.result, l.url, l.created_at, l.sent_at,
                l.finished_at
            FROM service AS s JOIN latest_runs AS l ON l.service_key = s.id JOIN checks AS c ON c.id = l.check_id
            WHERE c.removed_at IS NULL ORDER BY c.slug
        )
        SELECT json_object(
            'id', id, 'slug', slug, 'name', name, 'priority', priority, 'type', type, 'description', description,
            'owner', owner, 'repository', repository, 'active', json(iif(active, 'true', 'false')),
            'tags', json(tags), 'dependencies', json(dependencies), 'meta', json(meta), 'path', path,
            'digest', digest, 'error', error, 'removed_at', removed_at, 'created_at', created_at, 'updated_at', updated_at,
            'latest_results', (
                SELECT json_group_array(json_object(
                    'id', id, 'check', "check", 'status', status, 'result', result, 'url', url,
                    'created_at', created_at, 'sent_at', sent_at, 'finished_at', finished_at))
                FROM latest),
            'counts', (SELECT json_group_object(result, n) FROM (SELECT result, count(*) AS n FROM latest GROUP BY result))
        ) FROM service
    """

    def get_service_json(self, slug: str) -> str:
        """`get_service(slug)` encoded as JSON (the same fields and values)."""
        cursor = self.connection.cursor()
        cursor.row_factory = None
        row = cursor.execute(self._SERVICE_JSON, (slug,)).fetchone()
        if row is None:
            raise NotFound(f"service {slug!r} does not exist")
        return row[0]

    def list_checks(self, *, include_removed: bool = False) -> list[dict]:
        sql = "SELECT * FROM checks" + ("" if include_removed else " WHERE removed_at IS NULL") + " ORDER BY slug"
        return [_decode_check_row(row) for row in self.connection.execute(sql)]

    def get_check(self, slug: str) -> dict:
        """A check (removed or not) with `latest_results` (one per service it ran on) and `counts`."""
        conn = self.connection
        row = conn.execute("SELECT * FROM checks WHERE slug = ?", (slug,)).fetchone()
        if row is None:
            raise NotFound(f"check {slug!r} does not exist")
        # One index probe per live service, plus the run without a service (`services: none`).
        columns = "r.id, s.slug AS service, r.status, r.result, r.url, r.created_at, r.sent_at, r.finished_at"
        latest = _fetch_dicts(
            conn,
            f"SELECT {columns} FROM services s JOIN results r ON r.id ="
            " (SELECT max(id) FROM results WHERE check_id = ? AND service_id = s.id)"
            " WHERE s.removed_at IS NULL"
            f" UNION ALL SELECT {columns} FROM results r LEFT JOIN services s ON 0 WHERE r.id ="
            " (SELECT max(id) FROM results WHERE check_id = ? AND service_id IS NULL)"
            " ORDER BY service",
            (row["id"], row["id"]),
        )
        check = _decode_check_row(row)
        check["latest_results"] = latest
        check["counts"] = _count_results(latest)
        return check

    def list_results(
        self, *, service: str | None = None, check: str | None = None, result: str | None = None,
        status: str | None = None, since: str | None = None, before_id: int | None = None, limit: int = 100,
    ) -> list[dict]:
        """Results newest first (by id), filtered; page on with `before_id` = the last id seen."""
        sql, params = _RESULT_SELECT + " WHERE 1", []
        if service is not None:
            sql, params = sql + " AND r.service_id = (SELECT id FROM services WHERE slug = ?)", params + [service]
        if check is not None:
            sql, params = sql + " AND r.check_id = (SELECT id FROM checks WHERE slug = ?)", params + [check]
        if result is not None:
            sql, params = sql + " AND r.result = ?", params + [result]
        if status is not None:
            sql, params = sql + " AND r.status = ?", params + [status]
        if since is not None:
            sql, params = sql + " AND r.created_at >= ?", params + [since]
        if before_id is not None:
            sql, params = sql + " AND r.id < ?", params + [before_id]
        return self.connection.execute(sql + " ORDER BY r.id DESC LIMIT ?", params + [limit]).fetchall()

    def read_result(self, result_id: int) -> dict:
        """One result with the slugs of its check and service."""
        row = self.connection.execute(_RESULT_SELECT + " WHERE r.id = ?", (result_id,)).fetchone()
        if row is None:
            raise NotFound(f"result {result_id} does not exist")
        return row

    def last_sync_run(self) -> dict | None:
        row = self.connection.execute("SELECT * FROM sync_runs ORDER BY id DESC LIMIT 1").fetchone()
        if row is not None:
            row["errors"] = json.loads(row["errors"])
        return row

    def record_webhook_delivery(self, delivery_id: str, received_at: str) -> bool:
        """True the first time a delivery id is seen, False for a redelivery."""
        with self.transaction() as conn:
            return conn.execute(
                "INSERT INTO webhook_deliveries (delivery_id, received_at) VALUES (?, ?)"
                " ON CONFLICT (delivery_id) DO NOTHING RETURNING delivery_id",
                (delivery_id, received_at),
            ).fetchone() is not None

    # -- dashboard ---------------------------------------------------------------------------------
    # Reads for the web pages and badges. `latest_results` is kept by triggers (see migration 1).

    def dashboard_services(self, *, owner: str | None = None, type: str | None = None, tag: str | None = None) -> list[dict]:
        """Services in the catalog now, most important first; filters match exactly."""
        where, params = _service_filter(owner, type, tag)
        rows = _fetch_dicts(
            self.connection,
            "SELECT id, slug, name, priority, type, owner, active, tags, error FROM services"
            f" WHERE {where} ORDER BY priority, slug",
            tuple(params),
        )
        for row in rows:
            row["tags"] = json.loads(row["tags"])
        return rows

    def dashboard_service_page(
        self, *, owner: str | None = None, type: str | None = None, tag: str | None = None, page: int, per_page: int
    ) -> tuple[int, int, list[dict]]:
        """(matching services, the page actually shown, that page's services): like `dashboard_services`
        sliced, but only one page is read and decoded. A page past the end shows the last one."""
        where, params = _service_filter(owner, type, tag)
        conn = self.connection
        total = conn.execute(f"SELECT count(*) AS n FROM services WHERE {where}", params).fetchone()["n"]
        page = min(page, max(1, -(-total // per_page)))
        rows = _fetch_dicts(
            conn,
            "SELECT id, slug, name, priority, type, owner, active, tags, error FROM services"
            f" WHERE {where} ORDER BY priority, slug LIMIT ? OFFSET ?",
            (*params, per_page, (page - 1) * per_page),
        )
        for row in rows:
            row["tags"] = json.loads(row["tags"])
        return total, page, rows

    def dashboard_facets(self) -> dict[str, list[str]]:
        """The owners, types and tags in use, for the dashboard's filters."""
        conn = self.connection
        live = "FROM services WHERE removed_at IS NULL"
        return {
            "owners": [r["v"] for r in conn.execute(f"SELECT DISTINCT owner AS v {live} AND owner IS NOT NULL ORDER BY v")],
            "types": [r["v"] for r in conn.execute(f"SELECT DISTINCT type AS v {live} AND type IS NOT NULL ORDER BY v")],
            "tags": [
                r["v"]
                for r in conn.execute(
                    "SELECT DISTINCT t.value AS v FROM services, json_each(services.tags) AS t"
                    " WHERE services.removed_at IS NULL ORDER BY v"
                )
            ],
        }

    def dashboard_checks(self, *, include_removed: bool = False) -> list[dict]:
        """Checks with their targets decoded (`targets`, `target_tags`)."""
        sql = "SELECT * FROM checks" + ("" if include_removed else " WHERE removed_at IS NULL") + " ORDER BY name, slug"
        return [_decode_check(row) for row in self.connection.execute(sql).fetchall()]

    def dashboard_service(self, slug: str) -> dict:
        """One service by slug, removed or not, its JSON fields decoded."""
        row = self.connection.execute("SELECT * FROM services WHERE slug = ?", (slug,)).fetchone()
        if row is None:
            raise NotFound(f"service {slug!r} does not exist")
        for key in ("tags", "dependencies", "meta"):
            row[key] = json.loads(row[key])
        return row

    def dashboard_check(self, slug: str) -> dict:
        row = self.connection.execute("SELECT * FROM checks WHERE slug = ?", (slug,)).fetchone()
        if row is None:
            raise NotFound(f"check {slug!r} does not exist")
        return _decode_check(row)

    def dashboard_service_names(self, slugs: list[str]) -> dict[str, dict]:
        """slug -> {slug, name, removed_at} for the given slugs that exist."""
        rows = self.connection.execute(
            "SELECT slug, name, removed_at FROM services WHERE slug IN (SELECT value FROM json_each(?))",
            (json.dumps(list(slugs)),),
        )
        return {row["slug"]: row for row in rows}

    def dashboard_dependents(self, slug: str) -> list[dict]:
        """Services in the catalog that list `slug` among their dependencies."""
        return self.connection.execute(
            "SELECT slug, name FROM services WHERE removed_at IS NULL"
            " AND EXISTS (SELECT 1 FROM json_each(services.dependencies) WHERE value = ?) ORDER BY priority, slug",
            (slug,),
        ).fetchall()

    def dashboard_latest(
        self, *, service_ids: list[int] | None = None, check_id: int | None = None
    ) -> dict[tuple[int, int], dict]:
        """(check_id, service_key) -> the latest finished result; service_key 0 for `services: none`."""
        sql, params = "SELECT * FROM latest_results", ()
        if service_ids is not None:
            sql, params = sql + " WHERE service_key IN (SELECT value FROM json_each(?))", (json.dumps(service_ids),)
        elif check_id is not None:
            sql, params = sql + " WHERE check_id = ?", (check_id,)
        rows = _fetch_dicts(self.connection, sql, params)  # up to one row per service: the cheap row path
        return {(row["check_id"], row["service_key"]): row for row in rows}

    def dashboard_open_runs(
        self, *, service_ids: list[int] | None = None, check_id: int | None = None
    ) -> dict[tuple[int, int], dict]:
        """(check_id, service_key) -> the newest pending or sent result of that pair."""
        sql = (
            "SELECT check_id, coalesce(service_id, 0) AS service_key, max(id) AS id, status, created_at"
            " FROM results WHERE status IN ('pending', 'sent')"
        )
        params: tuple = ()
        if service_ids is not None:
            sql += " AND coalesce(service_id, 0) IN (SELECT value FROM json_each(?))"
            params = (json.dumps(service_ids),)
        elif check_id is not None:
            # `+check_id`: read the small open-results index, not every result the check ever had.
            sql, params = sql + " AND +check_id = ?", (check_id,)
        rows = _fetch_dicts(self.connection, sql + " GROUP BY check_id, service_key", params)
        return {(row["check_id"], row["service_key"]): row for row in rows}

    def dashboard_summary(
        self, cutoffs: dict[int, str | None], *, owner: str | None = None, type: str | None = None,
        tag: str | None = None,
    ) -> dict[str, int]:
        """Counts over the latest finished results of the (filtered) services: by outcome, stale, failing services.

        `cutoffs` maps check ids to the time before which a result is stale. One pass without GROUP BY
        (a sorter would cost more than the whole scan), services first (CROSS JOIN fixes the order) so
        each service is one seek into the covering index rather than one services lookup per result.
        `count(*) FILTER` on plain columns is about 4x cheaper per row than `sum(CASE ... = ...)`: a
        latest result is finished, and its `result` is not `unknown` only when completed (table CHECK),
        so `result = 'pass'` means outcome `pass`, and outcome `error` is `result` or `status` error.
        """
        where, params = _service_filter(owner, type, tag)
        known = [(check_id, cutoff) for check_id, cutoff in cutoffs.items() if cutoff is not None]
        cutoff_sql = ("CASE l.check_id" + " WHEN ? THEN ?" * len(known) + " END") if known else "NULL"
        conn = self.connection
        row = conn.execute(
            "SELECT count(*) FILTER (WHERE l.result = 'pass') AS pass,"
            " count(*) FILTER (WHERE l.result = 'warning') AS warning,"
            " count(*) FILTER (WHERE l.result = 'fail') AS fail,"
            " count(*) FILTER (WHERE l.result = 'error' OR l.status = 'error') AS error,"
            " count(*) FILTER (WHERE l.status = 'timed-out') AS timed_out,"
            " count(*) FILTER (WHERE l.result = 'skipped') AS skipped,"
            f" count(*) FILTER (WHERE l.created_at < {cutoff_sql}) AS stale"
            f" FROM services CROSS JOIN latest_results l ON l.service_key = services.id WHERE {where}",
            [value for pair in known for value in pair] + params,
        ).fetchone()
        row["failing_services"] = conn.execute(
            f"SELECT count(*) AS n FROM services WHERE {where} AND EXISTS (SELECT 1 FROM latest_results l"
            " WHERE l.service_key = services.id AND (l.status <> 'completed' OR l.result IN ('fail', 'error')))",
            params,
        ).fetchone()["n"]
        return {key: value or 0 for key, value in row.items()}

    def dashboard_timelines(self, service_id: int, per_check: int = 30) -> dict[int, list[dict]]:
        """check_id -> the service's last `per_check` finished results of that check, oldest first."""
        rows = self.connection.execute(
            "SELECT * FROM (SELECT id, check_id, status, result, created_at, finished_at,"
            " row_number() OVER (PARTITION BY check_id ORDER BY id DESC) AS n"
            " FROM results WHERE service_id = ? AND finished_at IS NOT NULL) WHERE n <= ? ORDER BY check_id, id",
            (service_id, per_check),
        )
        timelines: dict[int, list[dict]] = {}
        for row in rows:
            timelines.setdefault(row["check_id"], []).append(row)
        return timelines

    def dashboard_pass_rates(self, check_id: int, since: str) -> list[dict]:
        """Per UTC day since `since`: finished results of a check, how many passed, how many failed."""
        return self.connection.execute(
            "SELECT substr(finished_at, 1, 10) AS day, count(*) AS finished,"
            " sum(result = 'pass') AS passed, sum(result IN ('fail', 'error') OR status <> 'completed') AS failed"
            " FROM results WHERE check_id = ? AND finished_at >= ? GROUP BY day ORDER BY day",
            (check_id, since),
        ).fetchall()

    def dashboard_results(
        self,
        *,
        service: str | None = None,
        check: str | None = None,
        result: str | None = None,
        status: str | None = None,
        before_id: int | None = None,
        limit: int = 50,
    ) -> list[dict]:
        """Newest first, with the slugs and names of check and service; keyset paging by `before_id`."""
        sql = (
            "SELECT r.*, c.slug AS check_slug, c.name AS check_name, s.slug AS service_slug, s.name AS service_name"
            " FROM results r JOIN checks c ON c.id = r.check_id LEFT JOIN services s ON s.id = r.service_id WHERE 1"
        )
        params: list[Any] = []
        if service:
            sql += " AND r.service_id = (SELECT id FROM services WHERE slug = ?)"
            params.append(service)
        if check:
            sql += " AND r.check_id = (SELECT id FROM checks WHERE slug = ?)"
            params.append(check)
        if result:
            sql += " AND r.result = ?"
            params.append(result)
        if status:
            sql += " AND r.status = ?"
            params.append(status)
        if before_id is not None:
            sql += " AND r.id < ?"
            params.append(before_id)
        params.append(limit)
        return self.connection.execute(sql + " ORDER BY r.id DESC LIMIT ?", params).fetchall()

    def dashboard_result(self, result_id: int) -> dict:
        rows = self.connection.execute(
            "SELECT r.*, c.slug AS check_slug, c.name AS check_name, s.slug AS service_slug, s.name AS service_name"
            " FROM results r JOIN checks c ON c.id = r.check_id LEFT JOIN services s ON s.id = r.service_id"
            " WHERE r.id = ?",
            (result_id,),
        ).fetchall()
        if not rows:
            raise NotFound(f"result {result_id} does not exist")
        return rows[0]

    def dashboard_version(self) -> tuple[int, int, int]:
        """(newest sync run, newest result, open results): changes whenever a sync applies, a result is
        created or one finishes, so it keys caches of what the catalog and `latest_results` say."""
        row = self.connection.execute(
            "SELECT (SELECT max(id) FROM sync_runs) AS sync_run, (SELECT max(id) FROM results) AS result,"
            " (SELECT count(*) FROM results WHERE status IN ('pending', 'sent')) AS open"
        ).fetchone()
        return row["sync_run"] or 0, row["result"] or 0, row["open"]

    def dashboard_open_count(self) -> int:
        return self.connection.execute(
            "SELECT count(*) AS n FROM results WHERE status IN ('pending', 'sent')"
        ).fetchone()["n"]

    def dashboard_last_sync(self) -> dict | None:
        """The newest sync run, errors decoded, or None before the first sync."""
        row = self.connection.execute("SELECT * FROM sync_runs ORDER BY id DESC LIMIT 1").fetchone()
        if row is not None:
            row["errors"] = json.loads(row["errors"])
        return row

    def dashboard_sync_runs(self, *, before_id: int | None = None, limit: int = 30) -> list[dict]:
        rows = self.connection.execute(
            "SELECT * FROM sync_runs WHERE id < ? ORDER BY id DESC LIMIT ?",
            (before_id if before_id is not None else 2**62, limit),
        ).fetchall()
        for row in rows:
            row["errors"] = json.loads(row["errors"])
        return rows

    def dashboard_file_errors(self) -> list[dict]:
        """Catalog files whose current version failed to apply, with their error decoded."""
        rows = self.connection.execute(
            "SELECT path, kind, slug, error FROM catalog_files WHERE error IS NOT NULL ORDER BY path"
        ).fetchall()
        for row in rows:
            row["error"] = json.loads(row["error"])
        return rows

    # -- writeback ----------------------------------------------------------------------------

    _WRITEBACK_COLUMNS = (
        "r.id, r.check_id, r.service_id, r.status, r.result, r.message, r.url, r.revision, r.trigger,"
        " r.created_at, r.finished_at, c.slug AS check_slug, s.slug AS service_slug"
    )

    def writeback_batch(self, limit: int) -> list[dict]:
        """The oldest finished results not yet pushed, in id order, with their check and service slugs."""
        return self.connection.execute(
            f"SELECT {self._WRITEBACK_COLUMNS} FROM writeback_queue q"
            " JOIN results r ON r.id = q.result_id JOIN checks c ON c.id = r.check_id"
            " LEFT JOIN services s ON s.id = r.service_id"
            " ORDER BY q.result_id LIMIT ?",
            (limit,),
        ).fetchall()

    def writeback_queue_size(self) -> int:
        return self.connection.execute("SELECT count(*) AS n FROM writeback_queue").fetchone()["n"]

    def writeback_results(self, result_ids: list[int]) -> dict[int, dict]:
        """Results by id, shaped like `writeback_batch` rows, to compare lines found in git with."""
        rows = self.connection.execute(
            f"SELECT {self._WRITEBACK_COLUMNS} FROM results r JOIN checks c ON c.id = r.check_id"
            " LEFT JOIN services s ON s.id = r.service_id"
            " WHERE r.id IN (SELECT value FROM json_each(?))",
            (json.dumps(list(result_ids)),),
        ).fetchall()
        return {row["id"]: row for row in rows}

    def writeback_latest(self) -> dict[tuple[int, int], dict]:
        """The latest pushed result of each (check, service key) pair; service key 0 for `services: none`."""
        rows = self.connection.execute(
            f"SELECT l.service_key, {self._WRITEBACK_COLUMNS} FROM writeback_latest l"
            " JOIN results r ON r.id = l.result_id JOIN checks c ON c.id = r.check_id"
            " LEFT JOIN services s ON s.id = r.service_id"
        ).fetchall()
        return {(row["check_id"], row.pop("service_key")): row for row in rows}

    def writeback_catalog(self) -> tuple[list[dict], list[dict]]:
        """Services and checks not removed, by slug: the rows and columns of the results README."""
        conn = self.connection
        services = conn.execute(
            "SELECT id, slug, name, active FROM services WHERE removed_at IS NULL ORDER BY slug"
        ).fetchall()
        checks = conn.execute(
            "SELECT id, slug, name, active, target_kind FROM checks WHERE removed_at IS NULL ORDER BY slug"
        ).fetchall()
        return services, checks

    def writeback_entities(self, service_ids: list[int], check_ids: list[int]) -> tuple[dict, dict]:
        """Services and checks by id (removed ones too: their results stay), for summary files."""
        conn = self.connection
        services = conn.execute(
            "SELECT id, slug, name, active FROM services WHERE id IN (SELECT value FROM json_each(?))",
            (json.dumps(service_ids),),
        ).fetchall()
        checks = conn.execute(
            "SELECT id, slug, name, active, target_kind FROM checks WHERE id IN (SELECT value FROM json_each(?))",
            (json.dumps(check_ids),),
        ).fetchall()
        return {row["id"]: row for row in services}, {row["id"]: row for row in checks}

    def record_writes(self, commits: dict[int, str], *, now: datetime, state: dict[str, Any] | None = None) -> None:
        """Mark results written (result id -> commit sha), once pushed, in one transaction with `state`."""
        ids = json.dumps(sorted(commits))
        with self.transaction() as conn:
            conn.executemany(
                "INSERT OR IGNORE INTO result_writes (result_id, commit_sha, written_at) VALUES (?, ?, ?)",
                [(result_id, sha, format_time(now)) for result_id, sha in sorted(commits.items())],
            )
            conn.execute("DELETE FROM writeback_queue WHERE result_id IN (SELECT value FROM json_each(?))", (ids,))
            conn.execute(
                "INSERT INTO writeback_latest (check_id, service_key, result_id)"
                " SELECT check_id, coalesce(service_id, 0), max(id) FROM results"
                " WHERE id IN (SELECT value FROM json_each(?)) GROUP BY check_id, coalesce(service_id, 0)"
                " ON CONFLICT (check_id, service_key) DO UPDATE SET result_id = excluded.result_id"
                " WHERE excluded.result_id > writeback_latest.result_id",
                (ids,),
            )
            for key, value in (state or {}).items():
                self.set_state(key, value)

    def result_writes(self, result_ids: list[int]) -> dict[int, str]:
        """The commit each of these results was pushed in (absent: not written yet)."""
        rows = self.connection.execute(
            "SELECT result_id, commit_sha FROM result_writes WHERE result_id IN (SELECT value FROM json_each(?))",
            (json.dumps(list(result_ids)),),
        ).fetchall()
        return {row["result_id"]: row["commit_sha"] for row in rows}


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


def _service_filter(owner: str | None, type: str | None, tag: str | None) -> tuple[str, list]:
    """The WHERE clause (and its parameters) for live services matching the dashboard's filters."""
    where, params = "services.removed_at IS NULL", []
    if owner:
        where, params = where + " AND services.owner = ?", params + [owner]
    if type:
        where, params = where + " AND services.type = ?", params + [type]
    if tag:
        where += " AND EXISTS (SELECT 1 FROM json_each(services.tags) WHERE value = ?)"
        params.append(tag)
    return where, params


def _decode_check(row: dict) -> dict:
    """A checks row with `targets` and `target_tags` decoded from JSON (dashboard reads)."""
    row["targets"] = json.loads(row["targets"])
    row["target_tags"] = json.loads(row["target_tags"]) if row["target_tags"] else None
    return row


# The API's view of a result: every column, plus the slugs of its check and service.
_RESULT_SELECT = (
    'SELECT r.*, c.slug AS "check", s.slug AS service FROM results r'
    " JOIN checks c ON c.id = r.check_id LEFT JOIN services s ON s.id = r.service_id"
)


def _decode_service(row: dict) -> dict:
    for key in ("tags", "dependencies", "meta"):
        row[key] = json.loads(row[key])
    row["active"] = bool(row["active"])
    return row


def _decode_check_row(row: dict) -> dict:
    row["targets"] = json.loads(row["targets"])
    row["target_tags"] = json.loads(row["target_tags"]) if row["target_tags"] else None
    row["active"] = bool(row["active"])
    return row


def _fetch_dicts(conn: sqlite3.Connection, sql: str, params: tuple = ()) -> list[dict]:
    """Like `execute(...).fetchall()`, reading the column names once instead of once per row (hot reads)."""
    cursor = conn.cursor()
    cursor.row_factory = None
    rows = cursor.execute(sql, params).fetchall()
    names = [column[0] for column in cursor.description] if cursor.description else []
    return [dict(zip(names, row)) for row in rows]


def _complete(conn: sqlite3.Connection, sql: str, result_id: int, params: tuple) -> dict:
    """Run a conditional completing UPDATE ... RETURNING; NotFound or Conflict when it changed nothing."""
    row = conn.execute(sql, params).fetchone()
    if row is not None:
        return row
    current = conn.execute("SELECT status FROM results WHERE id = ?", (result_id,)).fetchone()
    if current is None:
        raise NotFound(f"result {result_id} does not exist")
    raise Conflict(f"result {result_id} is already {current['status']} and can never change")


def _answer(conn: sqlite3.Connection, sql: str, answer: tuple) -> dict | NotFound | Conflict:
    """One answer of a batch: its row, or (returned, not raised) why it changed nothing."""
    result_id, result, message, url, now = answer
    try:
        return _complete(conn, sql, result_id, (result, message, url, format_time(now), result_id))
    except (NotFound, Conflict) as error:
        return error


def _count_results(rows: list[dict]) -> dict[str, int]:
    counts: dict[str, int] = {}
    for row in rows:
        counts[row["result"]] = counts.get(row["result"], 0) + 1
    return counts


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
