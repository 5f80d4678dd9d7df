"""Catalog reads: services and checks, each with its latest results."""

from __future__ import annotations

from typing import Annotated

from litestar import Controller
from litestar.datastructures import State
from litestar.params import FromPath, QueryParameter
from litestar.types import ASGIApp

from api.auth import SECURITY, requires_read
from api.models import CheckDetail, CheckList, ServiceDetail, ServiceList, error_responses
from api.responses import JSONBytes, ok
from api.routing import get, read

IncludeRemoved = Annotated[bool, QueryParameter(description="also list soft-deleted (removed) entries")]


class ServiceController(Controller):
    path = "/api/services"
    tags = ["catalog"]
    security = SECURITY
    guards = [requires_read]

    @get("/", summary="Services in the catalog, by slug", responses=error_responses(401, 403), sync_to_thread=True)
    def list_services(
        self,
        state: State,
        type: Annotated[str | None, QueryParameter(description="exact type, e.g. web")] = None,
        owner: Annotated[str | None, QueryParameter(description="exact owner")] = None,
        tag: Annotated[str | None, QueryParameter(description="services carrying this tag")] = None,
        include_removed: IncludeRemoved = False,
    ) -> ServiceList:
        return {"services": state.store.reads.services(type=type, owner=owner, tag=tag, include_removed=include_removed)}

    @get("/{slug:str}", summary="One service with its latest result per check and their counts",
         responses={**ok(ServiceDetail), **error_responses(401, 403, 404)},
    )
    async def get_service(self, state: State, slug: FromPath[str]) -> ASGIApp:
        # The hot read: the store hands over the JSON text it built, sent as it is.
        return JSONBytes((await read(state.store, state.store.reads.service_json, slug)).encode())


class CheckController(Controller):
    path = "/api/checks"
    tags = ["catalog"]
    security = SECURITY
    guards = [requires_read]

    @get("/", summary="Checks in the catalog, by slug", responses=error_responses(401, 403), sync_to_thread=True)
    def list_checks(self, state: State, include_removed: IncludeRemoved = False) -> CheckList:
        return {"checks": state.store.reads.checks(include_removed=include_removed)}

    @get("/{slug:str}", summary="One check with its latest result per service and their counts",
         responses=error_responses(401, 403, 404), sync_to_thread=True)
    def get_check(self, state: State, slug: FromPath[str]) -> CheckDetail:
        return state.store.reads.check_with_latest(slug)

