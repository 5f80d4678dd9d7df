"""Two replicas writing one service's level at once: answers on both, and the leader's re-evaluation.

On PostgreSQL each writer reads the level rows it rewrites locked (`stored_levels`), in one order; a
writer that read the results before the lock would write a level from results already out of date.
"""

from __future__ import annotations

import threading
from datetime import datetime, timezone

from reconciler import scorecards
from reconciler.store import open_database
from store_support import new_result

CHECKS = ("has-owner", "readme-present", "oncall-configured", "log4j-vulnerability")


def _rows(store) -> set[tuple]:
    return {(r["rubric"], r["service"], r["level"], tuple(sorted(r["checks"].items()))) for r in store.scorecards.levels()}


def test_answers_and_a_full_evaluation_on_two_replicas_at_once_leave_the_levels_a_full_evaluation_gives(
        synced_store, database_url):
    store, now = synced_store, datetime.now(timezone.utc)
    services = sorted(store.catalog.service_index())
    targeted = store.dispatch.targeted_pairs()
    ids = {slug: row["id"] for slug, row in store.catalog.service_index().items()}
    check_ids = {slug: row["id"] for slug, row in store.catalog.check_index().items()}
    pairs = [(c, s) for s in services for c in CHECKS if (check_ids[c], ids[s]) in targeted]
    results = {pair: new_result(store, *pair, now=now)["id"] for pair in pairs}
    replica = open_database(database_url)
    start, failures = threading.Barrier(3), []

    def answer(db, checks):
        start.wait()
        for pair in pairs:
            if pair[0] in checks:
                db.results.answer([(results[pair], "pass", None, None, now)])

    def evaluate(db):
        start.wait()
        for _ in range(15):
            scorecards.evaluate_all(db, now)

    def guarded(work, *args):
        try:
            work(*args)
        except BaseException as error:  # noqa: BLE001 - reported by the test below
            failures.append(error)

    threads = [threading.Thread(target=guarded, args=args) for args in (
        (answer, store, CHECKS[0::2]), (answer, replica, CHECKS[1::2]), (evaluate, replica))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(120)
    replica.close()
    assert not failures, failures
    kept = _rows(store)
    assert scorecards.evaluate_all(store, now) == []  # nothing left for a full evaluation to change
    assert _rows(store) == kept
    readiness = [row for row in kept if row[0] == "production-readiness"]
    assert readiness and all(row[2] == 3 for row in readiness), readiness  # every check passed: all Gold
