"""The SQLite backend: one file, a connection per thread, its migrations and its SQL dialect.

Everything that is SQLite-only lives here or in `migrations.py` (the SQLite schema): pragmas, how
a transaction starts (BEGIN IMMEDIATE takes the one write lock, which is what serialises syncs and
schedulers), how a list of ids is passed (JSON text read by `json_each`), and the few statements
that have no portable form. The repositories hold the portable SQL and ask `db.dialect` for the rest.
"""

from __future__ import annotations

import fcntl
import functools
import json
import sqlite3
import threading
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator, Sequence

import msgspec

from .migrations import MIGRATIONS, _split_statements
from .rows import COMPLETED_SLUGS, OPEN_SQL, service_json_text

TEMP_STORE = "MEMORY"  # statement journals, temporary tables and sorts (see _connection)
BUSY_TIMEOUT_MS = 30_000
_LIST_ENCODER = msgspec.json.Encoder()
_COMPLETE_CHUNK = 1024  # rows per UPDATE of many answers: 5,120 parameters (SQLite allows 32,766)


class SqliteSession:
    """One connection in use: the repositories' only way to run SQL (`?` or `:name` parameters)."""

    __slots__ = ("conn",)

    def __init__(self, conn: sqlite3.Connection):
        self.conn = conn

    def all(self, sql: str, params: Sequence | dict = ()) -> list[dict]:
        cursor = self.conn.execute(sql, params)
        names = [column[0] for column in cursor.description] if cursor.description else []
        return [dict(zip(names, row)) for row in cursor.fetchall()]

    def one(self, sql: str, params: Sequence | dict = ()) -> dict | None:
        cursor = self.conn.execute(sql, params)
        row = cursor.fetchone()
        return None if row is None else dict(zip([column[0] for column in cursor.description], row))

    def tuples(self, sql: str, params: Sequence | dict = ()) -> list[tuple]:
        return self.conn.execute(sql, params).fetchall()

    def value(self, sql: str, params: Sequence | dict = ()) -> Any:
        row = self.conn.execute(sql, params).fetchone()
        return None if row is None else row[0]

    def run(self, sql: str, params: Sequence | dict = ()) -> int:
        return self.conn.execute(sql, params).rowcount

    def many(self, sql: str, rows: list) -> None:
        if rows:
            self.conn.executemany(sql, rows)


# GET /api/services/{slug}: text SQLite keeps ready. The service's object, then its `latest_runs` rows'
# stored JSON joined in check-slug order (the table's key order, so no sort), then the rows' results
# for the counts. JSON text never holds a raw tab, so a tab separates the two.
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


def _micros(stamp: str) -> str:
    """A stored time (`clock.TIME_FORMAT`, always 27 characters) as whole microseconds since 1970: exact,
    where julianday() keeps milliseconds."""
    return f"(CAST(strftime('%s', substr({stamp}, 1, 19)) AS INTEGER) * 1000000 + CAST(substr({stamp}, 21, 6) AS INTEGER))"


def _in_time(answered_at: str) -> str:
    """An answer at `answered_at` comes before its result times out: the scheduler's expiry pass takes
    a result sent (or, never sent, created) at or before the answer's time minus its check's timeout."""
    return (f"{_micros(answered_at)} - {_micros('coalesce(results.sent_at, results.created_at)')}"
            " < 1000000 * (SELECT timeout_seconds FROM checks WHERE id = results.check_id)")


class SqliteDialect:
    """SQL that differs from PostgreSQL's, as fragments and whole statements."""

    name = "sqlite"

    # One statement per answer: SQLite runs it in-process, a batch costs no round trips.
    _COMPLETE = (
        "UPDATE results SET status = 'completed', result = ?1, message = ?2, url = ?3, finished_at = ?4"
        f" WHERE id = ?5 AND status IN {OPEN_SQL} AND {_in_time('?4')} RETURNING *" + COMPLETED_SLUGS
    )

    @classmethod
    def complete_results(cls, session: SqliteSession, rows: list[tuple]) -> dict[int, dict]:
        """Complete the open ones of (id, result, message, url, finished_at) (ids distinct): id -> completed
        row, in the order given. Many rows: one UPDATE ... FROM (VALUES ...) per 1,024 of them, as PostgreSQL's
        one statement. A statement per row set up the triggers' programs for each row: a third of a bulk
        answer's time (bench/bench_dispatch.py --part bulk). The values are bound as parameters (text
        with a NUL or any other character stays as it is); the VALUES list is padded with NULL rows to a
        power of two, so a few statements serve every batch size."""
        if len(rows) == 1:
            result_id, result, message, url, finished_at = rows[0]
            row = session.one(cls._COMPLETE, (result, message, url, finished_at, result_id))
            return {} if row is None else {result_id: row}
        found: dict[int, tuple] = {}
        names: list[str] = []
        for start in range(0, len(rows), _COMPLETE_CHUNK):
            chunk = rows[start:start + _COMPLETE_CHUNK]
            size = 1 << (len(chunk) - 1).bit_length()
            params = [value for row in chunk for value in row]
            params += [None] * (5 * (size - len(chunk)))  # (NULL, ...): no result has a NULL id
            cursor = session.conn.execute(cls._complete_many(size), params)
            names = [column[0] for column in cursor.description]
            for row in cursor.fetchall():
                found[row[0]] = row
        return {row[0]: dict(zip(names, found[row[0]])) for row in rows if row[0] in found}

    @staticmethod
    @functools.lru_cache(maxsize=None)
    def _complete_many(size: int) -> str:
        values = ", ".join(["(?, ?, ?, ?, ?)"] * size)
        return (
            "UPDATE results SET status = 'completed', result = a.column2, message = a.column3, url = a.column4,"
            f" finished_at = a.column5 FROM (VALUES {values}) AS a"
            f" WHERE results.id = a.column1 AND results.status IN {OPEN_SQL} AND {_in_time('a.column5')}"
            " RETURNING *" + COMPLETED_SLUGS
        )

    @staticmethod
    def service_json(session: SqliteSession, slug: str) -> str | None:
        """The API's service JSON, made by SQLite from stored row JSON (bench/bench_api.py: GET service)."""
        rows = session.tuples(_SERVICE_JSON, (slug,))
        if not rows:
            return None
        return service_json_text(*rows[0])

    @staticmethod
    def ids(values: Sequence) -> str:
        """A list parameter, for `id_table`: SQLite reads it as JSON text. msgspec: a tenth of json.dumps'
        time, which the answer path pays per batch (bench/bench_scorecards.py); json.dumps for anything
        else it refuses (text that is not valid Unicode, an iterator)."""
        try:
            return _LIST_ENCODER.encode(values).decode()
        except (TypeError, UnicodeEncodeError, msgspec.EncodeError):
            return json.dumps(list(values))

    @staticmethod
    def id_table(param: str) -> str:
        """A subquery of one column `value` over a list parameter made by `ids`."""
        return f"(SELECT value FROM json_each({param}))"

    text_table = id_table

    @staticmethod
    def has_element(column: str, param: str) -> str:
        """True when the JSON list in text `column` holds the text parameter."""
        return f"EXISTS (SELECT 1 FROM json_each({column}) WHERE value = {param})"

    @staticmethod
    def has_all(have: str, need: str) -> str:
        """True when the JSON list in text `have` holds every element of the JSON list in `need`."""
        return (f"NOT EXISTS (SELECT 1 FROM json_each({need}) AS need"
                f" WHERE need.value NOT IN (SELECT value FROM json_each({have})))")

    @staticmethod
    def rows_cte(name: str, columns: tuple[str, ...], rows: list[tuple]) -> tuple[str, dict]:
        """`name AS (...)`: a CTE over rows passed as one parameter (JSON text), and its parameters."""
        picks = ", ".join(f"json_extract(value, '$[{i}]') AS {column}" for i, column in enumerate(columns))
        return f"{name} AS MATERIALIZED (SELECT {picks} FROM json_each(:{name}))", {name: json.dumps(rows)}

    @staticmethod
    def json_elements(column: str, alias: str) -> str:
        """A table `alias` of one column `value` over the elements of a JSON list column."""
        return f"json_each({column}) AS {alias}"

    @staticmethod
    def json_elements_indexed(column: str, alias: str) -> tuple[str, str]:
        """`json_elements` plus an expression of each element's 0-based position."""
        return f"json_each({column}) AS {alias}", f"{alias}.key"

    @staticmethod
    def json_length(column: str) -> str:
        return f"json_array_length({column})"

    @staticmethod
    def id_array(expression: str) -> str:
        """An aggregate of `expression` into a JSON list (in scan order, which is id order here)."""
        return f"json_group_array({expression})"

    EMPTY_ARRAY = "'[]'"
    NULL_ARRAY = "'[null]'"

    # No statement to take: BEGIN IMMEDIATE already holds the database's one write lock.
    serialize = None

    @staticmethod
    def lock_rows(order: str) -> str:
        """... which also keeps rows a transaction read from changing under it: nothing to add."""
        return ""

    # The latest open result of each pair (SQLite takes the bare columns from the max(id) row).
    OPEN_RUNS = (
        "SELECT check_id, coalesce(service_id, 0) AS service_key, max(id) AS id, status, created_at"
        f" FROM results WHERE status IN {OPEN_SQL}" + " {where} GROUP BY check_id, service_key"
    )
    # `+check_id`: read the small open-results index, not every result the check ever had.
    OPEN_RUNS_OF_CHECK = " AND +check_id = ?"
    # A service's last :per_check finished results of each check: check by check (CROSS JOIN fixes the
    # order), from the id of the pair's :per_check-th newest finished result on, a range of the pair
    # index. Windowing every result of the service cost its page 17 ms with a year of daily results
    # of 16 checks, and grew with every day (bench/bench_pages.py --services 100 --history 365).
    TIMELINES = (
        "SELECT r.id, r.check_id, r.status, r.result, r.created_at, r.finished_at FROM checks AS c"
        " CROSS JOIN results AS r WHERE r.check_id = c.id AND r.service_id = :service AND r.finished_at IS NOT NULL"
        " AND r.id >= coalesce((SELECT x.id FROM results AS x WHERE x.check_id = c.id AND x.service_id = :service"
        " AND x.finished_at IS NOT NULL ORDER BY x.id DESC LIMIT 1 OFFSET :per_check - 1), 0)"
        " ORDER BY r.check_id, r.id"
    )
    # CROSS JOIN fixes the join order: services first, each one seek into the covering index.
    SERVICES_THEN_LATEST = "services CROSS JOIN latest_results AS l ON l.service_key = services.id"
    DISTINCT_TAGS = (
        "SELECT DISTINCT t.value AS v FROM services, json_each(services.tags) AS t"
        " WHERE services.removed_at IS NULL ORDER BY v"
    )


class SqliteBackend:
    """One SQLite file (WAL, synchronous=NORMAL). Each thread gets its own connection."""

    dialect = SqliteDialect()
    migrations = MIGRATIONS
    local = True  # reads are file reads: see Database.reads_on_loop

    def __init__(self, path: str | Path):
        self.path = str(path)
        if self.path != ":memory:":
            Path(self.path).parent.mkdir(parents=True, exist_ok=True)
        self._local = threading.local()

    @property
    def key(self) -> str:
        """Identifies the database across Database objects in one process (the sync lock's key)."""
        return str(Path(self.path).resolve()) if self.path != ":memory:" else f"memory:{id(self)}"

    def describe(self) -> str:
        return f"SQLite: {Path(self.path).resolve() if self.path != ':memory:' else self.path}"

    def _connection(self) -> sqlite3.Connection:
        conn = getattr(self._local, "conn", None)
        if conn is None:
            conn = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False, timeout=30)
            conn.execute("PRAGMA journal_mode=WAL")
            conn.execute("PRAGMA synchronous=NORMAL")
            conn.execute("PRAGMA foreign_keys=ON")
            conn.execute(f"PRAGMA busy_timeout={BUSY_TIMEOUT_MS}")
            # A statement inside a transaction keeps the pages it changes in a statement journal (to
            # undo just itself on an error). Past 64 KiB SQLite spills that journal to a temporary file,
            # created and deleted in each transaction: an answer whose triggers touch a few more pages
            # (a failing event: its row, outbox, filter indexes) crossed it and cost ~100 us more in
            # open/unlink alone (bench/bench_notify.py). In memory it costs a copy of each page.
            # (Temporary tables and sorts stay in memory too: the migrator, which may sort a whole
            # table to build an index, uses files: `migrate`.)
            conn.execute(f"PRAGMA temp_store={TEMP_STORE}")
            self._local.conn = conn
            self._local.session = SqliteSession(conn)
        return conn

    @contextmanager
    def session(self) -> Iterator[SqliteSession]:
        """This thread's connection, outside any transaction (each statement commits on its own)."""
        self._connection()
        yield self._local.session

    @contextmanager
    def transaction(self) -> Iterator[SqliteSession]:
        """BEGIN IMMEDIATE ... COMMIT, rolled back on any exception. Nested use joins the outer one."""
        conn = self._connection()
        session = self._local.session
        if conn.in_transaction:
            yield session
            return
        conn.execute("BEGIN IMMEDIATE")
        try:
            yield session
        except BaseException:
            self.rollback()
            raise
        self.commit()

    def try_transaction(self) -> SqliteSession | None:
        """Begin a transaction only if the write lock is free at once (for a caller on an event loop).

        The caller commits with `commit()` or undoes with `rollback()`. Such a caller must not copy
        the WAL back either (a checkpoint writes and syncs the file): `checkpoint()` does, elsewhere.
        """
        conn = self._connection()
        conn.execute("PRAGMA wal_autocheckpoint = 0")
        conn.execute("PRAGMA busy_timeout = 0")
        try:
            conn.execute("BEGIN IMMEDIATE")
        except sqlite3.OperationalError as error:
            if error.sqlite_errorcode & 0xFF in (sqlite3.SQLITE_BUSY, sqlite3.SQLITE_LOCKED):
                return None
            raise
        finally:
            conn.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}")
        return self._local.session

    def commit(self) -> None:
        try:
            self._connection().execute("COMMIT")
        except BaseException:
            self._local.kept = None  # the rows kept may not be the table's: forget them
            raise

    def rollback(self) -> None:
        self._local.kept = None  # the rows kept were this transaction's writes: gone with it
        self._connection().execute("ROLLBACK")

    def kept_rows(self, table: str, *, check: bool = True) -> dict | None:
        """This connection's memory of rows of `table` as it last read or wrote them, for a caller in a
        write transaction: with `check`, emptied first if another connection committed since (PRAGMA
        data_version moved: one statement, not a read of the rows; a PASSIVE checkpoint does not move it).
        Emptied too when this connection rolls back. Only the store's writers of `table` fill it, with
        what they read or wrote, so it holds what the table holds. One connection per thread: no lock.
        (The answer hook's level rows: bench/bench_scorecards.py, PATCH.)"""
        kept = getattr(self._local, "kept", None)
        if check:
            version = self._connection().execute("PRAGMA data_version").fetchone()[0]
            if kept is None or kept[0] != version:
                kept = self._local.kept = (version, {})
        elif kept is None:
            return None
        return kept[1].setdefault(table, {})

    def checkpoint(self) -> None:
        """Copy the WAL back into the database without blocking readers or writers (PASSIVE)."""
        self._connection().execute("PRAGMA wal_checkpoint(PASSIVE)")

    def defer_checkpoints(self) -> None:
        """No checkpoint at this thread's commits: its caller has `checkpoint()` run when it suits."""
        self._connection().execute("PRAGMA wal_autocheckpoint = 0")

    def leader_lock(self) -> "FileLeaderLock":
        return FileLeaderLock(self.path)

    def close(self) -> None:
        conn = getattr(self._local, "conn", None)
        if conn is not None:
            conn.close()
            self._local.conn = None
            self._local.kept = None

    # -- migrations ---------------------------------------------------------------------------

    def migrate(self) -> list[int]:
        """Apply the migrations not yet applied, in one transaction; the versions applied."""
        done = []
        conn = self._connection()
        conn.execute("PRAGMA temp_store=FILE")  # an index built over a whole table sorts on disk, not in memory
        try:
            self._migrate(done)
        finally:
            conn.execute(f"PRAGMA temp_store={TEMP_STORE}")
        return done

    def _migrate(self, done: list[int]) -> None:
        with self.transaction() as session:
            session.run(
                "CREATE TABLE IF NOT EXISTS schema_migrations (version INTEGER PRIMARY KEY, applied_at TEXT NOT NULL)"
            )
            applied = {row[0] for row in session.tuples("SELECT version FROM schema_migrations")}
            if applied == {1} and not session.value(
                "SELECT count(*) FROM sqlite_master WHERE type = 'table' AND name = 'latest_results'"
            ):
                # Version 1 landed in two shapes: the first build's is a prefix of the later one,
                # whose statements are all IF NOT EXISTS. Replaying it completes the first shape;
                # version 3 then fills the tables it adds from the history.
                _run_script(session, MIGRATIONS[0][1])
            for version, script in MIGRATIONS:
                if version in applied:
                    continue
                _run_script(session, script)
                session.run(
                    "INSERT INTO schema_migrations (version, applied_at) VALUES (?, datetime('now'))", (version,)
                )
                done.append(version)

    def schema_version(self) -> int:
        with self.session() as session:
            if not session.value("SELECT count(*) FROM sqlite_master WHERE type = 'table' AND name = 'schema_migrations'"):
                return 0  # a database no migration has run in
            return session.value("SELECT max(version) FROM schema_migrations") or 0


class FileLeaderLock:
    """An exclusive lock on `<database>.leader`: one `catalog up` at a time runs the loops on a file.

    The operating system drops it when the holder dies, however it dies."""

    def __init__(self, database_path: str):
        self.path = None if database_path == ":memory:" else database_path + ".leader"
        self.file = None

    def acquire(self) -> bool:
        if self.file is not None or self.path is None:
            return True
        file = open(self.path, "a+")
        try:
            fcntl.flock(file, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            file.close()
            return False
        self.file = file
        return True

    def release(self) -> None:
        if self.file is not None:
            self.file.close()  # closing drops the lock
            self.file = None


def _run_script(session: SqliteSession, script: str) -> None:
    for statement in _split_statements(script):
        session.run(statement)

