"""The SQLite store: schema, migrations and every SQL statement the catalog runs, by concept.

The package is the one place with SQL: `database.py` holds the Store (connections, transactions,
migrations, key/value state); each other module adds the methods of one concept (catalog, results,
dispatch, tokens, reads, dashboard, writeback) as a mixin of it; `migrations.py` holds the schema.


Callers ask for what they need by name and never see a cursor. Times are stored as fixed-width
UTC text (see `clock.TIME_FORMAT`), so they compare correctly as strings. Results are immutable
once finished and can never be deleted: triggers enforce it, whatever the caller does.
"""

from .database import Store
from .migrations import MIGRATIONS
from .records import FINISHED_STATUSES, OPEN_STATUSES, RESULT_VALUES

__all__ = ["Store", "MIGRATIONS", "FINISHED_STATUSES", "OPEN_STATUSES", "RESULT_VALUES"]
