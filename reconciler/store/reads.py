"""Services and checks as the API, the pages and the scheduler read them: one read per shape."""

from __future__ import annotations

from ..errors import NotFound
from .rows import count_results, decode_check, decode_service, service_filter

# Services listed by priority: the dashboard's rows, a check page's, a service's dependents, and the
# results filter's suggestions.
BY_PRIORITY = "priority, slug"


class ReadRepository:
    def __init__(self, db):
        self.db = db

    # -- services -----------------------------------------------------------------------------

    def services(
        self, *, owner: str | None = None, type: str | None = None, tag: str | None = None,
        include_removed: bool = False,
    ) -> list[dict]:
        """Services (JSON fields decoded) matching the filters exactly, by slug."""
        where, params = service_filter(self.db.dialect, owner, type, tag, include_removed)
        with self.db.session() as session:
            rows = session.all(f"SELECT * FROM services WHERE {where} ORDER BY slug", params)
        return [decode_service(row) for row in rows]

    def services_page(
        self, *, owner: str | None = None, type: str | None = None, tag: str | None = None, page: int, per_page: int
    ) -> tuple[int, int, list[dict]]:
        """(matching services, the page actually shown, that page's services) by priority: only one page
        is read and decoded. A page past the end shows the last one."""
        where, params = service_filter(self.db.dialect, owner, type, tag)
        with self.db.session() as session:
            total = session.value(f"SELECT count(*) FROM services WHERE {where}", params)
            page = min(page, max(1, -(-total // per_page)))
            rows = session.all(
                f"SELECT * FROM services WHERE {where} ORDER BY {BY_PRIORITY} LIMIT ? OFFSET ?",
                [*params, per_page, (page - 1) * per_page],
            )
        return total, page, [decode_service(row) for row in rows]

    def service_ids_by_priority(self) -> list[int]:
        """The ids of the services not removed, by priority, and nothing else of them: the check page
        decides which have a row, then reads one page of them."""
        return [row[0] for row in self._live_by_priority("id")]

    def service_choices(self, limit: int) -> list[tuple[str, str]]:
        """(slug, name) of the first `limit` services not removed, by priority."""
        return self._live_by_priority("slug, name", limit)

    def _live_by_priority(self, columns: str, limit: int | None = None) -> list[tuple]:
        where, params = service_filter(self.db.dialect, None, None, None)
        sql = f"SELECT {columns} FROM services WHERE {where} ORDER BY {BY_PRIORITY}"
        if limit is not None:
            sql, params = sql + " LIMIT ?", [*params, limit]
        with self.db.session() as session:
            return session.tuples(sql, params)

    def service(self, slug: str) -> dict:
        """One service by slug, removed or not, its JSON fields decoded."""
        with self.db.session() as session:
            row = session.one("SELECT * FROM services WHERE slug = ?", (slug,))
        if row is None:
            raise NotFound(f"service {slug!r} does not exist")
        return decode_service(row)

    def service_json(self, slug: str) -> str:
        """GET /api/services/{slug} as JSON text (the API's hot read): the service, `latest_results`
        (one per live check, from `latest_runs`, kept by triggers, however long the history; no
        message: GET /api/results/{id} has it) and their `counts`."""
        with self.db.session() as session:
            text = self.db.dialect.service_json(session, slug)
        if text is None:
            raise NotFound(f"service {slug!r} does not exist")
        return text

    def services_by_id(self, service_ids: list[int]) -> dict[int, dict]:
        """id -> service (JSON fields decoded), removed or not."""
        d = self.db.dialect
        with self.db.session() as session:
            rows = session.all(f"SELECT * FROM services WHERE id IN {d.id_table('?')}", (d.ids(service_ids),))
        return {row["id"]: decode_service(row) for row in rows}

    def service_names(self, slugs: list[str]) -> dict[str, dict]:
        """slug -> {slug, name, removed_at} for the given slugs that exist."""
        d = self.db.dialect
        with self.db.session() as session:
            rows = session.all(f"SELECT slug, name, removed_at FROM services WHERE slug IN {d.text_table('?')}",
                               (d.ids(slugs),))
        return {row["slug"]: row for row in rows}

    def dependents(self, slug: str) -> list[dict]:
        """Services in the catalog that list `slug` among their dependencies."""
        with self.db.session() as session:
            return session.all(
                "SELECT slug, name FROM services WHERE removed_at IS NULL"
                f" AND {self.db.dialect.has_element('services.dependencies', '?')} ORDER BY {BY_PRIORITY}",
                (slug,),
            )

    def facets(self) -> dict[str, list[str]]:
        """The owners, types and tags in use, for the dashboard's filters."""
        live = "FROM services WHERE removed_at IS NULL"
        with self.db.session() as session:
            return {
                "owners": [r[0] for r in session.tuples(f"SELECT DISTINCT owner {live} AND owner IS NOT NULL ORDER BY 1")],
                "types": [r[0] for r in session.tuples(f"SELECT DISTINCT type {live} AND type IS NOT NULL ORDER BY 1")],
                "tags": [r[0] for r in session.tuples(self.db.dialect.DISTINCT_TAGS)],
            }

    # -- checks -------------------------------------------------------------------------------

    def checks(self, *, include_removed: bool = False, order: str = "slug") -> list[dict]:
        """Checks with their targets decoded; by slug, or by name then slug (the dashboard's columns)."""
        order_by = "name, slug" if order == "name" else "slug"
        where = "" if include_removed else " WHERE removed_at IS NULL"
        with self.db.session() as session:
            rows = session.all(f"SELECT * FROM checks{where} ORDER BY {order_by}")
        return [decode_check(row) for row in rows]

    def check(self, slug: str) -> dict:
        """One check by slug, removed or not, its targets decoded."""
        with self.db.session() as session:
            row = session.one("SELECT * FROM checks WHERE slug = ?", (slug,))
        if row is None:
            raise NotFound(f"check {slug!r} does not exist")
        return decode_check(row)

    def check_with_latest(self, slug: str) -> dict:
        """A check with `latest_results` (its newest result per live service, and the run without a
        service for `services: none`) and their `counts`: GET /api/checks/{slug}."""
        check = self.check(slug)
        columns = "r.id, s.slug AS service, r.status, r.result, r.url, r.created_at, r.sent_at, r.finished_at"
        with self.db.session() as session:
            latest = session.all(
                f"SELECT {columns} FROM services AS s JOIN results AS r ON r.id ="
                " (SELECT max(id) FROM results WHERE check_id = ? AND service_id = s.id)"
                " WHERE s.removed_at IS NULL"
                f" UNION ALL SELECT {columns} FROM results AS r LEFT JOIN services AS s ON FALSE WHERE r.id ="
                " (SELECT max(id) FROM results WHERE check_id = ? AND service_id IS NULL)"
                " ORDER BY service NULLS FIRST",
                (check["id"], check["id"]),
            )
        check["latest_results"] = latest
        check["counts"] = count_results(latest)
        return check
