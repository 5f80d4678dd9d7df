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

import psycopg

from .database import Database, open_database

# What a backend raises when the database itself fails (a locked or corrupt file, a lost server):
# the CLI prints these as one line, like its own errors.
DATABASE_ERRORS: tuple[type[Exception], ...] = (sqlite3.Error, psycopg.Error)

__all__ = ["Database", "open_database", "DATABASE_ERRORS"]
