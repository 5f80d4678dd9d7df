"""The catalog as the reconciler keeps it: catalog files, services, checks, sync runs, webhook deliveries."""

from __future__ import annotations

import json
from datetime import datetime
from itertools import chain, islice
from typing import Any, Iterable, Iterator

from ..clock import format_time
from ..document_paths import document_number, file_of
from ..errors import Conflict
from ..events import Event
from .rows import CHECK_COLUMNS, SERVICE_COLUMNS, check_values, decode_sync_run, positional, service_values, updates


# Rows per INSERT of a first sync's 100,000 services and catalog files: a statement per row cost
# catalog_files 0.41 s and services 0.42 s of SQLite time, 100 rows a statement 0.22 s and 0.34 s
# (bench/bench_sync.py --services 100000). The rows of one statement never share a key (a slug is
# applied once, a path has one row), which PostgreSQL's ON CONFLICT DO UPDATE requires.
_ROWS_PER_INSERT = 100


def _insert_many(session, insert: str, row: str, conflict: str, rows: Iterable[tuple]) -> None:
    """`insert (row), (row), ... conflict` for the rows, _ROWS_PER_INSERT at a time and the rest one by
    one, read from `rows` as they go (no list of 100,000 rows)."""
    pending = iter(rows)
    rest: list[tuple] = []

    def full_statements() -> Iterator[tuple]:
        while True:
            chunk = list(islice(pending, _ROWS_PER_INSERT))
            if len(chunk) < _ROWS_PER_INSERT:
                rest.extend(chunk)
                return
            yield tuple(chain.from_iterable(chunk))

    session.many(f"{insert} {', '.join([row] * _ROWS_PER_INSERT)} {conflict}", full_statements())
    session.many(f"{insert} {row} {conflict}", rest)


class CatalogRepository:
    """What a sync reads to plan and writes to apply, and the record of every sync."""

    def __init__(self, db):
        self.db = db

    def files(self) -> dict[str, dict]:
        """Every catalog file last seen: path -> {kind, slug, digest, error (decoded)}."""
        with self.db.session() as session:
            rows = session.all("SELECT path, kind, slug, digest, error FROM catalog_files")
        for row in rows:
            if row["error"]:
                row["error"] = json.loads(row["error"])
        return {row["path"]: row for row in rows}

    def service_index(self, *, decode: bool = True) -> dict[str, dict]:
        """slug -> {id, path, digest, dependencies, removed_at, error} for every service ever synced.

        `decode=False` leaves `dependencies` as its JSON text: a one-file sync reads few of them.
        """
        with self.db.session() as session:
            rows = session.all("SELECT id, slug, path, digest, dependencies, removed_at, error FROM services")
        if decode:
            for row in rows:
                row["dependencies"] = [] if row["dependencies"] == "[]" else json.loads(row["dependencies"])
        return {row["slug"]: row for row in rows}

    def check_index(self) -> dict[str, dict]:
        """slug -> {id, path, digest, target_kind, list_targets, removed_at, error} for every check ever synced."""
        with self.db.session() as session:
            rows = session.all("SELECT id, slug, path, digest, target_kind, targets, removed_at, error FROM checks")
        index = {}
        for row in rows:
            targets = json.loads(row.pop("targets"))
            row["list_targets"] = targets if row["target_kind"] == "list" else []
            index[row["slug"]] = row
        return index

    def definition_index(self) -> dict[tuple[str, str], dict]:
        """(kind, slug) -> {path, digest, body (decoded), removed_at, error} of every scorecard, waiver
        and campaign ever synced (a catalog has few)."""
        with self.db.session() as session:
            rows = session.all("SELECT kind, slug, path, digest, body, removed_at, error FROM definitions")
        for row in rows:
            row["body"] = json.loads(row["body"])
        return {(row["kind"], row["slug"]): row for row in rows}

    def index_rows(self, *, paths: Iterable[str] | None = None, service_slugs: Iterable[str] = ()) -> dict[str, Any]:
        """The part of the index a sync of a few files reads, instead of every row (`files`,
        `service_index`): {"services": slug -> `service_index(decode=False)` row, for `service_slugs`}, and
        when `paths` is given (a sync's first read) also {"files": path -> `files` row, for `paths`,
        every file with an error and every document of a file of several, "active": {"service": n, "check": n} entities not removed}."""
        d = self.db.dialect
        with self.db.session() as session:
            rows = session.all(
                "SELECT id, slug, path, digest, dependencies, removed_at, error FROM services"
                f" WHERE slug IN {d.text_table('?')}",
                (d.ids(list(service_slugs)),),
            )
            found: dict[str, Any] = {"services": {row["slug"]: row for row in rows}}
            if paths is None:
                return found
            files = session.all(
                f"SELECT path, kind, slug, digest, error FROM catalog_files WHERE path IN {d.text_table('?')}"
                " UNION SELECT path, kind, slug, digest, error FROM catalog_files WHERE error IS NOT NULL"
                # documents of files that hold several (`file#N`): few, and a changed file may drop one
                " UNION SELECT path, kind, slug, digest, error FROM catalog_files WHERE path LIKE '%#%'",
                (d.ids(list(paths)),),
            )
            found["active"] = session.one(  # all less the removed: an index count, not a scan of every row
                "SELECT (SELECT count(*) FROM services) - (SELECT count(*) FROM services WHERE removed_at IS NOT NULL)"
                " AS service,"
                ' (SELECT count(*) FROM checks WHERE removed_at IS NULL) AS "check"'
            )
        for row in files:
            if row["error"]:
                row["error"] = json.loads(row["error"])
        found["files"] = {row["path"]: row for row in files}
        return found

    def apply(
        self,
        *,
        now: datetime,
        services: list[dict],
        checks: list[dict],
        removed_services: list[str],
        removed_checks: list[str],
        entity_errors: dict[tuple[str, str], str | None],
        files: list[tuple],
        deleted_files: list[str],
        state: dict[str, Any],
        expected_revision: str | None,
        sync_run: dict,
        definitions: list[dict] = (),  # type: ignore[assignment]
        removed_definitions: list[tuple[str, str]] = (),  # type: ignore[assignment]
        moved: dict[tuple[str, str], str] | None = None,
    ) -> dict:
        """Apply one sync in one transaction; Conflict if another sync applied in the meantime.
        `files`: (path, kind, slug, digest, error (a dict, or None)) of each catalog file read or
        blamed: tuples, not dicts, as a first sync writes 100,000 of them. `moved`: (kind, slug) ->
        the new path of an entity kept at its last good state (a broken document that moved in its file)."""
        stamp = format_time(now)
        with self.db.transaction(serialize="sync") as session:
            current = session.value("SELECT value FROM catalog_state WHERE key = 'applied_revision'")
            if (json.loads(current) if current else None) != expected_revision:
                raise Conflict("another sync applied a revision in the meantime; plan again")
            # positional parameters: binding 100,000 rows by name cost a first sync 0.4 s (bench/bench_sync.py)
            _insert_many(
                session,
                f"INSERT INTO services ({SERVICE_COLUMNS}, created_at, updated_at) VALUES",
                f"({positional(SERVICE_COLUMNS, 2)})",
                f"ON CONFLICT (slug) DO UPDATE SET {updates(SERVICE_COLUMNS)},"
                " updated_at = excluded.updated_at, removed_at = NULL",
                (service_values(record) + (stamp, stamp) for record in services),  # one row at a time
            )
            if checks:
                session.many(
                    f"INSERT INTO checks ({CHECK_COLUMNS}, created_at, updated_at)"
                    f" VALUES ({positional(CHECK_COLUMNS, 2)})"
                    f" ON CONFLICT (slug) DO UPDATE SET {updates(CHECK_COLUMNS)},"
                    " updated_at = excluded.updated_at, removed_at = NULL",
                    (check_values(record) + (stamp, stamp) for record in checks),
                )
                self._replace_targets(session, checks)
            session.many(
                "UPDATE services SET removed_at = ?, updated_at = ? WHERE slug = ? AND removed_at IS NULL",
                [(stamp, stamp, slug) for slug in removed_services],
            )
            session.many(
                "UPDATE checks SET removed_at = ?, updated_at = ? WHERE slug = ? AND removed_at IS NULL",
                [(stamp, stamp, slug) for slug in removed_checks],
            )
            session.many(
                "INSERT INTO definitions (kind, slug, path, digest, body, error, removed_at, updated_at)"
                " VALUES (:kind, :slug, :path, :digest, :body, :error, NULL, :now)"
                " ON CONFLICT (kind, slug) DO UPDATE SET path = excluded.path, digest = excluded.digest,"
                " body = excluded.body, error = excluded.error, removed_at = NULL, updated_at = excluded.updated_at",
                [{**record, "now": stamp} for record in definitions],
            )
            session.many(
                "UPDATE definitions SET removed_at = ?, updated_at = ? WHERE kind = ? AND slug = ? AND removed_at IS NULL",
                [(stamp, stamp, kind, slug) for kind, slug in removed_definitions],
            )
            for kind, table in (("service", "services"), ("check", "checks")):
                session.many(
                    f"UPDATE {table} SET error = ? WHERE slug = ? AND error IS DISTINCT FROM ?",
                    [(error, slug, error) for (k, slug), error in entity_errors.items() if k == kind],
                )
                session.many(
                    f"UPDATE {table} SET path = ?, updated_at = ? WHERE slug = ?",
                    [(path, stamp, slug) for (k, slug), path in (moved or {}).items() if k == kind],
                )
            session.many(
                "UPDATE definitions SET error = ? WHERE kind = ? AND slug = ? AND error IS DISTINCT FROM ?",
                [(error, k, slug, error) for (k, slug), error in entity_errors.items() if k not in ("service", "check")],
            )
            session.many(
                "UPDATE definitions SET path = ?, updated_at = ? WHERE kind = ? AND slug = ?",
                [(path, stamp, k, slug) for (k, slug), path in (moved or {}).items() if k not in ("service", "check")],
            )
            _insert_many(
                session,
                "INSERT INTO catalog_files (path, kind, slug, digest, error) VALUES",
                "(?, ?, ?, ?, ?)",
                "ON CONFLICT (path) DO UPDATE SET kind = excluded.kind, slug = excluded.slug,"
                " digest = excluded.digest, error = excluded.error",
                ((path, kind, slug, digest, json.dumps(error) if error else None)
                 for path, kind, slug, digest, error in files),
            )
            session.many("DELETE FROM catalog_files WHERE path = ?", [(path,) for path in deleted_files])
            self.db.events.emit(self._sync_failures(session, files, state.get("applied_revision")), now=now)
            self.db.state.set(state)
            return self._insert_sync_run(session, sync_run)

    def _sync_failures(self, session, files: list[tuple], revision: str | None) -> list[Event]:
        """A `sync-failed` event per file with an error, once per version of the file (its digest): a
        file that stays broken across syncs is reported when it breaks, not at every poll. A file of
        several Components has a row per document: one event per distinct error (an error of the whole
        file, such as its YAML syntax, is on every document's row and reported once)."""
        seen: set[tuple[str, str, str]] = set()
        broken = []
        for row in files:  # (path, kind, slug, digest, error), as `apply` takes them
            if row[4] and (once := (file_of(row[0]), row[3], json.dumps(row[4], sort_keys=True))) not in seen:
                seen.add(once)
                broken.append(row)
        if not broken:
            return []
        slugs = [slug for _, kind, slug, _, _ in broken if kind == "service" and slug]
        owners = dict(session.tuples(
            f"SELECT slug, owner FROM services WHERE slug IN {self.db.dialect.text_table('?')}",
            (self.db.dialect.ids(slugs),),
        )) if slugs else {}
        return [
            Event("sync-failed", f"{path}: {error['message']}"[:1000],
                  team=owners.get(slug) if kind == "service" else None,
                  service=slug if kind == "service" else None,
                  check=slug if kind == "check" else None,
                  data={"error": error, "revision": revision, "path": path},
                  key=f"sync-failed:{path}:{digest}")
            for path, kind, slug, digest, error in broken
        ]

    def _replace_targets(self, session, checks: list[dict]) -> None:
        """The list targets of every written check, replaced in three statements (no query per check)."""
        slugs = [record["slug"] for record in checks]
        ids = {
            row["slug"]: row["id"]
            for row in session.all(
                f"SELECT id, slug FROM checks WHERE slug IN {self.db.dialect.text_table('?')}",
                (self.db.dialect.ids(slugs),),
            )
        }
        session.many("DELETE FROM check_targets WHERE check_id = ?", [(ids[slug],) for slug in slugs])
        session.many(
            "INSERT INTO check_targets (check_id, service_slug) VALUES (?, ?) ON CONFLICT DO NOTHING",
            [
                (ids[record["slug"]], slug)
                for record in checks if record["target_kind"] == "list"
                for slug in json.loads(record["targets"])
            ],
        )

    def record_sync_run(self, sync_run: dict) -> dict:
        """A sync that applied nothing (refused or failed) is recorded too."""
        with self.db.transaction() as session:
            return self._insert_sync_run(session, sync_run)

    @staticmethod
    def _insert_sync_run(session, run: dict) -> dict:
        row = session.one(
            "INSERT INTO sync_runs (started_at, finished_at, duration_ms, outcome, previous_revision,"
            " attempted_revision, applied_revision, created, updated, removed, unchanged, errors, message)"
            " VALUES (:started_at, :finished_at, :duration_ms, :outcome, :previous_revision,"
            " :attempted_revision, :applied_revision, :created, :updated, :removed, :unchanged, :errors, :message)"
            " RETURNING *",
            {**run, "errors": json.dumps(run.get("errors", []))},
        )
        return decode_sync_run(row)

    def sync_runs(self, limit: int = 20, *, before_id: int | None = None) -> list[dict]:
        """Sync runs newest first; page on with `before_id` = the last id seen."""
        with self.db.session() as session:
            rows = session.all(
                "SELECT * FROM sync_runs WHERE id < ? ORDER BY id DESC LIMIT ?",
                (before_id if before_id is not None else 2**62, limit),
            )
        return [decode_sync_run(row) for row in rows]

    def last_sync_run(self) -> dict | None:
        runs = self.sync_runs(1)
        return runs[0] if runs else None

    def file_errors(self) -> list[dict]:
        """Every catalog file whose current version has an error, once: {path, errors (decoded, each
        once, in document order)}. A file of several documents has a row per document, and an error
        of the whole file (a YAML syntax error) is on each of them."""
        with self.db.session() as session:
            rows = session.tuples("SELECT path, error FROM catalog_files WHERE error IS NOT NULL")
        files: dict[str, list[dict]] = {}
        for path, text in sorted(rows, key=lambda row: (file_of(row[0]), document_number(row[0]))):
            errors = files.setdefault(file_of(path), [])
            error = json.loads(text)
            if error not in errors:
                errors.append(error)
        return [{"path": path, "errors": errors} for path, errors in files.items()]

    def counts(self) -> dict[str, int]:
        """Counts for `catalog status`: services, checks, open and all results. The results' counts come
        from result_counts, which the triggers keep (counting a year of results row by row took seconds)."""
        with self.db.session() as session:
            return session.one(
                "SELECT (SELECT count(*) FROM services WHERE removed_at IS NULL) AS services,"
                " (SELECT count(*) FROM services WHERE removed_at IS NOT NULL) AS removed_services,"
                " (SELECT count(*) FROM checks WHERE removed_at IS NULL) AS checks,"
                " (SELECT CAST(coalesce(sum(count), 0) AS BIGINT) FROM result_counts WHERE status = 'pending') AS pending_results,"
                " (SELECT CAST(coalesce(sum(count), 0) AS BIGINT) FROM result_counts WHERE status = 'sent') AS sent_results,"
                " (SELECT CAST(coalesce(sum(count), 0) AS BIGINT) FROM result_counts) AS results"
            )

    def record_webhook_delivery(self, delivery_key: str, received_at: str) -> bool:
        """True the first time a delivery key is seen, False for a redelivery."""
        with self.db.transaction() as session:
            return session.one(
                "INSERT INTO webhook_deliveries (delivery_id, received_at) VALUES (?, ?)"
                " ON CONFLICT (delivery_id) DO NOTHING RETURNING delivery_id",
                (delivery_key, received_at),
            ) is not None
