"""Exporting results for auditors: CSV or JSON lines, streamed in id order with constant memory.

The CLI (`catalog export results`) and the API (`GET /api/results.csv`) both write through here.
Rows are read in keyset batches (`db.results.export_batch`: one short statement each, no cursor held
open across a slow client), so memory stays flat at 1,000,000 rows (bench/bench_metrics_export.py).
"""

from __future__ import annotations

import csv
import io
import json
from datetime import datetime
from typing import Callable, Iterator

from .clock import given_time
from .errors import InvalidInput
from .outcomes import RESULTS, STATUSES
from .store import Database

COLUMNS = ("id", "check", "service", "status", "result", "message", "url", "revision", "trigger",
           "created_at", "sent_at", "finished_at")
FORMATS = ("csv", "jsonl")
BATCH = 5_000  # rows per statement: big enough that a statement's cost vanishes, small in memory


def parse_since(value: str | None) -> str | None:
    """An ISO 8601 time (`2026-01-05T12:00:00Z`; no zone: UTC) as the store's time text; None passes."""
    if value is None:
        return None
    try:
        moment = datetime.fromisoformat(value.replace("z", "Z"))
    except ValueError:
        raise InvalidInput(f"'since' must be an ISO 8601 time such as 2026-01-05T12:00:00Z, not {value!r}") from None
    return given_time(moment, "'since'", value)


def check_filters(result: str | None, status: str | None) -> None:
    """InvalidInput for an outcome or status filter that no result can have."""
    if result is not None and result not in RESULTS:
        raise InvalidInput(f"'result' filter must be one of {', '.join(RESULTS)}, not {result!r}")
    if status is not None and status not in STATUSES:
        raise InvalidInput(f"'status' filter must be one of {', '.join(STATUSES)}, not {status!r}")


def result_batches(store: Database, *, batch: int = BATCH, defuse: bool = False, **filters) -> Iterator[list[tuple]]:
    """Every result matching the filters (those of `/api/results`), oldest first, `batch` at a time;
    `defuse` quotes a message or URL a spreadsheet would run as a formula (`csv_chunks` wants that)."""
    after = 0
    checks, services = _slugs(store)
    while True:
        rows = store.results.export_batch(after_id=after, limit=batch, defuse=defuse, **filters)
        if not rows:
            return
        try:
            named = _named(rows, checks, services)
        except KeyError:  # a sync added a check or service since the export began
            checks, services = _slugs(store)
            named = _named(rows, checks, services)
        yield named
        after = rows[-1][0]


def _slugs(store: Database) -> tuple[dict, dict]:
    checks, services = store.results.slugs_by_id()
    services[None] = None  # a `services: none` check's result: one lookup for every row, no test
    return checks, services


def _named(rows: list[tuple], checks: dict, services: dict) -> list[tuple]:
    """Rows with the slugs of their check and service for their ids (unpacked by name: a tenth of a
    microsecond a row, a third of slicing; bench/bench_metrics_export.py counts every one)."""
    return [(id_, checks[check_id], services[service_id], status, result, message, url, revision, trigger, created,
             sent, finished)
            for id_, check_id, service_id, status, result, message, url, revision, trigger, created, sent, finished
            in rows]


def csv_chunks(batches: Iterator[list[tuple]], *, header: bool = True) -> Iterator[bytes]:
    """RFC 4180 CSV (UTF-8, CRLF), one chunk per batch. Read the batches with `defuse=True`, so a
    message or URL a spreadsheet would run as a formula starts with `'` (OWASP's advice for CSV)."""
    buffer = io.StringIO()
    writer = csv.writer(buffer)
    if header:
        writer.writerow(COLUMNS)
    for rows in batches:
        writer.writerows(rows)
        yield buffer.getvalue().encode()
        buffer.seek(0)
        buffer.truncate()
    if buffer.tell():
        yield buffer.getvalue().encode()


def jsonl_chunks(batches: Iterator[list[tuple]]) -> Iterator[bytes]:
    """One JSON object per line, keys in COLUMNS order, one chunk per batch."""
    encode = json.JSONEncoder(ensure_ascii=False, check_circular=False).encode
    for rows in batches:
        yield "".join(encode(dict(zip(COLUMNS, row))) + "\n" for row in rows).encode()


CHUNKERS: dict[str, Callable[[Iterator[list[tuple]]], Iterator[bytes]]] = {"csv": csv_chunks, "jsonl": jsonl_chunks}
DEFUSE = {"csv": True, "jsonl": False}  # whether a format's readers are spreadsheets
