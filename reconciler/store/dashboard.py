"""What the dashboard pages read: the service x check matrix, timelines, pass rates."""

from __future__ import annotations

import json

from ..errors import NotFound
from .records import _decode_check, _fetch_dicts, _service_filter, result_filters


class DashboardQueries:
    """The Store's methods for the dashboard pages."""

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
        conditions, params = result_filters(
            service=service, check=check, result=result, status=status, before_id=before_id
        )
        sql += conditions
        return self.connection.execute(sql + " ORDER BY r.id DESC LIMIT ?", params + [limit]).fetchall()

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

