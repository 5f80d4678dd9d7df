"""Results: answering them (once), reading one, listing them."""

from __future__ import annotations

from datetime import datetime
from typing import Protocol

from .. import scorecards
from ..clock import format_time
from ..errors import Conflict, NotAllowed, NotFound, TooLate
from ..outcomes import OPEN_STATUSES
from ..schema import format_duration
from .rows import ANSWER_RULE_COLUMNS, RESULT_SELECT, decode_result, encode_attestation, result_filters

# the characters a spreadsheet takes as the start of a formula (=, +, -, @, tab, carriage return)
_DEFUSED = ("CASE WHEN substr(r.{column}, 1, 1) IN ('=', '+', '-', '@', '\t', '\r')"
            " THEN '''' || r.{column} ELSE r.{column} END")

Answer = tuple  # (result_id, result, message, url, now), or (..., now, attestor) for an answer attested by OIDC


class Attestor(Protocol):
    """Who answers with an attestation (`reconciler.oidc.OidcIdentity`): what it attests, and why it may
    not answer a result, given the result's `rule` (its check's slug and repository, the stored catalog.yaml)."""

    attestation: dict

    def refusal(self, rule: dict, result_id: int) -> str | None: ...


def _refusal(result_id: int, status: str | None, timeout_seconds: int | None) -> NotFound | Conflict:
    """Why an answer to this result completed nothing: no such result, a finished one, or an open one
    whose check's timeout had passed when the answer came (the next scheduler pass times it out)."""
    if status is None:
        return NotFound(f"result {result_id} does not exist")
    if status in OPEN_STATUSES:
        return TooLate(f"result {result_id} was not answered within its check's timeout"
                        f" ({format_duration(timeout_seconds)}): it is timed out, and this answer is not recorded")
    return Conflict(f"result {result_id} is already {status} and can never change")


class ResultRepository:
    """Every result is read the same way (`get`, `list`): its columns plus its check's and service's slug and name."""

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
                return self._answer_all(session, answers)
        session = backend.try_transaction()
        if session is None:
            return None
        try:
            outcomes = self._answer_all(session, answers)
        except BaseException:
            backend.rollback()
            raise
        backend.commit()
        return outcomes

    def _answer_all(self, session, answers: list[Answer]) -> list[dict | NotFound | Conflict | NotAllowed]:
        """Each result is completed by one conditional UPDATE (its open status is the condition), so of
        many concurrent answers exactly one wins; in one batch, the first answer to a result does."""
        first: dict[int, tuple] = {}
        attestors: dict[int, Attestor] = {}
        stamps: dict[datetime, str] = {}  # the answers of one bulk PATCH share their time: formatted once
        for result_id, result, message, url, now, *attestor in answers:
            if result_id not in first:
                stamp = stamps.get(now)
                if stamp is None:
                    stamp = stamps[now] = format_time(now)
                first[result_id] = (result_id, result, message, url, stamp)
                if attestor and attestor[0] is not None:
                    attestors[result_id] = attestor[0]
        refused = self._refusals(session, attestors) if attestors else {}
        completed = self.db.dialect.complete_results(
            session, [answer for result_id, answer in first.items() if result_id not in refused])
        attested = {result_id: attestors[result_id].attestation for result_id in completed if result_id in attestors}
        for result_id, row in completed.items():
            row["attestation"] = attested.get(result_id)
        if attested:  # the OIDC claims of the run that answered, beside the result (insert-only, like it)
            session.many("INSERT INTO result_attestations (result_id, attestation) VALUES (?, ?)",
                         [(result_id, encode_attestation(claims)) for result_id, claims in attested.items()])
        # the levels of the services answered, and a level-changed event for each level that moved, in this transaction
        scorecards.after_answers(self.db, session, completed.values(), answers[0][4]) if completed else None
        outcomes: list = []
        for result_id, *_ in answers:
            outcomes.append(completed.pop(result_id, None) or refused.get(result_id))  # popped: a second answer lost
        missing = {answers[i][0] for i, outcome in enumerate(outcomes) if outcome is None}
        statuses = {row[0]: row[1:] for row in session.tuples(
            "SELECT r.id, r.status, c.timeout_seconds FROM results AS r JOIN checks AS c ON c.id = r.check_id"
            f" WHERE r.id IN {self.db.dialect.id_table('?')}",
            (self.db.dialect.ids(sorted(missing)),),
        )} if missing else {}
        for i, outcome in enumerate(outcomes):
            if outcome is None:
                outcomes[i] = _refusal(answers[i][0], *statuses.get(answers[i][0], (None, None)))
        return outcomes

    def _refusals(self, session, attestors: dict[int, "Attestor"]) -> dict[int, NotAllowed]:
        """The attested answers whose caller may not answer that result, read in the answer's transaction
        (one read per batch): its check's slug and `repository`, and the stored catalog.yaml."""
        d = self.db.dialect
        rules = session.all(
            f"SELECT r.id, {ANSWER_RULE_COLUMNS}"
            f" FROM results AS r JOIN checks AS c ON c.id = r.check_id WHERE r.id IN {d.id_table('?')}",
            (d.ids(sorted(attestors)),),
        )
        refused = {}
        for rule in rules:
            why = attestors[rule["id"]].refusal(rule, rule["id"])
            if why is not None:
                refused[rule["id"]] = NotAllowed(why)
        return refused

    def checkpoint(self) -> None:
        """Let the backend fold its log back into the database (SQLite's WAL), off the event loop."""
        self.db.backend.checkpoint()

    def defer_checkpoints(self) -> None:
        """This thread's commits leave the log to `checkpoint`, run elsewhere (the API's writer thread:
        a bulk answer's commit, ~1,100 pages, then returns without copying them back and syncing first)."""
        self.db.backend.defer_checkpoints()

    def get(self, result_id: int) -> dict:
        """One result with the slugs and names of its check and service."""
        with self.db.session() as session:
            row = session.one(RESULT_SELECT + " WHERE r.id = ?", (result_id,))
        if row is None:
            raise NotFound(f"result {result_id} does not exist")
        return decode_result(row)

    def list(
        self, *, service: str | None = None, check: str | None = None, result: str | None = None,
        status: str | None = None, since: str | None = None, before_id: int | None = None, limit: int = 100,
    ) -> list[dict]:
        """Results newest first (by id), filtered; page on with `before_id` = the last id seen."""
        conditions, params = result_filters(
            service=service, check=check, result=result, status=status, since=since, before_id=before_id
        )
        with self.db.session() as session:
            rows = session.all(RESULT_SELECT + " WHERE TRUE" + conditions + " ORDER BY r.id DESC LIMIT ?",
                               params + [limit])
        return [decode_result(row) for row in rows]

    def export_batch(
        self, *, after_id: int, limit: int, defuse: bool = False, service: str | None = None, check: str | None = None,
        result: str | None = None, status: str | None = None, since: str | None = None,
    ) -> list[tuple]:
        """Results after `after_id`, oldest first, as tuples in `reconciler.export.COLUMNS` order but
        with the check's and the service's ids where their slugs go (`slugs_by_id` names them: a join
        per row would halve the export's speed). `defuse`: a message or URL that a spreadsheet would
        run as a formula gets a leading `'` (in SQL: a test per row in Python costs a fifth of a CSV export)."""
        conditions, params = result_filters(service=service, check=check, result=result, status=status, since=since)
        message, url = (_DEFUSED.format(column=column) if defuse else f"r.{column}" for column in ("message", "url"))
        with self.db.session() as session:
            return session.tuples(
                f'SELECT r.id, r.check_id, r.service_id, r.status, r.result, {message}, {url}, r.revision, r."trigger",'
                " r.created_at, r.sent_at, r.finished_at FROM results AS r"
                " WHERE r.id > ?" + conditions + " ORDER BY r.id LIMIT ?",
                [after_id, *params, limit],
            )

    def slugs_by_id(self) -> tuple[dict[int, str], dict[int, str]]:
        """({check id: slug}, {service id: slug}) of every check and service ever synced."""
        with self.db.session() as session:
            checks = dict(session.tuples("SELECT id, slug FROM checks"))
            services = dict(session.tuples("SELECT id, slug FROM services"))
        return checks, services
