"""Done means: `catalog up` with a route for team-payments tells a local receiver of each change once."""

from __future__ import annotations

import pytest
import requests
import yaml

from conftest import BACKENDS
from e2e_support import CatalogRemote, UpProcess, create_token, wait_for
from notify_receiver import Receiver

pytestmark = pytest.mark.e2e

ONLY_HAS_OWNER = ("log4j-vulnerability", "oncall-configured", "readme-present", "github-org-audit", "pci-dependency-review")


@pytest.fixture(params=BACKENDS)
def database_url(request, tmp_path):
    return None if request.param == "sqlite" else request.getfixturevalue("postgres_server").new_database()


def test_a_payments_check_that_fails_and_recovers_is_told_once_each_even_across_kill_9(tmp_path, database_url):
    remote = CatalogRemote(tmp_path, drop_checks=ONLY_HAS_OWNER)
    config = yaml.safe_load((remote.work / "catalog.yaml").read_text())
    config["notifications"] = [{"name": "payments-alerts", "url_env": "NOTIFY_PAYMENTS",
                                "events": ["failing", "recovered"], "services": {"owner": "team-payments"}}]
    remote.commit_and_push("Tell team-payments", {"catalog.yaml": yaml.safe_dump(config, sort_keys=False)})
    home = tmp_path / "home"
    url = database_url or f"sqlite://{home / 'catalog.db'}"
    token = create_token(home, "action", "results:write", "checks:run", database_url=url)
    headers = {"Authorization": f"Token {token}"}
    with Receiver() as receiver:
        env = {"CATALOG_DATABASE_URL": url, "CATALOG_REPO": str(remote.bare), "CATALOG_DISPATCHER": "log",
               "CATALOG_PUBLIC_READ": "true", "CATALOG_DISPATCH_INTERVAL": "1", "CATALOG_NOTIFY_INTERVAL": "1",
               "NOTIFY_PAYMENTS": f"json://127.0.0.1:{receiver.port}/payments"}
        up = UpProcess(home, env, name="notify").start()
        try:
            def answer_latest(outcome: str) -> None:
                run = wait_for(lambda: up.results(service="payments-api", status="sent"), "a sent payments-api run")
                response = requests.patch(f"{up.base}/api/results/{run[0]['id']}", json={"result": outcome},
                                          headers=headers, timeout=10)
                assert response.status_code == 200, response.text

            def run_again() -> None:
                response = requests.post(f"{up.base}/api/checks/has-owner/run", params={"service": "payments-api"},
                                         headers=headers, timeout=10)
                assert response.status_code == 201, response.text

            for service in ("users-api", "ledger-worker"):  # other answers: nothing to tell
                run = wait_for(lambda: up.results(service=service, status="sent"), f"a sent {service} run")
                requests.patch(f"{up.base}/api/results/{run[0]['id']}", json={"result": "pass"}, headers=headers, timeout=10)
            answer_latest("pass")
            run_again()
            answer_latest("fail")
            wait_for(lambda: receiver.messages, "the failing message", timeout=30)
            run_again()
            answer_latest("pass")
            wait_for(lambda: len(receiver.messages) >= 2, "the recovered message", timeout=30)
            up.kill()
            up.start()
            run_again()
            answer_latest("fail")
            wait_for(lambda: len(receiver.messages) >= 3, "a failing message after the restart", timeout=30)
            events = up.get("/api/events")["events"]
        finally:
            up.stop()
    assert [e["type"] for e in reversed(events)] == ["failing", "recovered", "failing"]
    titles = [m.json["title"] for m in receiver.messages]
    assert titles == ["payments-api: check has-owner is failing (fail)", "payments-api: check has-owner recovered (pass)",
                      "payments-api: check has-owner is failing (fail)"]
    assert [m.event_ids() for m in receiver.messages] == [[e["id"]] for e in reversed(events)]
