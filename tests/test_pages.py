"""The dashboard pages and badges over a real uvicorn server on loopback: content, escaping, access."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import httpx
import pytest

from api.app import create_app
from api_support import live_server
from api.badges import render_badge
from api.dashboard import render_markdown, stale_cutoff
from reconciler.clock import FakeClock
from reconciler.settings import Settings
from reconciler.store import Database
from reconciler.tokens import create_token
from store_support import answer
from store_support import new_result

SCRIPT = "<script>alert('pwned')</script>"


def record(store: Database, clock: FakeClock, check: str, service: str | None, result: str, message: str | None = None,
           url: str | None = None) -> int:
    """One finished result for (check, service), created and completed at the clock's time."""
    row = new_result(store, check, service, now=clock.now())
    answer(store, row["id"], result, now=clock.now(), message=message, url=url)
    return row["id"]


def populate(store: Database, clock: FakeClock) -> dict[str, int]:
    """A little history on the example catalog: passes, a failure with a hostile message, a pending run."""
    ids = {}
    clock.advance(timedelta(days=-3))
    ids["old_pass"] = record(store, clock, "has-owner", "payments-api", "pass")
    clock.advance(timedelta(days=3))
    ids["script"] = record(store, clock, "has-owner", "admin-console", "fail", message=SCRIPT,
                           url="javascript:alert(1)")
    ids["pass"] = record(store, clock, "has-owner", "payments-api", "pass", url="https://ci.example/run/1")
    ids["org"] = record(store, clock, "github-org-audit", None, "warning", message="2 admins without 2FA")
    ids["pending"] = new_result(store, "readme-present", "storefront-web", now=clock.now())["id"]
    return ids


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def site(synced_store: Database, clock: FakeClock):
    """(base URL, result ids) of a public-read server over the example catalog with some history."""
    ids = populate(synced_store, clock)
    app = create_app(synced_store, Settings(home=Path("unused"), public_read=True), clock=clock)
    with live_server(app) as base:
        yield base, ids


@pytest.fixture
def private_site(synced_store: Database, clock: FakeClock):
    """(base URL, read token, results-only token) of a server without public read."""
    populate(synced_store, clock)
    reader = create_token(synced_store, "auditor", ["read"], now=clock.now())
    writer = create_token(synced_store, "action", ["results:write"], now=clock.now())
    app = create_app(synced_store, Settings(home=Path("unused"), public_read=False), clock=clock)
    with live_server(app) as base:
        yield base, reader, writer


def test_dashboard_shows_every_service_against_every_check_with_symbols(site):
    base, ids = site
    page = httpx.get(base + "/")
    assert page.status_code == 200
    assert page.headers["content-type"].startswith("text/html")
    html = page.text
    for name in ("Payments API", "Admin Console", "Legacy Reports", "Has an owner", "Log4j vulnerability"):
        assert name in html
    assert f'href="/results/{ids["script"]}"' in html and "✗" in html and "✓" in html
    assert 'scope="col"' in html and 'scope="row"' in html
    assert "1</strong> services failing" in html
    assert "Last sync" in html and "applied" in html


def test_dashboard_sorts_services_by_priority(site):
    base, _ = site
    html = httpx.get(base + "/").text
    # payments-api is priority 1, admin-console 5, legacy-reports lower still
    assert html.index("/services/payments-api") < html.index("/services/admin-console")


def test_dashboard_filters_by_owner_type_and_tag(site):
    base, _ = site
    html = httpx.get(base + "/", params={"tag": "pci"}).text
    assert "/services/payments-api" in html and "/services/admin-console" not in html
    html = httpx.get(base + "/", params={"owner": "team-payments", "type": "web"}).text
    assert "/services/payments-api" in html and "/services/users-db" not in html
    html = httpx.get(base + "/", params={"owner": "nobody-owns-this"}).text
    assert "No services match" in html


def test_result_message_with_a_script_tag_is_escaped_everywhere(site):
    base, ids = site
    for path in (f"/results/{ids['script']}", "/results", "/services/admin-console"):
        html = httpx.get(base + path).text
        assert SCRIPT not in html, path
        assert "&lt;script&gt;" in html, path


def test_result_page_never_links_a_javascript_url(site):
    base, ids = site
    html = httpx.get(base + f"/results/{ids['script']}").text
    assert 'href="javascript:' not in html
    assert "not an http link" in html
    assert 'href="https://ci.example/run/1"' in httpx.get(base + f"/results/{ids['pass']}").text


def test_service_page_shows_fields_dependencies_dependents_and_timeline(site):
    base, ids = site
    html = httpx.get(base + "/services/payments-api").text
    assert "team-payments" in html and "#payments" in html
    assert 'href="/services/payments-db"' in html           # a dependency
    assert 'href="/services/admin-console"' in html         # a dependent: admin-console uses payments-api
    assert '<svg class="timeline"' in html and "last 2: 2 pass" in html
    assert "/badges/services/payments-api.svg" in html


def test_service_description_markdown_is_rendered_without_raw_html_or_unsafe_links():
    html = render_markdown("**bold** <img src=x onerror=alert(1)> [x](javascript:alert(1)) [ok](https://a.example)")
    assert "<strong>bold</strong>" in html
    assert "<img" not in html and "&lt;img" in html
    assert 'href="javascript:' not in html
    assert 'href="https://a.example"' in html


def test_check_page_shows_schedule_targets_latest_per_service_and_pass_rate(site):
    base, _ = site
    html = httpx.get(base + "/checks/has-owner").text
    assert "hourly" in html and "all active services" in html and "30 min" in html
    assert 'href="/services/admin-console"' in html and "Pass rate" in html
    assert "67%" in html or "50%" in html  # today: 1 of 2 passed; 3 days ago: 1 of 1
    html = httpx.get(base + "/checks/oncall-configured").text
    assert "cron 0 9 * * 1-5" in html and "listed services" in html
    html = httpx.get(base + "/checks/github-org-audit").text
    assert "(organisation)" in html and "warning" in html


def test_results_page_filters_and_pages(site):
    base, ids = site
    html = httpx.get(base + "/results", params={"result": "fail"}).text
    assert f'href="/results/{ids["script"]}"' in html and f'href="/results/{ids["pass"]}"' not in html
    html = httpx.get(base + "/results", params={"status": "pending"}).text
    assert f'href="/results/{ids["pending"]}"' in html and f'href="/results/{ids["pass"]}"' not in html
    html = httpx.get(base + "/results", params={"before": ids["pass"]}).text
    assert f'href="/results/{ids["pass"]}"' not in html and f'href="/results/{ids["old_pass"]}"' in html


def test_results_page_filters_by_a_typed_service_slug_with_suggestions(site):
    """The service filter is a field that takes a slug (a catalog of 10,000 services made a select of
    10,000 options); a small catalog's services are suggested as you type; an unknown slug is explained."""
    base, ids = site
    html = httpx.get(base + "/results", params={"service": "admin-console"}).text
    assert f'href="/results/{ids["script"]}"' in html and f'href="/results/{ids["pass"]}"' not in html
    assert 'name="service" value="admin-console"' in html
    assert '<datalist id="service-choices">' in html and '<option value="payments-api">' in html
    page = httpx.get(base + "/results", params={"service": "<i>no-such</i>"})
    assert page.status_code == 200 and "unknown service" in page.text and "<i>no-such</i>" not in page.text
    assert f'href="/results/{ids["pass"]}"' in page.text  # the filter is dropped, as for an unknown result


def test_results_page_suggests_no_services_past_the_limit(store, tmp_path):
    """Past SERVICE_CHOICES services the field suggests none (the page stays small); a typed slug filters."""
    from api.pages import SERVICE_CHOICES
    from conftest import sync_directory, write_catalog

    root = write_catalog(
        tmp_path / "catalog",
        [{"name": f"Service {n:03d}", "slug": f"service-{n:03d}", "priority": 3} for n in range(SERVICE_CHOICES + 1)],
        [{"name": "Has owner", "slug": "has-owner", "frequency": "daily", "services": "all"}],
    )
    assert sync_directory(store, root).outcome == "applied"
    last = new_result(store, "has-owner", f"service-{SERVICE_CHOICES:03d}")
    other = new_result(store, "has-owner", "service-000")
    with live_server(create_app(store, Settings(home=tmp_path, public_read=True), sync_trigger=lambda: None)) as base:
        html = httpx.get(base + "/results", params={"service": f"service-{SERVICE_CHOICES:03d}"}).text
    assert "<datalist" not in html and f'name="service" value="service-{SERVICE_CHOICES:03d}"' in html
    assert f'href="/results/{last["id"]}"' in html and f'href="/results/{other["id"]}"' not in html


def test_results_page_explains_an_unknown_filter_value_instead_of_failing(site):
    base, _ = site
    page = httpx.get(base + "/results", params={"result": "<b>nope</b>"})
    assert page.status_code == 200
    assert "unknown result" in page.text and "<b>nope</b>" not in page.text


def test_unknown_service_check_and_result_are_html_404_pages(site):
    base, _ = site
    for path in ("/services/no-such-service", "/checks/no-such-check", "/results/999999"):
        page = httpx.get(base + path)
        assert page.status_code == 404, path
        assert page.headers["content-type"].startswith("text/html") and "does not exist" in page.text


def test_a_query_a_page_cannot_take_is_an_html_400_page(site):
    """A browser was shown raw JSON for `?page=0`."""
    base, _ = site
    for path, key in (("/scorecards/production-readiness?page=0", "page"), ("/scorecards/production-readiness?page=abc", "page"),
                      ("/results?before=x", "before"), ("/sync?before=x", "before")):
        response = httpx.get(base + path, timeout=10)
        assert response.status_code == 400, path
        assert response.headers["content-type"].startswith("text/html"), path
        assert "Bad request" in response.text and f"{key}:" in response.text, path


def test_sync_page_lists_runs_and_per_file_errors(synced_store, example_dir, clock):
    from conftest import sync_directory

    (example_dir / "services" / "payments-api.yaml").write_text("name: Payments API\npriority: 11\n")
    sync_directory(synced_store, example_dir)
    app = create_app(synced_store, Settings(home=Path("unused"), public_read=True), clock=clock)
    with live_server(app) as base:
        html = httpx.get(base + "/sync").text
        assert "services/payments-api.yaml:2:" in html and "priority" in html
        assert "Files failing now" in html
        assert "failed to apply" in httpx.get(base + "/").text


def test_stale_results_are_marked(site, clock):
    base, _ = site
    clock.advance(timedelta(hours=2))  # has-owner is hourly with a 30 min timeout
    html = httpx.get(base + "/services/payments-api").text
    assert "stale" in html and "2 h ago" in html


def test_stale_cutoff_follows_frequency_cron_and_never_for_ad_hoc(clock):
    hourly = {"schedule": None, "frequency": "hourly", "timeout_seconds": 1800}
    assert stale_cutoff(hourly, clock.now()) == "2026-01-05T10:30:00.000000Z"
    weekdays = {"schedule": "0 9 * * 1-5", "frequency": None, "timeout_seconds": 3600}
    assert stale_cutoff(weekdays, clock.now()) == "2026-01-05T09:00:00.000000Z"  # Monday 12:00
    assert stale_cutoff({"schedule": None, "frequency": "ad-hoc", "timeout_seconds": 60}, clock.now()) is None


def test_badges_are_svg_and_cacheable(site):
    base, _ = site
    badge = httpx.get(base + "/badges/services/payments-api.svg")
    assert badge.status_code == 200 and badge.headers["content-type"].startswith("image/svg+xml")
    assert "passing" in badge.text and "public, max-age=300" == badge.headers["cache-control"]
    again = httpx.get(base + "/badges/services/payments-api.svg", headers={"If-None-Match": badge.headers["etag"]})
    assert again.status_code == 304
    assert "1 failing" in httpx.get(base + "/badges/services/admin-console.svg").text
    assert "unknown" in httpx.get(base + "/badges/services/users-db.svg").text
    assert "fail" in httpx.get(base + "/badges/services/admin-console/has-owner.svg").text
    assert "unknown" in httpx.get(base + "/badges/services/storefront-web/readme-present.svg").text


def test_badge_for_unknown_service_or_without_svg_suffix_is_404(site):
    base, _ = site
    assert httpx.get(base + "/badges/services/no-such.svg").status_code == 404
    assert httpx.get(base + "/badges/services/payments-api.png").status_code == 404
    assert httpx.get(base + "/badges/services/payments-api/no-such.svg").status_code == 404


def test_badge_text_is_escaped():
    svg = render_badge("<a>", "x&y", "#000")
    assert "<a>" not in svg and "&lt;a&gt;" in svg and "x&amp;y" in svg


def test_without_public_read_a_page_redirects_to_login_and_a_badge_is_401(private_site):
    base, _, _ = private_site
    page = httpx.get(base + "/services/payments-api?x=1", follow_redirects=False)
    assert page.status_code == 303
    assert page.headers["location"] == "/login?next=%2Fservices%2Fpayments-api%3Fx%3D1"
    assert httpx.get(base + "/badges/services/payments-api.svg").status_code == 401
    assert httpx.get(base + "/api/services").status_code == 401  # the API still answers JSON


def test_login_sets_an_httponly_samesite_cookie_and_returns_to_the_page(private_site):
    base, reader, _ = private_site
    with httpx.Client(base_url=base) as browser:
        answer = browser.post("/login", data={"token": reader, "next": "/checks/has-owner"}, follow_redirects=False)
        assert answer.status_code == 303 and answer.headers["location"] == "/checks/has-owner"
        cookie = answer.headers["set-cookie"].lower()
        assert "catalog_token=" in cookie and "httponly" in cookie and "samesite=lax" in cookie and "path=/" in cookie
        assert browser.get("/checks/has-owner").status_code == 200
        assert browser.get("/badges/services/payments-api.svg").status_code == 200
        out = browser.post("/logout", follow_redirects=False)
        assert out.status_code == 303
        browser.cookies.clear()
        assert browser.get("/", follow_redirects=False).status_code == 303


def test_login_refuses_bad_tokens_and_foreign_redirects(private_site):
    base, _, writer = private_site
    bad = httpx.post(base + "/login", data={"token": "cat_wrong", "next": "/"})
    assert bad.status_code == 401 and "unknown or revoked" in bad.text and "set-cookie" not in bad.headers
    no_scope = httpx.post(base + "/login", data={"token": writer, "next": "/"})
    assert no_scope.status_code == 401 and "lacks the" in no_scope.text
    empty = httpx.post(base + "/login", data={"token": "", "next": "/"})
    assert empty.status_code == 401 and "Paste a token" in empty.text


def test_the_sign_in_cookie_authorizes_reads_only(private_site, synced_store):
    """A form another site posts carries the cookie (SameSite=Lax does not stop a page on another port
    of the host): with an admin token signed in, it ran checks and syncs."""
    from reconciler.tokens import create_token

    base, _, _ = private_site
    admin = create_token(synced_store, "root", ["admin"], now=FakeClock().now())
    cookies = {"catalog_token": admin}
    assert httpx.get(base + "/api/services", cookies=cookies).status_code == 200
    for method, path in (("POST", "/api/sync"), ("POST", "/api/checks/has-owner/run")):
        refused = httpx.request(method, base + path, cookies=cookies, data={"x": "1"})
        assert refused.status_code == 401, path
        assert "the sign-in cookie authorizes reads only" in refused.json()["message"]
    sent = httpx.post(base + "/api/sync", headers={"Authorization": f"Token {admin}"})
    assert sent.status_code == 202


def test_login_and_logout_posted_by_another_site_are_refused(private_site):
    base, reader, _ = private_site
    evil = {"Origin": "http://127.0.0.1:18650"}  # a page on another port of the same host
    signed = httpx.post(base + "/login", data={"token": reader, "next": "/"}, headers=evil, follow_redirects=False)
    assert signed.status_code == 403 and "set-cookie" not in signed.headers and "another site" in signed.text
    assert httpx.post(base + "/logout", headers=evil, follow_redirects=False).status_code == 403
    own = httpx.post(base + "/login", data={"token": reader, "next": "/"}, headers={"Origin": base},
                     follow_redirects=False)
    assert own.status_code == 303 and "catalog_token=" in own.headers["set-cookie"]


def test_pages_and_the_sign_in_form_may_not_be_framed_by_another_site(site):
    base, _ = site
    for path in ("/", "/login", "/services/payments-api", "/services/nope"):
        response = httpx.get(base + path)
        assert response.headers["x-frame-options"] == "DENY", path
        assert response.headers["content-security-policy"] == "frame-ancestors 'none'", path


def test_login_never_redirects_off_site(private_site):
    base, reader, _ = private_site
    for target in ("https://evil.example/", "//evil.example/x", "/\\evil.example"):
        answer = httpx.post(base + "/login", data={"token": reader, "next": target}, follow_redirects=False)
        assert answer.headers["location"] == "/", target


def test_pages_make_no_external_requests(site):
    base, _ = site
    for path in ("/", "/services/payments-api", "/checks/has-owner", "/results", "/sync", "/login"):
        html = httpx.get(base + path).text
        assert 'src="http' not in html and 'href="//' not in html and "stylesheet\" href=\"http" not in html, path
