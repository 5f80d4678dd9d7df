"""Server-rendered dashboard pages (Jinja2 through Litestar's template support), login and logout."""

from __future__ import annotations

from datetime import datetime
from pathlib import Path
from typing import Annotated, Any
from urllib.parse import quote, urlencode, urlsplit

from jinja2 import Environment, FileSystemLoader, StrictUndefined, select_autoescape
from litestar import Request, Response, Router
from litestar.datastructures import Cookie, State
from litestar.enums import RequestEncodingType
from litestar.exceptions import HTTPException, ValidationException
from litestar.params import Body, FromPath, FromQuery, QueryParameter
from litestar.plugins.jinja import JinjaTemplateEngine
from litestar.response import Redirect, Template
from litestar.static_files import create_static_files_router
from litestar.template.config import TemplateConfig

from api import dashboard
from api.auth import COOKIE_NAME, NotAuthenticated, identity_of, requires_read
from api.badges import BADGE_HANDLERS
from api.models import MAX_ID, given
from api.results import existing_result_id
from api.scorecards import chart, scorecard_badge
from reconciler import scorecard_views
from api.routing import get, post
from reconciler.errors import InvalidInput, NotFound
from reconciler.events import EVENT_TYPES
from reconciler.tokens import verify_token

TEMPLATE_DIR = Path(__file__).parent / "templates"
STATIC_DIR = Path(__file__).parent / "static"
MATRIX_PAGE_SIZE = 50
CHECK_PAGE_SIZE = 100  # services listed per page of a check's page
RESULTS_PAGE_SIZE = 50
SERVICE_CHOICES = 500  # services the results filter suggests; past it the field takes a typed slug only
COOKIE_MAX_AGE = 30 * 86400


def template_config() -> TemplateConfig:
    """Jinja2 templates from api/templates, autoescape on for every file."""
    environment = Environment(
        loader=FileSystemLoader(TEMPLATE_DIR),
        autoescape=select_autoescape(default=True, default_for_string=True),
        undefined=StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
    )
    environment.globals.update(symbols=dashboard.SYMBOLS, labels=dashboard.LABELS, outcome=dashboard.outcome)
    environment.filters["when"] = lambda text: text[:19].replace("T", " ") + " UTC" if text else "–"
    return TemplateConfig(instance=JinjaTemplateEngine.from_environment(environment))


# No other site may show a page in a frame (a sign-in form under someone else's page: clickjacking).
NOT_FRAMED = {"X-Frame-Options": "DENY", "Content-Security-Policy": "frame-ancestors 'none'"}


def _page(request: Request, name: str, status_code: int = 200, **context: Any) -> Template:
    identity = identity_of(request)
    context.setdefault("title", "")
    context.update(
        user=identity.name,
        public_read=request.app.state.settings.public_read,
        path=request.url.path,
    )
    return Template(template_name=name, context=context, status_code=status_code,
                    headers={"Cache-Control": "no-store", **NOT_FRAMED})


def _now(state: State) -> datetime:
    return state.clock.now()


def _query(**params: Any) -> str:
    """`?a=1&b=2` from the params that are set (for filter and paging links)."""
    kept = {key: value for key, value in params.items() if value not in (None, "")}
    return "?" + urlencode(kept) if kept else ""


# -- pages ------------------------------------------------------------------------------------------


@get("/", name="dashboard", sync_to_thread=True)
def show_dashboard(
    request: Request, state: State,
    owner: FromQuery[str | None] = None, type: FromQuery[str | None] = None, tag: FromQuery[str | None] = None,
    page: Annotated[int, QueryParameter(ge=1, le=100_000)] = 1,
) -> Template:
    store, now = state.store, _now(state)
    owner, type, tag = given(owner, type, tag)
    version = store.pages.version()  # (sync run, newest result, open results): read once per page
    grid = dashboard.matrix(store, version, now, owner=owner, type=type, tag=tag, page=page, per_page=MATRIX_PAGE_SIZE)
    last_sync = store.catalog.last_sync_run()
    return _page(
        request, "dashboard.html", title="Dashboard",
        grid=grid, rows=grid["rows"], page=grid["page"], pages=grid["pages"], service_count=grid["service_count"],
        facets=dashboard.facets(store, version, now), filters={"owner": owner or "", "type": type or "", "tag": tag or ""},
        page_link=lambda n: "/" + _query(owner=owner, type=type, tag=tag, page=n),
        last_sync=last_sync, last_sync_age=dashboard.age(last_sync["finished_at"] if last_sync else None, now),
        open_count=version[2], file_errors=store.catalog.file_errors(),
        scorecards=scorecard_views.scorecard_summaries(store),
        levels=scorecard_views.levels_by_service(store, [row["service"]["id"] for row in grid["rows"]]),
    )


@get("/services/{slug:str}", name="service", sync_to_thread=True)
def show_service(request: Request, state: State, slug: FromPath[str]) -> Template:
    store, now = state.store, _now(state)
    service = store.reads.service(slug)
    known = store.reads.service_names(service["dependencies"])
    entries = dashboard.service_checks(store, service, now)
    return _page(
        request, "service.html", title=service["name"], service=service,
        description=dashboard.render_markdown(service["description"]),
        repository_url=dashboard.repository_url(service["repository"]),
        dependencies=[{"slug": s, "known": known.get(s)} for s in service["dependencies"]],
        dependents=store.reads.dependents(slug), entries=entries,
        overall=dashboard.overall([entry["cell"] for entry in entries]),
        history=store.results.list(service=slug, limit=RESULTS_PAGE_SIZE),
        updated_age=dashboard.age(service["updated_at"], now),
        levels=[{**held, "chart": chart(held["trend"], held["levels"], f"{service['name']}, {held['name']}: level per day")}
                for held in scorecard_views.service_levels(store, service["id"], now)],
    )


@get("/checks/{slug:str}", name="check", sync_to_thread=True)
def show_check(
    request: Request, state: State, slug: FromPath[str], page: Annotated[int, QueryParameter(ge=1, le=100_000)] = 1
) -> Template:
    store, now = state.store, _now(state)
    check = store.reads.check(slug)
    running = store.pages.open_runs(check_id=check["id"])
    cutoff = dashboard.stale_cutoff(check, now)
    listed: list[int | None] = [None]  # a `services: none` check's one row, of no service
    if check["target_kind"] != "none":
        # Which services have a row is decided on ids alone (10,000 services decoded whole were 95 ms
        # of this page, their latest results as rows 21 ms: bench/bench_pages.py --services 10000);
        # one page of them is read and built.
        with_results = store.pages.services_with_results(check["id"])
        targeted = store.dispatch.targeted_pairs(check_ids=[check["id"]])
        listed = [
            service_id for service_id in store.reads.service_ids_by_priority()
            if service_id in with_results or (check["id"], service_id) in running
            or (check["id"], service_id) in targeted
        ]
    pages = max(1, -(-len(listed) // CHECK_PAGE_SIZE))
    page = min(page, pages)
    on_page = listed[(page - 1) * CHECK_PAGE_SIZE: page * CHECK_PAGE_SIZE]
    latest = store.pages.latest(check_id=check["id"], service_ids=[service_id or 0 for service_id in on_page])
    by_id = store.reads.services_by_id([service_id for service_id in on_page if service_id is not None])
    services = []
    for service_id in on_page:
        service = by_id[service_id] if service_id is not None else None
        pair = (check["id"], service_id or 0)
        one = dashboard.cell(latest.get(pair), running.get(pair), cutoff, True)
        services.append({"service": service, "cell": one, "age": dashboard.age(one.finished_at, now)})
    rates = dashboard.pass_rates(store, check, now)
    return _page(
        request, "check.html", title=check["name"], check=check,
        description=dashboard.render_markdown(check["description"]),
        schedule=dashboard.schedule_text(check, now), targets=dashboard.targets_text(check),
        timeout=dashboard.age_span(check["timeout_seconds"]), services=services, rates=rates,
        rate_days=sum(1 for r in rates if r["rate"] is not None),
        page=page, pages=pages, service_count=len(listed), first=(page - 1) * CHECK_PAGE_SIZE + 1,
        page_link=lambda n: f"/checks/{check['slug']}" + _query(page=n),
    )


@get("/results", name="results", sync_to_thread=True)
def list_results(
    request: Request, state: State,
    service: FromQuery[str | None] = None, check: FromQuery[str | None] = None, result: FromQuery[str | None] = None,
    status: FromQuery[str | None] = None, before: Annotated[int | None, QueryParameter(ge=1, le=MAX_ID)] = None,
) -> Template:
    store, now = state.store, _now(state)
    service, check, result, status = given(service, check, result, status)
    problems = []
    if result and result not in dashboard.RESULT_FILTERS:
        problems.append(f"unknown result {result!r}: use one of {', '.join(dashboard.RESULT_FILTERS)}")
        result = None
    if status and status not in dashboard.STATUS_FILTERS:
        problems.append(f"unknown status {status!r}: use one of {', '.join(dashboard.STATUS_FILTERS)}")
        status = None
    if service and not _service_exists(store, service):
        problems.append(f"unknown service {service!r}: give a service's slug")
        service = None
    rows = store.results.list(service=service, check=check, result=result, status=status,
                              before_id=before, limit=RESULTS_PAGE_SIZE + 1)
    more = len(rows) > RESULTS_PAGE_SIZE
    rows = rows[:RESULTS_PAGE_SIZE]
    filters = {"service": service or "", "check": check or "", "result": result or "", "status": status or ""}
    return _page(
        request, "results.html", title="Results", rows=rows, filters=filters, problems=problems,
        older=_query(**filters, before=rows[-1]["id"]) if more else None,
        newest=_query(**filters) if before else None,
        download=_query(**filters),  # the same filters as a CSV of every matching result (api/results.py)
        now=now, age=dashboard.age, service_choices=_service_choices(store), checks=store.reads.checks(order="name"),
        result_choices=dashboard.RESULT_FILTERS, status_choices=dashboard.STATUS_FILTERS,
    )


def _service_exists(store, slug: str) -> bool:
    try:
        store.reads.service(slug)
    except NotFound:
        return False
    return True


def _service_choices(store) -> list[tuple[str, str]]:
    """The services the results filter offers as you type: all of them up to SERVICE_CHOICES, none
    past it (10,000 of them made /results a 510 KiB page of 190 ms: bench/bench_pages.py --services
    10000); the field takes any slug typed either way."""
    choices = store.reads.service_choices(SERVICE_CHOICES + 1)
    return choices if len(choices) <= SERVICE_CHOICES else []


@get("/results/{result_id:int}", name="result", sync_to_thread=True)
def show_result(request: Request, state: State, result_id: FromPath[int]) -> Template:
    store, now = state.store, _now(state)
    row = store.results.get(existing_result_id(result_id))
    return _page(
        request, "result.html", title=f"Result {result_id}", result=row, key=dashboard.outcome(row),
        link=dashboard.safe_url(row["url"]), created_age=dashboard.age(row["created_at"], now),
        finished_age=dashboard.age(row["finished_at"], now) if row["finished_at"] else None,
    )


@get("/sync", name="sync", sync_to_thread=True)
def list_sync_runs(
    request: Request, state: State, before: Annotated[int | None, QueryParameter(ge=1, le=MAX_ID)] = None
) -> Template:
    store, now = state.store, _now(state)
    runs = store.catalog.sync_runs(31, before_id=before)
    more = len(runs) > 30
    runs = runs[:30]
    return _page(
        request, "sync.html", title="Sync", runs=runs, now=now, age=dashboard.age,
        older=_query(before=runs[-1]["id"]) if more else None, file_errors=store.catalog.file_errors(),
        notifications=store.events.delivery_summary(),
    )


@get("/scorecards", name="scorecards", sync_to_thread=True)
def list_scorecards(request: Request, state: State) -> Template:
    store, now = state.store, _now(state)
    return _page(request, "scorecards.html", title="Scorecards", scorecards=scorecard_views.scorecard_summaries(store),
                 campaigns=scorecard_views.campaigns(store, now), teams=scorecard_views.team_owners(store))


@get("/scorecards/{slug:str}", name="scorecard", sync_to_thread=True)
def show_scorecard(
    request: Request, state: State, slug: FromPath[str], page: Annotated[int, QueryParameter(ge=1, le=100_000)] = 1
) -> Template:
    card = scorecard_views.scorecard(state.store, slug, _now(state), page=page)
    names = [level["name"] for level in card["levels"]]
    return _page(request, "scorecard.html", title=card["name"], card=card, shown=card["service_levels"],
                 page=card["page"], pages=card["pages"],
                 page_link=lambda n: f"/scorecards/{card['slug']}" + _query(page=n),
                 chart=chart(card["trend"], names, f"{card['name']}: services per level per day"))


@get("/teams", name="teams", sync_to_thread=True)
def list_teams(request: Request, state: State) -> Template:
    store = state.store
    return _page(request, "teams.html", title="Teams", teams=scorecard_views.teams(store),
                 scorecards=scorecard_views.scorecard_summaries(store))


@get("/teams/{owner:path}", name="team", sync_to_thread=True)
def show_team(request: Request, state: State, owner: FromPath[str]) -> Template:
    owner = owner.removeprefix("/")  # an owner may hold a slash: `group:ops/sre` in a Backstage file is ops/sre
    team = scorecard_views.team(state.store, owner, _now(state))
    for card in team["scorecards"]:
        card["chart"] = chart(card["trend"], card["levels"], f"{owner}, {card['name']}: services per level per day")
    return _page(request, "team.html", title=owner, team=team)


@get("/campaigns", name="campaigns", sync_to_thread=True)
def list_campaigns(request: Request, state: State) -> Template:
    return _page(request, "campaigns.html", title="Campaigns", campaigns=scorecard_views.campaigns(state.store, _now(state)))


@get("/campaigns/{slug:str}", name="campaign", sync_to_thread=True)
def show_campaign(request: Request, state: State, slug: FromPath[str]) -> Template:
    campaign = scorecard_views.campaign(state.store, slug, _now(state))
    return _page(request, "campaign.html", title=campaign["name"], campaign=campaign)


@get("/events", name="events", sync_to_thread=True)
def list_events(
    request: Request, state: State,
    type: FromQuery[str | None] = None, service: FromQuery[str | None] = None, check: FromQuery[str | None] = None,
    before: Annotated[int | None, QueryParameter(ge=1, le=MAX_ID)] = None,
) -> Template:
    store, now = state.store, _now(state)
    type, service, check = given(type, service, check)
    if type not in EVENT_TYPES:
        type = None
    rows = store.events.list(type=type, service=service, check=check, before_id=before, limit=RESULTS_PAGE_SIZE + 1)
    more = len(rows) > RESULTS_PAGE_SIZE
    rows = rows[:RESULTS_PAGE_SIZE]
    filters = {"type": type or "", "service": service or "", "check": check or ""}
    return _page(
        request, "events.html", title="Events", events=rows, filters=filters, types=EVENT_TYPES, now=now,
        age=dashboard.age, notifications=store.events.delivery_summary(failed_limit=0),
        older=_query(**filters, before=rows[-1]["id"]) if more else None,
        newest=_query(**filters) if before else None,
    )


@get("/events/{event_id:int}", name="event", sync_to_thread=True)
def show_event(request: Request, state: State, event_id: FromPath[int]) -> Template:
    if not 1 <= event_id <= MAX_ID:
        raise NotFound(f"event {event_id} does not exist")
    event = state.store.events.get(event_id)
    return _page(request, "event.html", title=f"Event {event_id}", event=event, routed=not event["waiting"])


# -- login and logout -------------------------------------------------------------------------------


def _local_path(target: str | None) -> str:
    """Only a path on this server (never `//evil.example` or `https://...`): no open redirect."""
    if target and target.startswith("/") and not target.startswith("//") and "\\" not in target:
        return target
    return "/"


@get("/login", name="login", sync_to_thread=False)
def show_login(request: Request, next: FromQuery[str | None] = None) -> Template:
    reason = request.scope.get("state", {}).get("auth_error")
    return _page(request, "login.html", title="Sign in", next=_local_path(next), error=None, reason=reason)


@post("/login", sync_to_thread=True, status_code=303)
def login(
    request: Request, state: State,
    data: Annotated[dict[str, str], Body(media_type=RequestEncodingType.URL_ENCODED)],
) -> Response:
    refused = _cross_site(request)
    if refused is not None:
        return refused
    token = (data.get("token") or "").strip()
    target = _local_path(data.get("next"))
    identity = verify_token(state.store, token, now=_now(state)) if token else None
    if identity is None or not identity.has("read"):
        error = "That token is unknown or revoked." if identity is None else (
            f"Token {identity.name!r} lacks the 'read' scope; create one with "
            "`catalog token create NAME --scope read`."
        )
        if not token:
            error = "Paste a token first."
        return _page(request, "login.html", status_code=401, title="Sign in", next=target, error=error, reason=None)
    cookie = Cookie(key=COOKIE_NAME, value=token, httponly=True, samesite="lax", path="/",
                    max_age=COOKIE_MAX_AGE, secure=request.url.scheme == "https")
    return Redirect(path=target, status_code=303, cookies=[cookie])


def _cross_site(request: Request) -> Response | None:
    """A 403 page for a form another site posted here (its Origin is not this server's): signing a
    browser in with someone else's token, or out, is not another site's to do."""
    origin = request.headers.get("origin")
    if origin is None or (origin == "null" and request.headers.get("sec-fetch-site") in (None, "same-origin")):
        return None  # no Origin (an older browser, curl), or a same-origin request that says so
    # this server as the browser reached it (its Host), or as CATALOG_SERVER_URL names it (behind a proxy)
    ours = {request.headers.get("host", "").lower(), urlsplit(request.app.state.settings.server_url).netloc.lower()}
    if urlsplit(origin).netloc.lower() in ours:
        return None
    return _page(request, "error.html", status_code=403, title="Not allowed",
                 message="This form was sent from another site; sign in from this server's own page.")


@post("/logout", sync_to_thread=False, status_code=303)
def logout(request: Request) -> Response:
    refused = _cross_site(request)
    if refused is not None:
        return refused
    return Redirect(path="/login", status_code=303,
                    cookies=[Cookie(key=COOKIE_NAME, value="", path="/", max_age=0, httponly=True, samesite="lax")])


# -- errors as pages --------------------------------------------------------------------------------


def redirect_to_login(request: Request, _: NotAuthenticated) -> Response:
    target = request.url.path + (f"?{request.url.query}" if request.url.query else "")
    return Redirect(path=f"/login?next={quote(target, safe='')}", status_code=303)


def not_found_page(request: Request, error: Exception) -> Response:
    message = str(error) if isinstance(error, NotFound) else "page not found"
    return _page(request, "error.html", status_code=404, title="Not found", message=message)


def bad_request_page(request: Request, error: Exception) -> Response:
    """A query parameter a page cannot take (`?page=0`, `?before=x`): said on a page, as a 400."""
    if isinstance(error, ValidationException) and isinstance(error.extra, list) and error.extra:
        message = "; ".join(f"{item.get('key')}: {item.get('message')}" if isinstance(item, dict) else str(item)
                            for item in error.extra)
    else:
        message = error.detail if isinstance(error, HTTPException) else str(error)
    return _page(request, "error.html", status_code=400, title="Bad request", message=message)


def forbidden_page(request: Request, error: HTTPException) -> Response:
    return _page(request, "error.html", status_code=error.status_code, title="Not allowed", message=error.detail)


PAGE_HANDLERS: list = [
    Router(
        path="/",
        route_handlers=[show_dashboard, show_service, show_check, list_results, show_result, list_sync_runs,
                        list_scorecards, show_scorecard, list_teams, show_team, list_campaigns, show_campaign,
                        list_events, show_event],
        guards=[requires_read],
        include_in_schema=False,
        exception_handlers={NotAuthenticated: redirect_to_login, NotFound: not_found_page, 403: forbidden_page,
                            400: bad_request_page, InvalidInput: bad_request_page},
    ),
    Router(path="/", route_handlers=[show_login, login, logout], include_in_schema=False),
    *BADGE_HANDLERS, scorecard_badge,
    create_static_files_router(path="/static", directories=[STATIC_DIR], include_in_schema=False,
                               cache_control=None),
]
