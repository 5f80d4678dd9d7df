"""What /metrics reads on each scrape: maintained counts and a few indexed rows, never a count of results."""

from __future__ import annotations

from ..document_paths import file_of


class MetricsRepository:
    """Reads for Prometheus scrapes. Each is an index lookup or a read of a small maintained table,
    so a scrape costs the same at 1,000 results or 1,000,000 (bench/bench_metrics_export.py)."""

    def __init__(self, db):
        self.db = db

    def result_counts(self) -> list[dict]:
        """[{status, result, count}]: every result ever recorded, from the table the triggers keep."""
        with self.db.session() as session:
            return session.all("SELECT status, result, count FROM result_counts WHERE count > 0 ORDER BY status, result")

    def open_results_by_age(self, cutoffs: list[str]) -> list[int]:
        """How many open (pending or sent) results were created before each cutoff (ISO times,
        newest first), and in all as the last item; read through the partial index of open results."""
        columns = ", ".join(f"sum(CASE WHEN created_at < :c{n} THEN 1 ELSE 0 END) AS c{n}" for n in range(len(cutoffs)))
        with self.db.session() as session:
            row = session.one(
                f"SELECT {columns + ', ' if columns else ''}count(*) AS total FROM results"
                " WHERE status IN ('pending', 'sent')",
                {f"c{n}": cutoff for n, cutoff in enumerate(cutoffs)},
            )
        return [int(row[f"c{n}"] or 0) for n in range(len(cutoffs))] + [int(row["total"])]

    def oldest_unwritten(self) -> str | None:
        """When the first result in the write-back queue finished (the queue is written in id order)."""
        with self.db.session() as session:
            return session.value(
                "SELECT finished_at FROM results WHERE id = (SELECT min(result_id) FROM writeback_queue)"
            )

    def file_error_count(self) -> int:
        """Catalog files whose current version has an error (a partial index holds just those rows;
        the documents of a file of several have a row each, and count as their one file)."""
        with self.db.session() as session:
            paths = session.tuples("SELECT path FROM catalog_files WHERE error IS NOT NULL")
        return len({file_of(path) for path, in paths})

    def notification_backlog(self, now: str) -> dict:
        """Events not yet handed to routes (the outbox holds only those) and when the oldest was
        recorded; deliveries pending, due by `now`, failed for good, and the oldest due one's time.
        Each is read through the outbox's key or a partial index of event_deliveries (pending: by
        not_before; failed: by id), so a scrape reads the backlog, never the history."""
        with self.db.session() as session:
            return session.one(
                "SELECT (SELECT count(*) FROM event_outbox) AS unrouted,"
                " (SELECT created_at FROM events WHERE id = (SELECT min(event_id) FROM event_outbox)) AS oldest_unrouted,"
                " (SELECT count(*) FROM event_deliveries WHERE status = 'pending') AS pending,"
                " (SELECT count(*) FROM event_deliveries WHERE status = 'pending' AND not_before <= :now) AS due,"
                " (SELECT min(not_before) FROM event_deliveries WHERE status = 'pending') AS oldest_due,"
                " (SELECT count(*) FROM event_deliveries WHERE status = 'failed') AS failed",
                {"now": now},
            )
