"""Write-back: the queue of finished results, what was pushed, summaries."""

from __future__ import annotations

import json
from datetime import datetime
from typing import Any

from ..clock import format_time


class WritebackQueries:
    """The Store's methods for write-back: the queue, what was pushed, summaries."""

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
