"""Cron schedules of checks: which expressions a check may use, and when they fire (UTC, via croniter).

Every place that turns a check's `schedule` into a time goes through `previous_time`, which answers
None instead of raising: a store may hold a schedule written before today's rules (or one croniter
stops accepting after an upgrade), and one such row must never stop a dispatch pass or a page.
"""

from __future__ import annotations

from datetime import datetime, timezone

# croniter's shorthands that mean a five-field expression (`@reboot` has no time, so it is not here)
ALIASES = ("@yearly", "@annually", "@monthly", "@weekly", "@daily", "@midnight", "@hourly")
FIELD_NAMES = "minute hour day-of-month month day-of-week"


def schedule_problem(expression: str, now: datetime | None = None) -> str | None:
    """Why a check cannot use this cron expression, or None when it can."""
    text = expression.strip()
    if text.lower() not in ALIASES and len(text.split()) != 5:
        # croniter reads a 6th field as seconds and a 7th as a year (after which it never fires
        # again); a Quartz-style expression with seconds first would silently mean something else.
        return f"{expression!r} must have five fields ({FIELD_NAMES}), such as '0 3 * * 1'"
    from croniter import croniter  # imported when needed: it costs every CLI command ~15 ms

    if not croniter.is_valid(text):
        return f"{expression!r} is not a cron expression such as '0 3 * * 1'"
    surprise = _surprising_field(text)
    if surprise:
        return f"{expression!r}: {surprise}"
    now = now or datetime.now(timezone.utc)
    if next_time(text, now) is None or previous_time(text, now) is None:
        return f"{expression!r} never fires (no date matches it, such as 30 February); the check would never run"
    return None


# The values of each field, for the rules croniter does not keep: (name, lowest, highest)
_FIELDS = (("minute", 0, 59), ("hour", 0, 23), ("day-of-month", 1, 31), ("month", 1, 12), ("day-of-week", 0, 7))


def _surprising_field(text: str) -> str | None:
    """What croniter accepts with a meaning nobody writes on purpose: a range that runs backwards (`5-1`
    is read as wrapping round: 57 runs an hour) or a step past the field's values (`*/1000`: once)."""
    if text.lower() in ALIASES:
        return None
    for (name, lowest, highest), field in zip(_FIELDS, text.split()):
        for item in field.split(","):
            base, _, step = item.partition("/")
            start, dash, end = base.partition("-")
            if dash and start.isdigit() and end.isdigit() and int(start) > int(end):
                return (f"the {name} range {base} runs backwards; write it upwards"
                        f" ({end}-{start}), or as two ranges if it should wrap round")
            if step.isdigit() and int(step) > highest - lowest:
                return f"the {name} step /{step} is larger than the field's values ({lowest}-{highest}): it would fire once"
    return None


def previous_time(expression: str, before: datetime) -> datetime | None:
    """The newest time the schedule fires strictly before `before`; None when there is none or it cannot be computed."""
    from croniter import croniter

    try:
        return croniter(expression, before).get_prev(datetime)
    except (ValueError, TypeError, OverflowError):  # croniter's errors are ValueErrors but one
        return None


def next_time(expression: str, after: datetime) -> datetime | None:
    """The first time the schedule fires strictly after `after`; None when there is none or it cannot be computed."""
    from croniter import croniter

    try:
        return croniter(expression, after).get_next(datetime)
    except (ValueError, TypeError, OverflowError):  # croniter's errors are ValueErrors but one
        return None


def runs_per_day(expression: str, start: datetime) -> float:
    """How often the schedule fires a day, on average (for dispatch plans): over the week from `start`,
    or, for a schedule firing less than daily, over the four years from it (a leap day's included): a
    week's sample gave `@monthly` 0 or 1 run, so a plan's verdict hung on the day it was made."""
    for days in (7, 4 * 365 + 1):
        count, moment, end = 0, start, start.timestamp() + days * 86400
        while (moment := next_time(expression, moment)) is not None and moment.timestamp() <= end:
            count += 1
        if count >= days:
            break
    return count / days
