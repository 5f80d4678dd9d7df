"""Write-back: the queue of finished results not yet pushed, what was pushed, the summaries' sources."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from ..clock import format_time
from .rows import decode_result

_COLUMNS = (
    "r.id, r.check_id, r.service_id, r.status, r.result, r.message, r.url, r.revision, r.trigger,"
    " r.created_at, r.finished_at, a.attestation, c.slug AS check_slug, s.slug AS service_slug"
)
_JOINS = (
    " JOIN checks AS c ON c.id = r.check_id LEFT JOIN services AS s ON s.id = r.service_id"
    " LEFT JOIN result_attestations AS a ON a.result_id = r.id"
)
_FROM = "results AS r" + _JOINS


class WritebackRepository:
    def __init__(self, db):
        self.db = db

    def batch(self, limit: int) -> list[dict]:
        """The oldest finished results not yet pushed, in id order, with their check and service slugs."""
        with self.db.session() as session:
            rows = session.all(
                f"SELECT {_COLUMNS} FROM writeback_queue AS q JOIN results AS r ON r.id = q.result_id{_JOINS}"
                " ORDER BY q.result_id LIMIT ?",
                (limit,),
            )
        return [decode_result(row) for row in rows]

    def queue_size(self) -> int:
        with self.db.session() as session:
            return session.value("SELECT count(*) FROM writeback_queue")

    def results(self, result_ids: list[int]) -> dict[int, dict]:
        """Results by id, shaped like `batch` rows, to compare lines found in git with."""
        d = self.db.dialect
        with self.db.session() as session:
            rows = session.all(f"SELECT {_COLUMNS} FROM {_FROM} WHERE r.id IN {d.id_table('?')}",
                               (d.ids(result_ids),))
        return {row["id"]: decode_result(row) for row in rows}

    def latest(self) -> dict[tuple[int, int], dict]:
        """The latest pushed result of each (check, service key) pair; service key 0 for `services: none`."""
        with self.db.session() as session:
            rows = session.all(
                f"SELECT l.service_key, {_COLUMNS} FROM writeback_latest AS l JOIN results AS r ON r.id = l.result_id{_JOINS}"
            )
        return {(row["check_id"], row.pop("service_key")): decode_result(row) for row in rows}

    def catalog(self) -> tuple[list[dict], list[dict]]:
        """Services and checks not removed, by slug: the rows and columns of the results README."""
        with self.db.session() as session:
            services = session.all("SELECT id, slug, name, active FROM services WHERE removed_at IS NULL ORDER BY slug")
            checks = session.all(
                "SELECT id, slug, name, active, target_kind FROM checks WHERE removed_at IS NULL ORDER BY slug"
            )
        return services, checks

    def entities(self, service_ids: list[int], check_ids: list[int]) -> tuple[dict, dict]:
        """Services and checks by id (removed ones too: their results stay), for summary files."""
        d = self.db.dialect
        with self.db.session() as session:
            services = session.all(f"SELECT id, slug, name, active FROM services WHERE id IN {d.id_table('?')}",
                                   (d.ids(service_ids),))
            checks = session.all(
                f"SELECT id, slug, name, active, target_kind FROM checks WHERE id IN {d.id_table('?')}",
                (d.ids(check_ids),),
            )
        return {row["id"]: row for row in services}, {row["id"]: row for row in checks}

    def record_writes(self, commits: dict[int, str], *, now: datetime, state: dict[str, Any] | None = None,
                      events: list | None = None) -> None:
        """Mark results written (result id -> commit sha), once pushed, in one transaction with `state`
        and `events` (what the write-back found)."""
        d = self.db.dialect
        ids = d.ids(sorted(commits))
        with self.db.transaction(serialize="writeback") as session:
            session.many(
                "INSERT INTO result_writes (result_id, commit_sha, written_at) VALUES (?, ?, ?)"
                " ON CONFLICT (result_id) DO NOTHING",
                [(result_id, sha, format_time(now)) for result_id, sha in sorted(commits.items())],
            )
            session.run(f"DELETE FROM writeback_queue WHERE result_id IN {d.id_table('?')}", (ids,))
            session.run(
                "INSERT INTO writeback_latest (check_id, service_key, result_id)"
                " SELECT check_id, coalesce(service_id, 0), max(id) FROM results"
                f" WHERE id IN {d.id_table('?')} GROUP BY check_id, coalesce(service_id, 0)"
                " ON CONFLICT (check_id, service_key) DO UPDATE SET result_id = excluded.result_id"
                " WHERE excluded.result_id > writeback_latest.result_id",
                (ids,),
            )
            if state:
                self.db.state.set(state)
            if events:
                self.db.events.emit(events, now=now)

    def finished(self) -> dict[int, bool]:
        """Every finished result's id, and whether it was written back (`catalog verify --against-store`)."""
        with self.db.session() as session:
            rows = session.tuples(
                "SELECT r.id, w.result_id IS NOT NULL FROM results AS r"
                " LEFT JOIN result_writes AS w ON w.result_id = r.id WHERE r.finished_at IS NOT NULL"
            )
        return {result_id: bool(written) for result_id, written in rows}

    def writes(self, result_ids: list[int]) -> dict[int, str]:
        """The commit each of these results was pushed in (absent: not written yet)."""
        d = self.db.dialect
        with self.db.session() as session:
            rows = session.tuples(
                f"SELECT result_id, commit_sha FROM result_writes WHERE result_id IN {d.id_table('?')}",
                (d.ids(result_ids),),
            )
        return dict(rows)
