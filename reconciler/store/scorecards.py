"""Scorecards, waivers and campaigns: their stored definitions, the levels kept per service, the trend."""

from __future__ import annotations

import json
from datetime import datetime
from typing import Iterable, Sequence

from ..clock import format_time
from ..scorecards import Evaluation, Evaluator, LevelChange, encode_states

_SERVICE_FIELDS = "id, slug, name, owner, type, priority, tags, active, removed_at"
BULK_SNAPSHOT_FROM = 1_000  # level changes in one write (bench/bench_scorecards.py: a first evaluation)
KEPT_LEVELS = 20_000  # level rows a SQLite connection keeps for the answer hook (~500 bytes each: 10 MB at most)
KEPT_BLOCK = 32  # services whose rows of one rubric the hook reads at once (a cold batch of one answer: about what the exact read cost)
_UNKNOWN = object()


class ScorecardRepository:
    """What evaluation reads and writes (reconciler/scorecards.py), and what the pages read."""

    def __init__(self, db):
        self.db = db
        self.evaluator = Evaluator(db)  # this process's copy of the definitions, per applied revision
        self._stored_sql: dict[tuple[bool, bool], str] = {}

    # -- evaluation ---------------------------------------------------------------------------

    def revision(self, session=None):
        """The applied revision: the definitions and checks change only with it."""
        with self._session(session) as s:
            return s.value("SELECT value FROM catalog_state WHERE key = 'applied_revision'")

    def definitions(self, session=None) -> list[dict]:
        """Every stored scorecard, waiver and campaign (removed ones too: the caller skips them)."""
        with self._session(session) as s:
            return s.all("SELECT kind, slug, path, body, error, removed_at FROM definitions ORDER BY kind, slug")

    def live_checks(self, session=None) -> list[dict]:
        """The checks not removed, with what staleness and targeting need (`targets` decoded)."""
        with self._session(session) as s:
            rows = s.all("SELECT id, slug, frequency, schedule, timeout_seconds, active, targets"
                         " FROM checks WHERE removed_at IS NULL")
        for row in rows:
            row["targets"] = json.loads(row["targets"])
        return rows

    def evaluation_inputs(self, session, check_slugs: Iterable[str], service_ids: list[int] | None = None
                          ) -> tuple[list[dict], dict[int, dict[int, tuple]]]:
        """(live services, service id -> check id -> (result, completed?, created_at, ...) of its latest
        finished result), for every service or those given, over the checks given."""
        d = self.db.dialect
        only = f" AND id IN {d.id_table(':services')}" if service_ids is not None else ""
        params = {"services": d.ids(service_ids or []), "checks": d.ids(sorted(check_slugs))}
        services = session.all(f"SELECT {_SERVICE_FIELDS} FROM services WHERE removed_at IS NULL" + only, params)
        for service in services:
            service["tags"] = json.loads(service["tags"]) if service["tags"] != "[]" else []
        latest: dict[int, dict[int, tuple]] = {}
        # 100,000s of rows on a first evaluation: the fewer text values, the quicker (a flag, the check's id)
        rows = session.tuples(
            "SELECT l.result, l.status = 'completed', l.created_at, l.check_id, l.service_key FROM checks AS c"
            " JOIN latest_results AS l ON l.check_id = c.id"
            f" WHERE c.slug IN {d.text_table(':checks')} AND c.removed_at IS NULL"
            + (f" AND l.service_key IN {d.id_table(':services')}" if service_ids is not None else ""),
            params,
        )
        for row in rows:  # each kept as read, its first three what counts
            found = latest.get(row[4])
            if found is None:
                found = latest[row[4]] = {}
            found[row[3]] = row
        return services, latest

    def service_ids(self, session, slugs: Sequence[str]) -> list[int]:
        """The ids of these services, removed ones too (their levels are dropped)."""
        return [row[0] for row in session.tuples(
            f"SELECT id FROM services WHERE slug IN {self.db.dialect.text_table('?')} ORDER BY id",
            (self.db.dialect.ids(sorted(set(slugs))),))]

    def service_owners(self, session, service_ids: list[int]) -> dict[int, tuple[str, str | None]]:
        """service id -> (slug, owner), for the events of level changes (removed services too)."""
        return {row[0]: (row[1], row[2]) for row in session.tuples(
            f"SELECT id, slug, owner FROM services WHERE id IN {self.db.dialect.id_table('?')}",
            (self.db.dialect.ids(sorted(service_ids)),))}

    def stored_levels(self, session, service_ids: list[int] | None = None, rubrics: list[str] | None = None
                      ) -> dict[tuple[str, int], tuple]:
        """(rubric, service id) -> (level, checks JSON, valid_until), of every row or these services'
        (of these rubrics). Read to be rewritten: locked until the transaction ends (PostgreSQL), in one
        order (no deadlock), so two transactions that move one level (an answer and the leader's refresh)
        see each other's write, and the change is reported once."""
        d = self.db.dialect
        shape = (service_ids is not None, rubrics is not None)
        sql = self._stored_sql.get(shape)
        if sql is None:  # built once per shape: the answer hook reads with it once per batch
            conditions = ([f"service_id IN {d.id_table('?')}"] if service_ids is not None else []) + (
                [f"rubric IN {d.text_table('?')}"] if rubrics is not None else [])
            sql = self._stored_sql[shape] = (
                "SELECT rubric, service_id, level, checks, valid_until FROM scorecard_levels"
                + (" WHERE " + " AND ".join(conditions) if conditions else "") + d.lock_rows("service_id, rubric"))
        params = [d.ids(values) for values in (service_ids, rubrics) if values is not None]
        rows = session.tuples(sql, params)
        return {(rubric, service_id): (level, checks, until) for rubric, service_id, level, checks, until in rows}

    def levels_of_pairs(self, session, pairs: Iterable[tuple[str, int]]) -> dict[tuple[str, int], tuple]:
        """`stored_levels` of these (rubric, service id) pairs, for the answer hook.

        On SQLite the rows come from what this connection last read or wrote (`backend.kept_rows`:
        emptied when another connection committed, or on a rollback). A pair not known yet brings in
        its rubric's rows of KEPT_BLOCK services around it, in one range read: answers come check by
        check over the services in id order, so the next answers find their rows known and the hook
        reads nothing (a read per batch was a third of its time: bench/bench_scorecards.py, PATCH).
        Every write of scorecard_levels goes through `replace_levels`, which keeps these rows current: a
        new writer must too. On PostgreSQL, where replicas share the rows, they are read, locked, every time."""
        kept = self.db.backend.kept_rows("scorecard_levels")
        if kept is None:
            pairs = set(pairs)
            return self.stored_levels(session, sorted({s for _, s in pairs}), sorted({r for r, _ in pairs}))
        found = {}
        for key in pairs:
            row = kept.get(key, _UNKNOWN)
            if row is _UNKNOWN:
                block = (key[0], key[1] // KEPT_BLOCK, "block")
                if block in kept:  # its block was read: no row (the rubric does not apply to the service)
                    continue
                if len(kept) > KEPT_LEVELS:
                    kept.clear()  # bounded memory; refilled as answers come
                kept[block] = None
                for rubric, service_id, level, checks, until in self.level_range(
                        session, block[0], block[1] * KEPT_BLOCK, (block[1] + 1) * KEPT_BLOCK):
                    kept[(rubric, service_id)] = (level, checks, until)
                row = kept.get(key)
            if row is not None:
                found[key] = row
        return found

    def level_range(self, session, rubric: str, first: int, stop: int) -> list[tuple]:
        """(rubric, service id, level, checks JSON, valid_until) of one rubric's rows of service ids first .. stop - 1."""
        return session.tuples("SELECT rubric, service_id, level, checks, valid_until FROM scorecard_levels"
                              " WHERE rubric = ? AND service_id >= ? AND service_id < ?", (rubric, first, stop))

    def replace_levels(self, session, found: dict[tuple[str, int], Evaluation], now: datetime, *,
                       stored: dict[tuple[str, int], tuple], drop_gone: bool) -> list[LevelChange]:
        """Write the evaluations that differ from `stored` (the rows `stored_levels` read, and locked,
        before the results were read); with `drop_gone`, `stored` is a whole scope (every row, or some
        services' rows) and its rows that no longer apply are dropped. Today's snapshot follows each
        changed level. Returns the level changes."""
        before = stored
        stamp = format_time(now)
        day = stamp[:10]
        inserts, updates, moves, changes = [], [], [], []
        for key, evaluation in found.items():
            checks = encode_states(evaluation.checks)
            old = before.get(key)
            if old == (evaluation.level, checks, evaluation.valid_until):
                continue
            if old is None:
                inserts.append((evaluation.level, checks, evaluation.valid_until, stamp, key[0], key[1]))
            elif old[2] == evaluation.valid_until:
                updates.append((evaluation.level, checks, stamp, key[0], key[1]))
            else:
                moves.append((evaluation.level, checks, evaluation.valid_until, stamp, key[0], key[1]))
            if old is None or old[0] != evaluation.level:
                changes.append(LevelChange(key[0], key[1], old[0] if old else None, evaluation.level))
        gone = [key for key in before if key not in found] if drop_gone else []
        changes += [LevelChange(rubric, service_id, before[(rubric, service_id)][0], None) for rubric, service_id in gone]
        # The rows read before are there still (locked on PostgreSQL): a plain UPDATE, the quicker. Most
        # answers leave valid_until as it was; not naming it spares its index a rewrite (on SQLite a
        # third of the hook's time per batch: bench/bench_scorecards.py, PATCH).
        session.many("UPDATE scorecard_levels SET level = ?, checks = ?, updated_at = ?"
                     " WHERE rubric = ? AND service_id = ?", updates)
        session.many("UPDATE scorecard_levels SET level = ?, checks = ?, valid_until = ?, updated_at = ?"
                     " WHERE rubric = ? AND service_id = ?", moves)
        session.many(
            "INSERT INTO scorecard_levels (level, checks, valid_until, updated_at, rubric, service_id)"
            " VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT (rubric, service_id) DO UPDATE SET level = excluded.level,"
            " checks = excluded.checks, valid_until = excluded.valid_until, updated_at = excluded.updated_at",
            inserts,
        )
        session.many("DELETE FROM scorecard_levels WHERE rubric = ? AND service_id = ?", gone)
        kept = self.db.backend.kept_rows("scorecard_levels", check=False)
        if kept is not None:  # what this connection wrote is what the table holds (a rollback forgets it)
            if drop_gone:
                kept.clear()  # a re-evaluation (sync, refresh): rare, and it may write many rows
            else:
                for level, checks, until, _, rubric, service_id in inserts + moves:
                    kept[(rubric, service_id)] = (level, checks, until)
                for level, checks, _, rubric, service_id in updates:
                    kept[(rubric, service_id)] = (level, checks, before[(rubric, service_id)][2])
        if len(changes) > BULK_SNAPSHOT_FROM:  # a first evaluation: one statement, not a row each from Python
            self._snapshot_levels(session, day)
        else:
            session.many(
                "INSERT INTO scorecard_snapshots (rubric, service_id, day, level) VALUES (?, ?, ?, ?)"
                " ON CONFLICT (rubric, service_id, day) DO UPDATE SET level = excluded.level",
                [(c.rubric, c.service_id, day, c.after) for c in changes if c.after is not None],
            )
        return changes

    @staticmethod
    def _snapshot_levels(session, day: str) -> None:
        session.run(
            "INSERT INTO scorecard_snapshots (rubric, service_id, day, level)"
            " SELECT rubric, service_id, ?, level FROM scorecard_levels WHERE TRUE"
            " ON CONFLICT (rubric, service_id, day) DO UPDATE SET level = excluded.level"
            " WHERE scorecard_snapshots.level <> excluded.level", (day,))  # a row as it was is not rewritten

    def due_services(self, session, now: str) -> list[int]:
        """Services with a level that time alone may change by now."""
        return [row[0] for row in session.tuples(
            "SELECT DISTINCT service_id FROM scorecard_levels WHERE valid_until <= ? ORDER BY service_id", (now,))]

    def record_snapshot(self, day: str) -> None:
        """Today's level of every (rubric, service), and today's counts per level, whole and per team."""
        with self.db.transaction() as session:
            self._snapshot_levels(session, day)
            session.run("DELETE FROM scorecard_trend WHERE day = ?", (day,))
            session.run(
                "INSERT INTO scorecard_trend (rubric, scope, team, day, level, services)"
                " SELECT rubric, 'all', '', ?, level, count(*) FROM scorecard_levels GROUP BY rubric, level", (day,))
            session.run(
                "INSERT INTO scorecard_trend (rubric, scope, team, day, level, services)"
                " SELECT l.rubric, 'team', coalesce(s.owner, ''), ?, l.level, count(*)"
                " FROM scorecard_levels AS l JOIN services AS s ON s.id = l.service_id"
                " GROUP BY l.rubric, coalesce(s.owner, ''), l.level", (day,))

    # -- reads ----------------------------------------------------------------------------------

    def level_counts(self, *, rubric: str | None = None) -> list[tuple[str, int, int]]:
        """(rubric, level, services) for every rubric, or one."""
        with self.db.session() as session:
            if rubric is not None:
                return session.tuples("SELECT rubric, level, count(*) FROM scorecard_levels WHERE rubric = ?"
                                      " GROUP BY rubric, level", (rubric,))
            return session.tuples("SELECT rubric, level, count(*) FROM scorecard_levels GROUP BY rubric, level")

    def levels(self, *, rubric: str | None = None, service_id: int | None = None,
               service_ids: list[int] | None = None, limit: int | None = None, offset: int = 0) -> list[dict]:
        """Level rows with their service's slug, name and owner (`checks` decoded), by level (highest
        first) then slug; a page of them with `limit` and `offset`."""
        conditions, params = ["s.removed_at IS NULL"], []
        for column, value in (("l.rubric", rubric), ("s.id", service_id)):
            if value is not None:
                conditions.append(f"{column} = ?")
                params.append(value)
        if service_ids is not None:
            conditions.append(f"s.id IN {self.db.dialect.id_table('?')}")
            params.append(self.db.dialect.ids(service_ids))
        with self.db.session() as session:
            rows = session.all(
                "SELECT l.rubric, l.level, l.checks, l.valid_until, s.id AS service_id, s.slug AS service,"
                " s.name AS service_name, s.owner FROM scorecard_levels AS l"
                " JOIN services AS s ON s.id = l.service_id WHERE " + " AND ".join(conditions)
                + " ORDER BY l.rubric, l.level DESC, s.slug"
                + (" LIMIT ? OFFSET ?" if limit is not None else ""),
                params + ([limit, offset] if limit is not None else []))
        for row in rows:
            row["checks"] = json.loads(row["checks"])
        return rows

    def teams(self) -> list[dict]:
        """Every owner of a live service (`""` for none) with how many services it has."""
        with self.db.session() as session:
            return session.all(
                "SELECT coalesce(owner, '') AS owner, count(*) AS services FROM services"
                " WHERE removed_at IS NULL GROUP BY coalesce(owner, '') ORDER BY coalesce(owner, '')")

    def team_level_counts(self) -> list[tuple[str, str, int, int]]:
        """(owner, rubric, level, services) over every live service with an owner."""
        with self.db.session() as session:
            return session.tuples(
                "SELECT s.owner, l.rubric, l.level, count(*) FROM services AS s"
                " JOIN scorecard_levels AS l ON l.service_id = s.id"
                " WHERE s.removed_at IS NULL AND s.owner IS NOT NULL GROUP BY s.owner, l.rubric, l.level")

    def services_for_campaigns(self, *, owner: str | None = None) -> list[dict]:
        """Live services (of one owner, if given) with the fields a `services:` selects on (`tags` decoded)."""
        with self.db.session() as session:
            rows = session.all(
                f"SELECT {_SERVICE_FIELDS} FROM services WHERE removed_at IS NULL"
                + (" AND owner = ?" if owner is not None else "") + " ORDER BY slug",
                (owner,) if owner is not None else ())
        for row in rows:
            row["tags"] = json.loads(row["tags"])
        return rows

    def trend(self, rubric: str, *, team: str | None = None, since: str) -> list[tuple[str, int, int]]:
        """(day, level, services) from `since` (YYYY-MM-DD), whole or of one team."""
        with self.db.session() as session:
            return session.tuples(
                "SELECT day, level, services FROM scorecard_trend"
                " WHERE rubric = ? AND scope = ? AND team = ? AND day >= ? ORDER BY day, level",
                (rubric, "all" if team is None else "team", team or "", since))

    def service_trend(self, rubric: str, service_id: int, *, since: str) -> list[tuple[str, int]]:
        """(day, level) of one service from `since`."""
        with self.db.session() as session:
            return session.tuples(
                "SELECT day, level FROM scorecard_snapshots WHERE rubric = ? AND service_id = ? AND day >= ?"
                " ORDER BY day", (rubric, service_id, since))

    def _session(self, session):
        return _Given(session) if session is not None else self.db.session()


class _Given:
    """A session already open (the caller's transaction), used as a context manager."""

    def __init__(self, session):
        self.session = session

    def __enter__(self):
        return self.session

    def __exit__(self, *exc) -> None:
        return None
