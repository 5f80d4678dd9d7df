"""Results: the primitives every part shares (create, complete, read)."""

from __future__ import annotations

import sqlite3
from datetime import datetime

from ..clock import format_time
from ..errors import Conflict, NotFound
from .records import _answer, _complete


class ResultQueries:
    """The Store's methods every part shares for results: create, complete, read."""

    # -- results: the primitives every part shares ---------------------------------------------

    def create_result(
        self,
        check_id: int,
        service_id: int | None,
        *,
        now: datetime,
        revision: str | None = None,
        trigger: str = "schedule",
    ) -> dict:
        """A new pending/unknown result row for one (check, service) run."""
        with self.transaction() as conn:
            return conn.execute(
                "INSERT INTO results (check_id, service_id, revision, trigger, created_at)"
                " VALUES (?, ?, ?, ?, ?) RETURNING *",
                (check_id, service_id, revision, trigger, format_time(now)),
            ).fetchone()

    _COMPLETE = (
        "UPDATE results SET status = 'completed', result = ?, message = ?, url = ?, finished_at = ?"
        " WHERE id = ? AND status IN ('pending', 'sent') RETURNING *"
    )
    # The API's answer also names the check and the service: read in the same statement.
    _COMPLETE_WITH_SLUGS = _COMPLETE + (
        ', (SELECT slug FROM checks WHERE id = results.check_id) AS "check",'
        " (SELECT slug FROM services WHERE id = results.service_id) AS service"
    )

    def complete_result(
        self, result_id: int, result: str, *, now: datetime, message: str | None = None, url: str | None = None
    ) -> dict:
        """Record the answer of an open (pending or sent) result; one atomic conditional update."""
        with self.transaction() as conn:
            return _complete(conn, self._COMPLETE, result_id, (result, message, url, format_time(now), result_id))

    def answer_results(
        self, answers: list[tuple[int, str, str | None, str | None, datetime]], *, wait: bool = True
    ) -> list[dict | NotFound | Conflict] | None:
        """Many `complete_result`s (id, result, message, url, now) in one transaction: one commit for all.

        Each answer gets its row, carrying the slugs of its check and service (the API's answer), or the
        NotFound or Conflict `complete_result` would have raised. With wait=False it never waits for the
        write lock (for a caller on an event loop): None at once when another connection holds it (a sync
        applying, say), to be retried where waiting is harmless.
        """
        if wait:
            with self.transaction() as conn:
                return [_answer(conn, self._COMPLETE_WITH_SLUGS, answer) for answer in answers]
        conn = self.connection
        # A caller that must not wait must not copy the WAL back either (a checkpoint writes and syncs
        # the database file): it calls `checkpoint()` where waiting is harmless.
        conn.execute("PRAGMA wal_autocheckpoint = 0")
        conn.execute("PRAGMA busy_timeout = 0")
        try:
            conn.execute("BEGIN IMMEDIATE")
        except sqlite3.OperationalError as error:
            if error.sqlite_errorcode & 0xFF in (sqlite3.SQLITE_BUSY, sqlite3.SQLITE_LOCKED):
                return None
            raise
        finally:
            conn.execute("PRAGMA busy_timeout = 30000")
        try:
            outcomes = [_answer(conn, self._COMPLETE_WITH_SLUGS, answer) for answer in answers]
        except BaseException:
            conn.execute("ROLLBACK")
            raise
        conn.execute("COMMIT")
        return outcomes

    def checkpoint(self) -> None:
        """Copy the WAL back into the database without blocking readers or writers (PASSIVE)."""
        self.connection.execute("PRAGMA wal_checkpoint(PASSIVE)")

    def get_result(self, result_id: int) -> dict:
        row = self.connection.execute("SELECT * FROM results WHERE id = ?", (result_id,)).fetchone()
        if row is None:
            raise NotFound(f"result {result_id} does not exist")
        return row
