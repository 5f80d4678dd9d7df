"""Events: what the catalog tells teams about (notifications), defined once.

An event is written in the transaction of its cause (`db.events`), never changed, and delivered
to each route of catalog.yaml `notifications:` that wants it (`reconciler/notify.py`).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

EVENT_TYPES = (
    "failing",           # a pair's outcome turned to fail, error or timed-out from anything else
    "recovered",         # ... and back
    "level-changed",     # a service's scorecard level (scorecards)
    "waiver-expiring",   # 14 days before a waiver's expiry
    "waiver-expired",
    "campaign-overdue",
    "sync-failed",       # a merged file that does not validate (once per file, version of it and error)
    "tamper-detected",   # the write-back found pushed history changed
)
ALL_EVENTS = "all"  # in a route's `events:`, every type


@dataclass(frozen=True)
class Event:
    """An event to record with `db.events.emit(session, [...])`, in the caller's transaction.

    `key`, when given, makes it once-only: a second event with the same key is not recorded (a file's
    error at one digest, a waiver's expiry date, a campaign's deadline...). `team` is whom it concerns
    (a service's owner); `service` and `check` are slugs; `data` is free JSON for receivers.
    """

    type: str
    summary: str
    team: str | None = None
    service: str | None = None
    check: str | None = None
    result_id: int | None = None
    outcome: str | None = None
    data: dict[str, Any] = field(default_factory=dict)
    key: str | None = None

    def __post_init__(self) -> None:
        if self.type not in EVENT_TYPES:
            raise ValueError(f"unknown event type {self.type!r}: one of {', '.join(EVENT_TYPES)}")
