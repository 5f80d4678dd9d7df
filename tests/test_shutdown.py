"""How a real `catalog up` stops on SIGTERM: early in its start, with a local check script in flight, twice."""

from __future__ import annotations

import os
import signal
import time

import pytest

from e2e_support import UpProcess, local_up, started_checks, wait_for
from reconciler.store import open_database

pytestmark = pytest.mark.e2e

def statuses(database_url: str) -> dict[int, str]:
    store = open_database(database_url)
    try:
        return {r["id"]: r["status"] for r in store.results.list(limit=1000)}
    finally:
        store.close()


@pytest.fixture
def ups():
    started: list[UpProcess] = []
    yield started
    for up in started:
        up.stop()


def test_a_sigterm_right_after_the_banner_stops_catalog_up_with_exit_code_0(tmp_path, database_url, ups):
    # The banner says "Stop with Ctrl-C" before the heap settles and uvicorn runs: a SIGTERM then was
    # swallowed, and the process served on. Three starts, as the window is a fraction of a second.
    up = local_up(tmp_path, database_url, check_seconds=0)
    ups.append(up)
    for attempt in range(3):
        up.start(wait=False)
        wait_for(lambda: up.log_text().count("Stop with Ctrl-C") > attempt, "the banner", timeout=30, interval=0.005)
        assert up.terminate(timeout=5) == 0, up.log_tail()


def test_sigterm_lets_the_check_script_in_flight_answer_before_the_server_closes(tmp_path, database_url, ups):
    up = local_up(tmp_path, database_url, check_seconds=3)
    ups.append(up)
    up.start()
    [in_flight] = wait_for(lambda: started_checks(up), "a check script to start", timeout=30)
    started = time.monotonic()
    assert up.terminate(timeout=20) == 0
    print(f"\ncatalog up exited 0 {time.monotonic() - started:.1f} s after SIGTERM, its check script answered")
    assert statuses(database_url)[in_flight] == "completed", up.log_tail()
    assert started_checks(up) == [in_flight], "no check started after the SIGTERM"
    assert "Traceback" not in up.log_text()


def test_a_second_sigterm_stops_at_once_without_waiting_for_the_check_script(tmp_path, database_url, ups):
    up = local_up(tmp_path, database_url, check_seconds=30)
    ups.append(up)
    up.start()
    wait_for(lambda: started_checks(up), "a check script to start", timeout=30)
    os.kill(up.process.pid, signal.SIGTERM)
    time.sleep(1)
    assert up.healthy(), "the API answers while the check script runs"
    started = time.monotonic()
    assert up.terminate(timeout=5) == 0
    print(f"\ncatalog up exited 0 {time.monotonic() - started:.1f} s after a second SIGTERM")
    # the app's lifespan, cancelled by the forced exit, was logged as an ERROR with a CancelledError traceback
    assert "Traceback" not in up.log_text() and "ERROR" not in up.log_text(), up.log_tail()
    assert "stopping at once" in up.log_text()
