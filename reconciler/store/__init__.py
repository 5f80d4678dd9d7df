"""The store: every SQL statement the catalog runs, on SQLite or PostgreSQL, by concept.

`open_database(url)` gives a `Database` (database.py) that owns the backend's connections and
transactions and holds one repository per concept (catalog, reads, results, dispatch, writeback,
tokens, pages, state). The backends (`sqlite.py`, `postgres.py`) hold everything dialect-specific:
connections, migrations (`migrations.py`, `migrations_postgres.py`), and the few statements that differ. Callers ask for
what they need by name and never see a connection.

Times are stored as fixed-width UTC text (`clock.TIME_FORMAT`), so they compare correctly as text.
Results are immutable once finished and can never be deleted: triggers enforce it on both backends,
whatever the caller does.
"""

import sqlite3

from .database import Database, open_database


def __getattr__(name: str):
    """`DATABASE_ERRORS`: what a backend raises when the database itself fails (a locked or corrupt
    file, a lost server); the CLI prints these as one line, like its own errors. Built on first use:
    psycopg is imported only by a process that needs it (see `open_database`)."""
    if name == "DATABASE_ERRORS":
        import psycopg

        return (sqlite3.Error, psycopg.Error)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")

__all__ = ["Database", "open_database", "DATABASE_ERRORS"]
