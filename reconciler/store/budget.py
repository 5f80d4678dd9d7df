"""The GitHub dispatch budget: requests made in sliding windows, shared by every process on the store."""

from __future__ import annotations

_PAUSE_KEY = "github_paused_until"
# Counters for /metrics, kept beside the pause so every process adds to the same figures
_PAUSES_KEY = "github_rate_limit_pauses"  # rate-limit answers that paused dispatching
_WAITS_KEY = "dispatch_budget_waits"  # requests that found the budget spent (or paused) and had to wait
_COUNT = ("INSERT INTO catalog_state (key, value) VALUES (?, '1') ON CONFLICT (key)"
          " DO UPDATE SET value = CAST(CAST(catalog_state.value AS BIGINT) + 1 AS TEXT)")
_EPSILON = 0.001  # a request leaves its window strictly after `seconds`: wait that much past it
# GitHub asks for waits of an hour at most (its primary limit's reset): a pause ending further off was
# set before the clock stepped back (NTP, a VM's snapshot), and holds no longer than this from now
LONGEST_PAUSE = 3600.0


class BudgetRepository:
    """`take` a request from the budget, or learn how long to wait; `pause` after a rate-limit answer."""

    def __init__(self, db):
        self.db = db

    def take(self, now: float, windows: list[tuple[int, float]]) -> float:
        """Record one request at `now` (Unix seconds) if every window (limit, seconds) has room and no
        pause holds: 0.0. Otherwise record nothing and return the seconds to wait before asking again.

        Serialised across processes, so two replicas never both take the last request of a window."""
        longest = max(seconds for _, seconds in windows)
        with self.db.transaction(serialize="budget") as session:
            session.run("DELETE FROM dispatch_budget WHERE sent_at <= ?", (now - longest,))
            paused = self._after_a_step_back(session, now)
            wait = paused - now if paused is not None and paused > now else 0.0
            for limit, seconds in windows:
                # the request whose leaving makes room: the (count - limit + 1)-th oldest in the window
                oldest = session.value(
                    "SELECT sent_at FROM dispatch_budget WHERE sent_at > ? ORDER BY sent_at DESC LIMIT 1 OFFSET ?",
                    (now - seconds, limit - 1),
                )
                if oldest is not None:
                    wait = max(wait, float(oldest) + seconds - now + _EPSILON)
            if wait > 0:
                session.run(_COUNT, (_WAITS_KEY,))
                return wait
            session.run("INSERT INTO dispatch_budget (sent_at) VALUES (CAST(? AS DOUBLE PRECISION))", (now,))
            return 0.0

    def settle(self, now: float) -> float | None:
        """Bring what a clock stepped back left in the future to `now` (before reading what is left);
        when the pause ends (Unix seconds), or None."""
        with self.db.transaction(serialize="budget") as session:
            return self._after_a_step_back(session, now)

    @staticmethod
    def _after_a_step_back(session, now: float) -> float | None:
        """Requests stamped after `now` were made before the clock stepped back: counted as made now, they
        leave the windows in one window's time, not the step's (days: nothing was sent meanwhile). A pause
        ending past LONGEST_PAUSE from now ends then. Returns when the pause ends, or None."""
        session.run("UPDATE dispatch_budget SET sent_at = CAST(? AS DOUBLE PRECISION) WHERE sent_at > ?", (now, now))
        value = session.value("SELECT value FROM catalog_state WHERE key = ?", (_PAUSE_KEY,))
        if value is None:
            return None
        if float(value) > now + LONGEST_PAUSE:
            session.run("UPDATE catalog_state SET value = ? WHERE key = ?", (repr(now + LONGEST_PAUSE), _PAUSE_KEY))
            return now + LONGEST_PAUSE
        return float(value)

    def used(self, now: float, seconds: float) -> int:
        """Requests made in the last `seconds`."""
        with self.db.session() as session:
            return session.value("SELECT count(*) FROM dispatch_budget WHERE sent_at > ?", (now - seconds,))

    def figures(self) -> dict:
        """{paused_until (Unix seconds or None), pauses, waits}: the pause and the counters, in one read."""
        with self.db.session() as session:
            stored = dict(session.tuples("SELECT key, value FROM catalog_state WHERE key IN (?, ?, ?)",
                                         (_PAUSE_KEY, _PAUSES_KEY, _WAITS_KEY)))
        paused = stored.get(_PAUSE_KEY)
        return {"paused_until": None if paused is None else float(paused),
                "pauses": int(stored.get(_PAUSES_KEY, 0)), "waits": int(stored.get(_WAITS_KEY, 0))}

    def paused_until(self) -> float | None:
        with self.db.session() as session:
            value = session.value("SELECT value FROM catalog_state WHERE key = ?", (_PAUSE_KEY,))
        return None if value is None else float(value)

    def pause(self, until: float) -> None:
        """No request before `until` (GitHub said so), for every process; a later pause wins. Counted."""
        with self.db.transaction(serialize="budget") as session:
            session.run(_COUNT, (_PAUSES_KEY,))
            current = session.value("SELECT value FROM catalog_state WHERE key = ?", (_PAUSE_KEY,))
            if current is None or float(current) < until:
                session.run(
                    "INSERT INTO catalog_state (key, value) VALUES (?, ?)"
                    " ON CONFLICT (key) DO UPDATE SET value = excluded.value",
                    (_PAUSE_KEY, repr(float(until))),
                )
