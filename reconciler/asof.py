"""`catalog as-of TIME`: every (check, service) pair's latest finished result at TIME, from the ledger alone
(the history lines of every write-back folder the branch has)."""

from __future__ import annotations

import json
import re
from datetime import datetime, time, timezone

import msgspec

from . import writeback_files as files
from .clock import format_time, given_time
from .errors import InvalidInput
from .ledger import ResultsBranch, history_files
from .logs import escape_control


# The TIME `catalog as-of` reads: a day (its end), or RFC 3339's date-time, its seconds and zone optional.
_DAY = re.compile(r"[0-9]{4}-[0-9]{2}-[0-9]{2}")
_MOMENT = re.compile(r"[0-9]{4}-[0-9]{2}-[0-9]{2}[Tt ][0-9]{2}:[0-9]{2}(:[0-9]{2}(\.[0-9]{1,6})?)?([Zz]|[+-][0-9]{2}:[0-9]{2})?")


def parse_moment(text: str) -> str:
    """`YYYY-MM-DD` (the end of that day, UTC) or `YYYY-MM-DDTHH:MM[:SS[.ffffff]][Z|+HH:MM]` (T or a space;
    UTC without a zone) as stored."""
    value = text.strip()
    try:
        if _DAY.fullmatch(value):
            day = datetime.strptime(value, "%Y-%m-%d")
            return format_time(datetime.combine(day, time.max, timezone.utc))
        if not _MOMENT.fullmatch(value):
            raise ValueError
        moment = datetime.fromisoformat(value.upper().replace("Z", "+00:00"))
    except ValueError:
        raise InvalidInput(f"TIME must be an ISO 8601 date or time such as 2026-01-05 or 2026-01-05T12:00:00Z,"
                           f" not {text!r}") from None
    return given_time(moment, "TIME", text)


class _Pair(msgspec.Struct):
    """What as-of needs of a line to pick the latest per pair (the winners are decoded in full after)."""

    id: int
    check: str
    service: str | None
    finished: str


_decode = msgspec.json.Decoder(_Pair).decode  # ~7x json.loads: bench/bench_trust.py ledger (<= 10 s for 1,000,000)


def state_at(branch: ResultsBranch, moment: str, *, service: str | None = None) -> list[dict]:
    """The history line (without `prev`) of each pair's latest result finished at or before `moment`, the
    latest being the one with the highest id (as the store's latest_results has it), by service then check,
    from every write-back folder of the branch. Raises InvalidInput when no line names `service`."""
    by_root = history_files(branch.tree())
    entries = []  # (blob, path, whole day?): a day's file holds the results finished that day
    for root, listed in by_root.items():
        last_day = files.history_path(root, moment)
        entries += [(sha, path, path < last_day) for sha, path in listed if path <= last_day]
    needle = None if service is None else ('"service":' + json.dumps(service, ensure_ascii=False)).encode()
    latest: dict[tuple, tuple[int, bytes]] = {}
    for (_, _, whole_day), data in zip(entries, branch.blobs([sha for sha, _, _ in entries])):
        for text in data.split(b"\n"):
            if not text or (needle is not None and needle not in text):
                continue
            try:
                line = _decode(text)
            except msgspec.DecodeError:
                continue  # `catalog verify` names unparseable lines
            if (whole_day or line.finished <= moment) and (service is None or line.service == service):
                key = (line.service or "", line.check)
                kept = latest.get(key)
                if kept is None or line.id > kept[0]:
                    latest[key] = (line.id, text)
    if needle is not None and not latest and not _names(branch, by_root, needle):
        raise InvalidInput(f"no history line names service {service!r}")
    rows = [json.loads(latest[key][1]) for key in sorted(latest)]
    for row in rows:
        row.pop("prev", None)
    return rows


def _names(branch: ResultsBranch, by_root: dict[str, list[tuple[str, str]]], needle: bytes) -> bool:
    """Does any history file, of any day, hold `needle`?"""
    shas = [sha for listed in by_root.values() for sha, _ in listed]
    found = False
    for data in branch.blobs(shas):  # read to the end: leaving `git cat-file --batch` early would block it
        found = found or needle in data
    return found


def table(rows: list[dict], moment: str) -> list[str]:
    """Aligned text: one row per pair, its outcome, when it finished, its id, who answered when attested."""
    if not rows:
        return [f"no finished results at {moment}"]
    header = ("SERVICE", "CHECK", "OUTCOME", "FINISHED", "ID", "ATTESTED BY")
    # a history line is text anyone with push access wrote: no escape sequence of it reaches the terminal
    body = [tuple(escape_control(str(cell)) for cell in (
        row["service"] or "-", row["check"], row["result"] if row["status"] == "completed" else row["status"],
        row["finished"], row["id"], (row.get("attestation") or {}).get("repository", ""))) for row in rows]
    widths = [max(len(line[i]) for line in [header, *body]) for i in range(len(header))]
    return [f"state at {moment}:"] + ["  ".join(cell.ljust(width) for cell, width in zip(line, widths)).rstrip()
                                      for line in [header, *body]]
