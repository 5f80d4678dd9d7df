"""How a real `catalog up` stops on SIGTERM: early in its start, with a local check script in flight, twice."""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path

import pytest

from e2e_support import DROPPED_CHECKS, CatalogRemote, UpProcess, wait_for
from reconciler.store import open_database

pytestmark = pytest.mark.e2e

# A check script that says when it starts (a file named for its result), takes CHECK_SECONDS, then
# answers `pass` to the API that ran it, as the example's scripts do.
SLOW_CHECK = '''#!/usr/bin/env python3
import base64, json, os, time, urllib.parse, urllib.request

data = json.loads(base64.b64decode(os.environ["PAYLOAD"]))
marks = os.environ["CHECK_MARKS"]
open(os.path.join(marks, f"{data['result']['id']}.started"), "w").close()
time.sleep(float(os.environ["CHECK_SECONDS"]))
request = urllib.request.Request(
    data["server"]["url"] + data["server"]["endpoint"], data=urllib.parse.urlencode({"result": "pass"}).encode(),
    method="PATCH", headers={"Authorization": "Token " + os.environ["SERVICE_CATALOG_TOKEN"]},
)
urllib.request.urlopen(request, timeout=10)
'''


def slow_checks(folder: Path) -> Path:
    """The remote's two checks as SLOW_CHECK scripts; the folder for `local:`."""
    folder.mkdir()
    for slug in ("readme-present", "github-org-audit"):
        (folder / slug).write_text(SLOW_CHECK)
        (folder / slug).chmod(0o755)
    return folder


def local_up(root: Path, database_url: str, *, check_seconds: float, **env: str) -> UpProcess:
    """`catalog up` on a catalog remote, its checks run by `local:` slow_checks, more settings in
    `env`; not started."""
    remote = CatalogRemote(root, drop_checks=DROPPED_CHECKS)
    (root / "marks").mkdir()
    return UpProcess(root / "home", {
        "CATALOG_DATABASE_URL": database_url,
        "CATALOG_REPO": str(remote.bare),
        "CATALOG_DISPATCHER": f"local:{slow_checks(root / 'checks')}",
        "CATALOG_SYNC_INTERVAL": "3600",
        "CATALOG_DISPATCH_INTERVAL": "1",
        "CATALOG_WRITEBACK_INTERVAL": "3600",  # no write-back: what is tested is the dispatch in flight
        "CHECK_MARKS": str(root / "marks"),
        "CHECK_SECONDS": str(check_seconds),
        **env,
    })


def started_checks(up: UpProcess) -> list[int]:
    return sorted(int(mark.stem) for mark in (up.home.parent / "marks").glob("*.started"))


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
