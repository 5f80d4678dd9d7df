"""What the JSON API reads: services, checks, results, sync status."""

from __future__ import annotations

import json

from ..errors import NotFound
from .records import (
    RESULT_VALUES,
    _RESULT_SELECT,
    _count_results,
    _decode_check_row,
    _decode_service,
    _fetch_dicts,
    result_filters,
)


_COUNTED = sorted(("unknown", *RESULT_VALUES))  # a service's counts, keys in this order


class ReadQueries:
    """The Store's methods for the JSON API's reads."""

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
        return json.loads(self.get_service_json(slug))

    # `get_service` as JSON text, from text SQLite keeps ready: the service's object, then its
    # `latest_runs` rows' JSON joined in check-slug order (the table's key order, so no sort), then
    # the rows' results for the counts. JSON text never holds a raw tab, so a tab separates the two.
    _SERVICE_JSON = """
        SELECT json_object(
            'id', id, 'slug', slug, 'name', name, 'priority', priority, 'type', type, 'description', description,
            'owner', owner, 'repository', repository, 'active', json(iif(active, 'true', 'false')),
            'tags', json(tags), 'dependencies', json(dependencies), 'meta', json(meta), 'path', path,
            'digest', digest, 'error', error, 'removed_at', removed_at, 'created_at', created_at, 'updated_at', updated_at
        ), (
            SELECT group_concat(json, ',') || char(9) || group_concat(result, ',') FROM (
                SELECT l.json, l.result FROM latest_runs AS l JOIN checks AS c ON c.id = l.check_id
                WHERE l.service_key = s.id AND c.removed_at IS NULL ORDER BY l.check_slug
            )
        ) FROM services AS s WHERE slug = ?
    """

    def get_service_json(self, slug: str) -> str:
        """The service as JSON text (the API's hot read): one key range of `latest_runs` (kept by
        triggers) however long the history; no message (GET /api/results/{id} has it)."""
        cursor = self.connection.cursor()
        cursor.row_factory = None
        row = cursor.execute(self._SERVICE_JSON, (slug,)).fetchone()
        if row is None:
            raise NotFound(f"service {slug!r} does not exist")
        service, runs = row
        latest, _, results = (runs or "\t").partition("\t")
        values = results.split(",")  # each one of RESULT_VALUES or 'unknown' (a CHECK in the schema)
        counts = ",".join(f'"{result}":{n}' for result in _COUNTED if (n := values.count(result)))
        return f'{service[:-1]},"latest_results":[{latest}],"counts":{{{counts}}}}}'

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
        conditions, params = result_filters(
            service=service, check=check, result=result, status=status, since=since, before_id=before_id
        )
        sql = _RESULT_SELECT + " WHERE 1" + conditions
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
