"""`catalog as-of TIME`: every (check, service) pair's latest finished result at TIME, from the ledger alone."""

from __future__ import annotations

import json
from datetime import datetime, time, timezone

import msgspec

from .clock import format_time
from .errors import InvalidInput
from .ledger import ResultsBranch


def parse_moment(text: str) -> str:
    """An ISO 8601 time (UTC unless it says otherwise) as stored; a bare date means the end of that day."""
    value = text.strip()
    try:
        if len(value) == 10:
            day = datetime.strptime(value, "%Y-%m-%d").replace(tzinfo=timezone.utc)
            return format_time(datetime.combine(day, time.max, timezone.utc))
        moment = datetime.fromisoformat(value.replace("z", "Z").replace("Z", "+00:00"))
    except ValueError:
        raise InvalidInput(f"TIME must be an ISO 8601 date or time such as 2026-01-05 or 2026-01-05T12:00:00Z,"
                           f" not {text!r}") from None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=timezone.utc)
    return format_time(moment)


class _Pair(msgspec.Struct):
    """What as-of needs of a line to pick the latest per pair (the winners are decoded in full after)."""

    id: int
    check: str
    service: str | None
    finished: str


_decode = msgspec.json.Decoder(_Pair).decode  # ~7x json.loads: bench/bench_trust.py ledger (<= 10 s for 1,000,000)


def state_at(branch: ResultsBranch, moment: str, *, service: str | None = None) -> list[dict]:
    """The history line (without `prev`) of each pair's latest result finished at or before `moment`, the
    latest being the one with the highest id (as the store's latest_results has it), by service then check."""
    root = branch.root()
    last_day = f"{root}history/{moment[0:4]}/{moment[5:7]}/{moment[8:10]}.jsonl"
    entries = [(sha, path) for sha, path in branch.files(root + "history/")
               if path.endswith(".jsonl") and path <= last_day]  # a day's file holds the results finished that day
    needle = None if service is None else ('"service":' + json.dumps(service, ensure_ascii=False)).encode()
    latest: dict[tuple, tuple[int, bytes]] = {}
    for (_, path), data in zip(entries, branch.blobs([sha for sha, _ in entries])):
        whole_day = path < last_day
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
    rows = [json.loads(latest[key][1]) for key in sorted(latest)]
    for row in rows:
        row.pop("prev", None)
    return rows


def table(rows: list[dict], moment: str) -> list[str]:
    """Aligned text: one row per pair, its outcome, when it finished, its id, who answered when attested."""
    if not rows:
        return [f"no finished results at {moment}"]
    header = ("SERVICE", "CHECK", "OUTCOME", "FINISHED", "ID", "ATTESTED BY")
    body = [(row["service"] or "-", row["check"], row["result"] if row["status"] == "completed" else row["status"],
             row["finished"], str(row["id"]), (row.get("attestation") or {}).get("repository", "")) for row in rows]
    widths = [max(len(line[i]) for line in [header, *body]) for i in range(len(header))]
    return [f"state at {moment}:"] + ["  ".join(cell.ljust(width) for cell, width in zip(line, widths)).rstrip()
                                      for line in [header, *body]]
