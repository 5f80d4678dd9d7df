"""Scorecards, teams and campaigns over a real server: the JSON reads, the pages, the level badge."""

from __future__ import annotations

import re
from pathlib import Path

import httpx
import pytest

from api.app import create_app
from api_support import live_server
from conftest import CAMPAIGN_DEADLINE, WAIVER_EXPIRES, sync_directory
from reconciler import scorecards
from reconciler.clock import FakeClock
from reconciler.settings import Settings
from store_support import finished_result

HOSTILE = "<script>alert('pwned')</script>"


@pytest.fixture
def site(store, example_dir):
    """A public-read server over the example catalog, with a hostile reason, owner and level name."""
    waiver = example_dir / "waivers" / "search-index-log4j.yaml"
    waiver.write_text(re.sub(r"(?m)^reason: .*$", f'reason: "{HOSTILE}"', waiver.read_text()))
    card = example_dir / "scorecards" / "production-readiness.yaml"
    card.write_text(card.read_text().replace("name: Silver", "name: \"Silver <b>&\""))
    campaign = example_dir / "campaigns" / "log4j-2026.yaml"
    campaign.write_text(campaign.read_text().replace(f"deadline: {CAMPAIGN_DEADLINE}", "deadline: 2025-12-31"))
    report = sync_directory(store, example_dir)
    assert not report.errors, report.errors
    clock = FakeClock()
    for check in ("has-owner", "readme-present", "oncall-configured", "log4j-vulnerability"):
        finished_result(store, check, "payments-api", "pass", now=clock.now())
    finished_result(store, "has-owner", "payments-db", "pass", now=clock.now())
    scorecards.snapshot(store, clock.now())
    app = create_app(store, Settings(home=Path("unused"), public_read=True), clock=clock)
    with live_server(app) as base:
        yield base


def test_scorecard_api_lists_services_by_level_with_a_trend(site):
    cards = httpx.get(f"{site}/api/scorecards").json()["scorecards"]
    assert [c["slug"] for c in cards] == ["production-readiness"]
    assert cards[0]["by_level"] == {"none": 6, "Bronze": 0, "Silver <b>&": 1, "Gold": 1}
    card = httpx.get(f"{site}/api/scorecards/production-readiness").json()
    assert card["service_levels"][0]["service"] == "payments-api" and card["service_levels"][0]["level"] == "Gold"
    assert card["trend"] == [{"day": "2026-01-05", "by_level": {"none": 6, "Bronze": 0, "Silver <b>&": 1, "Gold": 1}}]
    missing = httpx.get(f"{site}/api/scorecards/nope")
    assert missing.status_code == 404 and missing.json()["error"]["code"]


def test_team_and_campaign_api(site):
    teams = {t["owner"]: t for t in httpx.get(f"{site}/api/teams").json()["teams"]}
    assert teams["team-payments"]["scorecards"]["production-readiness"]["Gold"] == 1
    team = httpx.get(f"{site}/api/teams/team-payments").json()
    assert {"service": "ledger-worker", "scorecard": "production-readiness", "check": "has-owner", "state": "missing"} \
        in team["failing_checks"]
    assert team["campaigns"][0]["slug"] == "log4j-2026" and team["campaigns"][0]["met"] == 1
    discovery = httpx.get(f"{site}/api/teams/team-discovery").json()
    assert discovery["waivers"][0]["check"] == "log4j-vulnerability" and discovery["waivers"][0]["expires"] == str(WAIVER_EXPIRES)
    campaign = httpx.get(f"{site}/api/campaigns/log4j-2026").json()
    assert (campaign["targeted"], campaign["met"], campaign["overdue"]) == (3, 1, True)  # the pci services
    assert campaign["teams"] == [{"owner": "team-payments", "targeted": 3, "met": 1}]
    assert httpx.get(f"{site}/api/teams/nobody").status_code == 404


def test_a_team_groups_its_failing_checks_by_check_each_service_once_most_services_first(site):
    team = httpx.get(f"{site}/api/teams/team-payments").json()
    expected: dict[tuple[str, str], dict[str, list[str]]] = {}
    for failing in team["failing_checks"]:
        group = expected.setdefault((failing["check"], failing["state"]), {"scorecards": [], "services": []})
        for key, value in (("scorecards", failing["scorecard"]), ("services", failing["service"])):
            if value not in group[key]:
                group[key].append(value)
    groups = team["failing_by_check"]
    assert {(g["check"], g["state"]): {"scorecards": g["scorecards"], "services": g["services"]} for g in groups} == expected
    assert any(len(g["services"]) > 1 for g in groups)  # a check failing on several services is listed once
    assert [len(g["services"]) for g in groups] == sorted((len(g["services"]) for g in groups), reverse=True)
    page = httpx.get(f"{site}/teams/team-payments").text
    top = groups[0]
    assert f'<a href="/checks/{top["check"]}">{top["check"]}</a>' in page
    assert ", ".join(f'<a href="/services/{s}">{s}</a>' for s in top["services"]) in page


def test_pages_escape_user_text_and_make_no_external_requests(site):
    for path in ("/scorecards", "/scorecards/production-readiness", "/teams", "/teams/team-discovery",
                 "/campaigns", "/campaigns/log4j-2026", "/services/search-index", "/services/payments-api", "/"):
        page = httpx.get(site + path)
        assert page.status_code == 200, path
        assert HOSTILE not in page.text and "Silver <b>&" not in page.text, path
        assert not re.search(r'<(img|link|script|iframe)[^>]*(src|href)="(https?:)?//', page.text), path  # nothing remote
    assert "&lt;script&gt;" in httpx.get(f"{site}/teams/team-discovery").text
    assert "<svg" in httpx.get(f"{site}/scorecards/production-readiness").text


def test_the_level_badge(site):
    gold = httpx.get(f"{site}/badges/services/payments-api/scorecards/production-readiness.svg")
    assert gold.status_code == 200 and gold.headers["content-type"].startswith("image/svg+xml")
    assert "production-readiness: Gold" in gold.text
    assert "none" in httpx.get(f"{site}/badges/services/ledger-worker/scorecards/production-readiness.svg").text
    assert "not applicable" in httpx.get(f"{site}/badges/services/legacy-reports/scorecards/production-readiness.svg").text
    assert httpx.get(f"{site}/badges/services/payments-api/scorecards/nope.svg").status_code == 404


def test_the_dashboard_shows_each_services_level(site):
    page = httpx.get(site + "/").text
    assert "Production readiness</a>: 6 none · 0 Bronze · 1 Silver &lt;b&gt;&amp; · 1 Gold" in page
    assert '<td class="level-cell">Gold</td>' in page


def test_the_service_page_charts_a_year_of_its_level(site):
    page = httpx.get(site + "/services/payments-api").text
    assert 'aria-label="Payments API, Production readiness: level per day"' in page
    assert "2026-01-05: 1 Gold" in page


def test_todays_trend_shows_the_levels_as_they_stand_when_the_snapshot_came_first(store, example_dir):
    """`catalog up` takes the day's snapshot at its first pass, before any answer: the chart of the
    first day must still show today's levels, not nothing until tomorrow."""
    clock = FakeClock()
    assert not sync_directory(store, example_dir).errors
    scorecards.snapshot(store, clock.now())  # every service at no level yet
    for check in ("has-owner", "readme-present", "oncall-configured", "log4j-vulnerability"):
        finished_result(store, check, "payments-api", "pass", now=clock.now())
    app = create_app(store, Settings(home=Path("unused"), public_read=True), clock=clock)
    with live_server(app) as site:
        card = httpx.get(f"{site}/api/scorecards/production-readiness").json()
        assert card["trend"][-1]["day"] == clock.now().strftime("%Y-%m-%d")
        assert card["trend"][-1]["by_level"]["Gold"] == 1
        team = httpx.get(f"{site}/api/teams/team-payments").json()
        assert team["scorecards"][0]["trend"][-1]["by_level"]["Gold"] == 1


def test_a_team_whose_owner_holds_a_slash_or_a_hash_has_its_page_and_api(store, example_dir):
    """Backstage's `group:ops/sre` becomes the owner `ops/sre`; its links must lead to its team."""
    owners = {"users-api": "ops/sre", "catalog-api": "web #1 / front"}
    for slug, owner in owners.items():
        path = example_dir / "services" / f"{slug}.yaml"
        path.write_text(re.sub(r"(?m)^owner: .*$", f'owner: "{owner}"', path.read_text()))
    assert not sync_directory(store, example_dir).errors
    app = create_app(store, Settings(home=Path("unused"), public_read=True), clock=FakeClock())
    with live_server(app) as site:
        listing = httpx.get(f"{site}/teams").text
        for slug, owner in owners.items():
            link = re.search(r'<a href="(/teams/[^"]*)">' + re.escape(owner) + "</a>", listing)
            assert link, owner
            page = httpx.get(site + link.group(1))
            assert page.status_code == 200 and slug in page.text, owner
            api = httpx.get(site + link.group(1).replace("/teams/", "/api/teams/", 1))
            assert api.status_code == 200 and api.json()["owner"] == owner
        assert httpx.get(f"{site}/api/teams/ops/nobody").status_code == 404


def test_an_expired_waiver_shows_as_ended_on_the_team_and_service_pages(store, example_dir):
    waiver = example_dir / "waivers" / "search-index-log4j.yaml"
    waiver.write_text(waiver.read_text().replace(f"expires: {WAIVER_EXPIRES}", "expires: 2020-01-31"))
    assert not sync_directory(store, example_dir).errors  # applied, with a warning
    app = create_app(store, Settings(home=Path("unused"), public_read=True), clock=FakeClock())
    with live_server(app) as site:
        team = httpx.get(f"{site}/teams/team-discovery").text
        assert '<strong>waiver expired</strong>: <a href="/checks/log4j-vulnerability">log4j-vulnerability</a>' \
               " for search-index ended with 2020-01-31:" in team
        service = httpx.get(f"{site}/services/search-index").text
        assert "waiver expired: log4j-vulnerability ended with 2020-01-31:" in service
