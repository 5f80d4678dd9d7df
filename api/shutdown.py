"""How `catalog up` stops: a first SIGINT/SIGTERM lets the loops' jobs in flight finish while the API
still answers them, then closes the server; a second one stops at once."""

from __future__ import annotations

import logging
import signal
import threading
from typing import Callable

import uvicorn

log = logging.getLogger("catalog.up")

STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)


class GracefulServer(uvicorn.Server):
    """uvicorn's server, whose first stop signal runs `before_exit` (the loops' stop) before it closes.

    uvicorn installs `handle_exit` as its signal handler while it runs; overriding it is the seam
    (tests/test_e2e.py's SIGTERM tests fail if an upgrade stops calling it). Ours also never re-raises
    the signal after the shutdown as uvicorn's does, which would kill the process with -15.
    """

    def __init__(self, config: uvicorn.Config, before_exit: Callable[[], None]):
        super().__init__(config)
        self.before_exit = before_exit
        self.stop_requested = False

    def install_signal_handlers(self) -> None:
        """Handle stop signals from now on, before uvicorn runs: one that comes during the start-up
        (the heap's settling takes a while) is remembered and honoured once the server runs, not lost."""
        if threading.current_thread() is threading.main_thread():
            for signum in STOP_SIGNALS:
                signal.signal(signum, self.handle_exit)  # uvicorn puts this same method back after it runs

    def handle_exit(self, sig: int, frame) -> None:
        if self.stop_requested:
            self.should_exit = self.force_exit = True
            return
        self.stop_requested = True
        # before_exit waits for jobs: not in a signal handler, which would hold up the event loop
        threading.Thread(target=self._exit_after_stopping, name="catalog-stop", daemon=True).start()

    async def shutdown(self, sockets=None) -> None:
        if self.force_exit:
            # uvicorn skips the app's lifespan shutdown on a forced exit and asyncio.run then cancels it;
            # Litestar reports that as a failed shutdown, which uvicorn logged as an ERROR with a traceback
            log.info("stopping at once: the jobs in flight are not waited for")
            logging.getLogger("uvicorn.error").addFilter(_cancelled_lifespan)
        await super().shutdown(sockets)

    def _exit_after_stopping(self) -> None:
        log.info("stopping: the jobs in flight finish first, then the server closes (signal again to stop at once)")
        try:
            self.before_exit()
        finally:
            self.should_exit = True


def _cancelled_lifespan(record: logging.LogRecord) -> bool:
    """False for the lifespan's CancelledError traceback of a forced exit: expected, not an error."""
    return not (record.levelno >= logging.ERROR and "CancelledError" in record.getMessage())
