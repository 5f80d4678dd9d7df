"""The PostgreSQL backend: a psycopg 3 connection pool, its migrations, its SQL dialect, the leader lock.

The repositories write SQL with SQLite's parameter style (`?` and `:name`); `translate` turns it
into psycopg's (`%s`, `%(name)s`) once per statement text. Parameters are bound by the server, which
plans a statement once it has run a few times (psycopg prepares it): a parameter whose type the
statement does not show (`? IS NULL`, a list) is written `CAST(? AS type)`, which SQLite reads too.

Concurrency: PostgreSQL runs READ COMMITTED. A conditional `UPDATE ... WHERE status IN (open)`
re-checks its condition after waiting for a concurrent update of the row, so exactly one of many
answers to a result wins without more locking. Work that reads before it writes across rows (a
sync's revision check, creating due results, claiming leases) first takes a transaction-scoped
advisory lock (`serialize`), which is what BEGIN IMMEDIATE gives on SQLite.
"""

from __future__ import annotations

import json
import re
import select
import threading
import zlib
from contextlib import contextmanager
from functools import lru_cache
from typing import Any, Iterator, Sequence
from urllib.parse import unquote

import psycopg
from psycopg.adapt import Dumper
from psycopg.conninfo import conninfo_to_dict
from psycopg.rows import dict_row, tuple_row
from psycopg_pool import ConnectionPool, PoolTimeout

from ..errors import ConfigError
from ..logs import redact_credentials
from .migrations_postgres import MIGRATIONS
from .rows import COMPLETED_SLUGS, OPEN_SQL, service_json_text

POOL_SIZE = 16
# Advisory lock keys: (this application, what). One namespace so other users of the database differ.
_APP_KEY = zlib.crc32(b"service-catalog") & 0x7FFFFFFF
_LOCKS = {"migrate": 1, "sync": 2, "dispatch": 3, "tokens": 4, "writeback": 5, "leader": 6, "budget": 7}

_TOKENS = re.compile(r"""('(?:[^']|'')*')|("[^"]*")|(::)|(\?)|:([A-Za-z_][A-Za-z0-9_]*)|(%)""")


@lru_cache(maxsize=1024)
def translate(sql: str) -> str:
    """SQLite-style parameters to psycopg's; literal `%` doubled. String literals are left alone."""

    def replace(match: re.Match) -> str:
        literal, quoted, cast, positional, name, percent = match.groups()
        if literal is not None or quoted is not None:
            return match.group(0).replace("%", "%%")
        if cast is not None:
            return "::"
        if positional is not None:
            return "%s"
        if name is not None:
            return f"%({name})s"
        return "%%"

    return _TOKENS.sub(replace, sql)


class _BoolAsInt(Dumper):
    """Booleans are stored as 0/1 integers, as on SQLite, so `active = 1` reads the same on both."""

    oid = psycopg.postgres.types["int8"].oid

    def dump(self, obj: bool) -> bytes:
        return b"1" if obj else b"0"

    def quote(self, obj: bool) -> bytes:
        return b"1" if obj else b"0"


class PostgresSession:
    """One pooled connection in use, with SQLite-style SQL."""

    __slots__ = ("conn",)

    def __init__(self, conn: psycopg.Connection):
        self.conn = conn

    def _execute(self, sql: str, params: Sequence | dict, row_factory=dict_row) -> psycopg.Cursor:
        cursor = self.conn.cursor(row_factory=row_factory)
        cursor.execute(translate(sql), params)
        return cursor

    def all(self, sql: str, params: Sequence | dict = ()) -> list[dict]:
        cursor = self._execute(sql, params)
        return cursor.fetchall() if cursor.description else []

    def one(self, sql: str, params: Sequence | dict = ()) -> dict | None:
        cursor = self._execute(sql, params)
        return cursor.fetchone() if cursor.description else None

    def tuples(self, sql: str, params: Sequence | dict = ()) -> list[tuple]:
        cursor = self._execute(sql, params, tuple_row)
        return cursor.fetchall() if cursor.description else []

    def value(self, sql: str, params: Sequence | dict = ()) -> Any:
        cursor = self._execute(sql, params, tuple_row)
        row = cursor.fetchone() if cursor.description else None
        return None if row is None else row[0]

    def run(self, sql: str, params: Sequence | dict = ()) -> int:
        return self._execute(sql, params).rowcount

    def many(self, sql: str, rows: list) -> None:
        if rows:
            with self.conn.cursor() as cursor:
                cursor.executemany(translate(sql), rows)


_SERVICE_FIELDS = (
    "id, slug, name, priority, type, description, owner, repository, active, tags, dependencies, meta, path,"
    " digest, error, removed_at, created_at, updated_at"
)
# GET /api/services/{slug}: the service's fields, then its live checks' `latest_runs` rows as JSON
# objects in check-slug order and their results, as `rows.service_json_text` takes them.
_SERVICE_JSON = f"""
    SELECT {_SERVICE_FIELDS}, (
        SELECT string_agg(row_to_json(r)::text, ',' ORDER BY r."check") || chr(9)
               || string_agg(r.result, ',' ORDER BY r."check") FROM (
            SELECT l.result_id AS id, l.check_slug AS "check", l.status, l.result, l.url, l.created_at,
                   l.sent_at, l.finished_at
            FROM latest_runs AS l WHERE l.service_key = services.id
            -- ARRAY(...): the live checks are read once, whatever the planner thinks of their count
            AND l.check_id = ANY (ARRAY(SELECT id FROM checks WHERE removed_at IS NULL))
        ) AS r
    ) AS runs FROM services WHERE slug = ?
"""


class PostgresDialect:
    """SQL that differs from SQLite's, as fragments and whole statements."""

    name = "postgresql"

    # One statement for a whole batch of answers (one round trip), prepared by the server once.
    _COMPLETE_MANY = (
        "UPDATE results SET status = 'completed', result = a.result, message = a.message, url = a.url,"
        " finished_at = a.finished_at FROM unnest(%s::bigint[], %s::text[], %s::text[], %s::text[], %s::text[])"
        " AS a (id, result, message, url, finished_at)"
        f" WHERE results.id = a.id AND results.status IN {OPEN_SQL}"
        # before its result times out (as the scheduler's expiry pass counts it), to the microsecond
        " AND a.finished_at::timestamptz - coalesce(results.sent_at, results.created_at)::timestamptz"
        " < (SELECT timeout_seconds FROM checks WHERE id = results.check_id) * interval '1 second'"
        " RETURNING results.*" + COMPLETED_SLUGS
    )

    @classmethod
    def complete_results(cls, session: PostgresSession, rows: list[tuple]) -> dict[int, dict]:
        """Complete the open ones of (id, result, message, url, finished_at) (ids distinct): id -> row."""
        if not rows:
            return {}
        columns = [list(column) for column in zip(*rows)]
        cursor = session.conn.cursor(row_factory=dict_row)
        cursor.execute(cls._COMPLETE_MANY, columns, prepare=True)
        return {row["id"]: row for row in cursor.fetchall()}

    @staticmethod
    def service_json(session: PostgresSession, slug: str) -> str | None:
        """The API's service JSON: the same text as SQLite's, in one round trip. PostgreSQL writes each
        run's object (`row_to_json`: compact, escaped as json.dumps(ensure_ascii=False) escapes) and the
        runs' results for the counts; Python writes the service's own fields (its stored lists and
        meta are json.dumps' text with spaces, which PostgreSQL cannot make compact). Two reads and a
        dict per run were 1.2 ms of server CPU per GET (bench/bench_api.py --postgres)."""
        service = session.one(_SERVICE_JSON, (slug,))
        if service is None:
            return None
        runs = service.pop("runs")
        service["active"] = bool(service["active"])
        for key in ("tags", "dependencies", "meta"):
            service[key] = json.loads(service[key])
        return service_json_text(json.dumps(service, separators=(",", ":"), ensure_ascii=False), runs)

    @staticmethod
    def ids(values: Sequence) -> list:
        return list(values)

    @staticmethod
    def id_table(param: str) -> str:
        return f"(SELECT unnest(CAST({param} AS BIGINT[])) AS value)"

    @staticmethod
    def text_table(param: str) -> str:
        return f"(SELECT unnest(CAST({param} AS TEXT[])) AS value)"

    @staticmethod
    def has_element(column: str, param: str) -> str:
        return f"EXISTS (SELECT 1 FROM jsonb_array_elements_text(CAST({column} AS JSONB)) AS e (value) WHERE e.value = {param})"

    @staticmethod
    def has_all(have: str, need: str) -> str:
        return f"CAST({have} AS JSONB) @> CAST({need} AS JSONB)"

    @staticmethod
    def rows_cte(name: str, columns: tuple[str, ...], rows: list[tuple]) -> tuple[str, dict]:
        """`name AS (...)`: a CTE over rows passed as one array parameter per column."""
        types = {"check_id": "BIGINT", "result_id": "BIGINT"}
        arrays = ", ".join(f"CAST(:{name}_{i} AS {types.get(column, 'TEXT')}[])" for i, column in enumerate(columns))
        params = {f"{name}_{i}": [row[i] for row in rows] for i in range(len(columns))}
        return f"{name} AS MATERIALIZED (SELECT * FROM unnest({arrays}) AS t ({', '.join(columns)}))", params

    @staticmethod
    def json_elements(column: str, alias: str) -> str:
        return f"jsonb_array_elements_text({column}) AS {alias} (value)"

    @staticmethod
    def json_elements_indexed(column: str, alias: str) -> tuple[str, str]:
        return (f"jsonb_array_elements_text({column}) WITH ORDINALITY AS {alias} (value, position)",
                f"({alias}.position - 1)")

    @staticmethod
    def json_length(column: str) -> str:
        return f"jsonb_array_length({column})"

    @staticmethod
    def id_array(expression: str) -> str:
        return f"coalesce(jsonb_agg({expression} ORDER BY {expression}), CAST('[]' AS JSONB))"

    EMPTY_ARRAY = "CAST('[]' AS JSONB)"
    NULL_ARRAY = "CAST('[null]' AS JSONB)"

    @staticmethod
    def lock_rows(order: str) -> str:
        """Rows a transaction reads to rewrite: locked in `order` (two writers never wait on each other in a
        circle); a concurrent writer waits, then reads them anew."""
        return f" ORDER BY {order} FOR UPDATE"

    @staticmethod
    def serialize(what: str) -> str:
        return f"SELECT pg_advisory_xact_lock({_APP_KEY}, {_LOCKS[what]})"

    OPEN_RUNS = (
        "SELECT DISTINCT ON (check_id, coalesce(service_id, 0))"
        " check_id, coalesce(service_id, 0) AS service_key, id, status, created_at"
        f" FROM results WHERE status IN {OPEN_SQL}" + " {where}"
        " ORDER BY check_id, coalesce(service_id, 0), id DESC"
    )
    OPEN_RUNS_OF_CHECK = " AND check_id = ?"
    # A service's last :per_check finished results of each check (see sqlite.py): one LIMIT per check.
    TIMELINES = (
        "SELECT r.id, r.check_id, r.status, r.result, r.created_at, r.finished_at FROM checks AS c"
        " CROSS JOIN LATERAL (SELECT id, check_id, status, result, created_at, finished_at FROM results"
        " WHERE check_id = c.id AND service_id = :service AND finished_at IS NOT NULL ORDER BY id DESC"
        " LIMIT :per_check) AS r ORDER BY r.check_id, r.id"
    )
    SERVICES_THEN_LATEST = "services JOIN latest_results AS l ON l.service_key = services.id"
    DISTINCT_TAGS = (
        "SELECT DISTINCT t.value AS v FROM services, jsonb_array_elements_text(CAST(services.tags AS JSONB)) AS t (value)"
        " WHERE services.removed_at IS NULL ORDER BY v"
    )


class PostgresBackend:
    """A PostgreSQL database shared by any number of processes."""

    dialect = PostgresDialect()
    migrations = MIGRATIONS
    local = False  # every read is a round trip to the server: never on an event loop

    def __init__(self, url: str, *, pool_size: int = POOL_SIZE):
        self.url = url
        self._password_pieces = password_pieces(url)
        self._local = threading.local()
        try:
            psycopg.connect(url, connect_timeout=10).close()  # fail fast, with the server's own reason
            self.pool = ConnectionPool(
                url, min_size=1, max_size=pool_size, open=False, configure=_configure,
                kwargs={"autocommit": True, "row_factory": dict_row, "keepalives": 1, "keepalives_idle": 10,
                        "keepalives_interval": 5, "keepalives_count": 3},
                name="catalog",
            )
            self.pool.open(wait=True, timeout=15)
        except (psycopg.Error, PoolTimeout) as error:
            hint = " (write an @ in the password as %40)" if _authority(url).count("@") > 1 else ""
            reason = self.redact(_first_line(error))
            raise ConfigError(f"cannot connect to the database {self.redact(url)}: {reason}{hint}") from None

    def redact(self, text: str) -> str:
        """`text` without the URL's password, whole or in pieces: psycopg's errors quote what they misread
        (`postgresql://u:p@ss@host` is host 'ss@host' to libpq). Every text about the database that may
        reach output or a log passes here."""
        text = redact_credentials(text)
        for piece in self._password_pieces:
            text = text.replace(piece, "***")
        return text

    @property
    def key(self) -> str:
        return self.redact(self.url)

    def describe(self) -> str:
        return f"PostgreSQL: {self.redact(self.url)}"

    @contextmanager
    def session(self) -> Iterator[PostgresSession]:
        current = getattr(self._local, "session", None)
        if current is not None:  # inside a transaction: read what it wrote
            yield current
            return
        with self._connection() as conn:
            yield PostgresSession(conn)

    @contextmanager
    def transaction(self) -> Iterator[PostgresSession]:
        current = getattr(self._local, "session", None)
        if current is not None:
            yield current
            return
        with self._connection() as conn:
            session = PostgresSession(conn)
            self._local.session = session
            try:
                with conn.transaction():
                    yield session
            finally:
                self._local.session = None

    @contextmanager
    def _connection(self) -> Iterator[psycopg.Connection]:
        """A pooled connection, used as psycopg_pool's `connection()` uses one, that the server has not closed."""
        conn = self._live_connection()
        try:
            with conn:  # commits, or rolls back on an error; a pooled connection stays open
                yield conn
        finally:
            self.pool.putconn(conn)

    def _live_connection(self) -> psycopg.Connection:
        """A restart of the server (or pg_terminate_backend) closes the pooled connections while they are
        idle; handed to a request, the next statement fails. The first one found closed makes the pool
        drop every closed one it holds (`check`) and open new ones. psycopg_pool's own `check=` would
        sleep 1, 2, 4 ... s after each closed one: sequential requests waited 30 s for a PoolTimeout."""
        for _ in range(self.pool.max_size):  # a connection returned after the check may be closed too
            conn = self.pool.getconn()
            if not _closed_by_server(conn):
                return conn
            conn.close()  # the pool replaces a closed connection
            self.pool.putconn(conn)
            self.pool.check()
        return self.pool.getconn()

    def try_transaction(self) -> None:
        """PostgreSQL never answers at once: callers on an event loop hand the work to a thread."""
        return None

    @staticmethod
    def kept_rows(table: str, *, check: bool = True) -> None:
        """Nothing kept: rows another replica may write are read, locked, each time (`stored_levels`)."""
        return None

    def checkpoint(self) -> None:
        """Nothing to do: PostgreSQL checkpoints on its own."""

    def defer_checkpoints(self) -> None:
        """Nothing to do: PostgreSQL checkpoints on its own."""

    def close(self) -> None:
        self.pool.close()

    # -- migrations ---------------------------------------------------------------------------

    def migrate(self) -> list[int]:
        """Apply the migrations not yet applied, in one transaction, under a lock (replicas may start together)."""
        done = []
        with self.transaction() as session:
            session.run(PostgresDialect.serialize("migrate"))
            session.run(
                "CREATE TABLE IF NOT EXISTS schema_migrations (version INTEGER PRIMARY KEY, applied_at TEXT NOT NULL)"
            )
            applied = {row[0] for row in session.tuples("SELECT version FROM schema_migrations")}
            for version, script in MIGRATIONS:
                if version in applied:
                    continue
                session.conn.execute(script)  # several statements, no parameters: sent as written
                session.run(
                    "INSERT INTO schema_migrations (version, applied_at) VALUES (?, to_char(now() AT TIME ZONE 'UTC', 'YYYY-MM-DD HH24:MI:SS'))",
                    (version,),
                )
                done.append(version)
        return done

    def schema_version(self) -> int:
        with self.session() as session:
            if session.value("SELECT to_regclass('schema_migrations') IS NULL"):
                return 0  # a database no migration has run in
            return session.value("SELECT max(version) FROM schema_migrations") or 0

    # -- the leader lock ----------------------------------------------------------------------

    def leader_lock(self) -> "PostgresLeaderLock":
        return PostgresLeaderLock(self.url)


class PostgresLeaderLock:
    """A session advisory lock on a connection of its own: held while the connection lives.

    When the holder dies, PostgreSQL sees its connection close (at once on kill -9; within the
    keepalive time if the host vanishes) and the lock is free for the next `acquire`.
    """

    def __init__(self, url: str):
        self.url = url
        self.conn: psycopg.Connection | None = None
        self.held = False

    def acquire(self) -> bool:
        """True if this process holds the lock now (taking it if free); never waits."""
        try:
            if self.conn is None or self.conn.closed:
                self.conn = psycopg.connect(self.url, autocommit=True, keepalives=1, keepalives_idle=5,
                                            keepalives_interval=2, keepalives_count=3)
                self.held = False
            if self.held:
                self.conn.execute("SELECT 1")  # still connected, so still held
                return True
            row = self.conn.execute(f"SELECT pg_try_advisory_lock({_APP_KEY}, {_LOCKS['leader']})").fetchone()
            self.held = bool(row and row[0])
            return self.held
        except psycopg.Error:
            self.release()
            return False

    def release(self) -> None:
        if self.conn is not None:
            try:
                self.conn.close()
            except psycopg.Error:
                pass
        self.conn, self.held = None, False


def _configure(conn: psycopg.Connection) -> None:
    conn.adapters.register_dumper(bool, _BoolAsInt)


def _closed_by_server(conn: psycopg.Connection) -> bool:
    """True when the server has ended this idle connection. An idle connection hears nothing until the
    server ends it (a termination message, then end of file), so a socket with nothing to read is alive
    without a round trip on every request; one with something to read is asked (an empty query)."""
    if conn.closed:
        return True
    waiting = select.poll()  # not select.select: it fails on a descriptor above 1023
    waiting.register(conn.fileno(), select.POLLIN)
    if not waiting.poll(0):
        return False
    try:
        conn.execute("")
    except psycopg.OperationalError:
        return True
    return False


# A piece of a password shorter than this is not scrubbed from a message: it would blank ordinary words.
_SHORTEST_PIECE = 3
_QUERY_PASSWORDS = re.compile(r"(?i)[?&]password=([^&#]*)")


def _authority(url: str) -> str:
    """`USER:PASSWORD@HOST:PORT` of a URL as written: up to the first / after ://."""
    return url.partition("://")[2].split("/", 1)[0]


def password_pieces(url: str) -> tuple[str, ...]:
    """Each text of `url`'s password an error may quote, longest first: what the user meant (the user
    info up to the authority's last @), each `password=` value, what libpq reads, each as written and
    decoded, and their parts between @, :, /, ?, # and & (where libpq may cut a password it misreads)."""
    passwords = [_authority(url).rpartition("@")[0].partition(":")[2], *_QUERY_PASSWORDS.findall(url)]
    try:
        passwords.append(conninfo_to_dict(url).get("password") or "")
    except psycopg.Error:  # a URL libpq cannot read: its error quotes the part it stopped at
        pass
    pieces = set()
    for password in passwords:
        for text in (password, unquote(password)):
            pieces.update([text, *re.split(r"[@:/?#&]", text)])
    return tuple(sorted((piece for piece in pieces if len(piece) >= _SHORTEST_PIECE), key=len, reverse=True))


def _first_line(error: BaseException) -> str:
    text = str(error).strip() or type(error).__name__
    return text.splitlines()[0]
