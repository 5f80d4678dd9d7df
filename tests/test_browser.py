"""The dashboard in headless Chromium (Debian's package) against a real uvicorn server on loopback."""

from __future__ import annotations

from pathlib import Path

import pytest

from api.app import create_app
from reconciler.clock import FakeClock
from reconciler.settings import Settings
from api_support import live_server
from test_pages import SCRIPT, populate

CHROMIUM = Path("/usr/bin/chromium")
ARTIFACTS = Path(__file__).parent / "artifacts"
CHROMIUM_ARGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
]

pytestmark = [
    pytest.mark.browser,
    pytest.mark.skipif(not CHROMIUM.exists(), reason="needs /usr/bin/chromium: apt-get install -y chromium"),
]


@pytest.fixture(scope="module")
def browser():
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        yield chromium
        chromium.close()


@pytest.fixture
def site(synced_store):
    clock = FakeClock()
    ids = populate(synced_store, clock)
    app = create_app(synced_store, Settings(home=Path("unused"), public_read=True), clock=clock)
    with live_server(app) as base:
        yield base, ids


@pytest.fixture
def page(browser, site):
    base, _ = site
    context = browser.new_context(viewport={"width": 1280, "height": 800})
    page = context.new_page()
    outside: list[str] = []
    page.on("request", lambda request: None if request.url.startswith(base) else outside.append(request.url))
    errors: list[str] = []
    page.on("pageerror", lambda error: errors.append(str(error)))
    page.on("dialog", lambda dialog: errors.append(f"a dialog opened: {dialog.message}"))
    yield page
    context.close()
    assert not outside, f"the page requested outside URLs: {outside}"
    assert not errors, errors


def test_dashboard_loads_and_every_page_is_reachable_by_links(page, site):
    base, ids = site
    page.goto(base + "/")
    assert page.title() == "Dashboard · Service catalog"
    assert page.locator("table.matrix tbody tr").count() == 11
    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / "dashboard.png"), full_page=True)

    page.get_by_role("link", name="Payments API").first.click()
    page.wait_for_url(base + "/services/payments-api")
    assert page.locator("h1").inner_text().startswith("Payments API")
    assert page.locator("svg.timeline rect").count() >= 2
    page.get_by_role("link", name="Has an owner").first.click()
    page.wait_for_url(base + "/checks/has-owner")
    assert "hourly" in page.locator("dl.fields").inner_text()
    page.get_by_role("link", name="Results", exact=True).click()
    page.wait_for_url(base + "/results")
    page.locator(f'a[href="/results/{ids["pass"]}"]').first.click()
    page.wait_for_url(base + f"/results/{ids['pass']}")
    assert "Result" in page.locator("h1").inner_text()
    page.get_by_role("link", name="Sync", exact=True).click()
    page.wait_for_url(base + "/sync")
    assert "applied" in page.locator("table").inner_text()
    page.screenshot(path=str(ARTIFACTS / "sync.png"), full_page=True)


def test_filter_by_tag_narrows_the_matrix(page, site):
    base, _ = site
    page.goto(base + "/")
    page.get_by_label("Tag").select_option("pci")
    page.get_by_role("button", name="Filter").click()
    page.wait_for_url(base + "/?*tag=pci*")
    rows = page.locator("table.matrix tbody th[scope=row]").all_inner_texts()
    assert any("Payments API" in row for row in rows)
    assert not any("Admin Console" in row for row in rows)


def test_script_in_a_result_message_shows_as_text(page, site):
    base, ids = site
    page.goto(base + f"/results/{ids['script']}")
    assert page.locator("pre.message").inner_text() == SCRIPT
    assert page.locator("main script").count() == 0


def test_dashboard_is_readable_on_a_phone(browser, site):
    base, _ = site
    context = browser.new_context(viewport={"width": 390, "height": 844}, is_mobile=True)
    phone = context.new_page()
    phone.goto(base + "/services/payments-api")
    width = phone.evaluate("document.documentElement.scrollWidth")
    ARTIFACTS.mkdir(exist_ok=True)
    phone.screenshot(path=str(ARTIFACTS / "service-phone.png"), full_page=True)
    context.close()
    assert width <= 400, f"the service page scrolls sideways on a phone ({width}px)"
