"""Results: answering them (once), reading one, listing them."""

from __future__ import annotations

from datetime import datetime

from ..clock import format_time
from ..errors import Conflict, NotFound
from .rows import OPEN_SQL, RESULT_SELECT, result_filters

Answer = tuple  # (result_id, result, message, url, now)


class ResultRepository:
    """Every result is read the same way (`get`, `list`): its columns plus its check's and service's slug and name."""

    # One conditional UPDATE: of many concurrent answers to one result exactly one finds it open.
    # The answer names the check and the service too, read in the same statement.
    _COMPLETE = (
        "UPDATE results SET status = 'completed', result = ?, message = ?, url = ?, finished_at = ?"
        f" WHERE id = ? AND status IN {OPEN_SQL} RETURNING *,"
        ' (SELECT slug FROM checks WHERE id = results.check_id) AS "check",'
        " (SELECT slug FROM services WHERE id = results.service_id) AS service"
    )

    def __init__(self, db):
        self.db = db

    def answer(self, answers: list[Answer], *, wait: bool = True) -> list[dict | NotFound | Conflict] | None:
        """Record answers (id, result, message, url, now) of open results, all in one transaction.

        Each answer gets its completed row, or the NotFound or Conflict (returned, not raised) that says
        why it changed nothing. With wait=False (a caller on an event loop) nothing waits: None at once
        when the database cannot take the transaction right now, to be retried where waiting is harmless.
        """
        backend = self.db.backend
        if wait:
            with self.db.transaction() as session:
                return [self._answer_one(session, answer) for answer in answers]
        session = backend.try_transaction()
        if session is None:
            return None
        try:
            outcomes = [self._answer_one(session, answer) for answer in answers]
        except BaseException:
            backend.rollback()
            raise
        backend.commit()
        return outcomes

    def _answer_one(self, session, answer: Answer) -> dict | NotFound | Conflict:
        result_id, result, message, url, now = answer
        row = session.one(self._COMPLETE, (result, message, url, format_time(now), result_id))
        if row is not None:
            return row
        status = session.value("SELECT status FROM results WHERE id = ?", (result_id,))
        if status is None:
            return NotFound(f"result {result_id} does not exist")
        return Conflict(f"result {result_id} is already {status} and can never change")

    def checkpoint(self) -> None:
        """Let the backend fold its log back into the database (SQLite's WAL), off the event loop."""
        self.db.backend.checkpoint()

    def get(self, result_id: int) -> dict:
        """One result with the slugs and names of its check and service."""
        with self.db.session() as session:
            row = session.one(RESULT_SELECT + " WHERE r.id = ?", (result_id,))
        if row is None:
            raise NotFound(f"result {result_id} does not exist")
        return row

    def list(
        self, *, service: str | None = None, check: str | None = None, result: str | None = None,
        status: str | None = None, since: str | None = None, before_id: int | None = None, limit: int = 100,
    ) -> list[dict]:
        """Results newest first (by id), filtered; page on with `before_id` = the last id seen."""
        conditions, params = result_filters(
            service=service, check=check, result=result, status=status, since=since, before_id=before_id
        )
        with self.db.session() as session:
            return session.all(RESULT_SELECT + " WHERE TRUE" + conditions + " ORDER BY r.id DESC LIMIT ?",
                               params + [limit])
