"""The dashboard's aggregates: latest and open runs per pair, the summary, timelines, pass rates, data version.

`latest_results` (the latest finished result of each pair) is kept by triggers, so the service x
check matrix reads one small table instead of grouping all history.
"""

from __future__ import annotations

from .rows import OPEN_SQL, service_filter


class PageRepository:
    def __init__(self, db):
        self.db = db

    def latest(self, *, service_ids: list[int] | None = None, check_id: int | None = None) -> dict[tuple[int, int], dict]:
        """(check_id, service_key) -> the latest finished result; service_key 0 for `services: none`.
        Of some services, of one check, or of one check on some services (a key seek each)."""
        d = self.db.dialect
        conditions, params = [], []
        if check_id is not None:
            conditions.append("check_id = ?")
            params.append(check_id)
        if service_ids is not None:
            conditions.append(f"service_key IN {d.id_table('?')}")
            params.append(d.ids(service_ids))
        sql = "SELECT * FROM latest_results" + (" WHERE " + " AND ".join(conditions) if conditions else "")
        with self.db.session() as session:
            rows = session.all(sql, params)
        return {(row["check_id"], row["service_key"]): row for row in rows}

    def services_with_results(self, check_id: int) -> set[int]:
        """The service keys that have a finished result of the check (the check page's rows, with the
        targeted and running ones): the keys alone, not 10,000 rows made into dicts (21 ms)."""
        with self.db.session() as session:
            return {row[0] for row in session.tuples("SELECT service_key FROM latest_results WHERE check_id = ?",
                                                     (check_id,))}

    def open_runs(self, *, service_ids: list[int] | None = None, check_id: int | None = None) -> dict[tuple[int, int], dict]:
        """(check_id, service_key) -> the newest pending or sent result of that pair.

        Of some services (key 0: the runs of no service), read from `latest_runs`: a pair's open result
        is its newest (a pair has one open result at most, and gets no new one while it has), so it is
        that row, one key seek per service. Read from the open results, as for a check, a service's
        page or badge cost 20 ms with 25,000 results open (bench/bench_pages.py --services 10000)."""
        d = self.db.dialect
        if service_ids is not None:
            sql = ("SELECT check_id, service_key, result_id AS id, status, created_at FROM latest_runs"
                   f" WHERE service_key IN {d.id_table('?')} AND status IN {OPEN_SQL}")
            params = (d.ids(service_ids),)
        else:
            where, params = (d.OPEN_RUNS_OF_CHECK, (check_id,)) if check_id is not None else ("", ())
            sql = d.OPEN_RUNS.format(where=where)
        with self.db.session() as session:
            rows = session.all(sql, params)
        return {(row["check_id"], row["service_key"]): row for row in rows}

    def summary(
        self, cutoffs: dict[int, str | None], *, owner: str | None = None, type: str | None = None,
        tag: str | None = None,
    ) -> dict[str, int]:
        """Counts over the latest finished results of the (filtered) services: by outcome, stale, failing services.

        `cutoffs` maps check ids to the time before which a result is stale. One pass without GROUP BY
        (a sorter would cost more than the whole scan), services first so each service is one seek into
        the covering index. `count(*) FILTER` on plain columns is about 4x cheaper per row than
        `sum(CASE ...)`: a latest result is finished, and its `result` is not `unknown` only when
        completed (table CHECK), so `result = 'pass'` means outcome `pass`, and outcome `error` is
        `result` or `status` error.
        """
        d = self.db.dialect
        where, params = service_filter(d, owner, type, tag)
        known = [(check_id, cutoff) for check_id, cutoff in cutoffs.items() if cutoff is not None]
        cutoff_sql = ("CASE l.check_id" + " WHEN ? THEN ?" * len(known) + " END") if known else "NULL"
        with self.db.session() as session:
            row = session.one(
                "SELECT count(*) FILTER (WHERE l.result = 'pass') AS pass,"
                " count(*) FILTER (WHERE l.result = 'warning') AS warning,"
                " count(*) FILTER (WHERE l.result = 'fail') AS fail,"
                " count(*) FILTER (WHERE l.result = 'error' OR l.status = 'error') AS error,"
                " count(*) FILTER (WHERE l.status = 'timed-out') AS timed_out,"
                " count(*) FILTER (WHERE l.result = 'skipped') AS skipped,"
                f" count(*) FILTER (WHERE l.created_at < {cutoff_sql}) AS stale"
                f" FROM {d.SERVICES_THEN_LATEST} WHERE {where}",
                [value for pair in known for value in pair] + params,
            )
            row["failing_services"] = session.value(
                f"SELECT count(*) FROM services WHERE {where} AND EXISTS (SELECT 1 FROM latest_results AS l"
                " WHERE l.service_key = services.id AND (l.status <> 'completed' OR l.result IN ('fail', 'error')))",
                params,
            )
        return {key: value or 0 for key, value in row.items()}

    def timelines(self, service_id: int, per_check: int = 30) -> dict[int, list[dict]]:
        """check_id -> the service's last `per_check` finished results of that check, oldest first."""
        with self.db.session() as session:
            rows = session.all(self.db.dialect.TIMELINES, {"service": service_id, "per_check": per_check})
        timelines: dict[int, list[dict]] = {}
        for row in rows:
            timelines.setdefault(row["check_id"], []).append(row)
        return timelines

    def pass_rates(self, check_id: int, since: str) -> list[dict]:
        """Per UTC day since `since` (YYYY-MM-DD): finished results of a check, how many passed, how
        many failed (timed out and error count as failed), as `check_days` keeps them."""
        with self.db.session() as session:
            return session.all("SELECT day, finished, passed, failed FROM check_days"
                               " WHERE check_id = ? AND day >= ? ORDER BY day", (check_id, since))

    def version(self) -> tuple[int, int, int]:
        """(newest sync run, newest result, open results): changes whenever a sync applies, a result is
        created or one finishes, so it keys caches of what the catalog and `latest_results` say."""
        with self.db.session() as session:
            row = session.tuples(
                "SELECT (SELECT max(id) FROM sync_runs), (SELECT max(id) FROM results),"
                f" (SELECT count(*) FROM results WHERE status IN {OPEN_SQL})"
            )[0]
        return row[0] or 0, row[1] or 0, row[2]
