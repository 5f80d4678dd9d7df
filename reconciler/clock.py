"""Time as the catalog sees it: a clock seam for tests and one text format for the store."""

from __future__ import annotations

import threading
from datetime import datetime, timedelta, timezone

# Fixed-width UTC text: sorts the same as the times it stands for, so SQL can compare it.
TIME_FORMAT = "%Y-%m-%dT%H:%M:%S.%fZ"


def format_time(moment: datetime) -> str:
    utc = moment.astimezone(timezone.utc)
    text = utc.strftime(TIME_FORMAT)
    # C's %Y does not pad a year before 1000 (`999-12-31...`, which sorted after 2026): padded here
    return text if utc.year >= 1000 else f"{utc.year:04d}{text[text.index('-'):]}"


def given_time(moment: datetime, name: str, text: str) -> str:
    """A time a user gave (parsed; no zone: UTC) as stored; InvalidInput naming `name` and `text` when
    its zone takes it past year 1 or 9999 in UTC."""
    from .errors import InvalidInput

    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=timezone.utc)
    try:
        return format_time(moment)
    except OverflowError:
        raise InvalidInput(f"{name} is out of range (years 1 to 9999 in UTC): {text!r}") from None


def parse_time(text: str) -> datetime:
    return datetime.strptime(text, TIME_FORMAT).replace(tzinfo=timezone.utc)


class Clock:
    """The real clock."""

    def now(self) -> datetime:
        return datetime.now(timezone.utc)

    def sleep(self, seconds: float) -> None:
        threading.Event().wait(max(0.0, seconds))


class FakeClock(Clock):
    """A clock tests move by hand; `sleep` advances it instead of waiting."""

    def __init__(self, start: datetime | None = None):
        self._now = start or datetime(2026, 1, 5, 12, 0, tzinfo=timezone.utc)
        self.slept: list[float] = []

    def now(self) -> datetime:
        return self._now

    def advance(self, delta: timedelta | float) -> None:
        self._now += delta if isinstance(delta, timedelta) else timedelta(seconds=delta)

    def sleep(self, seconds: float) -> None:
        self.slept.append(seconds)
        self.advance(max(0.0, seconds))
