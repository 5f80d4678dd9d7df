"""Events and their deliveries: recorded with their cause, handed to routes, sent at least once.

    emit                      record events in the caller's transaction (the outbox fills by trigger;
                              failing / recovered are recorded by triggers on latest_results: migrations)
    unrouted / route          the sender hands new events to the routes that want them
    due / delivered / retry   deliveries to send now, and how each send ended
    list / get / failed       reads for the API, the pages and `catalog status`
"""

from __future__ import annotations

import functools
import json
from datetime import datetime
from typing import Iterable

from ..clock import format_time
from ..errors import NotFound
from ..events import Event
from .rows import given_conditions

EVENT_COLUMNS = "e.id, e.type, e.created_at, e.team, e.service, e.check_slug, e.result_id, e.outcome, e.summary, e.data"

_INSERT_EVENT = (
    "INSERT INTO events (type, created_at, team, service, check_slug, result_id, outcome, summary, data, event_key)"
    " VALUES (:type, :created_at, :team, :service, :check_slug, :result_id, :outcome, :summary, :data, :event_key)"
)
_KEYLESS_FIELDS = ("type", "created_at", "team", "service", "check_slug", "result_id", "outcome", "summary", "data")
# Every event goes into the outbox with the statement that records it (here, and in the triggers of
# migration 6 for failing / recovered): the outbox has no trigger of its own, a nested trigger per event
# cost the answer path more than the insert.
_INTO_OUTBOX = "INSERT INTO event_outbox (event_id) VALUES (?)"
# Up to this many events without a key are one INSERT ... VALUES of bound values (an answer batch's
# level changes, one or a few): a third quicker than the rows' JSON made and taken apart by the CTE
# that serves the many (bench/bench_scorecards.py, the later PATCH rounds: levels move there).
_FEW = 16


@functools.lru_cache(maxsize=_FEW)
def _insert_keyless(count: int) -> str:
    row = "(" + ", ".join("?" * len(_KEYLESS_FIELDS)) + ")"
    return f"INSERT INTO events ({', '.join(_KEYLESS_FIELDS)}) VALUES {', '.join([row] * count)} RETURNING id"


class EventRepository:
    """Events (never changed, never deleted) and the deliveries of each to each route."""

    def __init__(self, db):
        self.db = db

    # -- recording, in the cause's transaction --------------------------------------------------

    def emit(self, events: Iterable[Event], *, now: datetime) -> int:
        """Record events in the caller's transaction (or one of their own); those whose `key` was
        recorded before are skipped. The API for every cause: sync errors, write-back findings,
        scorecard levels, waivers and campaigns. Returns how many were new."""
        stamp = format_time(now)
        rows = [
            {"type": e.type, "created_at": stamp, "team": e.team, "service": e.service,
             "check_slug": e.check, "result_id": e.result_id, "outcome": e.outcome, "summary": e.summary,
             "data": json.dumps(e.data, sort_keys=True), "event_key": e.key}
            for e in events
        ]
        if not rows:
            return 0
        keyless = [tuple(row[field] for field in _KEYLESS_FIELDS) for row in rows if row["event_key"] is None]
        with self.db.transaction() as session:
            ids = []
            if keyless and len(keyless) <= _FEW:  # an answer's level changes: values bound as they are
                ids = [row[0] for row in session.tuples(_insert_keyless(len(keyless)), [v for row in keyless for v in row])]
            elif keyless:  # one statement for them all (a sync's level changes)
                cte, params = self.db.dialect.rows_cte("new_events", _KEYLESS_FIELDS, keyless)
                columns = ", ".join(_KEYLESS_FIELDS)
                ids = [row[0] for row in session.tuples(
                    f"WITH {cte} INSERT INTO events ({columns}) SELECT {columns} FROM new_events RETURNING id", params)]
            for row in rows:  # keyed ones one at a time: each says whether it was new
                if row["event_key"] is not None:
                    added = session.one(
                        _INSERT_EVENT + " ON CONFLICT (event_key) WHERE event_key IS NOT NULL DO NOTHING RETURNING id",
                        row,
                    )
                    if added is not None:
                        ids.append(added["id"])
            session.many(_INTO_OUTBOX, [(event_id,) for event_id in ids])
            return len(ids)

    def recorded_keys(self, keys: Iterable[str]) -> set[str]:
        """Which of these once-only keys were recorded already (a periodic job asks before it writes)."""
        keys = sorted(set(keys))
        if not keys:
            return set()
        with self.db.session() as session:
            return {row[0] for row in session.tuples(
                f"SELECT event_key FROM events WHERE event_key IN {self.db.dialect.text_table('?')}",
                (self.db.dialect.ids(keys),))}

    # -- the sender ---------------------------------------------------------------------------

    def unrouted(self, limit: int = 1000) -> list[dict]:
        """Events not yet handed to routes, oldest first, with their service's current fields for
        targeting (`service_type`, `service_tags` decoded, `service_priority`; None without a service)."""
        with self.db.session() as session:
            rows = session.all(
                f"SELECT {EVENT_COLUMNS}, s.type AS service_type, s.tags AS service_tags,"
                " s.priority AS service_priority, s.owner AS service_owner"
                " FROM event_outbox AS o JOIN events AS e ON e.id = o.event_id"
                " LEFT JOIN services AS s ON s.slug = e.service ORDER BY o.event_id LIMIT ?",
                (limit,),
            )
        for row in rows:
            row["service_tags"] = json.loads(row["service_tags"]) if row["service_tags"] else []
        return rows

    def route(self, event_ids: list[int], deliveries: list[tuple[str, int, str | None, str]]) -> None:
        """Hand events to routes: their deliveries (route, event_id, team, not_before) are recorded and
        the events leave the outbox, in one transaction. A delivery already there is kept as it is."""
        d = self.db.dialect
        with self.db.transaction() as session:
            session.many(
                "INSERT INTO event_deliveries (route, event_id, team, not_before) VALUES (?, ?, ?, ?)"
                " ON CONFLICT (route, event_id) DO NOTHING",
                deliveries,
            )
            session.run(f"DELETE FROM event_outbox WHERE event_id IN {d.id_table('?')}", (d.ids(event_ids),))

    def due(self, *, now: datetime, limit: int = 1000) -> list[dict]:
        """Pending deliveries whose time has come, oldest first, each with its event's fields."""
        with self.db.session() as session:
            return session.all(
                "SELECT d.id AS delivery_id, d.route, d.attempts, d.not_before, " + EVENT_COLUMNS +
                " FROM event_deliveries AS d JOIN events AS e ON e.id = d.event_id"
                " WHERE d.status = 'pending' AND d.not_before <= ? ORDER BY d.not_before, d.id LIMIT ?",
                (format_time(now), limit),
            )

    def retrying(self, *, now: datetime) -> list[dict]:
        """Pending deliveries that failed and wait for their next try (the deliveries that came after
        theirs for the same pair and route wait behind them), with their event's team, service and check."""
        with self.db.session() as session:
            return session.all(
                "SELECT d.id AS delivery_id, d.route, e.team, e.service, e.check_slug"
                " FROM event_deliveries AS d JOIN events AS e ON e.id = d.event_id"
                " WHERE d.status = 'pending' AND d.not_before > ? AND d.attempts > 0",
                (format_time(now),),
            )

    def delivered(self, delivery_ids: list[int], *, now: datetime) -> None:
        """Mark deliveries sent (after the receiver said so); a crash before this sends them again."""
        d = self.db.dialect
        with self.db.transaction() as session:
            session.run(
                "UPDATE event_deliveries SET status = 'delivered', finished_at = ?, last_error = NULL"
                f" WHERE id IN {d.id_table('?')} AND status = 'pending'",
                (format_time(now), d.ids(delivery_ids)),
            )

    def retry(self, delivery_ids: list[int], *, error: str, until: datetime, now: datetime, max_attempts: int) -> None:
        """A failed send: try again from `until`, or, at the last attempt, mark it failed for good."""
        d = self.db.dialect
        with self.db.transaction() as session:
            session.run(
                "UPDATE event_deliveries SET attempts = attempts + 1, last_error = :error, not_before = :until,"
                " status = CASE WHEN attempts + 1 >= :max THEN 'failed' ELSE 'pending' END,"
                " finished_at = CASE WHEN attempts + 1 >= :max THEN :now END"
                f" WHERE id IN {d.id_table(':ids')} AND status = 'pending'",
                {"error": error[:2000], "until": format_time(until), "now": format_time(now),
                 "max": max_attempts, "ids": d.ids(delivery_ids)},
            )

    # -- reads --------------------------------------------------------------------------------

    def list(self, *, type: str | None = None, service: str | None = None, check: str | None = None,
             before_id: int | None = None, limit: int = 100) -> list[dict]:
        """Events newest first, filtered; page on with `before_id` = the last id seen. Each filter reads
        its index (events_by_type, events_by_service, events_by_check): with `(:service IS NULL OR ...)`
        a filtered page read every event newest first (123 ms at 2,000,000 events for a service that
        has none)."""
        conditions, params = given_conditions(
            [(type, " AND e.type = ?"), (service, " AND e.service = ?"), (check, " AND e.check_slug = ?")])
        with self.db.session() as session:
            rows = session.all(
                f"SELECT {EVENT_COLUMNS} FROM events AS e WHERE e.id < ?{conditions} ORDER BY e.id DESC LIMIT ?",
                [before_id if before_id is not None else 2**62, *params, limit],
            )
        return [_decoded(row) for row in rows]

    def get(self, event_id: int) -> dict:
        """One event with its deliveries (route, status, attempts, last error); `waiting` while it is in the
        outbox, not yet handed to the routes."""
        with self.db.session() as session:
            row = session.one(
                f"SELECT {EVENT_COLUMNS}, EXISTS (SELECT 1 FROM event_outbox AS o WHERE o.event_id = e.id) AS waiting"
                " FROM events AS e WHERE e.id = ?",
                (event_id,),
            )
            if row is None:
                raise NotFound(f"event {event_id} does not exist")
            row["deliveries"] = session.all(
                "SELECT route, status, attempts, not_before, last_error, finished_at FROM event_deliveries"
                " WHERE event_id = ? ORDER BY route",
                (event_id,),
            )
        return _decoded(row)

    def delivery_summary(self, *, failed_limit: int = 20) -> dict:
        """For `catalog status` and the sync page: counts by status, undelivered events, and the
        latest deliveries that failed for good (with their event's summary)."""
        with self.db.session() as session:
            counts = session.one(
                "SELECT (SELECT count(*) FROM event_deliveries WHERE status = 'pending') AS pending,"
                " (SELECT count(*) FROM event_deliveries WHERE status = 'failed') AS failed,"
                " (SELECT count(*) FROM event_outbox) AS unrouted"
            )
            failed = session.all(
                "SELECT d.id, d.route, d.event_id, d.attempts, d.last_error, d.finished_at, e.type, e.summary"
                " FROM event_deliveries AS d JOIN events AS e ON e.id = d.event_id"
                " WHERE d.status = 'failed' ORDER BY d.id DESC LIMIT ?",
                (failed_limit,),
            )
        return {**counts, "failed_deliveries": failed}


def _decoded(row: dict) -> dict:
    row["check"] = row.pop("check_slug")
    row["data"] = json.loads(row["data"]) if row["data"] else {}
    if "waiting" in row:
        row["waiting"] = bool(row["waiting"])
    return row
