"""Scorecard, team and campaign pages in headless Chromium against a real server: links, no outside
requests, no script run from user text, readable at a phone's width."""

from __future__ import annotations

import pytest

from test_api_scorecards import HOSTILE, site  # noqa: F401  (the fixture)
from test_browser import ARTIFACTS, CHROMIUM, browser  # noqa: F401  (the fixture)

pytestmark = [
    pytest.mark.browser,
    pytest.mark.skipif(not CHROMIUM.exists(), reason="needs /usr/bin/chromium: apt-get install -y chromium"),
]


def _watched(context, base: str):
    page = context.new_page()
    problems: list[str] = []
    page.on("request", lambda request: None if request.url.startswith(base) else problems.append(request.url))
    page.on("pageerror", lambda error: problems.append(str(error)))
    page.on("dialog", lambda dialog: problems.append(f"a dialog opened: {dialog.message}"))
    return page, problems


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
def test_scorecard_pages_are_reachable_by_links(browser, site):  # noqa: F811
    context = browser.new_context(viewport={"width": 1280, "height": 800})
    page, problems = _watched(context, site)
    page.goto(site + "/")
    page.get_by_role("link", name="Scorecards", exact=True).click()
    page.wait_for_url(site + "/scorecards")
    page.get_by_role("link", name="Production readiness").first.click()
    page.wait_for_url(site + "/scorecards/production-readiness")
    assert page.locator("svg.trend rect").count() >= 1
    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / "scorecard.png"), full_page=True)
    page.get_by_role("link", name="team-payments").first.click()
    page.wait_for_url(site + "/teams/team-payments")
    assert "Remove log4j" in page.locator("main").inner_text()
    page.get_by_role("link", name="Remove log4j").click()
    page.wait_for_url(site + "/campaigns/log4j-2026")
    assert "overdue" in page.locator("main").inner_text()
    page.goto(site + "/teams/team-discovery")
    assert HOSTILE in page.locator("main").inner_text()  # shown as text, never run
    context.close()
    assert not problems, problems


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
def test_scorecard_pages_fit_a_phone(browser, site):  # noqa: F811
    context = browser.new_context(viewport={"width": 390, "height": 844}, is_mobile=True)
    page, problems = _watched(context, site)
    for path in ("/scorecards", "/scorecards/production-readiness", "/teams/team-payments", "/campaigns/log4j-2026"):
        page.goto(site + path)
        width = page.evaluate("document.documentElement.scrollWidth")
        page.screenshot(path=str(ARTIFACTS / f"phone{path.replace('/', '-')}.png"), full_page=True)
        assert width <= 400, f"{path} scrolls sideways on a phone ({width}px)"
    context.close()
    assert not problems, problems
