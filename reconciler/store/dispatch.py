"""Dispatch: due pairs, result rows for them, leases, sent / failed / timed-out."""

from __future__ import annotations

import json
from typing import Callable

from .records import _decode_service


class DispatchQueries:
    """The Store's methods for dispatch: due pairs, their result rows, leases, outcomes."""

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

    def targeted_pairs(
        self, *, check_ids: list[int] | None = None, service_ids: list[int] | None = None
    ) -> set[tuple[int, int]]:
        """(check id, service id) pairs the checks' `services:` select, by the rule dispatch uses; None
        for either list means all. Checks with `services: none` select no service."""
        rows = self.connection.execute(
            """
            WITH w AS MATERIALIZED (
                SELECT id, target_kind, target_type, target_owner, target_tags, target_max_priority FROM checks
                WHERE removed_at IS NULL AND (:checks IS NULL OR id IN (SELECT value FROM json_each(:checks)))
            )
            SELECT w.id AS check_id, s.id AS service_id FROM w JOIN services AS s
            WHERE (:services IS NULL OR s.id IN (SELECT value FROM json_each(:services))) AND """
            + self._TARGETED,
            {
                "checks": None if check_ids is None else json.dumps(check_ids),
                "services": None if service_ids is None else json.dumps(service_ids),
                "service_id": None,
            },
        )
        return {(row["check_id"], row["service_id"]) for row in rows}

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
