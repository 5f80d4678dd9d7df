"""What the reconciler reads and writes: services, checks, catalog files, sync runs."""

from __future__ import annotations

import json
import sqlite3
from datetime import datetime
from typing import Any, Iterable

from ..clock import format_time
from ..errors import Conflict
from .records import (
    _CHECK_COLUMNS,
    _SERVICE_COLUMNS,
    _fetch_dicts,
    _placeholders,
    _updates,
)


class CatalogQueries:
    """The Store's methods for the reconciler: catalog files, services, checks, sync runs."""

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

    def catalog_index_rows(self, *, paths: Iterable[str] | None = None, service_slugs: Iterable[str] = ()) -> dict[str, Any]:
        """The part of the index a sync of a few files reads, instead of every row (`catalog_files`,
        `service_index`): {"services": slug -> `service_index(decode=False)` row, for `service_slugs`}, and
        when `paths` is given (a sync's first read) also {"files": path -> `catalog_files` row, for `paths`
        and every file with an error, "active": {"service": n, "check": n} entities not removed}."""
        conn = self.connection
        rows = _fetch_dicts(
            conn,
            "SELECT id, slug, path, digest, dependencies, removed_at, error FROM services"
            " WHERE slug IN (SELECT value FROM json_each(?))",
            (json.dumps(list(service_slugs)),),
        )
        found: dict[str, Any] = {"services": {row["slug"]: row for row in rows}}
        if paths is None:
            return found
        files = _fetch_dicts(
            conn,
            "SELECT path, kind, slug, digest, error FROM catalog_files WHERE path IN (SELECT value FROM json_each(?))"
            " UNION SELECT path, kind, slug, digest, error FROM catalog_files WHERE error IS NOT NULL",
            (json.dumps(list(paths)),),
        )
        for row in files:
            if row["error"]:
                row["error"] = json.loads(row["error"])
        found["files"] = {row["path"]: row for row in files}
        found["active"] = dict(conn.execute(
            "SELECT (SELECT count(*) FROM services WHERE removed_at IS NULL) AS service,"
            " (SELECT count(*) FROM checks WHERE removed_at IS NULL) AS \"check\""
        ).fetchone())
        return found

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
                    ({**record, "now": stamp} for record in services),  # one copy at a time: 100,000s of rows
                )
            if checks:
                conn.executemany(
                    f"INSERT INTO checks ({_CHECK_COLUMNS}, created_at, updated_at)"
                    f" VALUES ({_placeholders(_CHECK_COLUMNS)}, :now, :now)"
                    f" ON CONFLICT (slug) DO UPDATE SET {_updates(_CHECK_COLUMNS)},"
                    " updated_at = :now, removed_at = NULL",
                    ({**record, "now": stamp} for record in checks),
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
                ({**f, "error": json.dumps(f["error"]) if f["error"] else None} for f in files),
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

    def sync_runs(self, limit: int = 20, *, before_id: int | None = None) -> list[dict]:
        """Sync runs newest first; page on with `before_id` = the last id seen."""
        rows = self.connection.execute(
            "SELECT * FROM sync_runs WHERE id < ? ORDER BY id DESC LIMIT ?",
            (before_id if before_id is not None else 2**62, limit),
        ).fetchall()
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
