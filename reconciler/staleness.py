"""When a finished result goes stale: a newer run of its check should have finished by then."""

from __future__ import annotations

from datetime import datetime, timedelta

from . import cron
from .clock import format_time
from .schema import FREQUENCY_PERIODS


def stale_cutoff(check: dict, now: datetime) -> str | None:
    """Results created before this time are stale: a newer run should have finished by now.

    For a frequency: older than one period plus the check's timeout. For a cron schedule: created
    before the last scheduled time whose run's timeout has passed. Ad-hoc checks never go stale, nor
    do checks whose stored schedule gives no time (the scheduler skips and reports those).
    """
    timeout = timedelta(seconds=check["timeout_seconds"])
    if check["schedule"]:
        last_due = cron.previous_time(check["schedule"], now - timeout)
        return format_time(last_due) if last_due else None
    period = FREQUENCY_PERIODS.get(check["frequency"] or "")
    return format_time(now - period - timeout) if period else None


def stale_from(check: dict, created_at: datetime) -> datetime | None:
    """The moment a result created at `created_at` becomes stale by `stale_cutoff`; None for never."""
    timeout = timedelta(seconds=check["timeout_seconds"])
    if check["schedule"]:
        following = cron.next_time(check["schedule"], created_at)
        return following + timeout if following else None
    period = FREQUENCY_PERIODS.get(check["frequency"] or "")
    return created_at + period + timeout if period else None


def stale_offset(check: dict) -> timedelta | None:
    """For a frequency: how long after its creation a result goes stale (one period plus the
    timeout). None for a cron schedule (use `stale_from`) and for checks that never go stale."""
    period = FREQUENCY_PERIODS.get(check["frequency"] or "")
    return period + timedelta(seconds=check["timeout_seconds"]) if period and not check["schedule"] else None
