"""The access log: one line per request, with method, path, status, caller and time taken.

Never the query string or the headers, so never a token. The path and the caller are escaped
(`reconciler.logs.escape_control`): a `%0A` in a URL cannot start a forged line. Lines look like
the rest of the log:

    2026-11-24 14:04:06,123 INFO catalog.access: GET /api/services/payments-api 200 reader 1.2ms

They skip Python's `logging` on purpose: a LogRecord, its formatting and a flushed write per request
cost 20-40 µs, a tenth of a whole request. Lines gather during one turn of the event loop and go out
in one write when the turn ends, so a line appears as soon as its response is sent.
"""

from __future__ import annotations

import asyncio
import sys
import time
from typing import TextIO

from litestar.types import Message, Scope

from reconciler.logs import escape_control


class AccessLog:
    def __init__(self, stream: TextIO | None = None):
        self._stream = stream  # None: sys.stderr at write time (so a redirected stderr is followed)
        self._lines: list[str] = []
        self._second = -1
        self._stamp = ""

    def record(self, method: str, path: str, status: int | str, caller: str, took_ms: float | None) -> None:
        now = time.time()
        second = int(now)
        if second != self._second:  # strftime once a second, not once a request
            self._second, self._stamp = second, time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(second))
        took = "" if took_ms is None else f" {took_ms:.1f}ms"
        self._lines.append(
            f"{self._stamp},{int((now - second) * 1000):03d} INFO catalog.access: {method} {escape_control(path)} {status} {escape_control(caller)}{took}\n"
        )
        if len(self._lines) == 1:  # the first line of this turn of the loop: write them all at its end
            try:
                asyncio.get_running_loop().call_soon(self.flush)
            except RuntimeError:  # no event loop: write at once
                self.flush()

    async def before_send(self, message: Message, scope: Scope) -> None:
        """Litestar's before-send hook: it sees every response, unknown routes and errors included.
        The time taken counts from `api.auth.AuthMiddleware`, which stamps each routed request."""
        if message["type"] == "http.response.start":
            scope.setdefault("state", {})["access_status"] = message["status"]
        elif message["type"] == "http.response.body" and not message.get("more_body", False):
            state = scope.get("state", {})
            started = state.get("started_at")
            who = getattr(scope.get("user"), "name", None) or "-"
            self.record(scope.get("method"), scope.get("path"), state.get("access_status", "-"), who,
                        None if started is None else 1000 * (time.perf_counter() - started))

    def flush(self) -> None:
        lines, self._lines = self._lines, []
        if lines:
            stream = self._stream or sys.stderr
            try:
                stream.write("".join(lines))
                stream.flush()
            except (OSError, ValueError):  # a closed or broken log stream never fails a request
                pass
