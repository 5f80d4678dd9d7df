"""Two real `catalog up` processes on one PostgreSQL: one catalog, one leader, nothing sent twice or lost."""

from __future__ import annotations

import threading
import time
from collections import Counter
from pathlib import Path

import psycopg
import pytest
import requests
import yaml

from e2e_support import (
    DROPPED_CHECKS,
    INITIAL_PAIRS,
    ActionPlayer,
    CatalogRemote,
    UpProcess,
    create_token,
    history_ids,
    push_webhook,
    wait_for,
)
from github_standin import GitHubStandIn

pytestmark = pytest.mark.e2e

WEBHOOK_SECRET = "replicas-webhook-secret"
GITHUB_TOKEN = "replicas-github-token"
NEW_SERVICE = {"name": "Checkout Web", "slug": "checkout-web", "priority": 2, "type": "web",
               "repository": "acme-rockets/checkout-web"}


class Replicas:
    """One catalog remote, one GitHub stand-in playing the Actions, two `catalog up` on one database,
    each with a home (checkout, write-back clone) of its own."""

    def __init__(self, root: Path, database_url: str):
        self.remote = CatalogRemote(root, drop_checks=DROPPED_CHECKS)
        self.database_url = database_url
        token = create_token(root / "home-a", "actions", "results:write", database_url=database_url)
        self.actions = ActionPlayer(root, token)
        self.actions.hold()
        self.github = GitHubStandIn(token=GITHUB_TOKEN, on_dispatch=self.actions.on_dispatch).start()
        env = {
            "CATALOG_DATABASE_URL": database_url,
            "CATALOG_REPO": str(self.remote.bare),
            "CATALOG_DISPATCHER": "github",
            "CATALOG_GITHUB_API_URL": self.github.url,
            "CATALOG_GITHUB_TOKEN": GITHUB_TOKEN,
            "CATALOG_WEBHOOK_SECRET": WEBHOOK_SECRET,
            "CATALOG_PUBLIC_READ": "true",
            "CATALOG_SYNC_INTERVAL": "3600",  # syncs come from webhooks: the test says when
            "CATALOG_DISPATCH_INTERVAL": "1",
            "CATALOG_WRITEBACK_INTERVAL": "1",
            "CATALOG_LEADER_INTERVAL": "1",
        }
        self.ups = [UpProcess(root / f"home-{name}", env, name=f"replica-{name}") for name in ("a", "b")]

    def close(self) -> None:
        for up in self.ups:
            up.stop()
        self.actions.stop()
        self.github.stop()

    def leader(self) -> UpProcess:
        leading = [up for up in self.ups if up.process.poll() is None and "leading:" in up.log_text()]
        assert len(leading) == 1, [up.log_tail(20) for up in self.ups]
        return leading[0]

    def dispatch_counts(self) -> Counter:
        return Counter((d.body["event_type"], d.body["client_payload"]["service"]) for d in self.github.dispatches)

    def settled(self, up: UpProcess, pairs: int):
        """Every result completed and written back (by whichever process led), or None."""
        results = up.results()
        if len(results) != pairs or any(r["status"] != "completed" for r in results) or not self.actions.idle():
            return None
        return results if sorted(history_ids(self.remote.bare)) == sorted(r["id"] for r in results) else None


@pytest.fixture
def replicas(tmp_path, postgres_server):
    replicas = Replicas(tmp_path, postgres_server.new_database())
    try:
        for up in replicas.ups:
            up.start()
        yield replicas
    finally:
        replicas.close()


def test_two_replicas_dispatch_each_pair_once_and_one_of_64_racing_answers_wins(replicas):
    a, b = replicas.ups
    wait_for(lambda: len(replicas.github.dispatches) >= INITIAL_PAIRS, "every pair dispatched", timeout=30)
    wait_for(lambda: all(r["status"] == "sent" for r in a.results()) and len(a.results()) == INITIAL_PAIRS,
             "results marked sent")
    assert [up for up in replicas.ups if "leading:" in up.log_text()] == [replicas.leader()]
    follower = b if replicas.leader() is a else a
    assert "following:" in follower.log_text()

    target = a.results()[0]["id"]
    start, statuses = threading.Barrier(64), []

    def answer(base: str) -> None:
        start.wait()
        response = requests.patch(f"{base}/api/results/{target}", data={"result": "fail"},
                                  headers={"Authorization": f"Token {replicas.actions.token}"}, timeout=30)
        statuses.append(response.status_code)

    threads = [threading.Thread(target=answer, args=(up.base,)) for up in replicas.ups for _ in range(32)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert sorted(Counter(statuses).items()) == [(200, 1), (409, 63)]
    assert b.get(f"/api/results/{target}")["result"] == "fail"

    replicas.actions.release()
    results = wait_for(lambda: replicas.settled(a, INITIAL_PAIRS), "every result completed and written back", timeout=45)
    counts = replicas.dispatch_counts()
    assert len(counts) == INITIAL_PAIRS and set(counts.values()) == {1}, counts
    assert {r["id"]: r["result"] for r in results}[target] == "fail"  # the Action's later "pass" got a 409


def test_kill_9_of_the_leader_and_the_follower_takes_over_losing_nothing(replicas):
    replicas.actions.release()
    wait_for(lambda: replicas.settled(replicas.ups[0], INITIAL_PAIRS), "the first pass answered and written back",
             timeout=45)
    leader = replicas.leader()
    follower = next(up for up in replicas.ups if up is not leader)

    leader.kill()
    killed_at = time.monotonic()
    wait_for(lambda: "leading:" in follower.log_text(), "the follower to take the lead", timeout=30)
    takeover = time.monotonic() - killed_at
    print(f"\nthe follower led {takeover:.1f} s after kill -9 of the leader")
    assert takeover < 30

    # A push announced to the new leader is synced and its new pair dispatched, answered and written back.
    sha = replicas.remote.commit_and_push("Add checkout-web", {"services/checkout-web.yaml": yaml.safe_dump(NEW_SERVICE)})
    response = push_webhook(follower.base, WEBHOOK_SECRET, after=sha)
    assert response.status_code == 202, response.text
    results = wait_for(lambda: replicas.settled(follower, INITIAL_PAIRS + 1), "the new pair answered and written back",
                       timeout=45)
    counts = replicas.dispatch_counts()
    assert ("readme-present", "checkout-web") in counts and set(counts.values()) == {1}, counts
    ids = history_ids(replicas.remote.bare)
    assert sorted(ids) == sorted(r["id"] for r in results) and len(ids) == len(set(ids))


def test_a_webhook_that_reaches_a_follower_is_honoured(replicas):
    wait_for(lambda: any("leading:" in up.log_text() for up in replicas.ups), "a leader")
    follower = next(up for up in replicas.ups if up is not replicas.leader())
    sha = replicas.remote.commit_and_push("Add checkout-web", {"services/checkout-web.yaml": yaml.safe_dump(NEW_SERVICE)})
    assert push_webhook(follower.base, WEBHOOK_SECRET, after=sha).status_code == 202
    run = wait_for(lambda: (r := follower.get("/api/sync")["last_run"]) and r["applied_revision"] == sha and r,
                   "the follower's sync of the push")
    assert run["created"] == 1
    assert follower.get("/api/services/checkout-web")["name"] == "Checkout Web"


def test_a_leader_that_loses_its_lock_sends_nothing_more_and_says_following_each_time(tmp_path, postgres_server):
    # One `catalog up` whose check scripts take 2 s each (a pass of 6 takes 12 s); the test plays the
    # other replica: it ends the leader's lock session, as a lost connection would, and takes the lock.
    from e2e_support import local_up, started_checks

    database_url = postgres_server.new_database()
    up = local_up(tmp_path, database_url, check_seconds=2, CATALOG_LEADER_INTERVAL="1").start()
    try:
        in_flight = 0
        for loss in (1, 2):
            wait_for(lambda: up.log_text().count("leading:") == loss, "the replica to lead")
            wait_for(lambda: len(started_checks(up)) > in_flight, "a check script to start", timeout=30)
            with psycopg.connect(database_url, autocommit=True) as other_replica:
                take_the_leader_lock(other_replica)
                wait_for(lambda: up.log_text().count("lost the leader lock") == loss, "the loss to be seen")
                in_flight = len(started_checks(up))
                wait_for(lambda: up.log_text().count("following:") == loss, "the replica to follow", timeout=5)
                time.sleep(3)  # longer than a check script: the pass would have started the next one
                assert len(started_checks(up)) == in_flight, "no check started after the loss"
    finally:
        up.stop()


def take_the_leader_lock(conn) -> None:
    """End the session holding `catalog up`'s leader lock and hold the lock on `conn` instead."""
    key = "classid, objid"
    holder = conn.execute(f"SELECT pid, {key} FROM pg_locks WHERE locktype = 'advisory' AND granted"
                          " AND objid = 6 AND objsubid = 2").fetchone()
    assert holder, "a leader holds the lock"
    pid, app_key, lock = holder
    conn.execute("SELECT pg_terminate_backend(%s)", (pid,))
    conn.execute("SELECT pg_advisory_lock(%s, %s)", (int(app_key), int(lock)))
