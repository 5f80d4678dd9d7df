"""Scorecards, teams and campaigns: the JSON reads, the pages and the level badge (DESIGN section 10).

All of it reads the levels the store keeps (reconciler/scorecards.py keeps them current); a request
never re-evaluates a service.
"""

from __future__ import annotations

from typing import Annotated, Any

from litestar import Controller, Request, Response
from litestar.datastructures import State
from litestar.params import FromPath, QueryParameter

from api import charts
from api.auth import SECURITY, requires_read
from api.badges import badge_response, render_badge, svg_slug
from api.models import error_responses
from api.routing import get
from reconciler import scorecard_views as views
from reconciler.errors import NotFound
from reconciler.outcomes import NO_LEVEL

BADGE_COLOURS = {"none": "#6b6b6b", "top": "#2e7d32", "partial": "#a15c00"}


class ScorecardController(Controller):
    path = "/api/scorecards"
    tags = ["scorecards"]
    security = SECURITY
    guards = [requires_read]

    @get("/", summary="Every scorecard with how many services hold each level",
         responses=error_responses(401, 403), sync_to_thread=True)
    def list_scorecards(self, state: State) -> dict[str, Any]:
        return {"scorecards": views.scorecard_summaries(state.store)}

    @get("/{slug:str}", summary="One scorecard: a page of its services by level and a year of daily trend",
         responses=error_responses(401, 403, 404), sync_to_thread=True)
    def get_scorecard(
        self, state: State, slug: FromPath[str],
        page: Annotated[int, QueryParameter(ge=1, le=100_000, description=f"{views.PAGE_SIZE} services a page")] = 1,
    ) -> dict[str, Any]:
        return views.scorecard(state.store, slug, state.clock.now(), page=page)


class TeamController(Controller):
    path = "/api/teams"
    tags = ["scorecards"]
    security = SECURITY
    guards = [requires_read]

    @get("/", summary="Every team (a services' owner) with its services' levels per scorecard",
         responses=error_responses(401, 403), sync_to_thread=True)
    def list_teams(self, state: State) -> dict[str, Any]:
        return {"teams": views.teams(state.store)}

    @get("/{owner:path}", summary="One team: levels, failing checks, waivers, campaigns and trend",
         description="The owner as written in the services' files; it may hold a slash (`ops/sre`).",
         responses=error_responses(401, 403, 404), sync_to_thread=True)
    def get_team(self, state: State, owner: FromPath[str]) -> dict[str, Any]:
        return views.team(state.store, owner.removeprefix("/"), state.clock.now())


class CampaignController(Controller):
    path = "/api/campaigns"
    tags = ["scorecards"]
    security = SECURITY
    guards = [requires_read]

    @get("/", summary="Every campaign with its progress and whether it is overdue",
         responses=error_responses(401, 403), sync_to_thread=True)
    def list_campaigns(self, state: State) -> dict[str, Any]:
        return {"campaigns": views.campaigns(state.store, state.clock.now())}

    @get("/{slug:str}", summary="One campaign: progress, per team, and each targeted service",
         responses=error_responses(401, 403, 404), sync_to_thread=True)
    def get_campaign(self, state: State, slug: FromPath[str]) -> dict[str, Any]:
        return views.campaign(state.store, slug, state.clock.now())


API_HANDLERS = [ScorecardController, TeamController, CampaignController]


# -- pages ------------------------------------------------------------------------------------------


def chart(days: list[dict], levels: list[str], label: str) -> dict:
    """A trend chart for a template: the SVG, its legend and a text summary."""
    return {"svg": charts.level_trend_svg(days, levels, label), "legend": charts.legend(levels),
            "summary": charts.summary_text(days)}


# -- the level badge --------------------------------------------------------------------------------


@get("/badges/services/{slug:str}/scorecards/{name:str}", guards=[requires_read], include_in_schema=False,
     sync_to_thread=True)
def scorecard_badge(request: Request, state: State, slug: FromPath[str], name: FromPath[str]) -> Response:
    """A service's level of one scorecard: its name, `none`, or `not applicable`."""
    store = state.store
    service = store.reads.service(slug)
    scorecard = svg_slug(name)
    held = next((row for row in views.service_levels(store, service["id"]) if row["scorecard"] == scorecard), None)
    if held is None:
        if scorecard not in views.definitions(store).scorecards:
            raise NotFound(f"scorecard {scorecard!r} does not exist")
        message, colour = "not applicable", BADGE_COLOURS["none"]
    elif not held["level_index"]:
        message, colour = NO_LEVEL, BADGE_COLOURS["none"]
    else:
        top = held["level_index"] == len(held["levels"])
        message, colour = held["level"], BADGE_COLOURS["top" if top else "partial"]
    return badge_response(request, render_badge(scorecard, message, colour))
