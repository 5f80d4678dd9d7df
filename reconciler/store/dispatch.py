"""Dispatch: which pairs are due, their result rows, leases, and how each send ended.

Per-check cutoffs are computed in Python (cron needs croniter) and passed in as rows
(check_id, cutoff): a pair is due when no result of it was created at or after its cutoff and none
is pending or sent. Both facts come from dispatch_pairs (written with each new result here, then
kept by triggers on results), never from the history itself, so the due query is one statement
whatever the history's length.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Mapping
from typing import Callable

from ..errors import NotFound
from .rows import ANSWER_RULE_COLUMNS, OPEN_SQL

_TARGETING = "id, target_kind, target_type, target_owner, target_tags, target_max_priority"
UNLIMITED_DISPATCHES = 2**40  # times a batch size (<= 1000), still a 64-bit integer


class NewResult(Mapping):
    """A result `create_due` made, read as its row: {id, check_id, service_id, status, result, revision,
    trigger, created_at}. Its id, check and service are its own; the other five keys are one dict shared
    by every result of the call. Half a million new results took ~230 MB as dicts of their own
    (bench/bench_dispatch.py --part batch), these a fifth of that."""

    __slots__ = ("id", "check_id", "service_id", "_shared")
    _OWN = frozenset(("id", "check_id", "service_id"))
    _KEYS = ("id", "check_id", "service_id", "status", "result", "revision", "trigger", "created_at")

    def __init__(self, result_id: int, check_id: int, service_id: int | None, shared: dict):
        self.id, self.check_id, self.service_id, self._shared = result_id, check_id, service_id, shared

    def __getitem__(self, key: str):
        return getattr(self, key) if key in self._OWN else self._shared[key]

    def __iter__(self) -> Iterator[str]:
        return iter(self._KEYS)

    def __len__(self) -> int:
        return len(self._KEYS)

    def __repr__(self) -> str:
        return f"NewResult({dict(self)!r})"


class DispatchRepository:
    """The scheduler's reads and writes (reconciler/schedule.py)."""

    def __init__(self, db):
        self.db = db
        d = db.dialect
        # Service `s` is active and targeted by check `w` (checks with `services: none` target none).
        self._targeted = f"""
            s.removed_at IS NULL AND s.active = 1
            AND (CAST(:service_id AS BIGINT) IS NULL OR s.id = CAST(:service_id AS BIGINT))
            AND (w.target_kind = 'all'
              OR (w.target_kind = 'list' AND EXISTS (
                  SELECT 1 FROM check_targets AS t WHERE t.check_id = w.id AND t.service_slug = s.slug))
              OR (w.target_kind = 'selector'
                  AND (w.target_type IS NULL OR s.type = w.target_type)
                  AND (w.target_owner IS NULL OR s.owner = w.target_owner)
                  AND (w.target_max_priority IS NULL OR s.priority <= w.target_max_priority)
                  AND (w.target_tags IS NULL OR {d.has_all('s.tags', 'w.target_tags')})))
        """
        # One row per wanted check: its due service ids as a JSON list ([null] for `services: none`;
        # those checks come last, as pairs are created in this order up to a limit). Grouping per
        # check keeps half a million pairs out of Python: services are scanned in id order inside each
        # check, with one integer-key seek into dispatch_pairs each (a LEFT JOIN: a correlated NOT
        # EXISTS costs half as much again per pair).
        self._due_by_check = f"""
            , due AS (
                SELECT w.id AS check_id, 0 AS position, (
                        SELECT {d.id_array('s.id')} FROM services AS s
                        LEFT JOIN dispatch_pairs AS d ON d.pair_key = w.id * 4294967296 + s.id
                        WHERE {self._targeted}
                          AND (d.pair_key IS NULL OR (d.open_results = 0 AND d.last_created_at < w.cutoff))
                       ) AS service_ids
                FROM wanted AS w WHERE w.target_kind <> 'none'
                UNION ALL
                SELECT w.id, 1, CASE WHEN CAST(:service_id AS BIGINT) IS NULL AND NOT EXISTS (
                        SELECT 1 FROM dispatch_pairs AS d WHERE d.pair_key = w.id * 4294967296
                        AND (d.open_results > 0 OR d.last_created_at >= w.cutoff))
                    THEN {d.NULL_ARRAY} ELSE {d.EMPTY_ARRAY} END
                FROM wanted AS w WHERE w.target_kind = 'none'
            )
        """

    def _wanted(self, cutoffs: list[tuple[int, str]]) -> tuple[str, dict]:
        cte, params = self.db.dialect.rows_cte("cutoffs", ("check_id", "cutoff"), [tuple(pair) for pair in cutoffs])
        sql = (f"WITH {cte}, wanted AS MATERIALIZED (SELECT {', '.join('c.' + name for name in _TARGETING.split(', '))},"
               " c.batch_size, j.cutoff"
               " FROM cutoffs AS j JOIN checks AS c ON c.id = j.check_id)")
        return sql, params

    def targeted_pairs(
        self, *, check_ids: list[int] | None = None, service_ids: list[int] | None = None
    ) -> set[tuple[int, int]]:
        """(check id, service id) pairs the checks' `services:` select, by the rule dispatch uses; None
        for either list means all. Checks with `services: none` select no service.

        A list given is a plain `IN`, not `(all OR IN)`: with the OR, one service's pairs (its page,
        its badge) were worked out over every service, 41 ms at 10,000 (bench/bench_pages.py)."""
        d = self.db.dialect
        checks = f" AND id IN {d.id_table(':checks')}" if check_ids is not None else ""
        services = f" AND s.id IN {d.id_table(':services')}" if service_ids is not None else ""
        with self.db.session() as session:
            rows = session.tuples(
                f"WITH w AS MATERIALIZED (SELECT {_TARGETING} FROM checks WHERE removed_at IS NULL{checks})"
                f" SELECT w.id, s.id FROM w JOIN services AS s ON TRUE WHERE TRUE{services} AND " + self._targeted,
                {"checks": d.ids(check_ids or []), "services": d.ids(service_ids or []), "service_id": None},
            )
        return set(rows)

    def due(self, cutoffs: list[tuple[int, str]]) -> list[tuple[int, list[int | None]]]:
        """(check_id, [service_id or None, ...]) per wanted check with due pairs; one query."""
        wanted, params = self._wanted(cutoffs)
        with self.db.session() as session:
            rows = session.tuples(
                wanted + self._due_by_check
                + f" SELECT check_id, service_ids FROM due WHERE service_ids <> {self.db.dialect.EMPTY_ARRAY}",
                {**params, "service_id": None},
            )
        return [(check_id, _json_list(service_ids)) for check_id, service_ids in rows]

    def create_due(
        self,
        cutoffs: list[tuple[int, str]],
        *,
        now: str,
        revision: str | None,
        claim_until: str,
        holder: str,
        trigger: str = "schedule",
        service_id: int | None = None,
        limit: int | None = None,
    ) -> list[NewResult]:
        """Create a pending result for every due pair and lease it to the caller, in one transaction.

        `limit` is in dispatches, not results: a check with `batch: N` gets N pairs per dispatch.
        Each new row reads as {id, check_id, service_id, status, result, revision, trigger, created_at}
        (a `NewResult`: a read-only mapping, small for half a million of them).

        The due query and the insert share the transaction (serialised across processes), so two
        schedulers can never both create a result for one pair. The lease (`claim_until`) keeps
        others from sending these rows.
        """
        d = self.db.dialect
        wanted, params = self._wanted(cutoffs)
        elements, position = d.json_elements_indexed("b.service_ids", "j")
        with self.db.transaction(serialize="dispatch") as session:
            created = session.tuples(
                wanted + self._due_by_check
                # `limit` counts dispatches: a check of batch N takes N pairs per dispatch, so each
                # check gets the dispatches the checks before it left, times its batch size.
                + ", budgeted AS (SELECT due.check_id, due.service_ids, w.batch_size, coalesce(sum("
                f"({d.json_length('due.service_ids')} + w.batch_size - 1) / w.batch_size) OVER (ORDER BY due.position,"
                " due.check_id ROWS BETWEEN UNBOUNDED PRECEDING AND 1 PRECEDING), 0) AS dispatches_before"
                " FROM due JOIN wanted AS w ON w.id = due.check_id)"
                ", pairs AS (SELECT b.check_id, CAST(j.value AS BIGINT) AS service_id"
                f" FROM budgeted AS b, {elements}"
                f" WHERE {position} < (CAST(:limit AS BIGINT) - b.dispatches_before) * b.batch_size)"
                " INSERT INTO results (check_id, service_id, revision, trigger, created_at)"
                " SELECT check_id, service_id, :revision, :trigger, :now FROM pairs"
                # Check by check: a batch's results are neighbours, so sending and answering it touch
                # few pages (service by service made mark_sent_many of 1,000 cost twice as much).
                " ORDER BY check_id, service_id"
                " RETURNING check_id, id, service_id",
                {**params, "service_id": service_id, "revision": revision, "trigger": trigger, "now": now,
                 "limit": UNLIMITED_DISPATCHES if limit is None or limit < 0 else limit},
            )
            if not created:
                return []
            ids = {"ids": d.ids(sorted(row[1] for row in created))}
            new = f"r.id IN {d.id_table(':ids')}"
            # The derived rows of the new results, one statement each (migration 9: no insert trigger),
            # each in its table's key order: dispatch_pairs' is id order, latest_runs' is by service (one
            # place per service for every check cost ~2 s more and a WAL of twice the data, the cache
            # spilling the same pages again and again). Results are born pending (a trigger refuses any
            # other), and the due query gives each pair once.
            session.run(
                "INSERT INTO dispatch_pairs (pair_key, last_created_at, open_results)"
                " SELECT r.check_id * 4294967296 + coalesce(r.service_id, 0), r.created_at, 1"
                f" FROM results AS r WHERE {new}"
                " ON CONFLICT (pair_key) DO UPDATE SET open_results = dispatch_pairs.open_results + excluded.open_results,"
                " last_created_at = CASE WHEN excluded.last_created_at > dispatch_pairs.last_created_at"
                " THEN excluded.last_created_at ELSE dispatch_pairs.last_created_at END",
                ids,
            )
            session.run(
                "INSERT INTO latest_runs (service_key, check_slug, check_id, result_id, status, result, url, created_at,"
                " sent_at, finished_at)"
                " SELECT coalesce(r.service_id, 0), c.slug, r.check_id, r.id, r.status, r.result, r.url, r.created_at,"
                f" r.sent_at, r.finished_at FROM results AS r, checks AS c WHERE {new} AND c.id = r.check_id ORDER BY 1, 2"
                " ON CONFLICT (service_key, check_slug) DO UPDATE SET"
                " result_id = excluded.result_id, status = excluded.status, result = excluded.result,"
                " url = excluded.url, created_at = excluded.created_at, sent_at = excluded.sent_at,"
                " finished_at = excluded.finished_at"
                " WHERE excluded.result_id > latest_runs.result_id",
                ids,
            )
            session.run(
                "INSERT INTO result_counts (status, result, count) VALUES ('pending', 'unknown', ?)"
                " ON CONFLICT (status, result) DO UPDATE SET count = result_counts.count + excluded.count",
                (len(created),),
            )
            session.run(
                "INSERT INTO dispatch_attempts (result_id, attempts, not_before, holder)"
                f" SELECT value, 0, ?, ? FROM {d.id_table('?')} AS ids",
                (claim_until, holder, ids["ids"]),
            )
        # A new result's other columns are known: one dict shared by all, and one integer object per
        # service, so half a million new rows stay small in memory (bench_dispatch.py --part batch).
        # Check by check, in id order: the order of the dispatches.
        created.sort()
        shared = {"status": "pending", "result": "unknown", "revision": revision, "trigger": trigger, "created_at": now}
        one: dict = {}
        return [NewResult(result_id, check_id, one.setdefault(service_id, service_id), shared)
                for check_id, result_id, service_id in created]

    def open_results(self, check_id: int, service_id: int | None) -> list[dict]:
        """The pending and sent results of one pair, oldest first."""
        with self.db.session() as session:
            return session.all(
                "SELECT * FROM results WHERE check_id = ? AND service_id IS NOT DISTINCT FROM ?"
                f" AND status IN {OPEN_SQL} ORDER BY id",
                (check_id, service_id),
            )

    def claim_pending(self, *, now: str, claim_until: str, holder: str, limit: int = 10_000) -> list[dict]:
        """Lease pending results nobody holds (crash leftovers, deferred retries), oldest first."""
        d = self.db.dialect
        with self.db.transaction(serialize="dispatch") as session:
            ids = [
                row[0]
                for row in session.tuples(
                    # `IN (open)` names the partial index of open results (in id order): SQLite does not
                    # infer it from `= 'pending'`, and scanned the whole history instead.
                    "SELECT r.id FROM results AS r LEFT JOIN dispatch_attempts AS d ON d.result_id = r.id"
                    f" WHERE r.status IN {OPEN_SQL} AND r.status = 'pending'"
                    " AND (d.not_before IS NULL OR d.not_before <= ?) ORDER BY r.id LIMIT ?",
                    (now, limit),
                )
            ]
            if not ids:
                return []
            session.run(
                "INSERT INTO dispatch_attempts (result_id, attempts, not_before, holder)"
                f" SELECT value, 0, :until, :holder FROM {d.id_table(':ids')} AS ids WHERE TRUE"
                " ON CONFLICT (result_id) DO UPDATE SET not_before = :until, holder = :holder",
                {"until": claim_until, "holder": holder, "ids": d.ids(ids)},
            )
            return session.all(
                "SELECT r.*, d.attempts FROM results AS r JOIN dispatch_attempts AS d ON d.result_id = r.id"
                f" WHERE r.id IN {d.id_table('?')} ORDER BY r.id",
                (d.ids(ids),),
            )

    def release_leases(self, *, now: str, keep: Callable[[str], bool]) -> int:
        """End the unexpired leases whose holder `keep` rejects (a scheduler that died); their results
        become claimable at once."""
        d = self.db.dialect
        with self.db.session() as session:
            holders = [
                row[0]
                for row in session.tuples(
                    "SELECT DISTINCT holder FROM dispatch_attempts WHERE holder IS NOT NULL AND not_before > ?", (now,)
                )
            ]
        dead = [holder for holder in holders if not keep(holder)]
        if not dead:
            return 0
        with self.db.transaction() as session:
            return session.run(
                f"UPDATE dispatch_attempts SET not_before = ?, holder = NULL WHERE holder IN {d.text_table('?')}",
                (now, d.ids(dead)),
            )

    def renew_claim(self, result_id: int, *, holder: str, claim_until: str) -> bool:
        """Just before sending: extend our lease; False if the result is no longer ours to send."""
        with self.db.transaction() as session:
            return session.one(
                "UPDATE dispatch_attempts SET not_before = ?, attempts = attempts + 1"
                " WHERE result_id = ? AND holder = ?"
                " AND (SELECT status FROM results WHERE id = ?) = 'pending' RETURNING result_id",
                (claim_until, result_id, holder, result_id),
            ) is not None

    def renew_claims(self, result_ids: list[int], *, holder: str, claim_until: str) -> list[int]:
        """`renew_claim` for the results of one batch: the ids still ours to send."""
        d = self.db.dialect
        with self.db.transaction() as session:
            rows = session.tuples(
                "UPDATE dispatch_attempts SET not_before = ?, attempts = attempts + 1"
                f" WHERE result_id IN {d.id_table('?')} AND holder = ?"
                " AND (SELECT status FROM results WHERE id = dispatch_attempts.result_id) = 'pending'"
                " RETURNING result_id",
                (claim_until, d.ids(result_ids), holder),
            )
        return sorted(row[0] for row in rows)

    def create_batch(self, check_id: int, result_ids: list[int], *, now: str) -> int:
        """Record a batch dispatch of `result_ids` (one check's); its id."""
        with self.db.transaction() as session:
            return session.value(
                "INSERT INTO dispatch_batches (check_id, result_ids, created_at) VALUES (?, ?, ?) RETURNING id",
                (check_id, json.dumps(result_ids), now),
            )

    def batch(self, batch_id: int) -> tuple[dict, list[dict]]:
        """A batch (id, check_id, created_at) and its result rows in id order; NotFound when unknown."""
        d = self.db.dialect
        with self.db.session() as session:
            batch = session.one("SELECT id, check_id, result_ids, created_at FROM dispatch_batches WHERE id = ?", (batch_id,))
            if batch is None:
                raise NotFound(f"batch {batch_id} does not exist")
            rows = session.all(
                f"SELECT * FROM results WHERE id IN {d.id_table('?')} ORDER BY id", (d.ids(json.loads(batch.pop("result_ids"))),)
            )
        return batch, rows

    def batch_rule(self, batch_id: int) -> dict:
        """Who may read a batch with an OIDC token: its check's answer rule (`reconciler.oidc.answer_refusal`);
        NotFound when unknown."""
        with self.db.session() as session:
            rule = session.one(f"SELECT b.id, {ANSWER_RULE_COLUMNS} FROM dispatch_batches AS b"
                               " JOIN checks AS c ON c.id = b.check_id WHERE b.id = ?", (batch_id,))
        if rule is None:
            raise NotFound(f"batch {batch_id} does not exist")
        return rule

    def mark_sent_many(self, result_ids: list[int], *, now: str) -> list[int]:
        """pending -> sent for a batch; the ids that moved (the others were answered or expired first)."""
        d = self.db.dialect
        with self.db.transaction() as session:
            rows = session.tuples(
                f"UPDATE results SET status = 'sent', sent_at = ? WHERE id IN {d.id_table('?')} AND status = 'pending'"
                " RETURNING id",
                (now, d.ids(result_ids)),
            )
        return sorted(row[0] for row in rows)

    def mark_failed_many(self, result_ids: list[int], message: str, *, now: str) -> list[int]:
        """pending -> error for a batch whose dispatch failed for good; the ids that moved."""
        d = self.db.dialect
        with self.db.transaction() as session:
            rows = session.tuples(
                "UPDATE results SET status = 'error', message = ?, finished_at = ?"
                f" WHERE id IN {d.id_table('?')} AND status = 'pending' RETURNING id",
                (message, now, d.ids(result_ids)),
            )
        return sorted(row[0] for row in rows)

    def defer(self, result_ids: list[int], *, until: str, error: str | None) -> None:
        """Keep pending results for a later pass: nobody sends them before `until`."""
        d = self.db.dialect
        with self.db.transaction() as session:
            session.run(
                "INSERT INTO dispatch_attempts (result_id, attempts, not_before, last_error)"
                f" SELECT value, 0, :until, :error FROM {d.id_table(':ids')} AS ids WHERE TRUE"
                " ON CONFLICT (result_id) DO UPDATE SET not_before = :until, holder = NULL,"
                " last_error = coalesce(:error, dispatch_attempts.last_error)",
                {"until": until, "error": error, "ids": d.ids(result_ids)},
            )

    def expire(self, limits: list[tuple[int, str, str]], *, now: str, dry_run: bool = False) -> list[int]:
        """Open results sent (or, never sent, created) at or before their check's cutoff -> timed-out.

        `limits` is [(check_id, cutoff_text, message), ...]; returns the ids, sorted.
        """
        cte, params = self.db.dialect.rows_cte("limits", ("check_id", "cutoff", "message"), [tuple(l) for l in limits])
        params["now"] = now
        if dry_run:
            with self.db.session() as session:
                rows = session.tuples(
                    f"WITH {cte} SELECT r.id FROM results AS r JOIN limits AS l ON l.check_id = r.check_id"
                    f" WHERE r.status IN {OPEN_SQL} AND coalesce(r.sent_at, r.created_at) <= l.cutoff",
                    params,
                )
        else:
            with self.db.transaction() as session:
                rows = session.tuples(
                    f"WITH {cte} UPDATE results SET status = 'timed-out', finished_at = :now,"
                    " message = limits.message FROM limits WHERE results.check_id = limits.check_id"
                    f" AND results.status IN {OPEN_SQL}"
                    " AND coalesce(results.sent_at, results.created_at) <= limits.cutoff RETURNING results.id",
                    params,
                )
        return sorted(row[0] for row in rows)


def _json_list(value) -> list:
    return json.loads(value) if isinstance(value, str) else value
