"""The GitHub dispatch budget (`CATALOG_GITHUB_BUDGET`, default `80/min,500/h`), kept in the store.

GitHub's secondary rate limits allow about 80 content-creating requests a minute and 500 an hour,
and a `repository_dispatch` is one. Every request is taken from the budget in the store before it is
made, so a restart or a second replica does not burst; a rate-limit answer pauses every process.
"""

from __future__ import annotations

import re

from .clock import Clock
from .errors import ConfigError

DEFAULT_BUDGET = "80/min,500/h"
_UNITS = {"s": 1, "sec": 1, "second": 1, "m": 60, "min": 60, "minute": 60, "h": 3600, "hour": 3600,
          "d": 86400, "day": 86400}
_WINDOW = re.compile(r"^\s*(\d+)\s*/\s*([a-z]+)\s*$")


def parse_budget(text: str) -> list[tuple[int, float]]:
    """`80/min,500/h` -> [(80, 60.0), (500, 3600.0)]; ConfigError naming the setting otherwise."""
    windows = []
    for part in text.split(","):
        match = _WINDOW.match(part.lower())
        if not match or match.group(2) not in _UNITS or int(match.group(1)) < 1:
            raise ConfigError(
                f"CATALOG_GITHUB_BUDGET: {part.strip()!r} is not a budget such as 80/min;"
                f" give COUNT/UNIT pairs separated by commas (units: s, min, h, day), e.g. {DEFAULT_BUDGET}"
            )
        windows.append((int(match.group(1)), float(_UNITS[match.group(2)])))
    return windows


def describe_window(limit: int, seconds: float) -> str:
    unit = {1: "s", 60: "min", 3600: "h", 86400: "day"}.get(int(seconds), f"{seconds:.0f}s")
    return f"{limit}/{unit}"


class Budget:
    """Requests the dispatcher may make, in sliding windows, counted in the store (`db.budget`)."""

    def __init__(self, store, windows: list[tuple[int, float]], clock: Clock | None = None):
        self.store = store
        self.windows = windows
        self.clock = clock or Clock()

    @classmethod
    def from_text(cls, store, text: str | None, clock: Clock | None = None) -> "Budget":
        return cls(store, parse_budget(text or DEFAULT_BUDGET), clock)

    def _now(self) -> float:
        return self.clock.now().timestamp()

    def take(self) -> float:
        """Take one request now: 0.0; or the seconds to wait (nothing taken)."""
        return self.store.budget.take(self._now(), self.windows)

    def pause(self, seconds: float) -> None:
        """GitHub asked for a pause: no process sends before it ends."""
        self.store.budget.pause(self._now() + max(0.0, seconds))

    def left(self) -> list[tuple[int, float, int]]:
        """(limit, seconds, requests left) per window."""
        now = self._now()
        return [(limit, seconds, max(0, limit - self.store.budget.used(now, seconds))) for limit, seconds in self.windows]

    def capacity(self) -> int:
        """Requests that may be made now without waiting: the smallest window's room, 0 while paused."""
        now = self._now()
        paused = self.store.budget.settle(now)  # and what a clock stepped back left in the future, brought to now
        if paused is not None and paused > now:
            return 0
        return min(left for _, _, left in self.left())

    def per_day(self) -> int:
        """The most requests the budget allows in a day."""
        return int(min(limit * 86400 / seconds for limit, seconds in self.windows))

    def __str__(self) -> str:
        return ",".join(describe_window(limit, seconds) for limit, seconds in self.windows)
